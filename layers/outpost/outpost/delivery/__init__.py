"""The sender's MTA: transport (SMTP sessions), trouble (the one failure policy), backoff, service."""
