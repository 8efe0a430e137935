"""Issue 12 on the embedded local stack: every recipient state change, made by the real API,
sender and bounce processor against real MX hosts, reaches the event log through MessagesTable's
real stream (DynamoDB Local), the stream poller and the events function; GET /v1/events reads it.

Each path gives exactly the expected events, in order; a record read twice, a batch retried
after a sink failure and a writer that "dies" right after its write give every event once.
EventBridge: a rule on a bus in moto's server targeting an SQS queue receives the events.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from outpost.bootstrap import event_log, message_store
from outpost.clock import iso
from outpost.events import EVENT_TYPES
from outpost.events.bus import EventBus
from outpost.events.service import EventService
from outpost.models import RecipientState
from outpost.records import Attempt
from outpost.store import committed_message, recipient_change
from outpost_local.mx import Greylist, RcptReply
from outpost_local.stack import SENDING_DOMAIN
from tests.fakes.events import RecordingSink
from tests.integration.test_bounce_processor import _deliver_to_s3, _invoke, _s3_event, _sent_and_received

pytestmark = pytest.mark.timeout(240)


def _send(api, to, **extra) -> str:
    status, res = api.call("POST", "/v1/messages", {"from": f"shop@{SENDING_DOMAIN}", "to": to,
                                                    "subject": "events", "text": "hi",
                                                    "tags": {"flow": "events"}, **extra})
    assert status == 202, res
    return str(res["id"])


def _events(api, message_id: str, **query: Any) -> list[dict]:
    """Every event of a message from GET /v1/events (all pages), oldest first."""
    out: list[dict] = []
    cursor = None
    while True:
        q = "&".join(f"{k}={v}" for k, v in {"message_id": message_id, "limit": 100, **query,
                                               **({"cursor": cursor} if cursor else {})}.items())
        status, body = api.call("GET", f"/v1/events?{q}")
        assert status == 200, body
        out.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return out[::-1]


def _wait_types(api, message_id: str, last: str, timeout: float = 90) -> list[dict]:
    """The message's events once one of type `last` is there (the stream is asynchronous),
    plus a moment for any duplicate to show up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _events(api, message_id)
        if any(e["type"] == last for e in got):
            time.sleep(1.0)
            return _events(api, message_id)
        time.sleep(0.25)
    raise AssertionError(f"no {last} for {message_id}: {json.dumps(_events(api, message_id), indent=1)}")


def _check(events: list[dict], types: list[str], message_id: str, recipient: str) -> None:
    assert [e["type"] for e in events] == types, json.dumps(events, indent=1)
    assert len({e["id"] for e in events}) == len(events)  # no duplicate
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    for e in events:
        assert e["type"] in EVENT_TYPES and e["data"]["state"] == e["type"].removeprefix("message.")
        assert e["data"]["message_id"] == message_id and e["data"]["recipient"] == recipient
        assert e["data"]["tags"] == {"flow": "events"} or e["data"]["tags"] == {}


@pytest.fixture(scope="module")
def slow_mx(local_stack, mx_factory_module):
    """slowgrey.test: 451 for the first two attempts, then 250 (counted, not timed: under CI
    load a retry can come later than the schedule's 1 s); never.test: 451 for ever."""
    for n, (domain, behaviour) in enumerate((("slowgrey.test", RcptReply(451, "4.7.1 Greylisted, please retry",
                                                                          times=2)),
                                             ("never.test", Greylist(delay_seconds=10**6))), start=40):
        ip, name = local_stack.config.ip(n), f"mx.{domain}"
        mx_factory_module(ip, local_stack.smtp_port, behaviour, local_stack.pki.server_context(name), hostname=name)
        local_stack.dns.add(domain, "MX", (10, name))
        local_stack.dns.add(name, "A", ip)
    return local_stack


