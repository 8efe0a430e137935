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
