"""The create without a transaction (issue 15 item 4), crash point by crash point, against
DynamoDB Local with the real send API service, the real sender and a real MX (sender_rig).

A 3-recipient message is 4 PutItems: the recipients, then the META item (the commit point,
store.MessageStore.create). A client that fails at the Nth put plays each crash: a put that
fails (the store takes back what it wrote; the API answers 503), and a process killed there
(nothing runs after it: what was written stays). Whatever stays, no partial recipient set is
ever delivered, and nothing is left behind for good; a message killed after its META put is
delivered by the sweeper's job exactly once, as with the transaction. Also: the write units
each call is billed (ReturnConsumedCapacity=INDEXES), so the cuts cannot silently come back."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sender_rig import Rig

from outpost.api.service import QueryService, SendService
from outpost.errors import ConflictError, NotFoundError
from outpost.models import QueueJob, SendRequest
from outpost.store import UNCOMMITTED_AGE, MessageStore
from outpost.sweeper import SWEEP_GRACE

pytestmark = pytest.mark.timeout(120)

TO = ["a@crash.test", "b@crash.test", "c@crash.test"]
PUTS = len(TO) + 1  # 3 recipients, then META


class Killed(BaseException):
    """The process dying at a put: not an Exception, so no cleanup of the store's runs."""


class FailingDdb:
    """The rig's DynamoDB client, failing (raising `exc`) at the `at`th PutItem of the table."""

    def __init__(self, real: Any, table: str, at: int, exc: BaseException) -> None:
        self.real, self.table, self.at, self.exc = real, table, at, exc
        self.puts: list[dict] = []

    def put_item(self, **kw: Any) -> Any:
        if kw.get("TableName") == self.table:
            self.puts.append(kw["Item"])
            if len(self.puts) == self.at:
                raise self.exc
        return self.real.put_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _throttled() -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                       "PutItem")


def _send_through(rig: Rig, ddb: FailingDdb) -> str:
    """send_one through a store on `ddb`; the message id (it raised, so the id is the puts')."""
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)
    api = SendService(store=store, suppressions=rig.suppressions, queue=rig.queue, domains=rig.api.domains,
                      clock=rig.clock)
    req = SendRequest.model_validate({"from": "App <app@sender.test>", "to": TO, "subject": "crash",
                                      "text": "Hello.\n"})
    with pytest.raises((ClientError, Killed)):
        api.send_one(req)
    return str(ddb.puts[0]["pk"]["S"]).removeprefix("MSG#")


def _items(rig: Rig, mid: str) -> list[str]:
    r = rig.store.ddb.query(TableName=rig.store.table, KeyConditionExpression="pk = :p",
                            ExpressionAttributeValues={":p": {"S": f"MSG#{mid}"}}, ConsistentRead=True)
    return sorted(i["sk"]["S"] for i in r.get("Items", []))


def _overdue(rig: Rig, mid: str) -> list[int]:
    return sorted(o.index for o in rig.store.overdue(rig.clock() - SWEEP_GRACE) if o.message_id == mid)



@pytest.mark.parametrize("at", range(1, PUTS + 1))
def test_a_failing_put_leaves_nothing_and_queues_nothing(engine: Rig, at: int) -> None:
    rig = engine
    queued = len(rig.queue.sent)
    mid = _send_through(rig, FailingDdb(rig.store.ddb, rig.store.table, at, _throttled()))
    assert _items(rig, mid) == []  # what it wrote before the failure was taken back
    assert len(rig.queue.sent) == queued  # not accepted: no job
    rig.clock.advance(SWEEP_GRACE + 1)
    assert _overdue(rig, mid) == []


