"""The HTTPS API: authentication, sending, status queries (routes.py wires them to HTTP)."""