# ---- every state path -------------------------------------------------------------------------
def test_queued_then_delivered_with_the_attempt(api):
    mid = _send(api, ["ev-ok@accept.test"])
    got = _wait_types(api, mid, "message.delivered")
    _check(got, ["message.queued", "message.delivered"], mid, "ev-ok@accept.test")
    attempt = got[1]["data"]["attempt"]
    assert attempt["mx"] == "mx.accept.test" and attempt["code"] == 250 and attempt["status"] == "2.0.0"
    assert attempt["tls"]["verified"] is True and attempt["ip"]
    assert got[0]["data"]["tags"] == {"flow": "events"} and "attempt" not in got[0]["data"]


def test_deferred_twice_then_delivered_is_one_deferred_event_per_attempt(api, slow_mx):
    mid = _send(api, ["ev-slow@slowgrey.test"])
    got = _wait_types(api, mid, "message.delivered")
    _check(got, ["message.queued", "message.deferred", "message.deferred", "message.delivered"], mid,
           "ev-slow@slowgrey.test")
    assert [e["data"]["attempt"]["code"] for e in got[1:]] == [451, 451, 250]


def test_bounced_by_smtp(api):
    mid = _send(api, ["ev-ghost@reject.test"])
    got = _wait_types(api, mid, "message.bounced")
    _check(got, ["message.queued", "message.bounced"], mid, "ev-ghost@reject.test")
    assert got[1]["data"]["bounce"]["kind"] == "hard" and got[1]["data"]["bounce"]["status"] == "5.1.1"


def test_bounced_by_dsn_after_delivered(api):
    mid = _send(api, ["ev-later@bounce-later.test"])
    got = _wait_types(api, mid, "message.bounced")
    _check(got, ["message.queued", "message.delivered", "message.bounced"], mid, "ev-later@bounce-later.test")
    bounce = got[2]["data"]["bounce"]
    assert bounce["status"] == "5.1.1" and "5.1.1" in bounce["diagnostic"] and bounce["kind"] == "hard"


def test_complained(api, local_stack):
    mid, addr, received = _sent_and_received(api, local_stack, "ev-annoyed")
    original = f"Return-Path: <{received.mail_from}>\r\n" + received.data.decode()
    arf = ("From: feedback@mailbox-provider.test\r\nTo: abuse@bounces.outpost.test\r\nSubject: FW: complaint\r\n"
           'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n\r\n'
           "--arf\r\nContent-Type: text/plain\r\n\r\nabuse report\r\n"
           "--arf\r\nContent-Type: message/feedback-report\r\n\r\n"
           f"Feedback-Type: abuse\r\nUser-Agent: X/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: <{addr}>\r\n\r\n"
           "--arf\r\nContent-Type: message/rfc822\r\n\r\n" + original + "\r\n--arf--\r\n").encode()
    out = _invoke(local_stack, _s3_event(local_stack, _deliver_to_s3(local_stack, arf)))
    assert out["results"][0]["result"] == "matched", out
    got = _wait_types(api, mid, "message.complained")
    assert [e["type"] for e in got] == ["message.queued", "message.delivered", "message.complained"]
    assert len({e["id"] for e in got}) == 3 and "bounce" in got[2]["data"]


def test_suppressed_at_send_and_later(api, slow_mx):
    status, _ = api.call("PUT", "/v1/suppressions/ev-gone@accept.test", {"reason": "test"})
    assert status in (200, 201)
    mid = _send(api, ["ev-gone@accept.test"])
    got = _wait_types(api, mid, "message.suppressed")
    _check(got, ["message.suppressed"], mid, "ev-gone@accept.test")  # created final: no queued

    mid2 = _send(api, ["ev-late@never.test"])
    _wait_types(api, mid2, "message.deferred")
    status, _ = api.call("PUT", "/v1/suppressions/ev-late@never.test", {"reason": "test"})
    assert status in (200, 201)
    got = _wait_types(api, mid2, "message.suppressed")
    types = [e["type"] for e in got]
    assert types[0] == "message.queued" and types[-1] == "message.suppressed"
    assert set(types[1:-1]) == {"message.deferred"} and len(set(e["id"] for e in got)) == len(got)


