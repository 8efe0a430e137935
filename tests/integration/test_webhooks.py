"""Webhooks (issue 12) on the local stack: the HTTP API, DynamoDB Local, the local SQS and the
dispatcher function's poller, real HTTP receivers on loopback (outpost_local.webhook_receiver)
that verify every signature with the independent `standardwebhooks` package, and the local DNS
server for the SSRF cases. Events are published straight to the WebhookSink (the events
function, issue 12 item 1, hands them over the same way)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from outpost.clock import iso
from outpost.events import Event
from outpost_local.webhook_receiver import WebhookReceiver
from tests.conftest import Api
from tests.fakes.webhooks import FakeEventLog

pytestmark = pytest.mark.timeout(900)

_octets = iter(range(21, 60))


def _events(n: int, type_: str = "message.delivered", start: float | None = None) -> list[Event]:
    run, t = secrets.token_hex(4), start if start is not None else float(int(time.time()))
    return [Event(f"evt_{run}_{i:04d}", type_, iso(t + i), f"m{run}{i}", f"r{i}@example.org",
                  {"message_id": f"m{run}{i}", "recipient": f"r{i}@example.org", "state": type_.split(".")[1],
                   "tags": {"run": run}}) for i in range(n)]


def _wait(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def receivers(local_stack: Any) -> Iterator[Callable[..., WebhookReceiver]]:
    started: list[WebhookReceiver] = []

    def make(**kw: Any) -> WebhookReceiver:
        r = WebhookReceiver(f"127.0.2.{next(_octets)}", 0, **kw).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def hooks(api: Api) -> Iterator[Callable[..., dict]]:
    """Register endpoints through the API; every one is deleted when the test ends (its
    remaining jobs then end as `gone`)."""
    made: list[str] = []

    def register(url: str, events: list[str] | None = None, secret_to: WebhookReceiver | None = None) -> dict:
        status, body = api.call("POST", "/v1/webhooks", {"url": url, "events": events or ["message.delivered"],
                                                          "description": "test"})
        assert status == 201, body
        made.append(body["id"])
        if secret_to is not None:
            secret_to.secrets.append(body["secret"])
        return body

    yield register
    for wid in made:
        api.call("DELETE", f"/v1/webhooks/{wid}")


def _own(webhook_id: str | None) -> bool:
    """One of this module's own events (evt_<run>_<n>, from _events): the local stack's stream
    also hands real events to the sink, from other tests' messages still changing state, and a
    receiver subscribed to message.delivered may get one of those too."""
    return (webhook_id or "").count("_") == 2


def mine(rx: WebhookReceiver) -> list[Any]:
    """The receiver's 2xx answers to this module's own events."""
    return [r for r in rx.accepted() if _own(r.webhook_id)]


def mine_ids(rx: WebhookReceiver) -> Counter[str]:
    return Counter(r.webhook_id for r in mine(rx))


def publish(events: list[Event]) -> None:
    from outpost.bootstrap import webhook_sink

    webhook_sink().publish(events)


def deliveries(api: Api, wid: str) -> list[dict]:
    status, body = api.call("GET", f"/v1/webhooks/{wid}")
    assert status == 200, body
    return [d for d in body["deliveries"] if _own(d.get("event_id"))]


# ---- the API -----------------------------------------------------------------------------------
def test_the_routes_answer_the_contract(api: Api, local_stack: Any, receivers: Any) -> None:
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    rx = receivers()
    status, body = api.call("POST", "/v1/webhooks", {"url": rx.url, "events": ["message.delivered",
                                                                                "message.bounced"],
                                                     "description": "billing"})
    assert status == 201 and set(body) >= {"id", "url", "events", "secret"}, body
    assert body["secret"].startswith("whsec_") and body["events"] == ["message.delivered", "message.bounced"]
    wid = body["id"]
    status, listed = api.call("GET", "/v1/webhooks")
    mine = [w for w in listed["items"] if w["id"] == wid]
    assert status == 200 and mine and "secret" not in mine[0] and "secret" not in json.dumps(listed)
    status, one = api.call("GET", f"/v1/webhooks/{wid}")
    assert status == 200 and one["deliveries"] == [] and "secret" not in one and one["enabled"] is True
    status, rotated = api.call("POST", f"/v1/webhooks/{wid}/rotate")
    assert status == 200 and rotated["secret"].startswith("whsec_") and rotated["secret"] != body["secret"]
    from outpost.bootstrap import webhook_store

    webhook_store().update_endpoint(wid, enabled=False, disabled_at="2026-01-01T00:00:00Z",
                                        disabled_reason="every attempt failed")
    status, enabled = api.call("POST", f"/v1/webhooks/{wid}/enable")
    assert status == 200 and enabled["enabled"] is True and enabled["missed_since"] == "2026-01-01T00:00:00Z"
    assert "disabled_at" not in api.call("GET", f"/v1/webhooks/{wid}")[1]
    for bad, field in (({"url": "ftp://example.com/", "events": ["message.delivered"]}, "url"),
                       ({"url": "http://10.0.0.1/x", "events": ["message.delivered"]}, "url"),
                       ({"url": rx.url, "events": ["message.opened"]}, "events"),
                       ({"url": rx.url, "events": []}, "events")):
        status, err = api.call("POST", "/v1/webhooks", bad)
        assert status == 422 and err["error"]["field"] == field, (bad, err)
    status, err = api.call("POST", f"/v1/webhooks/{wid}/replay", {"since": "yesterday"})
    assert status == 422 and err["error"]["field"] == "since", err
    key, _ = KeyRing(api_keys_table()).create("sender only", ["send", "read"])
    assert api.call("GET", "/v1/webhooks", key=key)[0] == 403
    assert api.call("POST", "/v1/webhooks", {"url": rx.url, "events": ["message.delivered"]}, key=key)[0] == 403
    assert api.call("DELETE", f"/v1/webhooks/{wid}")[0] == 200
    assert api.call("GET", f"/v1/webhooks/{wid}")[0] == 404
    assert api.call("DELETE", f"/v1/webhooks/{wid}")[0] == 404
    doc = api.call("GET", "/openapi.json", key=None)[1]
    assert {"/v1/webhooks", "/v1/webhooks/{webhook_id}", "/v1/webhooks/{webhook_id}/rotate",
            "/v1/webhooks/{webhook_id}/replay", "/v1/webhooks/{webhook_id}/enable"} <= set(doc["paths"])


# ---- signatures ----------------------------------------------------------------------------------
def test_subscribed_events_arrive_signed_and_verified_by_standardwebhooks(api: Api, receivers: Any,
                                                                          hooks: Any) -> None:
    rx = receivers()
    wh = hooks(rx.url, ["message.delivered", "message.bounced"], secret_to=rx)
    evs = _events(2) + _events(1, "message.bounced") + _events(2, "message.deferred")
    publish(evs)
    _wait(lambda: len(mine(rx)) >= 3, 60, "three deliveries")
    time.sleep(1.0)
    got = mine(rx)
    assert sorted(r.webhook_id for r in got) == sorted(e.event_id for e in evs[:3])  # not the deferred ones
    by_id = {e.event_id: e for e in evs}
    for r in got:
        assert r.verified is True, r.error
        Webhook(wh["secret"]).verify(r.body, {"webhook-id": r.webhook_id, "webhook-timestamp": r.timestamp,
                                              "webhook-signature": r.signature})
        assert r.payload == by_id[r.webhook_id].payload() and abs(int(r.timestamp) - time.time()) < 120
    _wait(lambda: len(deliveries(api, wh["id"])) >= 3, 30, "three recorded attempts")
    d = deliveries(api, wh["id"])
    assert {(x["status"], x["code"]) for x in d} == {("delivered", 200)} and all("duration_ms" in x for x in d)


# ---- at least once ---------------------------------------------------------------------------------
def test_a_receiver_down_for_a_while_gets_every_event_after_it_is_back(api: Api, receivers: Any,
                                                                        hooks: Any) -> None:
    rx = receivers()
    rx.stop()  # down (its address and port are kept)
    wh = hooks(rx.url, secret_to=rx)
    evs = _events(5)
    publish(evs)
    _wait(lambda: sum(d["status"] == "retrying" for d in deliveries(api, wh["id"])) >= 10, 90,
          "two failed attempts per event")
    failed = deliveries(api, wh["id"])
    assert all(d["code"] is None and "Connection" in d["error"] for d in failed), failed
    rx.start()
    _wait(lambda: len(mine_ids(rx)) == 5, 120, "every event after recovery")
    time.sleep(2)
    assert mine_ids(rx) == {e.event_id: 1 for e in evs}
    assert all(r.verified for r in mine(rx))


def test_retries_carry_the_same_webhook_id_and_each_is_signed_anew(receivers: Any, hooks: Any) -> None:
    rx = receivers(fail_ratio=1.0, max_failures=2)  # 500 twice per event, then 200
    hooks(rx.url, secret_to=rx)
    evs = _events(3)
    publish(evs)
    _wait(lambda: len(mine_ids(rx)) == 3, 90, "three deliveries after two 500s each")
    for e in evs:
        seen = [r for r in rx.received if r.webhook_id == e.event_id]
        assert [r.answered for r in seen] == [500, 500, 200]
        assert all(r.verified for r in seen) and len({r.timestamp for r in seen}) >= 2


# ---- rotation and replay -----------------------------------------------------------------------------
def test_rotation_both_secrets_verify_during_the_overlap_only_the_new_one_after(receivers: Any,
                                                                                hooks: Any) -> None:
    from outpost.bootstrap import webhook_queue, webhook_store
    from outpost.webhooks.service import WebhookService

    rx = receivers()
    during = hooks(rx.url.replace("/hooks", "/during"))
    after = hooks(rx.url.replace("/hooks", "/after"))
    now = time.time()
    clock = {"now": now}
    svc = WebhookService(webhook_store(), webhook_queue(), resolve=lambda h: [], allow_local=True,
                         clock=lambda: clock["now"])
    new_during = svc.rotate(during["id"])["secret"]  # at now: the old one signs until now + 24 h
    clock["now"] = now - 86400 - 60  # a rotation 24 h and a minute ago: its overlap is over
    new_after = svc.rotate(after["id"])["secret"]
    evs = _events(1)
    publish(evs)
    _wait(lambda: len([r for r in rx.received if _own(r.webhook_id)]) >= 2, 60, "one event at each endpoint")
    got = {r.path: r for r in rx.received if _own(r.webhook_id)}

    def verifies(secret: str, path: str) -> bool:
        r = got[path]
        try:
            Webhook(secret).verify(r.body, {"webhook-id": r.webhook_id, "webhook-timestamp": r.timestamp,
                                            "webhook-signature": r.signature})
            return True
        except WebhookVerificationError:
            return False

    assert len(got["/during"].signature.split(" ")) == 2
    assert verifies(during["secret"], "/during") and verifies(new_during, "/during")
    assert len(got["/after"].signature.split(" ")) == 1
    assert verifies(new_after, "/after") and not verifies(after["secret"], "/after")


def test_replay_sends_the_subscribed_events_since_a_time_again_with_their_ids(api: Api, receivers: Any,
                                                                              hooks: Any) -> None:
    from outpost.bootstrap import webhook_queue, webhook_store
    from outpost.webhooks.service import WebhookService

    rx = receivers()
    wh = hooks(rx.url, secret_to=rx)
    t0 = float(int(time.time()) - 600)
    evs = _events(6, start=t0) + _events(2, "message.bounced", start=t0 + 1)
    publish(evs)
    _wait(lambda: len(mine_ids(rx)) == 6, 60, "the first deliveries")
    log = FakeEventLog(evs)
    svc = WebhookService(webhook_store(), webhook_queue(), resolve=lambda h: [], allow_local=True, log=log)
    out = svc.replay(wh["id"], datetime.fromtimestamp(t0 + 3, UTC))
    assert out["replayed"] == 3
    _wait(lambda: sum(mine_ids(rx).values()) == 9, 60, "three replays")
    assert mine_ids(rx) == {e.event_id: (2 if i >= 3 else 1) for i, e in enumerate(evs[:6])}
    assert all(r.verified for r in mine(rx))
    _wait(lambda: sum(bool(d.get("replay")) for d in deliveries(api, wh["id"])) == 3, 30, "replays recorded")


# ---- SSRF ------------------------------------------------------------------------------------------
def test_aws_rules_refuse_loopback_metadata_and_a_name_resolving_to_a_private_address(local_stack: Any,
                                                                                      api: Api) -> None:
    from outpost.bootstrap import webhook_queue, webhook_store
    from outpost.errors import InvalidRequestError
    from outpost.webhooks.service import WebhookService
    from outpost.webhooks.ssrf import dns_resolve

    local_stack.dns.add("evil.test", "A", "10.0.0.1")
    aws = WebhookService(webhook_store(), webhook_queue(), resolve=dns_resolve(local_stack.dns.resolver()),
                         allow_local=False)
    for url, why in (("https://127.0.0.1/hooks", "127.0.0.1 is not a public address"),
                     ("http://127.0.2.20:8080/hooks", "only https"),
                     ("https://169.254.169.254/latest/meta-data/", "metadata"),
                     ("https://evil.test/hooks", "evil.test resolves to 10.0.0.1")):
        with pytest.raises(InvalidRequestError) as exc:
            aws.create(url, ["message.delivered"])
        assert exc.value.field == "url" and why in exc.value.message, (url, exc.value.message)
    # and through the API of the local stack, whose own allowance is loopback only
    status, err = api.call("POST", "/v1/webhooks", {"url": "http://evil.test:8080/x", "events": ["message.delivered"]})
    assert status == 422 and err["error"]["field"] == "url" and "10.0.0.1" in err["error"]["message"]


def test_the_address_is_checked_again_at_each_delivery(local_stack: Any, api: Api, receivers: Any,
                                                        hooks: Any) -> None:
    rx = receivers()
    name = f"rebind{secrets.token_hex(3)}.test"
    local_stack.dns.add(name, "A", rx.host)
    wh = hooks(f"http://{name}:{rx.port}/hooks", secret_to=rx)  # accepted: loopback, locally
    local_stack.dns.remove(name)
    local_stack.dns.add(name, "A", "10.0.0.1")  # and now it points inside
    publish(_events(1))
    _wait(lambda: deliveries(api, wh["id"]), 60, "a recorded attempt")
    d = deliveries(api, wh["id"])[-1]
    assert d["status"] == "retrying" and d["error"].startswith("refused: ") and "10.0.0.1" in d["error"], d
    assert rx.received == []


def test_a_redirect_is_not_followed(api: Api, receivers: Any, hooks: Any) -> None:
    inside = receivers()
    rx = receivers(redirect_to=inside.url)
    wh = hooks(rx.url, secret_to=rx)
    publish(_events(1))
    _wait(lambda: deliveries(api, wh["id"]), 60, "a recorded attempt")
    d = deliveries(api, wh["id"])[-1]
    assert d["code"] == 302 and d["status"] == "retrying" and "not followed" in d["error"]
    time.sleep(2)
    assert inside.received == [] and len(rx.received) >= 1


def test_a_100_mb_answer_is_read_only_up_to_the_cap(api: Api, receivers: Any, hooks: Any) -> None:
    # It sends 1 MB of its 100 MB and then holds the connection: a client that read the whole
    # answer would wait for the 10 s deadline and fail; the capped read (64 KB) returns at once.
    rx = receivers(body_bytes=100 * 1024 * 1024, stall_after=1024 * 1024)
    wh = hooks(rx.url, secret_to=rx)
    publish(_events(1))
    _wait(lambda: deliveries(api, wh["id"]), 60, "a recorded attempt")
    d = deliveries(api, wh["id"])[-1]
    assert d["status"] == "delivered" and d["code"] == 200, d
    assert d["duration_ms"] < 8000 and len(d.get("response", "")) <= 200
    assert rx.bytes_sent <= 1024 * 1024


# ---- isolation -------------------------------------------------------------------------------------
def test_an_endpoint_that_never_answers_does_not_delay_another(api: Api, receivers: Any, hooks: Any) -> None:
    from outpost.bootstrap import webhook_dispatcher
    from outpost.webhooks.records import WebhookEndpoint
    from outpost.webhooks.sink import job_for

    slow, fast = receivers(hang=True), receivers()
    wh_slow, wh_fast = hooks(slow.url), hooks(fast.url, secret_to=fast)
    ev = _events(1)[0]

    def record(wh: dict, n: int) -> dict:
        ep = WebhookEndpoint(wh["id"], wh["url"], tuple(wh["events"]), "")
        return {"messageId": str(n), "body": job_for(ev, ep).model_dump_json()}

    batch = {"Records": [record(wh_slow, 1), record(wh_fast, 2)]}  # the dead one first
    started = time.monotonic()
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(webhook_dispatcher().handle_sqs_event(batch)))
    t.start()
    _wait(lambda: mine(fast), 30, "the healthy endpoint's delivery", step=0.05)
    fast_after = time.monotonic() - started
    t.join(60)
    total = time.monotonic() - started
    assert fast_after < 6.0, fast_after  # not behind the dead endpoint's 10 s
    assert 9.5 <= total < 20, total  # the dead endpoint's attempt ends at its 10 s deadline
    assert result == {"batchItemFailures": []}
    d = deliveries(api, wh_slow["id"])[-1]
    assert d["status"] == "retrying" and "timed out" in d["error"] and d["duration_ms"] >= 9500, d


def test_1000_events_to_a_receiver_failing_half_the_time_arrive_exactly_once(api: Api, receivers: Any,
                                                                            hooks: Any) -> None:
    # 500 half the time (a seeded RNG), at most four times per webhook-id, so that every event
    # can arrive within its eight attempts (the schedule's end is tests/unit's).
    rx = receivers(fail_ratio=0.5, max_failures=4)
    hooks(rx.url, secret_to=rx)
    evs = _events(1000)
    started = time.monotonic()
    publish(evs)
    _wait(lambda: len(mine_ids(rx)) == 1000, 600, "1,000 deliveries", step=1.0)
    elapsed = time.monotonic() - started
    time.sleep(3)  # anything late (a duplicate) would show now
    counts = mine_ids(rx)
    twice = {i: [(r.answered, r.timestamp) for r in rx.received if r.webhook_id == i]
             for i, n in counts.items() if n > 1}
    assert set(counts) == {e.event_id for e in evs} and not twice, twice
    assert all(r.verified for r in mine(rx)), [r.error for r in mine(rx) if not r.verified][:3]
    failures = sum(1 for r in rx.received if r.answered == 500)
    assert 300 < failures < 1300, failures  # it did answer 500 about half the time
    print(f"\n1000 events, {failures} answered 500 and retried, all delivered once in {elapsed:.1f} s")


# ---- make demo's part ------------------------------------------------------------------------------
def test_the_demo_shows_delivered_and_bounced_events_verified_and_catches_a_bad_signature(
        local_stack: Any, api: Api, capsys: Any) -> None:
    from outpost_local import webhook_demo
    from outpost_local.demo import http

    wh = webhook_demo.register(local_stack, http)
    try:
        results = {"alice@accept.test": {"state": "delivered", "message_id": "m" + secrets.token_hex(6)},
                   "nobody@reject.test": {"state": "bounced", "message_id": "m" + secrets.token_hex(6),
                                          "bounce": {"kind": "hard", "reason": "unknown_user", "status": "5.1.1",
                                                     "diagnostic": "550 5.1.1 no such user"}}}
        expected = {a: r["state"] for a, r in results.items()}
        assert webhook_demo.show(local_stack, expected, lambda: webhook_demo.publish_outcomes(results))
        out = capsys.readouterr().out
        assert out.count("signature verified") == 2 and "BAD" not in out
        bounced = next(r for r in local_stack.webhooks.accepted() if r.payload["type"] == "message.bounced")
        assert bounced.payload["data"]["bounce"]["status"] == "5.1.1"
        local_stack.webhooks.secrets[:] = ["whsec_" + "A" * 44]  # a receiver with the wrong secret
        again = {a: dict(r, message_id=r["message_id"] + "x") for a, r in results.items()}
        assert not webhook_demo.show(local_stack, expected, lambda: webhook_demo.publish_outcomes(again), timeout=5)
        assert "NOT verified" in capsys.readouterr().out
    finally:
        local_stack.webhooks.secrets.clear()
        api.call("DELETE", f"/v1/webhooks/{wh['id']}")
