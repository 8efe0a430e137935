"""Webhooks (issue 12) with in-memory fakes: signatures as the independent `standardwebhooks`
package verifies them, the SSRF rules, the retry schedule, the dispatcher's steps (retry,
last attempt, hop, dedupe, replay, 3xx, re-check at delivery, 5-day disable), the sink's
fan-out and idempotence, rotation with a controllable clock, replay from the event log."""

from __future__ import annotations

import base64
import json
import ssl
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from outpost.clock import iso
from outpost.errors import InvalidRequestError, NotFoundError, WebhookTransportError, WebhookUrlError
from outpost.events import Event
from outpost.webhooks.dispatch import Dispatcher, body_of
from outpost.webhooks.http import HttpAnswer
from outpost.webhooks.jobs import DEFAULT_SCHEDULE, DISABLE_AFTER, WebhookJob, delay_after
from outpost.webhooks.records import WebhookEndpoint, WebhookSecret
from outpost.webhooks.service import WebhookService
from outpost.webhooks.signing import SECRET_BYTES, new_secret, signed_headers
from outpost.webhooks.sink import WebhookSink
from outpost.webhooks.ssrf import Target, check_url
from tests.fakes.store import FakeClock
from tests.fakes.webhooks import FakeEventLog, FakeWebhookJobs, FakeWebhooks

T0 = 1_800_000_000.0


def _event(n: int, type_: str = "message.delivered", ts: float = T0) -> Event:
    return Event(f"evt_{n:04d}", type_, iso(ts + n), f"m{n}", f"r{n}@example.org",
                 {"message_id": f"m{n}", "recipient": f"r{n}@example.org", "state": type_.split(".")[1], "tags": {}})


DNS = {"hooks.example.com": ["93.184.216.34"], "mixed.example.com": ["93.184.216.34", "10.0.0.1"],
       "inside.example.com": ["10.0.0.1"], "v6meta.example.com": ["fd00:ec2::254"],
       "cgnat.example.com": ["100.64.0.7"], "local.test": ["127.0.0.9"]}


def resolve(host: str) -> list[str]:
    return list(DNS.get(host, []))


# ---- signing -----------------------------------------------------------------------------------
def test_signatures_verify_with_standardwebhooks_and_a_changed_body_does_not() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == SECRET_BYTES
    body = b'{"type":"message.delivered","data":{"recipient":"a@b.test"}}'
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers([secret], "evt_1", now, body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"a@b", b"x@b"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_two_secrets_give_two_signatures_each_verifying() -> None:
    old, new = new_secret(), new_secret()
    body = b"{}"
    headers = signed_headers([new, old], "evt_2", int(datetime.now(UTC).timestamp()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)


# ---- SSRF --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "why"), [
    ("https://127.0.0.1/hooks", "not a public address"),
    ("https://localhost.localdomain/", "has no address"),
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
    ("https://[fd00:ec2::254]/", "metadata"),
    ("https://v6meta.example.com/", "metadata"),
    ("https://inside.example.com/", "10.0.0.1 is not a public address"),
    ("https://mixed.example.com/", "10.0.0.1"),  # one bad address refuses the name
    ("https://cgnat.example.com/", "100.64.0.7"),
    ("https://[::ffff:10.0.0.1]/", "not a public address"),
    ("https://224.0.0.1/", "not a public address"),
    ("https://[fc00::1]/", "not a public address"),
    ("http://hooks.example.com/", "only https"),
    ("ftp://hooks.example.com/", "only https"),
    ("https://user:pw@hooks.example.com/", "credentials"),
    ("https:///nohost", "no host"),
    ("http://127.0.0.9:8080/", "only https"),  # loopback over http: local stack only
])
def test_refused_in_aws(url: str, why: str) -> None:
    with pytest.raises(WebhookUrlError, match=why):
        check_url(url, resolve=resolve)


def test_a_public_https_url_is_pinned_to_the_address_that_was_checked() -> None:
    t = check_url("https://hooks.example.com:8443/in?x=1", resolve=resolve)
    assert t == Target("https", "hooks.example.com", 8443, "/in?x=1", "93.184.216.34", ("93.184.216.34",))


def test_the_local_stack_accepts_loopback_over_http_and_nothing_more() -> None:
    assert check_url("http://127.0.0.9:8080/h", resolve=resolve, allow_local=True).ip == "127.0.0.9"
    assert check_url("http://local.test:81/", resolve=resolve, allow_local=True).port == 81
    with pytest.raises(WebhookUrlError, match="10.0.0.1"):
        check_url("http://inside.example.com/", resolve=resolve, allow_local=True)
    with pytest.raises(WebhookUrlError, match="only https"):
        check_url("http://hooks.example.com/", resolve=resolve, allow_local=True)
    with pytest.raises(WebhookUrlError, match="metadata"):
        check_url("http://169.254.169.254/", resolve=resolve, allow_local=True)


