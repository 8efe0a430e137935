"""The templates part of `make demo` (issue 14): store a template with a layout through the API,
preview it (POST /v1/templates/{alias}/render), send with it, and show the subject the
receiving MX got (the rendering stored at acceptance, delivered through the real pipeline)."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Callable
from typing import Any

from .stack import SENDING_DOMAIN, LocalStack

RECIPIENT = "tina@accept.test"
VARIABLES = {"first_name": "Tina", "order": 1002, "items": [{"title": "Tea", "qty": 2}, {"title": "Cups", "qty": 6}]}


def _put(stack: LocalStack, call: Callable[..., tuple[int, Any]], body: dict) -> None:
    status, out = call(stack, "POST", "/v1/templates", body)
    if status == 409:  # a stack reused: a new version instead
        alias = body.pop("alias")
        status, out = call(stack, "PUT", f"/v1/templates/{alias}", body)
    if status not in (200, 201):
        raise SystemExit(f"storing template {body.get('alias')} answered {status}: {out}")


def run(stack: LocalStack, call: Callable[..., tuple[int, Any]], timeout: float = 90) -> bool:
    print("\nTemplates (POST /v1/templates, preview, send with {\"template\": ...}):")
    _put(stack, call, {"alias": "demo-frame", "name": "Demo frame", "kind": "layout",
                       "html": "<div style='font-family: sans-serif'>{{{@content}}}<hr>"
                               "<small>Outpost demo</small></div>"})
    _put(stack, call, {"alias": "demo-receipt", "name": "Receipt", "layout": "demo-frame",
                       "subject": "Receipt #{{order}} for {{first_name}} ✓",
                       "html": "<style>li { color: #333 }</style><p>Thanks, {{first_name}}!</p>"
                               "<ul>{{#items}}<li>{{title}} x{{qty}}</li>{{/items}}</ul>"})
    status, preview = call(stack, "POST", "/v1/templates/demo-receipt/render", {"variables": VARIABLES})
    if status != 200:
        print(f"  BAD preview answered {status}: {preview}")
        return False
    print(f"  preview v{preview['version']}: subject {preview['subject']!r}; text "
          f"{preview['text'].strip().splitlines()[:3]}")
    status, sent = call(stack, "POST", "/v1/messages", {"from": f"Outpost Demo <hello@{SENDING_DOMAIN}>",
                                                        "to": RECIPIENT, "template": "demo-receipt",
                                                        "variables": VARIABLES})
    if status != 202:
        print(f"  BAD send answered {status}: {sent}")
        return False
    deadline, subject = time.monotonic() + timeout, None
    while time.monotonic() < deadline and subject is None:
        for r in stack.mx["accept.test"].server.received:
            if RECIPIENT in r.rcpt_tos:
                subject = str(email.message_from_bytes(r.data, policy=email.policy.default)["Subject"])
        time.sleep(0.3)
    ok = subject == preview["subject"]
    print(f"  {'ok ' if ok else 'BAD'} {RECIPIENT} got Subject: {subject!r} (message {sent['id']})")
    status, refused = call(stack, "DELETE", "/v1/templates/demo-frame")  # s17d: a layout in use stays
    why = refused["error"]["message"] if status == 409 else refused
    in_use = status == 409 and "'demo-receipt'" in why
    print(f"  {'ok ' if in_use else 'BAD'} DELETE /v1/templates/demo-frame -> {status}: {why}")
    return ok and in_use