@pytest.mark.parametrize("at", range(1, PUTS + 1))
def test_a_create_killed_before_its_meta_sends_nothing_and_is_cleaned_up(engine: Rig, at: int) -> None:
    rig = engine
    mx = rig.mx("crash.test", 2)
    mid = _send_through(rig, FailingDdb(rig.store.ddb, rig.store.table, at, Killed()))
    left = [f"RCPT#{i:03d}" for i in range(at - 1)]
    assert _items(rig, mid) == left  # the recipients put before the kill; never a META
    assert rig.store.load(mid) is None
    query = QueryService(store=rig.store, suppressions=rig.suppressions, clock=rig.clock)
    with pytest.raises(NotFoundError):  # GET /v1/messages/{id}: 404, not a message with some recipients
        query.message(mid)
    # The sweeper finds what was written once overdue; its job loads no message: nothing sent.
    rig.clock.advance(SWEEP_GRACE + 1)
    assert _overdue(rig, mid) == list(range(at - 1))
    rig.run_jobs([QueueJob(message_id=mid)])
    assert mx.received == []
    assert _items(rig, mid) == left  # too young to be sure no create is still running
    # Older than any create can run: the next load deletes them; no sweep, no list finds them.
    rig.clock.advance(UNCOMMITTED_AGE - SWEEP_GRACE)
    rig.run_jobs([QueueJob(message_id=mid)])
    assert mx.received == [] and _items(rig, mid) == []
    assert _overdue(rig, mid) == []
    assert not [r for a in TO for r in rig.store.messages_to(a).items if r.message_id == mid]


def test_a_create_killed_after_its_meta_is_delivered_once_by_the_sweepers_job(engine: Rig) -> None:
    """The window the transaction had too: stored whole, killed before the job was queued."""
    rig = engine
    mx = rig.mx("crash.test", 2)
    queued = len(rig.queue.sent)
    ddb = FailingDdb(rig.store.ddb, rig.store.table, PUTS + 1, Killed())
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)

    class KilledQueue:
        def send(self, job: QueueJob, delay: float = 0) -> None:
            raise Killed()

    api = SendService(store=store, suppressions=rig.suppressions, queue=KilledQueue(),  # type: ignore[arg-type]
                      domains=rig.api.domains, clock=rig.clock)
    with pytest.raises(Killed):
        api.send_one(SendRequest.model_validate({"from": "app@sender.test", "to": TO, "subject": "crash",
                                                 "text": "Hello.\n"}))
    mid = str(ddb.puts[0]["pk"]["S"]).removeprefix("MSG#")
    assert _items(rig, mid) == ["META", "RCPT#000", "RCPT#001", "RCPT#002"] and len(rig.queue.sent) == queued
    rig.clock.advance(SWEEP_GRACE + 1)
    assert _overdue(rig, mid) == [0, 1, 2]
    rig.run_jobs([QueueJob(message_id=mid)])
    rig.run_jobs([QueueJob(message_id=mid)])  # a second rescue (a doubled sweep) sends nothing more
    got = sorted(a for r in mx.received for a in r.rcpt_tos)
    assert got == sorted(TO)
    assert [r["state"] for r in rig.rcpts(mid)] == ["delivered"] * 3


class Units:
    """Write units per (operation, table or index) of the calls made while recording."""

    def __init__(self, client: Any) -> None:
        self.client, self.seen = client, []  # type: ignore[var-annotated]
        ev = client.meta.events
        ev.register("provide-client-params.dynamodb.*", self._params, unique_id="units-params")
        ev.register("after-call.dynamodb.*", self._after, unique_id="units-after")

    def _params(self, params: dict, **_: Any) -> None:
        params.setdefault("ReturnConsumedCapacity", "INDEXES")

    def _after(self, parsed: dict, model: Any, **_: Any) -> None:
        cc = parsed.get("ConsumedCapacity") or []
        for c in [cc] if isinstance(cc, dict) else cc:
            parts = {"table": (c.get("Table") or {}).get("CapacityUnits", 0)}
            parts.update({k: v.get("CapacityUnits", 0) for k, v in (c.get("GlobalSecondaryIndexes") or {}).items()})
            self.seen.append((model.name, {k: v for k, v in parts.items() if v}))

    def close(self) -> None:
        self.client.meta.events.unregister("provide-client-params.dynamodb.*", unique_id="units-params")
        self.client.meta.events.unregister("after-call.dynamodb.*", unique_id="units-after")