def test_expired(api, slow_mx):
    mid = _send(api, ["ev-never@never.test"], expires_in=60)
    got = _wait_types(api, mid, "message.expired", timeout=150)
    types = [e["type"] for e in got]
    assert types[0] == "message.queued" and types[-1] == "message.expired"
    assert set(types[1:-1]) == {"message.deferred"} and len(types) >= 4
    assert [e["data"]["attempt"]["text"] for e in got[1:-1]]  # each deferral names its reply
    assert len({e["id"] for e in got}) == len(got)


# ---- at least once, never twice -----------------------------------------------------------------
def _stream_records(local_stack, message_id: str) -> list[dict]:
    """The stream's records of one message, read from the shards as Lambda would get them."""
    from outpost_local.poller import StreamPoller, matches, stream_event

    p: StreamPoller = local_stack.stream_pollers["EventsFunction.RecipientChanges"]
    out = []
    for shard in p._shards():  # noqa: SLF001 - the poller's own shard walk
        it = p.streams.get_shard_iterator(StreamArn=p.arn, ShardId=shard["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            r = p.streams.get_records(ShardIterator=it, Limit=1000)
            out += [x for x in r["Records"] if any(matches(f, x) for f in p.filters)
                    and message_id in json.dumps(x["dynamodb"]["Keys"])]
            if not r["Records"]:
                break
            it = r.get("NextShardIterator")
    return stream_event(out, p.arn)["Records"]


def test_a_record_read_twice_and_a_batch_retried_after_a_sink_failure_duplicate_nothing(api, local_stack):
    mid = _send(api, ["ev-twice@accept.test"])
    before = _wait_types(api, mid, "message.delivered")
    records = _stream_records(local_stack, mid)
    assert len(records) >= 2
    fn = local_stack.functions["EventsFunction"]
    assert fn.invoke({"Records": records + records[:1]}) == {"batchItemFailures": []}  # read again
    # A batch whose second sink fails on one event: that record fails, the log keeps all; the
    # retry (Lambda resumes at the failed record) duplicates nothing.
    sink = RecordingSink()
    svc = EventService(changes=recipient_change, tags=event_log().tags_of, sinks=[event_log(), sink],
                       commits=committed_message, created=message_store().recipients_created)
    refused = svc.events_of(records)[-1][1]
    sink.fail_ids = {refused.event_id}
    out = svc.handle_stream_event({"Records": records})
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == [records[-1]["dynamodb"]["SequenceNumber"]]
    sink.fail_ids = set()
    assert svc.handle_stream_event({"Records": records[-1:]}) == {"batchItemFailures": []}
    after = _events(api, mid)
    assert [e["id"] for e in after] == [e["id"] for e in before] and len(after) == 2
    assert refused.event_id in sink.ids


def test_a_writer_that_dies_right_after_its_write_still_yields_the_event(api, slow_mx):
    mid = _send(api, ["ev-crash@never.test"])
    _wait_types(api, mid, "message.deferred")
    store = message_store()
    # What a sender does before it dies: the lease, the conditional write of the outcome; then
    # nothing (no code of the sender runs after it; only the stream knows).
    deadline = time.monotonic() + 30
    while not store.claim(mid, 0, time.time(), 60):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.finish_attempt(mid, 0, RecipientState.DELIVERED, time.time(),
                                Attempt(at=iso(time.time()), outcome="delivered", mx="mx.never.test", code=250,
                                        status="2.0.0", text="2.0.0 Ok"))
    got = _wait_types(api, mid, "message.delivered")
    assert got[-1]["data"]["attempt"]["text"] == "2.0.0 Ok"
    assert [e["type"] for e in got].count("message.delivered") == 1


# ---- GET /v1/events ---------------------------------------------------------------------------
def test_get_events_filters_pages_and_refuses_what_it_does_not_know(api):
    a, b = _send(api, ["ev-page1@accept.test", "ev-page2@accept.test", "ev-page3@accept.test"]), \
        _send(api, ["ev-pageghost@reject.test"])
    _wait_types(api, b, "message.bounced")
    for mid in (a,):
        deadline = time.monotonic() + 60
        while len(_events(api, mid)) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.25)
    # paging by 1: the same six events as one page, newest first, none twice
    one_page = _events(api, a)
    paged = _events(api, a, limit=1)
    assert [e["id"] for e in paged] == [e["id"] for e in one_page] and len(paged) == 6
    # type, with and without a message
    assert [e["type"] for e in _events(api, a, type="message.delivered")] == ["message.delivered"] * 3
    status, body = api.call("GET", "/v1/events?type=message.bounced&limit=100")
    assert status == 200 and body["items"] and {e["type"] for e in body["items"]} == {"message.bounced"}
    assert b in {e["data"]["message_id"] for e in body["items"]}
    # since: after the last event, nothing; at the first, all
    first, last = one_page[0]["timestamp"], one_page[-1]["timestamp"]
    assert _events(api, a, since="2999-01-01T00:00:00Z") == []
    assert len(_events(api, a, since=first)) == 6 and all(e["timestamp"] >= last for e in _events(api, a, since=last))
    # every event of the day, newest first
    status, body = api.call("GET", "/v1/events?limit=5")
    assert status == 200 and len(body["items"]) == 5 and body["next_cursor"]
    stamps = [e["timestamp"] for e in body["items"]]
    assert stamps == sorted(stamps, reverse=True)
    status, nxt = api.call("GET", f"/v1/events?limit=5&cursor={body['next_cursor']}")
    assert status == 200 and not {e["id"] for e in nxt["items"]} & {e["id"] for e in body["items"]}
    # refusals
    status, err = api.call("GET", "/v1/events?type=message.opened")
    assert status == 422 and err["error"]["field"] == "type"
    status, err = api.call("GET", f"/v1/events?type=message.delivered&cursor={body['next_cursor']}")
    assert status == 400 and err["error"]["field"] == "cursor"  # another query's cursor
    status, err = api.call("GET", "/v1/events?cursor=bm90LWEtY3Vyc29y")
    assert status == 400 and err["error"]["field"] == "cursor"
    status, err = api.call("GET", "/v1/events?since=yesterday")
    assert status == 422 and err["error"]["field"] == "since"
    status, err = api.call("GET", "/v1/events?limit=101")
    assert status == 422 and err["error"]["field"] == "limit"
    status, err = api.call("GET", "/v1/events", key=None)
    assert status == 401


# ---- EventBridge ------------------------------------------------------------------------------
def test_eventbridge_rule_on_the_bus_delivers_the_events_to_an_sqs_target(api, local_stack):
    mid = _send(api, ["ev-bus@accept.test"])
    _wait_types(api, mid, "message.delivered")
    events, sqs = boto3.client("events"), boto3.client("sqs")
    bus = "outpost-eventstest"
    events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName="events-target")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="outpost-delivered", EventBusName=bus,
                    EventPattern=json.dumps({"source": ["outpost"], "detail-type": ["message.delivered"]}))
    events.put_targets(Rule="outpost-delivered", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    records = _stream_records(local_stack, mid)
    svc = EventService(changes=recipient_change, tags=event_log().tags_of, sinks=[EventBus(events, bus)],
                       commits=committed_message, created=message_store().recipients_created)
    assert svc.handle_stream_event({"Records": records}) == {"batchItemFailures": []}
    got: list[dict] = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MaxNumberOfMessages=10).get("Messages", [])
    assert len(got) == 1  # the rule matched delivered only, not queued
    envelope = json.loads(got[0]["Body"])
    assert envelope["source"] == "outpost" and envelope["detail-type"] == "message.delivered"
    logged = [e for e in _events(api, mid) if e["type"] == "message.delivered"][0]
    assert envelope["detail"] == {k: logged[k] for k in ("type", "timestamp", "data")}


