"""`make dev`: keep the local stack running and print how to talk to it with curl."""

from __future__ import annotations

import signal
import threading

from .stack import OUTPUTS_FILE, SENDING_DOMAIN, LocalStack, StackConfig


def main(verbose: bool = False, providers: bool = False) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalStack(StackConfig(quiet=not verbose, outputs_file=OUTPUTS_FILE, providers=providers)) as stack:
        stack.webhooks.echo = True
        print(f"""Outpost local stack is up.

  API          {stack.api.url}
  API key      {stack.api_key}   (scope: admin)
  AWS endpoint {stack.env['AWS_ENDPOINT_URL']}   (moto: aws --endpoint-url ... works)
  DynamoDB     {stack.dynamodb_endpoint}   ({stack.dynamodb_engine}: {stack.dynamodb_engine_reason})
  DNS          {stack.dns.host}:{stack.dns.port}   (dig @{stack.dns.host} -p {stack.dns.port} MX accept.test)
  SMTP port    {stack.smtp_port}
  Submission   {stack.config.ip(1)}:{stack.submission.ports['starttls']} (STARTTLS), \
{stack.config.ip(1)}:{stack.submission.ports['tls']} (implicit TLS); user: any, password: an API key with scope send
  Test CA      {stack.pki.ca_bundle}   (the submission certificate's CA: trust it in clients)
  MX hosts     {', '.join(f'{d} ({m.kind})' for d, m in stack.mx.items())}
  Outputs      {OUTPUTS_FILE}   (outpost-admin --local reads it)
  Webhooks     {stack.webhooks.url}   (a local receiver: checks each signature with standardwebhooks, prints each event)

Try:
  curl -s {stack.api.url}/v1/messages -H 'Authorization: Bearer {stack.api_key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"from":"hello@{SENDING_DOMAIN}","to":"alice@accept.test","subject":"Hi","text":"Hello"}}'
  curl -s {stack.api.url}/v1/messages/<id> -H 'Authorization: Bearer {stack.api_key}'
  curl -s '{stack.api.url}/v1/events?message_id=<id>' -H 'Authorization: Bearer {stack.api_key}'
  .venv/bin/outpost-admin --local keys create --name backend --scope send --scope read
  swaks --server {stack.config.ip(1)}:{stack.submission.ports['starttls']} --tls --tls-verify \\
        --tls-ca-path {stack.pki.ca_bundle} \\
        --auth PLAIN --auth-user outpost --auth-password {stack.api_key} \\
        --from hello@{SENDING_DOMAIN} --to alice@accept.test
  curl -s {stack.api.url}/v1/webhooks -H 'Authorization: Bearer {stack.api_key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"url":"{stack.webhooks.url}","events":["message.delivered","message.bounced"]}}'
      (registers the local receiver: it then prints each event it gets and whether its signature verifies)

Ctrl-C stops it.""", flush=True)
        from outpost.sandbox import SIMULATOR_DOMAIN  # issue 14: the sandbox

        print(f"Sandbox: send to delivered@, bounce@, softbounce@, complaint@, autoreply@ or suppressed@"
              f"{SIMULATOR_DOMAIN} (README: Sandbox); a key whose mail is all simulated:\n"
              "  .venv/bin/outpost-admin --local keys create --name test --scope send --scope read --mode test",
              flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0