def test_what_the_create_and_the_claim_are_billed(engine: Rig) -> None:
    """One small recipient: PutItems only (no transaction at 2 units per KB), one write for
    each of its three index entries; the claim writes no due-index entry (gsi5)."""
    rig = engine
    units = Units(rig.store.ddb)
    try:
        mid = rig.send("units@crash.test")
        create = [(op, u) for op, u in units.seen if op != "GetItem" and op != "BatchGetItem"
                  and op != "Query"]
        units.seen.clear()
        assert rig.store.claim(mid, 0, rig.clock(), 60)
        claim = list(units.seen)
    finally:
        units.close()
    assert [op for op, _ in create] == ["PutItem", "PutItem"]
    rcpt, meta = create[0][1], create[1][1]
    assert rcpt == {"table": 1.0, "gsi1": 1.0, "gsi3": 1.0, "gsi5": 1.0}
    assert meta == {"table": 1.0}  # the META is in no index
    assert claim == [("UpdateItem", {"table": 1.0, "gsi1": 1.0, "gsi3": 1.0})]


# -- a retry with the same Idempotency-Key after a kill past the META put ------------------------------


class ShortContext:
    """A Lambda context with 1 ms left: the idempotency record's in-progress mark expires with it,
    as it does when Lambda kills an invocation at its timeout."""

    def get_remaining_time_in_millis(self) -> int:
        return 1


def _keyed_api(rig: Rig, store: MessageStore, queue: Any) -> SendService:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    persistence = DynamoDBPersistenceLayer(table_name=rig.aws.env["OUTPOST_IDEMPOTENCY_TABLE"],
                                           boto3_client=rig.aws.client("dynamodb"))
    return SendService(store=store, suppressions=rig.suppressions, queue=queue, domains=rig.api.domains,
                       clock=rig.clock, idempotency=persistence)


def test_a_keyed_retry_after_a_kill_past_the_meta_finds_the_first_message(engine: Rig) -> None:
    """The first request is killed after its META put (before its job is queued) and leaves its
    idempotency record in progress; once that mark has expired, the client's retry with the same
    Idempotency-Key and body gets the first message's id (replayed), not a second copy; the real
    MX receives each recipient once. The same key with another body is the 409."""
    rig = engine
    mx = rig.mx("crash.test", 2)
    ddb = FailingDdb(rig.store.ddb, rig.store.table, 0, Killed())
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)

    class KilledQueue:
        def send(self, job: QueueJob, delay: float = 0) -> None:
            raise Killed()

    body = {"from": "app@sender.test", "to": TO, "subject": "once", "text": "Hello once.\n"}
    key = f"signup-{rig.clock():.0f}"
    with pytest.raises(Killed):
        _keyed_api(rig, store, KilledQueue()).send(SendRequest.model_validate(body), idempotency_key=key,
                                                   raw=body, context=ShortContext())
    first = str(ddb.puts[-1]["pk"]["S"]).removeprefix("MSG#")
    assert _items(rig, first) == ["META", "RCPT#000", "RCPT#001", "RCPT#002"]
    time.sleep(0.05)  # the in-progress mark (1 ms) is over: the idempotency layer lets the retry run
    api = _keyed_api(rig, rig.store, rig.queue)
    queued = len(rig.queue.sent)
    out, replayed = api.send(SendRequest.model_validate(body), idempotency_key=key, raw=body)
    assert out["id"] == first and replayed
    assert [r["status"] for r in out["recipients"]] == ["queued"] * 3
    # A replay of that answer (now the idempotency record's) is the same again.
    assert api.send(SendRequest.model_validate(body), idempotency_key=key, raw=body) == (out, True)
    other = dict(body, subject="another")
    time.sleep(0.01)
    with pytest.raises(ConflictError):
        api.send(SendRequest.model_validate(other), idempotency_key=key, raw=other)
    jobs = [job for job, _ in rig.queue.sent[queued:]]
    assert [j.message_id for j in jobs] == [first]  # queued for the first message (its own never was)
    rig.run_jobs(jobs)
    rig.clock.advance(SWEEP_GRACE + 1)
    rig.run_jobs([QueueJob(message_id=o.message_id) for o in rig.store.overdue(rig.clock() - SWEEP_GRACE)])
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == sorted(TO)  # one copy each
    assert [r["state"] for r in rig.rcpts(first)] == ["delivered"] * 3


