"""`make demo`'s ApiType=HTTP step (issue 15 item 4): the send API's handler fed the event an API
Gateway HTTP API sends it (payload format 1.0: events/api_http_post_message.json, lower-case
headers, stage $default), as the template's ApiType=HTTP deploys it; True only if it answered
202 and the message was delivered to the real local MX.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from .provision import ROOT
from .stack import SENDING_DOMAIN, LocalStack


def run(stack: LocalStack, wait: Callable[..., dict], timeout: float = 60) -> bool:
    print("\nApiType=HTTP: the send API's handler fed an HTTP API event (payload format 1.0, "
          "lower-case headers, stage $default):")
    rcpt = f"http-api-{secrets.token_hex(3)}@accept.test"
    event: dict[str, Any] = json.loads((ROOT / "events" / "api_http_post_message.json").read_text())
    body = json.dumps({"from": f"Outpost Demo <hello@{SENDING_DOMAIN}>", "to": [rcpt],
                       "subject": "Sent through an HTTP API", "text": "An API Gateway HTTP API event."})
    headers = dict(event["headers"], authorization=f"Bearer {stack.api_key}", **{
        "content-length": str(len(body.encode())), "idempotency-key": rcpt})
    event.update(body=body, headers=headers, multiValueHeaders={k: [v] for k, v in headers.items()})
    res = stack.functions["SendApiFunction"].invoke(event)
    if res.get("statusCode") != 202:
        print(f"  BAD POST /v1/messages -> {res.get('statusCode')}: {res.get('body')}")
        return False
    mid = json.loads(res["body"])["id"]
    state = wait(stack, mid, lambda b: b["recipients"][0]["state"] == "delivered", timeout)["recipients"][0]["state"]
    got = any(rcpt in r.rcpt_tos for r in list(stack.mx["accept.test"].server.received))
    ok = state == "delivered" and got
    print(f"  {'ok ' if ok else 'BAD'} POST /v1/messages -> 202 {mid}; {rcpt} {state}"
          f"{', at the MX' if got else ', NOT at the MX'}")
    return ok
