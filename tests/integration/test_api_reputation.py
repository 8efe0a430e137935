"""The reputation circuit breaker (issue 11 item 6) on the local stack: the API over HTTP, the
sender polling SQS, real MX hosts (reject.test answers 550 5.1.1 for unknown users, greylist.test
451 at the first attempt), DynamoDB Local for the counts and states.

Hard bounces on a domain pause it: the next POST /v1/messages answers 403 sending_paused; a
message queued before (waiting on a greylisting MX) is held, its recipient showing `waiting:
paused` with no attempt counted, and is delivered after POST /v1/reputation/{domain}/resume.
GET /v1/reputation shows the counts the test made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from api_rig import call, start_stack, stop_stack

from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(240)

FROM = f"Shop <news@{SENDING_DOMAIN}>"


@pytest.fixture(scope="module")
def stack():
    # A representative volume of 5 (the default is 200), held mail looked at every 2 s (the
    # default is 5 min), and a 30 s retry, so the greylisted message is still queued when
    # the domain is paused.
    st_ = start_stack("127.0.41", OUTPOST_REPUTATION_MIN_VOLUME="5", OUTPOST_REPUTATION_RECHECK="2",
                      OUTPOST_RETRY_SCHEDULE="30,30,30,30,30")
    yield st_
    stop_stack(st_)


def wait_for(stack: Any, mid: str, done: Callable[[dict], bool], timeout: float = 90.0) -> dict:
    end = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < end:
        status, _, body = call(stack, "GET", f"/v1/messages/{mid}")
        assert status == 200, body
        if done(body):
            return body
        time.sleep(0.3)
    raise AssertionError(f"timed out; last: {body}")


def send(stack: Any, to: str, key: str) -> tuple[int, dict]:
    status, _, out = call(stack, "POST", "/v1/messages", {"from": FROM, "to": [to], "subject": "Hi",
                                                          "text": "Hello"}, key=key)
    return status, out


def test_hard_bounces_pause_the_domain_queued_mail_is_held_then_delivered_after_resume(stack) -> None:
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    admin = stack.api_key
    bulk, bulk_rec = KeyRing(api_keys_table()).create("bulk sender", ["send", "read"])

    # Queued before the pause: greylisted at its first attempt, due again 30 s later.
    status, held = send(stack, "held@greylist.test", admin)
    assert status == 202, held
    wait_for(stack, held["id"], lambda b: b["recipients"][0]["state"] == "deferred"
             and len(b["recipients"][0]["attempts"]) == 1)

    # 5 sent with the bulk key (1 delivered, 4 hard bounces at RCPT): 4 of 6 for the domain.
    # One batch, so that all are counted as sent before the first bounce is (a bounce among
    # fewer sends would pause the domain before the last of them is accepted).
    status, _, out = call(stack, "POST", "/v1/messages/batch", {"messages": [
        {"from": FROM, "to": [to], "subject": "Hi", "text": "Hello"}
        for to in ["alice@reject.test", *(f"nobody{i}@reject.test" for i in range(4))]]}, key=bulk)
    assert status == 200 and out["accepted"] == 5, out
    ids = [r["id"] for r in out["results"]]
    for mid in ids:
        wait_for(stack, mid, lambda b: b["recipients"][0]["state"] in ("delivered", "bounced"))

    # The next send from the domain is refused, with either key, in the one error shape.
    status, out = send(stack, "bob@accept.test", admin)
    assert status == 403, out
    err = out["error"]
    assert err["code"] == "sending_paused" and err["field"] == "from"
    assert f"'{SENDING_DOMAIN}'" in err["message"] and ">= 10.00%" in err["message"], err
    assert send(stack, "bob@accept.test", bulk)[0] == 403

    # GET /v1/reputation: the figures this test made.
    status, _, rep = call(stack, "GET", "/v1/reputation")
    assert status == 200, rep
    items = {(i["type"], i["name"]): i for i in rep["items"]}
    dom = items[("domain", SENDING_DOMAIN)]
    assert dom["state"] == "paused" and dom["since"], dom
    for w in ("24h", "7d"):
        assert dom["windows"][w] == {"sent": 6, "hard_bounces": 4, "complaints": 0,
                                     "bounce_rate": round(4 / 6, 6), "complaint_rate": 0.0, "counts": True}
    key = items[("key", bulk_rec["key_id"])]
    assert key["state"] == "paused"
    assert (key["windows"]["24h"]["sent"], key["windows"]["24h"]["hard_bounces"]) == (5, 4)
    assert rep["thresholds"]["pause_bounce_rate"] == 0.1 and rep["thresholds"]["min_volume"] == 5
    # A key that is not admin sees its own key and the domains it may send from, no other key.
    status, _, own = call(stack, "GET", "/v1/reputation", key=bulk)
    assert status == 200 and [i["name"] for i in own["items"] if i["type"] == "key"] == [bulk_rec["key_id"]]

    # The queued message is held: deferred, waiting on the pause, no attempt counted for it.
    body = wait_for(stack, held["id"], lambda b: (b["recipients"][0].get("waiting") or {}).get("reason") == "paused")
    r = body["recipients"][0]
    assert r["state"] == "deferred" and len(r["attempts"]) == 1
    assert r["waiting"]["provider"] == f"domain:{SENDING_DOMAIN}" and r["waiting"]["until"]
    time.sleep(5)  # held through a few re-checks: still no attempt
    status, _, body = call(stack, "GET", f"/v1/messages/{held['id']}")
    assert body["recipients"][0]["state"] == "deferred" and len(body["recipients"][0]["attempts"]) == 1

    # Only an admin resumes; then the held mail goes out (greylisting passes the 2nd attempt).
    status, _, out = call(stack, "POST", f"/v1/reputation/{SENDING_DOMAIN}/resume", key=bulk)
    assert status == 403, out
    status, _, out = call(stack, "POST", f"/v1/reputation/{SENDING_DOMAIN}/resume")
    assert status == 200 and out["state"] == "ok" and out["resumed_by"] and out["resumed_at"], out
    body = wait_for(stack, held["id"], lambda b: b["recipients"][0]["state"] == "delivered")
    r = body["recipients"][0]
    assert len(r["attempts"]) == 2 and r.get("waiting") is None

    # The domain sends again; the bulk key itself stays paused until it is resumed too.
    assert send(stack, "bob@accept.test", admin)[0] == 202
    status, out = send(stack, "bob@accept.test", bulk)
    assert status == 403 and out["error"]["field"] == "Authorization", out
    status, _, out = call(stack, "POST", f"/v1/reputation/keys/{bulk_rec['key_id']}/resume")
    assert status == 200 and out["state"] == "ok", out
    assert send(stack, "bob@accept.test", bulk)[0] == 202
