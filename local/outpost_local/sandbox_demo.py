"""`make demo`'s sandbox step (issue 14 item 4): one message to every simulator address and one
sent with a test-mode key to a real address, followed to their final states through the real
sender and bounce processor; True only if each ended as documented and the real MX got nothing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from outpost.sandbox import SIMULATOR_DOMAIN

from .stack import SENDING_DOMAIN, LocalStack

EXPECT = {"delivered": "delivered", "bounce": "bounced", "softbounce": "delivered",
          "complaint": "complained", "autoreply": "delivered", "suppressed": "suppressed"}


def run(stack: LocalStack, http: Callable[..., tuple[int, Any]], timeout: float = 90) -> bool:
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    run_id = secrets.token_hex(3)  # fresh addresses: a bounce or complaint suppresses its address
    addrs = {f"{name}+demo-{run_id}@{SIMULATOR_DOMAIN}": want for name, want in EXPECT.items()}
    test_key, _ = KeyRing(api_keys_table()).create("demo test key", ["send", "read"], mode="test")
    real = f"sandbox-{run_id}@accept.test"
    received_before = len(stack.mx["accept.test"].server.received)
    status, sim = http(stack, "POST", "/v1/messages", {
        "from": f"hello@{SENDING_DOMAIN}", "to": list(addrs), "subject": "Sandbox", "text": "simulated"})
    status2, tst = _post_with(stack, test_key, {"from": f"hello@{SENDING_DOMAIN}", "to": real,
                                                "subject": "Test key", "text": "never delivered"})
    if status != 202 or status2 != 202:
        print(f"\nSandbox: POST /v1/messages answered {status} / {status2}")
        return False
    addrs[real] = "delivered"
    print(f"\nSandbox ({SIMULATOR_DOMAIN}, and a test-mode key to {real}):")
    deadline = time.monotonic() + timeout
    got: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for mid in (sim["id"], tst["id"]):
            message = http(stack, "GET", f"/v1/messages/{mid}")[1]
            got.update({r["address"]: dict(r, mode=message["mode"]) for r in message["recipients"]})
        if all(got.get(a, {}).get("state") == w for a, w in addrs.items()):
            break
        time.sleep(0.5)
    ok = True
    for addr, want in addrs.items():
        r = got.get(addr, {"state": "missing"})
        path = " -> ".join(f"{a.get('code') or ''} {a.get('status', '')}".strip() for a in r.get("attempts") or [])
        b = r.get("bounce") or {}
        extra = f"  [{b.get('source')} {b.get('status') or ''}".rstrip() + "]" if b else ""
        mode = f"  mode={r['mode']}" if "mode" in r else ""
        mark = "ok " if r["state"] == want else "BAD"
        ok &= r["state"] == want
        print(f"  {mark} {addr:<52} {r['state']:<10} attempts: {path or '-'}{extra}{mode}")
    reached = len(stack.mx["accept.test"].server.received) - received_before
    print(f"  the real MX (accept.test) got {reached} message(s) from the test-mode key (expected 0)")
    return ok and reached == 0 and got.get(real, {}).get("mode") == "test"


def _post_with(stack: LocalStack, key: str, body: dict) -> tuple[int, Any]:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(stack.api.url + "/v1/messages", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