# ---- schedule ----------------------------------------------------------------------------------
def test_the_schedule_is_the_issues_about_28_hours() -> None:
    assert [delay_after(n) for n in range(1, 9)] == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert 27 * 3600 < sum(DEFAULT_SCHEDULE) < 29 * 3600
    assert DISABLE_AFTER == 5 * 86400


# ---- the dispatcher ----------------------------------------------------------------------------
class Poster:
    """The HTTP side, scripted: answers (a code, or an exception) in order; records calls."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[Target, bytes, dict[str, str]]] = []

    def __call__(self, target: Target, body: bytes, headers: dict[str, str], *, context: Any) -> HttpAnswer:
        self.calls.append((target, body, dict(headers)))
        a = self.answers.pop(0) if self.answers else 200
        if isinstance(a, Exception):
            raise a
        return HttpAnswer(a, "", 12)


def _rig(*answers: int | Exception, url: str = "https://hooks.example.com/in",
         failing_since: float | None = None) -> tuple[Dispatcher, FakeWebhooks, FakeWebhookJobs, Poster, FakeClock]:
    store, queue, post, clock = FakeWebhooks(), FakeWebhookJobs(), Poster(*answers), FakeClock(T0)
    store.add_endpoint(WebhookEndpoint("wh_1", url, ("message.delivered",), iso(T0),
                                       secrets=(WebhookSecret(new_secret(), iso(T0)),), failing_since=failing_since))
    counts: list[str] = []
    d = Dispatcher(store, queue, resolve=resolve, context=ssl.create_default_context(), clock=clock,
                   count=lambda name, n: counts.append(name), post=post)
    d.counted = counts  # type: ignore[attr-defined]
    return d, store, queue, post, clock


def _job(**kw: Any) -> WebhookJob:
    e = _event(1)
    return WebhookJob(event_id=e.event_id, endpoint_id="wh_1", type=e.type, payload=e.payload(), **kw)


def test_a_failure_queues_the_next_attempt_on_the_schedule_with_the_same_webhook_id() -> None:
    d, store, queue, post, clock = _rig(500)
    assert d.run(_job()) == "retrying"
    (nxt, delay), = queue.sent
    assert (nxt.attempt, nxt.not_before, delay, nxt.event_id) == (2, T0 + 5, 5, "evt_0001")
    a = store.attempt_log[-1]
    assert (a.status, a.code, a.attempt, a.error, a.next_at) == ("retrying", 500, 1, "HTTP 500", iso(T0 + 5))
    assert store.endpoint("wh_1").failing_since == T0  # type: ignore[union-attr]
    clock.advance(5)
    queue.sent.clear()
    assert d.run(nxt) == "delivered"
    assert [c[2]["webhook-id"] for c in post.calls] == ["evt_0001", "evt_0001"]
    assert post.calls[0][2]["webhook-timestamp"] == str(int(T0)) and post.calls[1][2]["webhook-timestamp"] == str(
        int(T0 + 5))
    assert post.calls[0][1] == body_of(nxt) == post.calls[1][1]
    assert store.endpoint("wh_1").failing_since is None  # type: ignore[union-attr]
    assert queue.sent == []


def test_after_the_last_attempt_the_delivery_is_failed_and_nothing_more_is_queued() -> None:
    d, store, queue, post, clock = _rig(*[WebhookTransportError("refused")] * 8)
    job = _job()
    for n in range(1, 9):
        outcome = d.run(job)
        if n < 8:
            assert outcome == "retrying"
            (job, delay), = queue.sent
            queue.sent.clear()
            assert delay == DEFAULT_SCHEDULE[n - 1] and job.attempt == n + 1
            clock.now = job.not_before  # type: ignore[assignment]
    assert outcome == "failed" and queue.sent == []
    assert [a.status for a in store.attempt_log] == ["retrying"] * 7 + ["failed"]
    assert store.attempt_log[-1].error == "refused" and store.attempt_log[-1].attempt == 8
    assert "WebhookFailed" in d.counted  # type: ignore[attr-defined]


def test_a_job_due_later_than_sqs_can_wait_hops_without_an_attempt() -> None:
    d, store, queue, post, _ = _rig()
    assert d.run(_job(not_before=T0 + 7200)) == "hop"
    assert post.calls == [] and queue.sent[0][1] == 7200 and store.attempt_log == []


def test_a_redirect_is_a_failed_attempt_and_is_not_followed() -> None:
    d, store, _, post, _ = _rig(302)
    assert d.run(_job()) == "retrying"
    assert len(post.calls) == 1 and "redirects are not followed" in (store.attempt_log[-1].error or "")


def test_the_address_is_checked_again_at_delivery() -> None:
    d, store, _, post, _ = _rig(url="https://inside.example.com/in")
    assert d.run(_job()) == "retrying"
    assert post.calls == [] and store.attempt_log[-1].error.startswith("refused: ")  # type: ignore[union-attr]


def test_a_delivered_event_is_not_sent_again_unless_replayed() -> None:
    d, store, _, post, _ = _rig()
    assert d.run(_job()) == "delivered"
    assert d.run(_job()) == "duplicate"
    assert d.run(_job(replay=True)) == "delivered"
    assert len(post.calls) == 2


def test_an_endpoint_failing_for_five_days_is_disabled_and_its_jobs_end() -> None:
    d, store, queue, post, clock = _rig(500, failing_since=T0 - DISABLE_AFTER)
    assert d.run(_job()) == "retrying"  # this attempt's retry is queued before the verdict
    e = store.endpoint("wh_1")
    assert e is not None and not e.enabled and e.disabled_at == iso(T0) and "since" in (e.disabled_reason or "")
    assert "WebhookEndpointDisabled" in d.counted  # type: ignore[attr-defined]
    (retry, _), = queue.sent
    clock.advance(5)
    assert d.run(retry) == "disabled" and len(post.calls) == 1
    assert store.attempt_log[-1].status == "failed" and store.attempt_log[-1].error == "endpoint disabled"
    assert e.view()["enabled"] is False and "disabled_at" in e.view()


def test_a_disabled_endpoint_enabled_again_gets_its_events_and_says_what_it_missed() -> None:
    d, store, queue, post, clock = _rig(500, 200, failing_since=T0 - DISABLE_AFTER)
    d.run(_job())
    assert store.endpoint("wh_1").enabled is False  # type: ignore[union-attr]
    svc = WebhookService(store, queue, resolve=resolve, clock=clock)
    clock.advance(3600)
    out = svc.enable("wh_1")
    assert out["enabled"] is True and out["missed_since"] == iso(T0) and "disabled_at" not in out
    e = store.endpoint("wh_1")
    assert e is not None and e.enabled and e.failing_since is None and e.disabled_reason is None
    assert d.run(_job(replay=True)) == "delivered"
    assert svc.enable("wh_1")["missed_since"] is None  # enabling an enabled endpoint changes nothing
    with pytest.raises(NotFoundError):
        svc.enable("wh_0000000000000000")


def test_enabling_checks_the_url_again() -> None:
    d, store, queue, _, clock = _rig(url="https://inside.example.com/in")
    with pytest.raises(InvalidRequestError) as exc:
        WebhookService(store, queue, resolve=resolve, clock=clock).enable("wh_1")
    assert exc.value.field == "url"


def test_one_success_in_a_batch_ends_the_failing_period() -> None:
    d, store, queue, post, clock = _rig(500, 200, failing_since=T0 - DISABLE_AFTER)
    e1, e2 = _event(1), _event(2)
    jobs = [WebhookJob(event_id=e.event_id, endpoint_id="wh_1", type=e.type, payload=e.payload()) for e in (e1, e2)]
    assert sorted(d.run_batch(jobs)) == ["delivered", "retrying"]  # type: ignore[type-var]
    e = store.endpoint("wh_1")
    assert e is not None and e.enabled and e.failing_since is None and e.last_success_at == iso(T0)


def test_failing_for_less_than_five_days_keeps_the_endpoint() -> None:
    d, store, _, _, _ = _rig(500, failing_since=T0 - DISABLE_AFTER + 60)
    assert d.run(_job()) == "retrying" and store.endpoint("wh_1").enabled  # type: ignore[union-attr]


def test_a_batch_reports_only_the_jobs_whose_steps_raised() -> None:
    d, store, queue, _, _ = _rig()

    class Broken(FakeWebhooks):
        def record_attempt(self, attempt: Any, now: float) -> None:
            raise RuntimeError("table down")

    broken = Broken()
    broken.endpoints_by_id = store.endpoints_by_id
    d.store = broken
    good = {"messageId": "a", "body": _job(not_before=T0 + 3600).model_dump_json()}
    bad = {"messageId": "b", "body": _job().model_dump_json()}
    junk = {"messageId": "c", "body": "{not json"}
    assert d.handle_sqs_event({"Records": [good, bad, junk]}) == {"batchItemFailures": [{"itemIdentifier": "b"}]}


# ---- the sink ----------------------------------------------------------------------------------
def test_the_sink_queues_one_job_per_event_and_subscribed_enabled_endpoint_once() -> None:
    store, queue = FakeWebhooks(), FakeWebhookJobs()
    secret = (WebhookSecret(new_secret(), iso(T0)),)
    store.add_endpoint(WebhookEndpoint("wh_a", "https://a.example/", ("message.delivered",), iso(T0), secrets=secret))
    store.add_endpoint(WebhookEndpoint("wh_b", "https://b.example/", ("message.bounced", "message.delivered"),
                                       iso(T0), secrets=secret))
    store.add_endpoint(WebhookEndpoint("wh_c", "https://c.example/", ("message.delivered",), iso(T0),
                                       secrets=secret, enabled=False))
    sink = WebhookSink(store, queue, clock=FakeClock(T0))
    events = [_event(1), _event(2, "message.bounced"), _event(3, "message.deferred")]
    sink.publish(events)
    jobs = queue.take()
    assert sorted((j.endpoint_id, j.event_id) for j in jobs) == [
        ("wh_a", "evt_0001"), ("wh_b", "evt_0001"), ("wh_b", "evt_0002")]
    assert all(j.payload == events[int(j.event_id[-1]) - 1].payload() and j.attempt == 1 for j in jobs)
    sink.publish(events)  # the same events again (a retried stream batch): nothing new
    assert queue.take() == []


# ---- rotation and replay (the service) ---------------------------------------------------------
def _service(log: FakeEventLog | None = None) -> tuple[WebhookService, FakeWebhooks, FakeWebhookJobs, FakeClock]:
    store, queue, clock = FakeWebhooks(), FakeWebhookJobs(), FakeClock(T0)
    return WebhookService(store, queue, resolve=resolve, log=log, clock=clock), store, queue, clock


def test_rotation_signs_with_both_secrets_for_24_hours_then_only_the_new_one() -> None:
    svc, store, _, clock = _service()
    created = svc.create("https://hooks.example.com/in", ["message.delivered"], "prod")
    old = created["secret"]
    clock.advance(3600)
    rotated = svc.rotate(created["id"])
    new = rotated["secret"]
    assert new != old and rotated["previous_secret_expires_at"] == iso(T0 + 3600 + 86400)
    e = store.endpoint(created["id"])
    assert e is not None
    assert e.signing_secrets(clock.now) == [new, old]
    assert e.signing_secrets(T0 + 3600 + 86400 - 1) == [new, old]
    assert e.signing_secrets(T0 + 3600 + 86400) == [new]
    assert "secret" not in svc.get(created["id"]) and "secret" not in svc.list_endpoints()["items"][0]


def test_create_refuses_unknown_event_types_and_unsafe_urls_naming_the_field() -> None:
    svc, _, _, _ = _service()
    with pytest.raises(InvalidRequestError) as exc:
        svc.create("https://hooks.example.com/", ["message.opened"])
    assert exc.value.field == "events"
    with pytest.raises(InvalidRequestError) as exc:
        svc.create("https://169.254.169.254/", ["message.delivered"])
    assert exc.value.field == "url" and "metadata" in exc.value.message


def test_replay_queues_the_subscribed_events_since_a_time_oldest_first_as_replays() -> None:
    log = FakeEventLog([_event(n, "message.bounced" if n % 3 == 0 else "message.delivered") for n in range(1, 400)])
    svc, _, queue, _ = _service(log)
    wh = svc.create("https://hooks.example.com/", ["message.delivered"])
    out = svc.replay(wh["id"], datetime.fromtimestamp(T0 + 100, UTC))
    jobs = queue.take()
    want = [e.event_id for e in log.items if e.type == "message.delivered" and e.timestamp >= iso(T0 + 100)]
    assert [j.event_id for j in jobs] == want and out["replayed"] == len(want) and out["next_since"] is None
    assert all(j.replay and j.endpoint_id == wh["id"] for j in jobs)
    assert log.queries >= 2  # more than one page of the log



def test_replay_reads_a_bounded_number_of_pages_and_says_where_to_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint of a rare type over a large log: one request reads REPLAY_READS pages, then
    answers with `next_since` at the last event read; following it reaches the rare events."""
    import outpost.webhooks.service as wsvc

    monkeypatch.setattr(wsvc, "REPLAY_READS", 3)
    monkeypatch.setattr(wsvc, "REPLAY_PAGE", 10)
    log = FakeEventLog([_event(n, "message.bounced" if n in (95, 96) else "message.delivered")
                        for n in range(1, 100)])
    svc, _, queue, _ = _service(log)
    wh = svc.create("https://hooks.example.com/", ["message.bounced"])
    since, last, calls, got = datetime.fromtimestamp(T0, UTC), iso(T0), 0, []
    while True:
        before = log.queries
        out = svc.replay(wh["id"], since)
        calls += 1
        assert log.queries - before <= 3  # bounded per request
        got += [j.event_id for j in queue.take()]
        if out["next_since"] is None:
            break
        assert out["replayed"] == 0 and out["next_since"] > last  # progress, nothing skipped
        last = out["next_since"]
        since = datetime.fromisoformat(last)
    assert got == [e.event_id for e in log.items if e.type == "message.bounced"] and calls == 4