def test_the_events_function_uses_exactly_its_grants(api, local_stack):
    from tests.integration.test_iam_least_privilege import _grants, recording

    mid = _send(api, ["ev-iam@accept.test"])
    _wait_types(api, mid, "message.delivered")
    records = _stream_records(local_stack, mid)
    # An endpoint subscribed to these events, so that the webhooks sink does all it may do.
    status, wh = api.call("POST", "/v1/webhooks", {"url": "http://127.0.2.91:9/hooks",
                                                   "events": ["message.queued", "message.delivered"]})
    assert status == 201, wh
    try:
        with recording(local_stack) as calls:
            assert local_stack.functions["EventsFunction"].invoke({"Records": records}) == {"batchItemFailures": []}
    finally:
        api.call("DELETE", f"/v1/webhooks/{wh['id']}")
    grants = _grants("EventsFunction")
    # the log's conditional PutItem and the tags' BatchGetItem; the webhooks sink's endpoints
    # (Query), the deliveries it already has (BatchGetItem) and the new ones (BatchWriteItem):
    # all used, nothing else
    assert calls == grants == {("MessagesTable", None, "PutItem"), ("MessagesTable", None, "BatchGetItem"),
                               ("WebhooksTable", None, "Query"), ("WebhooksTable", None, "BatchGetItem"),
                               ("WebhooksTable", None, "BatchWriteItem")}