def test_a_keyed_create_that_never_committed_is_taken_over_by_the_retry(engine: Rig) -> None:
    """Killed before its META: the key's claim points at a message that never was; the retry
    with the same key claims it for a new message, which is delivered once."""
    rig = engine
    mx = rig.mx("crash.test", 2)
    ddb = FailingDdb(rig.store.ddb, rig.store.table, 3, Killed())  # the claim, one recipient, killed
    store = MessageStore(ddb, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock)
    body = {"from": "app@sender.test", "to": TO, "subject": "taken over", "text": "Hello.\n"}
    key = f"takeover-{rig.clock():.0f}"
    with pytest.raises(Killed):
        _keyed_api(rig, store, rig.queue).send(SendRequest.model_validate(body), idempotency_key=key,
                                               raw=body, context=ShortContext())
    first = str(ddb.puts[1]["pk"]["S"]).removeprefix("MSG#")
    time.sleep(0.05)
    rig.clock.advance(1)  # the claim's own deadline (the invocation's 1 ms) is over too, on the store's clock
    out, replayed = _keyed_api(rig, rig.store, rig.queue).send(SendRequest.model_validate(body),
                                                               idempotency_key=key, raw=body)
    assert out["id"] != first and not replayed
    rig.run_jobs([QueueJob(message_id=out["id"]), QueueJob(message_id=first)])
    assert sorted(a for r in mx.received for a in r.rcpt_tos) == sorted(TO)


# -- r16: a take-over must not race a create that is still running --------------------------------


class SlowDdb:
    """The rig's client; the first recipient PutItem waits for `go` (a create that is slow, not dead)."""

    def __init__(self, real: Any, table: str) -> None:
        import threading

        self.real, self.table = real, table
        self.at_recipient, self.go = threading.Event(), threading.Event()

    def put_item(self, **kw: Any) -> Any:
        if kw.get("TableName") == self.table and kw["Item"]["sk"]["S"].startswith("RCPT#") \
                and not self.at_recipient.is_set():
            self.at_recipient.set()
            assert self.go.wait(30)
        return self.real.put_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _create(rig: Rig, store: MessageStore, once: Any) -> tuple[str, Any]:
    from outpost.ids import new_message_id
    from outpost.records import Message, Recipient, RecipientState
    from outpost.stored_request import StoredRequest

    mid = new_message_id()
    now = rig.clock()
    meta = Message(message_id=mid, from_="app@sender.test", from_domain="sender.test", subject="race",
                   tags={}, tls="opportunistic", deliver_until=now + 3600, recipient_count=1, size=10)
    rcpt = Recipient(message_id=mid, index=0, address="a@crash.test", state=RecipientState.QUEUED)
    req = StoredRequest.from_request(SendRequest.model_validate(
        {"from": "app@sender.test", "to": ["a@crash.test"], "subject": "race", "text": "Hi.\n"}))
    return mid, store.create(meta, [rcpt], req, now, once)


