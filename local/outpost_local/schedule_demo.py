"""`make demo`'s scheduled-sending step (issue 14): a message scheduled a few seconds ahead is
`scheduled`, then delivered at its time (not before); another, scheduled an hour ahead, is
canceled with POST /v1/messages/{id}/cancel and ends `canceled`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from outpost.clock import epoch_of, iso

from .stack import SENDING_DOMAIN, LocalStack

Http = Callable[..., tuple[int, Any]]
AHEAD = 4.0  # seconds: the first message's send_at


def _message(to: str, subject: str, send_at: float) -> dict:
    return {"from": f"Outpost Demo <hello@{SENDING_DOMAIN}>", "to": [to], "subject": subject,
            "text": f"{subject}\n\nScheduled by `make demo`.", "send_at": iso(send_at)}


def run(stack: LocalStack, http: Http, timeout: float = 60.0) -> bool:
    """Print the step's outcomes; True when both happened as expected."""
    print("\nScheduled sending (send_at) and cancel:")
    at = time.time() + AHEAD
    status, first = http(stack, "POST", "/v1/messages", _message("erin@accept.test", "Your 9 o'clock reminder", at))
    later_at = time.time() + 3600
    status2, second = http(stack, "POST", "/v1/messages", _message("frank@accept.test", "Never mind", later_at))
    if status != 202 or status2 != 202:
        print(f"  BAD POST /v1/messages answered {status} {first} / {status2} {second}")
        return False
    print(f"  POST send_at={iso(at)} -> {first['recipients'][0]['status']} ({first['id']})")
    code, canceled = http(stack, "POST", f"/v1/messages/{second['id']}/cancel")
    got_cancel = canceled["recipients"][0]["status"] if code == 200 else f"HTTP {code}"
    deadline, body = time.monotonic() + timeout, dict[str, Any]()
    while time.monotonic() < deadline:
        _, body = http(stack, "GET", f"/v1/messages/{first['id']}")
        if body["recipients"][0]["state"] not in ("scheduled", "queued", "deferred"):
            break
        time.sleep(0.3)
    r = body["recipients"][0]
    sent_at = epoch_of(r["attempts"][0]["at"]) if r.get("attempts") else None
    on_time = r["state"] == "delivered" and sent_at is not None and sent_at >= at
    when = f"at {r['attempts'][0]['at']}, {sent_at - at:+.1f} s from send_at" if sent_at else "no attempt"
    print(f"  {'ok ' if on_time else 'BAD'} erin@accept.test          {r['state']:<10} (expected delivered at "
          f"its time) {when}")
    ok_cancel = got_cancel == "canceled"
    print(f"  {'ok ' if ok_cancel else 'BAD'} frank@accept.test         {got_cancel:<10} (expected canceled) "
          f"POST /v1/messages/{second['id']}/cancel")
    return on_time and ok_cancel


def run_smtp(stack: LocalStack, http: Http) -> bool:
    """s17d: the same over SMTP submission, with the `Outpost-Send-At` header field: the message
    is `scheduled` (the field itself removed), then canceled through the API."""
    import smtplib
    import ssl

    at = time.time() + 3600
    message = (f"Outpost-Send-At: {iso(at)}\r\nFrom: Outpost demo <hello@{SENDING_DOMAIN}>\r\n"
               "To: gina@accept.test\r\nSubject: Scheduled over SMTP\r\n\r\nSee you in an hour.\r\n").encode()
    with smtplib.SMTP(stack.config.ip(1), stack.submission.ports["starttls"], timeout=30) as s:
        s.starttls(context=ssl.create_default_context(cafile=str(stack.pki.ca_bundle)))
        s.login("outpost", stack.api_key)
        s.mail(f"hello@{SENDING_DOMAIN}")
        s.rcpt("gina@accept.test")
        code, text = s.data(message)
    mid = text.decode().rsplit(" ", 1)[-1]
    _, body = http(stack, "GET", f"/v1/messages/{mid}")
    state = body.get("status") if code == 250 else f"SMTP {code}"
    _, canceled = http(stack, "POST", f"/v1/messages/{mid}/cancel")
    after = (canceled.get("recipients") or [{}])[0].get("status")
    ok = state == "scheduled" and after == "canceled"
    print(f"  {'ok ' if ok else 'BAD'} gina@accept.test          {state} then {after} (SMTP with Outpost-Send-At: "
          f"{iso(at)}; {code} {text.decode()})")
    return ok