def test_enable_eventbridge_creates_the_bus_and_names_it_to_the_events_function(local_stack):
    from outpost_local.provision import provision

    stack = provision(boto3.Session(), stack_name="evbus", parameters={"EnableEventBridge": "true"})
    env = stack.functions["EventsFunction"].environment
    assert env["OUTPOST_EVENT_BUS"] == "outpost-evbus" == stack.outputs["EventBusName"]
    assert boto3.client("events").describe_event_bus(Name="outpost-evbus")["Name"] == "outpost-evbus"
    assert local_stack.stack.functions["EventsFunction"].environment["OUTPOST_EVENT_BUS"] == ""  # default off


def test_a_real_change_reaches_a_webhook_and_a_replay_over_the_api_resends_it_from_the_log(api, local_stack):
    """Issue 12 end to end on the local stack: the stream's event reaches a registered endpoint
    (webhook-id = the logged event's id, signature verified by `standardwebhooks` in the
    receiver), and POST /v1/webhooks/{id}/replay reads the real event log (its cursor, oldest
    first) and sends the same event again with the same webhook-id."""
    from datetime import UTC, datetime, timedelta

    from outpost_local.webhook_receiver import WebhookReceiver

    rx = WebhookReceiver("127.0.2.90", 0).start()
    status, wh = api.call("POST", "/v1/webhooks", {"url": rx.url, "events": ["message.delivered"],
                                                   "description": "e2e"})
    assert status == 201, wh
    rx.secrets.append(wh["secret"])
    try:
        since = (datetime.now(UTC) - timedelta(seconds=2)).isoformat()
        mid = _send(api, ["ev-hook@accept.test"])
        got = _wait_types(api, mid, "message.delivered")
        (delivered,) = [e for e in got if e["type"] == "message.delivered"]
        eid = delivered["id"]
        deadline = time.monotonic() + 60
        while rx.accepted_ids()[eid] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        first = [r for r in rx.accepted() if r.webhook_id == eid]
        assert len(first) == 1 and first[0].verified, [r.error for r in first]
        assert first[0].payload["data"]["message_id"] == mid and first[0].payload["type"] == "message.delivered"

        status, out = api.call("POST", f"/v1/webhooks/{wh['id']}/replay", {"since": since})
        assert status == 200 and out["replayed"] >= 1, out
        deadline = time.monotonic() + 60
        while rx.accepted_ids()[eid] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        again = [r for r in rx.accepted() if r.webhook_id == eid]
        assert len(again) == 2 and all(r.verified for r in again)
        assert again[1].payload == again[0].payload
    finally:
        api.call("DELETE", f"/v1/webhooks/{wh['id']}")
        rx.stop()
