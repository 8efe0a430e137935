"""SES receiving, emulated: an SMTP listener for the bounce domain that stores the raw mail in
the bucket (S3Action) and then invokes the bounce processor with SES's Lambda event.
"""

from __future__ import annotations

import email
import email.policy
import logging
import secrets
import ssl
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.controller import Controller

from .runtime import LocalFunction

log = logging.getLogger("outpost_local.inbound")


def ses_event(message_id: str, mail_from: str, rcpts: list[str], raw: bytes, function_arn: str) -> dict:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    headers = [{"name": k, "value": str(v)} for k, v in msg.items()]
    verdict = {"status": "PASS"}
    return {"Records": [{
        "eventSource": "aws:ses", "eventVersion": "1.0",
        "ses": {
            "mail": {
                "timestamp": now, "source": mail_from, "messageId": message_id,
                "destination": rcpts, "headersTruncated": False, "headers": headers,
                "commonHeaders": {"returnPath": mail_from, "from": [str(msg.get("From", ""))],
                                  "date": str(msg.get("Date", "")), "to": [str(msg.get("To", ""))],
                                  "messageId": str(msg.get("Message-ID", "")),
                                  "subject": str(msg.get("Subject", ""))},
            },
            "receipt": {
                "timestamp": now, "processingTimeMillis": 5, "recipients": rcpts,
                "spamVerdict": verdict, "virusVerdict": verdict, "spfVerdict": verdict,
                "dkimVerdict": verdict, "dmarcVerdict": verdict,
                "action": {"type": "Lambda", "functionArn": function_arn, "invocationType": "Event"},
            },
        },
    }]}


class _Handler:
    def __init__(self, owner: InboundListener) -> None:
        self.owner = owner

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if not address.lower().endswith("@" + self.owner.domain):
            return "550 5.7.1 Relay access denied"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mid = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(40))
        raw = envelope.original_content or envelope.content
        self.owner.store(mid, envelope.mail_from, list(envelope.rcpt_tos), raw)
        return f"250 2.6.0 Ok {mid}"


class InboundListener:
    def __init__(self, *, host: str, port: int, domain: str, s3: Any, bucket: str, prefix: str,
                 function: LocalFunction, tls_context: ssl.SSLContext | None = None) -> None:
        self.domain, self.s3, self.bucket, self.prefix, self.function = domain.lower(), s3, bucket, prefix, function
        self.received = 0
        self.results: list[Any] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bounce-invoke")
        self._lock = threading.Lock()
        self.controller = Controller(_Handler(self), hostname=host, port=port, server_hostname=f"inbound.{domain}",
                                     tls_context=tls_context, ready_timeout=10)

    def store(self, mid: str, mail_from: str, rcpts: list[str], raw: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{mid}", Body=raw)
        with self._lock:
            self.received += 1
        arn = "arn:aws:lambda:us-east-1:123456789012:function:BounceProcessorFunction"
        event = ses_event(mid, mail_from, rcpts, raw, arn)
        self._pool.submit(self._invoke, event)  # InvocationType Event: SES does not wait

    def _invoke(self, event: dict) -> None:
        try:
            self.results.append(self.function.invoke(event))
        except Exception:  # noqa: BLE001 - Lambda would retry an async invocation; log it
            log.exception("bounce processor failed")
            self.results.append({"error": True})

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
        self._pool.shutdown(wait=True)