def test_a_claim_whose_create_is_still_running_is_not_taken_over(engine: Rig) -> None:
    """Two requests with one key past the idempotency layer (SMTP submission's in-progress mark
    expires after 120 s; its accept is not stopped then): the second finds the first's claim
    not yet committed while the first is still writing. It must not take the claim over (both
    would commit: two messages for one key); it is told to retry (InProgressError), and its
    retry after the first committed finds that message."""
    import threading

    from outpost.errors import InProgressError
    from outpost.records import CreateKey

    rig = engine
    once = CreateKey(f"race-{time.time_ns()}", "d1")  # no deadline: as SMTP submission's
    slow = SlowDdb(rig.store.ddb, rig.store.table)
    first: dict[str, Any] = {}
    t = threading.Thread(target=lambda: first.update(
        out=_create(rig, MessageStore(slow, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock), once)))
    t.start()
    try:
        assert slow.at_recipient.wait(30)  # claimed, writing its recipients
        with pytest.raises(InProgressError):
            _create(rig, rig.store, once)
    finally:
        slow.go.set()
        t.join(30)
    mid, earlier = first["out"]
    assert earlier is None and _items(rig, mid) == ["META", "RCPT#000"]
    second, found = _create(rig, rig.store, once)
    assert found is not None and found.message_id == mid and _items(rig, second) == []


def test_a_create_that_failed_releases_its_claim_for_an_immediate_retry(engine: Rig) -> None:
    """A create whose put failed took itself back (the client got a 503): its claim is released,
    so the client's retry at once creates (not a 409 until the claim's deadline)."""
    from outpost.records import CreateKey

    rig = engine
    once = CreateKey(f"release-{time.time_ns()}", "d1")
    failing = FailingDdb(rig.store.ddb, rig.store.table, 2, _throttled())  # the claim, then the recipient fails
    with pytest.raises(ClientError):
        _create(rig, MessageStore(failing, rig.store.table, rig.store.s3, rig.store.bucket, clock=rig.clock), once)
    mid, earlier = _create(rig, rig.store, once)
    assert earlier is None and _items(rig, mid) == ["META", "RCPT#000"]


def test_a_claim_lives_its_hold_plus_the_time_a_create_can_run_not_a_day_more(engine: Rig) -> None:
    """s17b: the ONCE# item's TTL (`expires_at`, read from the table) is the claim's hold (the
    idempotency record's 24 h) plus UNCOMMITTED_AGE, the longest a create can run; it was the
    hold plus a day (48 h)."""
    from outpost.records import CreateKey

    rig = engine
    once = CreateKey(f"ttl-{time.time_ns()}", "d1")
    now = rig.clock()
    _create(rig, rig.store, once)
    item = rig.store.ddb.get_item(TableName=rig.store.table, Key={"pk": {"S": f"ONCE#{once.key}"},
                                                                  "sk": {"S": "META"}}, ConsistentRead=True)["Item"]
    expires, hold = int(item["expires_at"]["N"]), float(item["hold_until"]["N"])
    assert once.ttl == 86400 and hold == now + 86400
    assert expires == math.ceil(now + 86400 + UNCOMMITTED_AGE) and expires >= hold


def test_a_keyed_send_whose_job_was_refused_is_accepted_and_its_retry_replayed(engine: Rig) -> None:
    """The queue refuses the job after the commit: the message is accepted all the same (s17f:
    never taken back; the sweeper's next run queues it), the idempotency record stores that
    answer, and the retry at once is its replay: the same id, no second message."""
    rig = engine

    class RefusingQueue:
        def send(self, job: QueueJob, delay: float = 0) -> None:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "no"}}, "SendMessage")

    body = {"from": "app@sender.test", "to": TO, "subject": "refused", "text": "Hello.\n"}
    key = f"refused-{time.time_ns()}"
    req = SendRequest.model_validate(body)
    first, replayed = _keyed_api(rig, rig.store, RefusingQueue()).send(req, idempotency_key=key, raw=body)
    assert not replayed and _items(rig, first["id"]) == ["META", "RCPT#000", "RCPT#001", "RCPT#002"]
    out, replayed = _keyed_api(rig, rig.store, rig.queue).send(req, idempotency_key=key, raw=body)
    assert replayed and out == first and not [j for j, _ in rig.queue.sent if j.message_id != first["id"]]
