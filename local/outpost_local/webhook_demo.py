"""The webhooks part of `make demo` (issue 12): register the local receiver through the API,
then show the delivered and bounced events arriving at it, signed, and verified there with the
`standardwebhooks` package.

Where events come from is the events function's job (DynamoDB stream -> events -> sinks). Until
it is part of the stack, `publish_outcomes` stands in for it: it turns the demo's final
recipient states into events and hands them to the WebhookSink, as the events function does.
With the stream in place, `show` is called with `publish=None` and only waits.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from .stack import LocalStack

DEMO_EVENTS = ["message.delivered", "message.bounced"]


def register(stack: LocalStack, call: Callable[..., tuple[int, Any]]) -> dict:
    """POST /v1/webhooks for the local receiver; the receiver is given the secret to verify with."""
    status, body = call(stack, "POST", "/v1/webhooks", {"url": stack.webhooks.url, "events": DEMO_EVENTS,
                                                        "description": "make demo"})
    if status != 201:
        raise SystemExit(f"POST /v1/webhooks answered {status}: {body}")
    stack.webhooks.secrets.append(body["secret"])
    return body


def publish_outcomes(results: dict[str, dict]) -> list[str]:
    """Events made by hand for tests of `show` (the demo itself gets the stream's): one per
    final delivered/bounced recipient, published to the WebhookSink. Returns their ids."""
    from outpost.bootstrap import webhook_sink
    from outpost.clock import iso
    from outpost.events import Event

    events = []
    for address, r in results.items():
        state, mid = r.get("state"), r.get("message_id", "")
        if state not in ("delivered", "bounced") or " " in address:
            continue
        data = {"message_id": mid, "recipient": address, "state": state, "tags": {}}
        if r.get("bounce"):
            b = r["bounce"]
            data["bounce"] = {k: b.get(k) for k in ("kind", "reason", "status", "diagnostic")}
        tag = hashlib.sha256(address.encode()).hexdigest()[:8]
        events.append(Event(f"evt_{mid}_{tag}_{state}", f"message.{state}", iso(time.time()), mid, address, data))
    webhook_sink().publish(events)
    return [e.event_id for e in events]


def show(stack: LocalStack, expected: dict[str, str], publish: Callable[[], Any] | None,
         timeout: float = 60, since: float | None = None) -> bool:
    """Wait for an event per expected (recipient -> type) at the receiver, counting what it got
    from `since` on (default: now); print each one with its webhook-id and the receiver's
    verdict. True if every one arrived, verified."""
    rx = stack.webhooks
    since = time.time() if since is None else since
    if publish is not None:
        publish()

    def arrived() -> dict[tuple[str, str], Any]:
        out = {}
        for r in rx.accepted():
            if r.at < since:
                continue
            p = r.payload
            out[(p["data"].get("recipient"), p["type"])] = r
        return out

    want = {(addr, f"message.{state}") for addr, state in expected.items()}
    deadline = time.monotonic() + timeout
    while not want <= set(arrived()) and time.monotonic() < deadline:
        time.sleep(0.3)
    got = arrived()
    print(f"\nWebhooks (POST /v1/webhooks -> {rx.url}; Standard Webhooks signatures, checked by the "
          "receiver with the standardwebhooks package):")
    ok = True
    for addr, type_ in sorted(want, key=lambda w: (w[1], w[0])):
        r = got.get((addr, type_))
        good = r is not None and r.verified is True
        ok &= good
        verdict = "missing" if r is None else ("signature verified" if r.verified else f"NOT verified: {r.error}")
        print(f"  {'ok ' if good else 'BAD'} {type_:<18} {addr:<26} webhook-id {r.webhook_id if r else '-'}  {verdict}")
    return ok
