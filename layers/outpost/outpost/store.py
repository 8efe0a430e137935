"""DynamoDB, S3, SQS and Secrets Manager adapters: the only code that speaks their APIs, and the
only code that knows the tables' layout (keys, indexes, key prefixes; tests/unit/test_layering.py
holds every other module to that). It maps typed records (records.py) to items and back; its
methods are named for the question they answer, not for the index that answers it.

Services depend on the Protocols at the end of this module (Messages, Suppressions, Jobs,
Domains, DomainLookup, ApiKeys, Secrets, Suspensions), built in bootstrap.py; unit tests pass the in-memory fakes
of tests/fakes/store.py.
Every state transition of a recipient is a conditional write, so two copies of a job
(SQS redelivery, a crash and retry) can never both move the same recipient.
A write whose answer is lost is retried by botocore (standard mode) and may meet its own
first try (r17b): each recipient transition writes a fresh `wid` and requires another one, as
do bounce records, orphans and suppressions; a refusal that reads back its own `wid` counts as
written (`_wrote_own`). Slot takes carry their own lease id; a slot release needs its lease.

MessagesTable layout (single-table; every access is a key or index lookup):
  pk=MSG#<id>  sk=META                  the message: sender, subject, request spec or S3 pointer
  pk=MSG#<id>  sk=RCPT#<nnn>            one recipient: state, attempts[], last reply, bounce
  pk=MSG#<id>  sk=BOUNCE#<nnn>#<hash>   one bounce report for that recipient (idempotent)
  pk=INBOUND#<s3 key> sk=UNMATCHED|UNPARSED   inbound mail that matched nothing (kept, counted)
  gsi1: gsi1pk=RCPT#<address>  gsi1sk=<created>#<id>     messages to a recipient
        (and gsi1pk=REP#key:<id> gsi1sk=H#<hour>#<domain>: an API key's reputation counts)
  gsi2: gsi2pk=BOUNCE#<address> / UNMATCHED  gsi2sk=<time>  bounces by recipient; orphans
  pk=SUPPRESSION#<address> sk=EVENT#<time>#<rand>   suppression audit (who/when), no TTL
  pk=STS#<domain>  sk=POLICY            a cached MTA-STS policy (RFC 8461), TTL = fetched_at + max_age
  pk=SLOW#<domain> sk=MX                a recipient domain found slow on the new-mail lane, `until`
                                        (epoch seconds); shared by every sender; TTL = until
  pk=SUSP#<ip>#<provider> sk=SUSPENSION  a provider suspended for a sending IP after a throttle
                                        reply: until, level, reply, since; TTL = forget_at
  pk=SHAPE#<ip>#<provider> sk=SLOTS     fleet-wide shaping (issue 11): `leases` (map lease id ->
                                        expiry), `w_<window>` messages taken per rate / warm-up
                                        window (m<minute>, h<hour>, d<yyyymmdd>); TTL 2 days idle
  pk=UPLOAD#<id> sk=META; pk=UPLOADS#<key id> sk=DAY#<yyyy-mm-dd>   an upload; uploads per key a day
  pk=ONCE#<hash> sk=META                 an Idempotency-Key's create: message_id, digest, hold_until
  pk=REP#<domain:name|key:id> sk=H#<yyyymmddhh>[#key:id]   the reputation breaker's hourly counts
                                        (sent, hard, complaints; atomic ADD), TTL 8 days; a
                                        domain+key pair is one item, filed under the key by gsi1
                                        (gsi1pk=REP#key:id, gsi1sk=H#<yyyymmddhh>#domain:name)
  pk=REPDAY#<yyyymmdd> sk=<scope>       the scopes counted (or not ok) that day: the sweeper's list
  pk=REP#<domain:name|key:id> sk=STATE  its breaker state (ok|warn|paused, since, why; resumes)
  pk=EVTMSG#<message id> sk=<timestamp>#<event id>   one event (issue 12), put once; TTL as its
                                        message's; listed by message (the key) and by day (gsi3,
                                        EVTDAY#<day> / <timestamp>#<id>); by type: the day walk,
                                        filtered. The first layout (pk=EVT#<event id> sk=EVENT, also
                                        in gsi1 and gsi4) is still read until its items expire
  gsi3: gsi3pk=DAY#<yyyy-mm-dd> gsi3sk=<created>#<id>#<nnn>  recipients by day (API list)
  gsi4: type (bounce|complaint|delay|notice) / received_at     bounce reports by type and time
  gsi5: due_shard=DUE#<0-7> / due_at (epoch seconds), KEYS_ONLY, sparse: only open recipients
        have it (queued: created; deferred: its next attempt; leased: the lease's end;
        scheduled, issue 14: its send_at; either moved SWEEP_GRACE earlier when the API's
        job was refused after the commit, s17f: `mark_overdue`); it is
        removed when the recipient becomes final. The sweeper's index of overdue work.
  expires_at: TTL (retention), never before the delivery deadline plus TTL_MARGIN
SuppressionsTable: address; GSI by_source: source / created_at (API list, never a Scan).
ApiKeysTable: key_hash (SHA-256 of the key; records.ApiKey). DomainsTable: domain (records.Domain).
S3: bodies/<id>.json (large stored requests), uploads/<id>, inbound/ (raw mail at the bounce
domain). docs/dynamodb.md has the whole picture.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import math
import random
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .addresses import suppression_key
from .clock import day_of, iso
from .errors import InProgressError, LayoutInUseError, StoreBusyError
from .models import OPEN_STATES, QueueJob, RecipientState
from .records import (
    ApiKey,
    Attempt,
    Bounce,
    CreateKey,
    Domain,
    EarlierCreate,
    LayoutUsers,
    Message,
    Orphan,
    Overdue,
    Recipient,
    Record,
    ReputationCounts,
    ReputationState,
    SlotState,
    StoredMessage,
    Suppression,
    SuppressionEvent,
    Suspension,
    TemplateHead,
    TemplateVersion,
    Upload,
    Waiting,
)
from .stored_request import StoredRequest
from .webhooks.records import WebhookAttempt, WebhookEndpoint

if TYPE_CHECKING:
    from .events import Event
    from .tls_policy import StsPolicy  # imported where used: it brings dnspython, which the API never needs
    from .webhooks.jobs import WebhookJob  # a pydantic model: the send API's init does not need it

T = TypeVar("T")

log = logging.getLogger("outpost.store")

_OPEN = [s.value for s in OPEN_STATES]

# A message's records outlive its delivery deadline by at least this much, whatever the
# retention: a recipient still being retried (or swept, or bounced a little late) must find
# its message. RetentionDays in the template is at least the longest lifetime plus this.
TTL_MARGIN = 86400

# A stored request kept in the META item (deflated or not) is at most this long as JSON; longer
# ones go to S3 whatever they deflate to (the inline limit is on the deflated size).
INLINE_RAW_MAX = 200_000
# The default inline limit (Settings.inline_body_limit): bench/cost_model.py, inline_break_even.
INLINE_LIMIT = 6_300
OPEN_PAGE = 8  # items per query of MessageStore.any_open: the META and 7 recipients

# Recipients with no META item (a create killed between its puts, see MessageStore.create) are
# deleted by `load` once they are this old: longer than any create can run (a Lambda runs for
# at most 900 s), so a create still in progress is never taken apart.
UNCOMMITTED_AGE = 960
# A create still short of its META put this long after it began (by the store's clock) takes
# back what it wrote and fails instead (s16f): SMTP submission runs outside Lambda, and under a
# DynamoDB stall each put can take ~55 s with retries. The margin covers the META put itself,
# the caller's reads between its `now` and the create, and clock skew between machines.
COMMIT_WITHIN = UNCOMMITTED_AGE - 300

# The sweeper's index (gsi5) spreads open recipients over this many partitions, so that no
# single partition takes every recipient write.
DUE_SHARDS = 8

# UnprocessedItems / UnprocessedKeys: DynamoDB's advice is to retry with exponential backoff
# (a batch comes back unprocessed when the table is throttled; retrying at once only adds load).
BATCH_ATTEMPTS = 8
BATCH_BACKOFF_BASE = 0.05  # seconds: 0.05, 0.1, 0.2, ... capped, with full jitter
BATCH_BACKOFF_CAP = 5.0


def batch_backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry `attempt` (1-based) of an unprocessed batch remainder:
    exponential, capped, with full jitter (a pure function; randomness passed in)."""
    return rng() * min(BATCH_BACKOFF_CAP, BATCH_BACKOFF_BASE * 2 ** (attempt - 1))


def retry_unprocessed(call: Callable[[dict], dict], request: dict, remainder_key: str, *,
                      sleep: Callable[[float], None] = time.sleep,
                      rng: Callable[[], float] = random.random,
                      attempts: int = BATCH_ATTEMPTS) -> list[dict]:
    """Run a batch request (BatchWriteItem/BatchGetItem) until DynamoDB has processed all of
    it, backing off between rounds; returns every response. Raises StoreBusyError when part
    of it is still unprocessed after `attempts` calls."""
    responses = []
    for attempt in range(1, attempts + 1):
        r = call(request)
        responses.append(r)
        request = r.get(remainder_key) or {}
        if not request:
            return responses
        if attempt < attempts:
            sleep(batch_backoff(attempt, rng))
    left = sum(len(v.get("Keys", v) if isinstance(v, dict) else v) for v in request.values())
    raise StoreBusyError(f"{left} item(s) still unprocessed after {attempts} attempts ({remainder_key})")


def due_shard(message_id: str) -> str:
    return f"DUE#{zlib.crc32(message_id.encode()) % DUE_SHARDS}"


def _to_ddb(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_ddb(v) for v in value]
    return value


def _from_ddb(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_from_ddb(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_from_ddb(v) for v in value)
    return value


class _Codec:
    def __init__(self) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._s = TypeSerializer()
        self._d = TypeDeserializer()

    def item(self, d: Mapping[str, Any]) -> dict:
        return {k: self._s.serialize(_to_ddb(v)) for k, v in d.items() if v is not None}

    def value(self, v: Any) -> dict:
        return dict(self._s.serialize(_to_ddb(v)))

    def plain(self, item: Mapping[str, Any]) -> dict:
        return {k: _from_ddb(self._d.deserialize(v)) for k, v in item.items()}


_codec: _Codec | None = None


def codec() -> _Codec:
    global _codec
    if _codec is None:
        _codec = _Codec()
    return _codec


def put_if_absent(ddb: Any, table: str, item: dict, key: str, *, keys: tuple[str, ...] = ()) -> bool:
    """A conditional PutItem: True if written, False if an item with that key already exists.
    The one idempotent write behind bounce records, orphans, suppressions and new keys.
    `keys` (the table's key attributes): the item carries a fresh write id, and a refusal that
    finds it is this put's own, applied before botocore retried it after its answer was lost
    (r17b): True, where a caller acting once per new item (a bounce counted) would skip it."""
    if keys:
        item = dict(item, wid=_write_id())
    try:
        ddb.put_item(TableName=table, Item=codec().item(item),
                     ConditionExpression="attribute_not_exists(#k)", ExpressionAttributeNames={"#k": key})
        return True
    except ddb.exceptions.ConditionalCheckFailedException:
        return bool(keys) and _wrote_own(ddb, table, {k: codec().value(item[k]) for k in keys}, item["wid"])


def _write_id() -> str:
    return secrets.token_hex(8)


def _wrote_own(ddb: Any, table: str, key: dict, wid: str) -> bool:
    """A refused conditional write that finds its own write id was applied: botocore retried it
    (standard mode) after its answer was lost, and the retry failed the condition the first try
    changed (r17b). Each write to a recipient carries a fresh `wid` and requires another one, so
    such a retry is refused rather than applied twice (an attempt appended twice) and read back
    here: only refusals pay this read."""
    got = ddb.get_item(TableName=table, Key=key, ConsistentRead=True, ProjectionExpression="#w",
                       ExpressionAttributeNames={"#w": "wid"})
    return got.get("Item", {}).get("wid", {}).get("S") == wid


def _own_lease(item: Mapping[str, Any] | None, lease: tuple[str, float, int] | None) -> bool:
    """A slot take refused because its own lease is there: the take was applied and botocore
    retried it after its answer was lost (r17b). The lease id is this take's alone."""
    if item is None or lease is None:
        return False
    held = item.get("leases", {}).get("M", {}).get(lease[0], {}).get("N")
    return held is not None and float(held) == float(lease[1])


def rcpt_sk(index: int) -> str:
    return f"RCPT#{index:03d}"


@dataclass(frozen=True)
class Listing:
    """Where a list query may continue: the exact attributes of its start key (a cursor's
    key), the partition attribute and value the key must hold, and the sort attribute that
    must not be below the query's `since`. Opaque names to the caller (api/paging.py checks
    a cursor against them); only the store knows what they mean."""

    key_attrs: tuple[str, ...]
    partition: tuple[str, str]
    sort: str


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list query: records, each record's own start key (to resume right after
    it), and the key to continue from (None: the end of the partition)."""

    items: list[T]
    last_key: dict[str, str] | None
    keys: list[dict[str, str]] = field(default_factory=list)
    cursor: str | None = None  # the event log's opaque cursor to continue (EventLog.events)


def query_page(ddb: Any, table: str, *, index: str | None, pk: tuple[str, str],
               sk_from: tuple[str, str] | None = None, limit: int = 50,
               start_key: dict[str, str] | None = None, newest_first: bool = True,
               filters: Mapping[str, Any] | None = None) -> Page[dict]:
    """Query one partition (of the table or a GSI), newest first, from `start_key`.

    `filters` are attribute == value conditions applied after the key lookup (DynamoDB reads,
    then drops, what does not match: a FilterExpression, never a Scan). A page may hold fewer
    than `limit` items and still have a `last_key`; callers loop until they have enough.
    """
    c = codec()
    names = {"#pk": pk[0]}
    values: dict[str, Any] = {":pk": c.value(pk[1])}
    cond = "#pk = :pk"
    if sk_from is not None:
        names["#sk"] = sk_from[0]
        values[":sk"] = c.value(sk_from[1])
        cond += " AND #sk >= :sk"
    kwargs: dict[str, Any] = {"TableName": table, "KeyConditionExpression": cond,
                              "ScanIndexForward": not newest_first, "Limit": limit}
    if index:
        kwargs["IndexName"] = index
    parts = []
    for i, (k, v) in enumerate((filters or {}).items()):
        names[f"#f{i}"] = k
        values[f":f{i}"] = c.value(v)
        parts.append(f"#f{i} = :f{i}")
    if parts:
        kwargs["FilterExpression"] = " AND ".join(parts)
    kwargs["ExpressionAttributeNames"] = names
    kwargs["ExpressionAttributeValues"] = values
    if start_key:
        kwargs["ExclusiveStartKey"] = {k: {"S": v} for k, v in start_key.items()}
    r = ddb.query(**kwargs)
    last = r.get("LastEvaluatedKey")
    return Page([c.plain(i) for i in r.get("Items", [])],
                {k: v["S"] for k, v in last.items()} if last else None)


# ---- records <-> items (the only place that knows both) ---------------------------------------
_MSG = "MSG#"
_META = "META"
_ONCE = "ONCE#"  # an Idempotency-Key's create (MessageStore._claim_key)
_SLOW, _SLOW_SK = "SLOW#", "MX"  # a slow recipient domain (mark_slow, slow_until)
_SUSP, _SUSP_SK = "SUSP#", "SUSPENSION"  # a suspended provider for a sending IP (suspend, suspension)
_SHAPE, _SHAPE_SK, _WINDOW = "SHAPE#", "SLOTS", "w_"  # connection slots and windows (take_slot, ...)
_LISTINGS = {
    # the API's lists: which index answers them, and what a start key in them holds
    "messages_to": ("gsi1", ("pk", "sk", "gsi1pk", "gsi1sk"), "gsi1pk", "RCPT#", "gsi1sk"),
    "messages_on": ("gsi3", ("pk", "sk", "gsi3pk", "gsi3sk"), "gsi3pk", "DAY#", "gsi3sk"),
    "bounces_to": ("gsi2", ("pk", "sk", "gsi2pk", "gsi2sk"), "gsi2pk", "BOUNCE#", "gsi2sk"),
    "bounces_of_type": ("gsi4", ("pk", "sk", "type", "received_at"), "type", "", "received_at"),
}
_SUPPRESSION_LISTING = ("by_source", ("address", "source", "created_at"), "source", "", "created_at")


def _keys_of(item: Mapping[str, Any], attrs: tuple[str, ...]) -> dict[str, str]:
    return {a: str(item[a]) for a in attrs if a in item}


def _message_id(item: Mapping[str, Any]) -> str:
    return str(item["pk"]).removeprefix(_MSG)


def _message(item: Mapping[str, Any]) -> Message:
    if "spec_z" in item:  # a boto3 Binary
        item = dict(item, spec_z=bytes(getattr(item["spec_z"], "value", item["spec_z"])))
    return Message.from_dict(item)


def _inflate(packed: bytes) -> bytes:
    """A stored request deflated by MessageStore.create: at most INLINE_RAW_MAX bytes, as written."""
    d = zlib.decompressobj()
    out = d.decompress(packed, INLINE_RAW_MAX + 1)
    if len(out) > INLINE_RAW_MAX or d.unconsumed_tail or not d.eof:
        raise ValueError("a stored request inflates beyond INLINE_RAW_MAX, or is cut short")
    return out


def _recipient(item: Mapping[str, Any]) -> Recipient:
    return Recipient.from_dict(item, message_id=_message_id(item))


def _bounce(item: Mapping[str, Any]) -> Bounce:
    # sk = BOUNCE#<nnn>#<bounce id>; reports stored before `received_at` have it in gsi2sk
    _, index, bounce_id = str(item["sk"]).split("#", 2)
    return Bounce.from_dict(item, message_id=_message_id(item), index=int(index),
                            bounce_id=item.get("bounce_id") or bounce_id,
                            received_at=item.get("received_at") or str(item.get("gsi2sk", ""))[:24],
                            verified=bool(item.get("verified", False)))


def _orphan(item: Mapping[str, Any]) -> Orphan:
    return Orphan.from_dict(item, kind=str(item.get("kind") or item["sk"]).lower(),
                            received_at=item.get("received_at") or str(item.get("gsi2sk", "")),
                            envelope_recipients=tuple(item.get("envelope_recipients") or ()),
                            recipients=tuple(item["recipients"]) if "recipients" in item else None)


def _fields(record: Record, *drop: str) -> dict[str, Any]:
    d = record.as_dict()
    for k in drop:
        d.pop(k, None)
    return d


class MessageStore:
    def __init__(self, ddb: Any, table: str, s3: Any, bucket: str, *,
                 inline_limit: int = INLINE_LIMIT, retention_days: int = 30,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.ddb, self.table, self.s3, self.bucket = ddb, table, s3, bucket
        self.inline_limit, self.retention = inline_limit, retention_days * 86400
        self.sleep, self.clock = sleep, clock

    def expires_for(self, now: float, deliver_until: float | None) -> int:
        """The TTL (`expires_at`) of a message's items: the retention, but never before the
        delivery deadline plus TTL_MARGIN (issue 8: a 1-day retention deleted messages that
        were still being retried)."""
        ttl = now + self.retention
        if deliver_until is not None:
            ttl = max(ttl, float(deliver_until) + TTL_MARGIN)
        return math.ceil(ttl)

    # ---- creation -------------------------------------------------------------------------
    def create(self, meta: Message, recipients: list[Recipient], request: StoredRequest,
               now: float, once: CreateKey | None = None) -> EarlierCreate | None:
        """Store a new message: its recipients, then its META item (with the request inline, or a
        pointer to S3 for a large one, put there first under bodies/<id>.json).

        Plain conditional PutItems, not a transaction (issue 15 item 4: a transactional write
        bills 2 units per KB, and each of its items' index copies as much again). The META item,
        written last, is the commit point: a message is whatever has a META item. Nothing may
        treat recipients without one as a message, and nothing does: the sender loads the META
        and the recipients together (`load`) and drops a job for a message without META, the
        API answers 404 for it, and its recipients can never be claimed by a job that could
        send. Where each crash leaves things (the API has not answered 202 in any of them, so
        the client retries, under a new id):
        - before the first put, or a put failing: nothing stored (a failing put raises after
          this method deletes what it wrote; a META put failing but applied is a commit,
          `_failed_create`); so for a create still short of its META put
          COMMIT_WITHIN after it began: StoreBusyError (503 / 451), as `load` may soon take it apart;
        - killed between puts (Lambda timeout, a lost container): some or all recipients, no
          META. Nothing is sent: their jobs (the sweeper's, after its grace period) load no
          message and are dropped, and `load` deletes such recipients once they are older than
          UNCOMMITTED_AGE (longer than any create can take), so they leave the lists then;
        - killed after the META put, before the job is queued: the whole message, as before
          with the transaction: the sweeper queues its job (nothing lost; sent once, and again
          if the client retried: the window the transaction had too).
        So no partial recipient set is ever delivered, which the transaction guaranteed; what
        it gave that this does not, recipients visible in GET /v1/messages for up to
        UNCOMMITTED_AGE after a crash, is documented in the README's cost section.

        With `once` (a request with an Idempotency-Key), the key is claimed first (`_claim_key`):
        if an earlier create with it committed its META, nothing is written and that message
        is returned (its id and digest), so a retry after a crash past the META cannot make a
        second copy once the idempotency record's in-progress mark has expired."""
        started, message_id = self.clock(), meta.message_id
        if once is not None and (earlier := self._claim_key(once, message_id, now)) is not None:
            return earlier
        body = request.to_json()
        expires = self.expires_for(now, meta.deliver_until)
        created = iso(now)
        item = dict(_fields(meta, "spec", "spec_key", "spec_z"), pk=_MSG + message_id, sk=_META,
                    expires_at=expires, created_at=created, created_ts=now, **self._stored_body(message_id, body))
        items = [self._recipient_item(r, expires, created, now) for r in recipients] + [item]
        written: list[str] = []
        try:
            for it in items:
                if it is item and (ran := self.clock() - started) > COMMIT_WITHIN:  # see COMMIT_WITHIN
                    raise StoreBusyError(f"the create ran {ran:.0f} s: too late to commit before "
                                         f"its recipients count as uncommitted ({UNCOMMITTED_AGE} s)")
                self._put_new(it)
                written.append(it["sk"])
        except Exception as exc:
            if self._failed_create(message_id, written, len(items) - 1, once, exc):
                return None
            raise
        return None

    def _failed_create(self, message_id: str, written: list[str], recipients: int,
                       once: CreateKey | None, exc: Exception) -> bool:
        """A create's put failed: take back what it wrote and free its key, unless the failing
        put was the META's and the META is there all the same (r18b): DynamoDB applied it and
        the answers to botocore's every try were lost (read timeouts). Then the message is
        committed, as any with a META item: True, the create succeeded. (Taken back, it left a
        META with no recipients: announced by the events function, never final, and answered
        202 with nothing to deliver to its Idempotency-Key's retry.) When the META cannot be
        read, nothing is taken back: recipients without one are deleted by `load` later."""
        if len(written) == recipients and not isinstance(exc, StoreBusyError):
            try:
                committed = "Item" in self.ddb.get_item(
                    TableName=self.table, Key={"pk": {"S": _MSG + message_id}, "sk": {"S": _META}},
                    ConsistentRead=True, ProjectionExpression="pk")
            except Exception:  # noqa: BLE001 - unknown: leave the recipients, the create's error stands
                log.warning("a create's META put failed; whether it was applied is unknown",
                            extra={"message_id": message_id})
                written = []
            else:
                if committed:
                    log.warning("a create's META put failed but was applied: committed",
                                extra={"message_id": message_id})
                    return True
        self._take_back(message_id, written)
        if once is not None:
            self.release_key(once, message_id)
        return False

    def _put_new(self, item: dict) -> None:
        """One of a create's puts. Its key is new (the message id has 80 random bits), so when the
        condition fails the item is this put's own: a try DynamoDB applied whose answer was lost
        (botocore retries a read timeout), and the retry refused by the first try's item (r17:
        a META put so refused made the create take back its recipients, leaving a META with none)."""
        try:
            self.ddb.put_item(TableName=self.table, Item=codec().item(item),
                              ConditionExpression="attribute_not_exists(pk)")
        except self.ddb.exceptions.ConditionalCheckFailedException:
            log.warning("a create's put was refused by its own earlier try", extra={"sk": item["sk"]})

    def _claim_key(self, once: CreateKey, message_id: str, now: float) -> EarlierCreate | None:
        """Point the key's ONCE# item at `message_id`, unless it points at a committed message
        (one with a META item), which is returned. A claim past its hold (`ttl`: the key means a
        new request again) is taken over, and so is one whose message never committed (killed
        before its META, or taken back after a 503): its creator is gone, as the idempotency
        layer only lets a retry through once the first request's run is over. r16: that layer
        can let one through while the first still runs (SMTP submission's in-progress mark ends
        after 120 s, its accept does not), so a claim is taken over only once its creator's
        time (`busy_until`, CreateKey.busy) is over or it was released; before, InProgressError.
        The item's TTL is the hold plus UNCOMMITTED_AGE (s17b; it was the hold plus a day): the
        idempotency record's 24 h count from its create's end, which is at most that late."""
        key = {"pk": {"S": _ONCE + once.key}, "sk": {"S": _META}}
        busy = UNCOMMITTED_AGE if once.busy is None else once.busy
        item = codec().item({"pk": _ONCE + once.key, "sk": _META, "message_id": message_id,
                             "digest": once.digest, "hold_until": now + once.ttl, "busy_until": now + busy,
                             "expires_at": math.ceil(now + once.ttl + UNCOMMITTED_AGE)})
        cond = "attribute_not_exists(pk) OR hold_until < :now"
        values: dict[str, Any] = {":now": {"N": repr(float(now))}}
        for _ in range(4):  # bounded: each lost race means another create claimed it meanwhile
            try:
                self.ddb.put_item(TableName=self.table, Item=item, ConditionExpression=cond,
                                  **({"ExpressionAttributeValues": values} if values else {}))
                return None
            except self.ddb.exceptions.ConditionalCheckFailedException:
                pass
            held = self.ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
            if held is None:
                cond, values = "attribute_not_exists(pk)", {}
                continue
            earlier = held["message_id"]["S"]
            if earlier == message_id:  # this put's own, its answer lost (r17: see _put_new)
                return None
            if float(held["hold_until"]["N"]) >= now and self.ddb.get_item(
                    TableName=self.table, Key={"pk": {"S": _MSG + earlier}, "sk": {"S": _META}},
                    ConsistentRead=True, ProjectionExpression="pk").get("Item"):
                return EarlierCreate(earlier, held["digest"]["S"])
            if float(held["hold_until"]["N"]) >= now and float(held.get("busy_until", {"N": "0"})["N"]) >= now:
                raise InProgressError("a request with this Idempotency-Key is still in progress; retry",
                                      field="Idempotency-Key")
            cond, values = "message_id = :m", {":m": {"S": earlier}}
        raise StoreBusyError("the Idempotency-Key's create kept changing hands")

    def release_key(self, once: CreateKey, message_id: str) -> None:
        """Free the key's claim held by `message_id`, a create taken back (its client got an
        error): the retry may take it over at once. Best effort: a claim left is free at its
        `busy_until` (r16). An UpdateItem (its busy_until ended): SMTP submission's role has no DeleteItem."""
        try:
            self.ddb.update_item(TableName=self.table, Key={"pk": {"S": _ONCE + once.key}, "sk": {"S": _META}},
                                 UpdateExpression="SET busy_until = :z", ConditionExpression="message_id = :m",
                                 ExpressionAttributeValues={":m": {"S": message_id}, ":z": {"N": "0"}})
        except Exception:  # noqa: BLE001 - taken over, or the table refusing: free at busy_until
            log.warning("an Idempotency-Key's claim was not released", extra={"message_id": message_id})

    def _stored_body(self, message_id: str, body: bytes) -> dict[str, Any]:
        """The request as the META item keeps it: deflated (`spec_z`) when that is smaller, plain
        JSON (`spec`) otherwise, or a pointer (`spec_key`) to S3 when what DynamoDB would keep
        is over `inline_limit` (or the JSON over INLINE_RAW_MAX, which bounds the inflating).
        The default limit is where the bytes cost what an S3 PUT and GET cost (issue 15 item 4:
        bench/cost_model.py, inline_break_even): each KB in DynamoDB is a write unit, 30 days
        of storage and a share of each read."""
        packed = zlib.compress(body, 6)
        if len(body) <= INLINE_RAW_MAX and min(len(packed), len(body)) <= self.inline_limit:
            return {"spec_z": packed} if len(packed) < len(body) else {"spec": body.decode()}
        key = f"bodies/{message_id}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return {"spec_key": key}

    @staticmethod
    def _recipient_item(r: Recipient, expires: int, created: str, now: float) -> dict:
        message_id = r.message_id
        it = dict(_fields(r, "message_id", "attempts"), pk=_MSG + message_id, sk=rcpt_sk(r.index),
                  expires_at=expires, created_at=created, updated_at=created, attempts=[],
                  gsi1pk=f"RCPT#{r.address.lower()}", gsi1sk=f"{created}#{message_id}",
                  # every recipient by day (the API's list without a recipient)
                  gsi3pk=f"DAY#{created[:10]}", gsi3sk=f"{created}#{message_id}#{r.index:03d}")
        if r.is_open:
            # Due at once: if no job ever comes (the enqueue after this write failed or
            # never ran), the sweeper finds it here.
            it.update(due_shard=due_shard(message_id),
                      due_at=now if r.next_attempt_at is None else r.next_attempt_at)  # scheduled: send_at
        return it

    def _take_back(self, message_id: str, sks: list[str]) -> None:
        """Delete the items a failed create wrote (best effort: what stays behind has no META
        and is deleted by `load` later)."""
        keys = [{"pk": {"S": _MSG + message_id}, "sk": {"S": sk}} for sk in sks]
        try:
            for i in range(0, len(keys), 25):
                request = {self.table: [{"DeleteRequest": {"Key": k}} for k in keys[i:i + 25]]}
                retry_unprocessed(lambda rq: self.ddb.batch_write_item(RequestItems=rq), request,
                                  "UnprocessedItems", sleep=self.sleep)
        except Exception:  # noqa: BLE001 - the create's own error is what the caller must see
            log.warning("could not take back a failed create", extra={"message_id": message_id})

    # ---- reads ----------------------------------------------------------------------------
    def load(self, message_id: str) -> StoredMessage | None:
        """A message with its recipients and bounce reports (one consistent query)."""
        c = codec()
        items: list[dict] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": _MSG + message_id}}, "ConsistentRead": True}
        while True:
            page = self.ddb.query(**kwargs)
            items.extend(c.plain(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        meta = next((i for i in items if i["sk"] == _META), None)
        if meta is None:
            self._drop_uncommitted(message_id, items)
            return None
        return StoredMessage(
            meta=_message(meta),
            recipients=sorted((_recipient(i) for i in items if i["sk"].startswith("RCPT#")),
                              key=lambda r: r.index),
            bounces=[_bounce(i) for i in items if i["sk"].startswith("BOUNCE#")])

    def _drop_uncommitted(self, message_id: str, items: list[dict]) -> None:
        """Delete recipients left without their META item for longer than UNCOMMITTED_AGE: a
        create killed between its puts (never accepted: nothing may send them), or a TTL
        deletion half done. Best effort: a caller without delete rights (the bounce
        processor) leaves them for the sender, whose swept job comes here too."""
        cutoff = iso(self.clock() - UNCOMMITTED_AGE)
        stale = [i["sk"] for i in items if i["sk"].startswith("RCPT#") and str(i.get("created_at", "")) < cutoff]
        if stale:
            log.warning("recipients without a message deleted", extra={"message_id": message_id,
                                                                        "recipients": len(stale)})
            self._take_back(message_id, stale)

    def load_request(self, meta: Message) -> StoredRequest:
        """The request stored with the message (inline, or in S3 for a large one)."""
        if meta.spec is not None:
            return StoredRequest.from_json(meta.spec)
        if meta.spec_z is not None:
            return StoredRequest.from_json(_inflate(meta.spec_z))
        if meta.spec_key is None:
            raise ValueError(f"message {meta.message_id} has no stored request")
        obj = self.s3.get_object(Bucket=self.bucket, Key=meta.spec_key)
        return StoredRequest.from_json(obj["Body"].read())

    # ---- uploads (POST /v1/uploads) -----------------------------------------------------------
    # pk=UPLOAD#<id> sk=META: who created it (key_id), its declared size and type.
    # pk=UPLOADS#<key id> sk=DAY#<yyyy-mm-dd>: how many that key created that day (the cap).
    # The bytes: S3 uploads/<id>, PUT by the client to a presigned URL.
    def load_upload(self, upload_id: str) -> bytes:
        """An attachment uploaded through POST /v1/uploads (a presigned PUT to uploads/<id>)."""
        obj = self.s3.get_object(Bucket=self.bucket, Key=f"uploads/{upload_id}")
        return bytes(obj["Body"].read())

    def upload_url(self, upload_id: str, content_type: str, size: int, expires_in: int) -> str:
        """A presigned PUT for the upload's bytes; its type and length are signed (SigV4)."""
        return str(self.s3.generate_presigned_url(
            "put_object", ExpiresIn=expires_in, HttpMethod="PUT",
            Params={"Bucket": self.bucket, "Key": f"uploads/{upload_id}",
                    "ContentType": content_type, "ContentLength": size}))

    def uploaded(self, upload_id: str) -> tuple[int, datetime | None] | None:
        """(size, last modified) of an upload's bytes; None if they were never PUT (or expired)."""
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=f"uploads/{upload_id}")
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"]), head.get("LastModified")

    def put_upload(self, upload: Upload, now: float) -> None:
        item = dict(_fields(upload, "upload_id"), pk=f"UPLOAD#{upload.upload_id}", sk=_META,
                    created_at=iso(now), expires_at=int(now + self.retention))
        self.ddb.put_item(TableName=self.table, Item=codec().item(item),
                          ConditionExpression="attribute_not_exists(pk)")

    def upload(self, upload_id: str) -> Upload | None:
        r = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                              Key={"pk": {"S": f"UPLOAD#{upload_id}"}, "sk": {"S": _META}})
        if "Item" not in r:
            return None
        return Upload.from_dict(codec().plain(r["Item"]), upload_id=upload_id)

    def count_upload(self, key_id: str, now: float, limit: int) -> bool:
        """Count one more upload for the key on `now`'s UTC day; False, counting nothing, if
        `limit` is reached."""
        try:
            self.ddb.update_item(
                TableName=self.table, Key={"pk": {"S": f"UPLOADS#{key_id}"}, "sk": {"S": f"DAY#{day_of(now)}"}},
                UpdateExpression="ADD uploads :one SET expires_at = if_not_exists(expires_at, :exp)",
                ConditionExpression="attribute_not_exists(uploads) OR uploads < :limit",
                ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": str(limit)},
                                           ":exp": {"N": str(int(now + 2 * 86400))}})
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    # ---- recipient transitions (all conditional) ------------------------------------------
    def claim(self, message_id: str, index: int, now: float, lease_seconds: float) -> bool:
        """Lease an open recipient for one attempt; False if it is final or leased elsewhere."""
        # One attribute written (issue 15 item 4): its due time stays, so the due index (gsi5)
        # takes no write (moving due_at there is a delete and a put). A crashed invocation still
        # leaves it for the sweeper, which skips a recipient until its lease has been over for
        # the grace period (`overdue`), as it did when the claim moved due_at to the lease's
        # end. if_not_exists: a recipient stored before the due index had neither attribute.
        return self._update(
            message_id, index,
            "SET lease_until = :l, due_at = if_not_exists(due_at, :l), due_shard = if_not_exists(due_shard, :ds)",
            "#st IN (:o0, :o1) AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            {":l": now + lease_seconds, ":now": now, ":o0": _OPEN[0], ":o1": _OPEN[1],
             ":ds": due_shard(message_id)})

    def release(self, message_id: str, index: int) -> None:
        self._update(message_id, index, "REMOVE lease_until", "attribute_exists(pk)", {})

    def finish_attempt(self, message_id: str, index: int, state: RecipientState, now: float,
                       attempt: Attempt | None, *, last: Mapping[str, Any] | None = None,
                       next_attempt_at: float | None = None, remote_id: str | None = None,
                       bounce: Mapping[str, Any] | None = None, waiting: Waiting | None = None) -> bool:
        """Record an attempt and move an open recipient to `state`. False if it was already
        final. An open state keeps `next_attempt_at` (due then; now if None); a final one
        loses it. `waiting`: why a deferred recipient waits (issue 11); any other outcome
        removes it."""
        sets = ["#st = :s", "updated_at = :u"]
        values: dict[str, Any] = {":s": state.value, ":u": iso(now), ":o0": _OPEN[0], ":o1": _OPEN[1]}
        names: dict[str, str] = {}
        if attempt is not None:
            sets.append("attempts = list_append(if_not_exists(attempts, :empty), :a)")
            values[":a"] = [attempt.as_dict()]
            values[":empty"] = []
        removes = ["lease_until"]
        fields: dict[str, Any] = {"last": last, "remote_id": remote_id, "bounce": bounce,
                                  "waiting": dataclasses.asdict(waiting) if waiting is not None else None}
        if waiting is None:
            removes.append("waiting")
        if state in OPEN_STATES:
            # Still open: due at its next attempt (the sweeper's index), or now if unknown.
            sets += ["due_at = :due", "due_shard = :ds"]
            values[":due"] = float(next_attempt_at) if next_attempt_at is not None else now
            values[":ds"] = due_shard(message_id)
            fields["next_attempt_at"] = next_attempt_at
        else:
            removes += ["due_at", "due_shard", "next_attempt_at"]  # final: out of the sweeper's index
        for i, (k, v) in enumerate(fields.items()):
            if v is None:
                continue
            names[f"#f{i}"] = k  # field names may be reserved words ("last")
            sets.append(f"#f{i} = :f{i}")
            values[f":f{i}"] = v
        expr = "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes)
        return self._update(message_id, index, expr, "#st IN (:o0, :o1)", values, names)

    def replace_job(self, message_id: str, token: str, expected: str | None) -> bool:
        """Make `token` the message's current job, if `expected` still is (None: no job token
        stored yet, i.e. the API's first job). False if another job became current meanwhile.
        The sender queues the job before calling this, so the current token always names a
        job that is queued or running."""
        c = codec()
        key = {"pk": {"S": _MSG + message_id}, "sk": {"S": _META}}
        if expected is None:
            cond = "attribute_exists(pk) AND attribute_not_exists(job_token)"
            values = {":t": c.value(token)}
        else:
            cond = "job_token = :e"
            values = {":t": c.value(token), ":e": c.value(expected)}
        cond = f"({cond}) OR job_token = :t"  # a retry after its answer was lost (r17b): it is current
        try:
            self.ddb.update_item(TableName=self.table, Key=key, UpdateExpression="SET job_token = :t",
                                 ConditionExpression=cond, ExpressionAttributeValues=values)
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def mark_bounced(self, message_id: str, index: int, state: RecipientState, now: float,
                     bounce: Mapping[str, Any]) -> bool:
        """An asynchronous bounce or complaint: allowed from open or delivered, once."""
        return self._update(
            message_id, index,
            "SET #st = :s, updated_at = :u, bounce = :b "
            "REMOVE lease_until, next_attempt_at, due_at, due_shard, waiting",
            "attribute_exists(pk) AND #st IN (:o0, :o1, :d)",
            {":s": state.value, ":u": iso(now), ":b": dict(bounce), ":o0": _OPEN[0], ":o1": _OPEN[1],
             ":d": RecipientState.DELIVERED.value})

    # ---- the reputation breaker's hold (issue 11 item 6) ------------------------------------
    def hold(self, message_id: str, index: int, now: float, until: float, waiting: Waiting) -> bool:
        """Defer an open recipient to `until` with no attempt counted, saying why (`waiting`).
        One conditional write, on claim's condition: False if it is final or leased elsewhere."""
        return self._update(
            message_id, index,
            "SET #st = :s, updated_at = :u, next_attempt_at = :n, due_at = :n, due_shard = :ds, "
            "waiting = :w REMOVE lease_until",
            "#st IN (:o0, :o1) AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            {":s": RecipientState.DEFERRED.value, ":u": iso(now), ":n": until, ":now": now,
             ":ds": due_shard(message_id), ":w": waiting.as_dict(), ":o0": _OPEN[0], ":o1": _OPEN[1]})

    def _update(self, message_id: str, index: int, expr: str, cond: str, values: dict,
                names: dict[str, str] | None = None, *, due_only: bool = False) -> bool:
        """`due_only`: a due-time move (mark_overdue, postpone_due) stores no `wid` (r18b): it
        does not look at leases, and replacing a claim's `wid` while that claim's lost answer
        is retried made the claim's read-back report it refused (the recipient then sat leased
        with no sender until its lease ended). Its own refused retry answers False (harmless)."""
        c = codec()
        key = {"pk": {"S": _MSG + message_id}, "sk": {"S": rcpt_sk(index)}}
        wid = _write_id() if expr.startswith("SET ") and not due_only else None
        if wid is not None:  # its own lost answer's retry is refused, then found (_wrote_own)
            expr, cond = "SET #wid = :wid, " + expr[4:], f"({cond}) AND (attribute_not_exists(#wid) OR #wid <> :wid)"
            values, names = dict(values, **{":wid": wid}), dict(names or {}, **{"#wid": "wid"})
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": key, "UpdateExpression": expr,
                                  "ConditionExpression": cond}
        names = dict(names or {})
        if "#st" in expr or "#st" in cond:
            names["#st"] = "state"
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if values:
            kwargs["ExpressionAttributeValues"] = {k: c.value(v) for k, v in values.items()}
        try:
            self.ddb.update_item(**kwargs)
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return wid is not None and _wrote_own(self.ddb, self.table, key, wid)

    # ---- scheduled sending and cancel (issue 14) ----------------------------------------------
    def start_scheduled(self, message_id: str, index: int, now: float) -> bool:
        """A scheduled recipient whose send_at has come becomes queued (then claimed as any
        other). The condition is the guarantee that nothing sends early: only `scheduled`
        with `next_attempt_at` (its send_at) <= now moves; False otherwise (not due yet,
        canceled, or another job started it)."""
        return self._update(
            message_id, index, "SET #st = :q, updated_at = :u, due_at = :now, due_shard = :ds "
            "REMOVE next_attempt_at",
            "#st = :sc AND next_attempt_at <= :now",
            {":q": RecipientState.QUEUED.value, ":sc": RecipientState.SCHEDULED.value, ":u": iso(now),
             ":now": now, ":ds": due_shard(message_id)})

    def cancel(self, message_id: str, index: int, now: float) -> bool:
        """scheduled, queued or deferred -> canceled (final, out of the sweeper's index), unless
        a sender holds it (a lease not yet ended: it is in an SMTP transaction, which finishes).
        False if it is final or leased. Exclusive with claim: each requires what the other
        removes (claim: an open state; cancel: no live lease)."""
        return self._update(
            message_id, index, "SET #st = :c, updated_at = :u "
            "REMOVE lease_until, next_attempt_at, due_at, due_shard, waiting",
            "#st IN (:o0, :o1, :o2) AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            {":c": RecipientState.CANCELED.value, ":u": iso(now), ":now": now,
             ":o0": _OPEN[0], ":o1": _OPEN[1], ":o2": _OPEN[2]})

    # ---- the sweeper (issue 8, item 11) ----------------------------------------------------
    # The sweeper reads at most this many due-index entries per shard and sweep, leased or not.
    OVERDUE_READ_PER_SHARD = 10_000

    def overdue(self, before: float, limit: int = 1000) -> list[Overdue]:
        """Open recipients due before `before` (their job should have run by then), oldest
        first, at most `limit` per shard: a key lookup on the sparse due index (gsi5). A
        recipient whose lease ends after `before` is not overdue: its invocation may still be
        running (claim leaves due_at as it was, so the index alone cannot tell). The limit
        counts only the recipients returned: a shard is read on past leased ones (many
        recipients in long transactions could otherwise hide a due one until their leases
        end), up to OVERDUE_READ_PER_SHARD entries."""
        out: list[Overdue] = []
        for n in range(DUE_SHARDS):
            out.extend(self._overdue_in(n, before, limit))
        return out

    def _overdue_in(self, shard: int, before: float, limit: int) -> list[Overdue]:
        kwargs: dict[str, Any] = {
            "TableName": self.table, "IndexName": "gsi5",
            "KeyConditionExpression": "due_shard = :s AND due_at < :b",
            "ExpressionAttributeValues": {":s": {"S": f"DUE#{shard}"}, ":b": {"N": repr(float(before))}}}
        found: list[Overdue] = []
        read = 0
        while len(found) < limit and read < self.OVERDUE_READ_PER_SHARD:
            # the first page asks for exactly the limit (nothing leased: one query, as before)
            want = limit - len(found) if read == 0 else max(100, limit - len(found))
            kwargs["Limit"] = min(want, 1000, self.OVERDUE_READ_PER_SHARD - read)
            page = self.ddb.query(**kwargs)
            items = [Overdue(it["pk"]["S"].removeprefix(_MSG), int(it["sk"]["S"].removeprefix("RCPT#")),
                             float(it["due_at"]["N"])) for it in page.get("Items", [])]
            read += len(items)
            leased = self._leased_after([(o.message_id, o.index) for o in items], before)
            found.extend(o for o in items if (o.message_id, o.index) not in leased)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    def _leased_after(self, keys: list[tuple[str, int]], before: float) -> set[tuple[str, int]]:
        """Which of these recipients are leased until `before` or later (or gone): one
        BatchGetItem of their lease_until per 100 (the overdue are few: stuck work)."""
        out = set(keys)
        for i in range(0, len(keys), 100):
            request = {self.table: {"Keys": [{"pk": {"S": _MSG + m}, "sk": {"S": rcpt_sk(n)}}
                                             for m, n in keys[i:i + 100]],
                                    "ProjectionExpression": "pk, sk, lease_until"}}
            for r in retry_unprocessed(lambda rq: self.ddb.batch_get_item(RequestItems=rq), request,
                                       "UnprocessedKeys", sleep=self.sleep):
                for it in r.get("Responses", {}).get(self.table, []):
                    if float(it.get("lease_until", {}).get("N", "0")) < before:
                        out.discard((it["pk"]["S"].removeprefix(_MSG), int(it["sk"]["S"].removeprefix("RCPT#"))))
        return out

    def postpone_due(self, message_id: str, index: int, due_at: float, until: float) -> bool:
        """Move an overdue recipient's due time to `until` (a job was just queued for it), only
        if nothing moved it since it was read. False if it changed (claimed, finished, ...)."""
        return self._update(message_id, index, "SET due_at = :u",
                            "#st IN (:o0, :o1, :o2) AND due_at = :d",
                            {":u": until, ":d": due_at, ":o0": _OPEN[0], ":o1": _OPEN[1], ":o2": _OPEN[2]},
                            due_only=True)

    # ---- slow recipient domains (the new-mail lane's shared memory) --------------------------
    def mark_slow(self, domain: str, until: float) -> None:
        """Remember, for every sender container, that `domain`'s MX is too slow for the new-mail
        lane until `until`. A conditional write: a later `until` is never replaced by an
        earlier one. The TTL attribute removes the item once it no longer matters."""
        item = {"pk": f"{_SLOW}{domain.lower().rstrip('.')}", "sk": _SLOW_SK, "until": until,
                "expires_at": int(until) + 1}
        try:
            self.ddb.put_item(TableName=self.table, Item=codec().item(item),
                              ConditionExpression="attribute_not_exists(pk) OR #u < :u",
                              ExpressionAttributeNames={"#u": "until"},
                              ExpressionAttributeValues={":u": codec().value(until)})
        except self.ddb.exceptions.ConditionalCheckFailedException:
            pass  # a later mark is already stored

    def slow_until(self, domain: str) -> float | None:
        """Until when `domain` is known slow (possibly already past: TTL deletion lags, the
        caller compares with its clock); None when no sender marked it."""
        r = self.ddb.get_item(TableName=self.table, ProjectionExpression="#u",
                              ExpressionAttributeNames={"#u": "until"},
                              Key={"pk": {"S": f"{_SLOW}{domain.lower().rstrip('.')}"}, "sk": {"S": _SLOW_SK}})
        if "Item" not in r or "until" not in r["Item"]:
            return None
        return float(r["Item"]["until"]["N"])

    # ---- suspended providers (issue 11: throttle replies) ------------------------------------
    @staticmethod
    def _susp_key(ip: str, provider: str) -> dict[str, Any]:
        return {"pk": {"S": f"{_SUSP}{ip}#{provider.lower()}"}, "sk": {"S": _SUSP_SK}}

    def suspend(self, suspension: Suspension, *, replaces: Suspension | None, forget_at: float) -> bool:
        """Record a provider's suspension for a sending IP, only if the record is still the one
        the caller read (`replaces`; None: there was none): two containers throttled at once
        raise the level once, and the loser reads the winner's. False when it lost."""
        s = suspension
        item = dict(self._susp_key(s.ip, s.provider))
        c = codec()
        item.update(c.item({"ip": s.ip, "provider": s.provider, "until": s.until, "level": s.level,
                            "reply": s.reply, "since": s.since, "expires_at": math.ceil(forget_at),
                            "wid": _write_id()}))
        if replaces is None:
            cond: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            cond = {"ConditionExpression": "#u = :u AND #l = :l",
                    "ExpressionAttributeNames": {"#u": "until", "#l": "level"},
                    "ExpressionAttributeValues": {":u": c.value(replaces.until), ":l": c.value(replaces.level)}}
        try:
            self.ddb.put_item(TableName=self.table, Item=item, **cond)
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:  # its own, retried (r17b)?
            return _wrote_own(self.ddb, self.table, self._susp_key(s.ip, s.provider), item["wid"]["S"])

    def suspension(self, ip: str, provider: str) -> Suspension | None:
        """The provider's last suspension for the sending IP (possibly over: the caller compares
        `until` with its clock, and the ramp after it still matters); None if none is kept."""
        r = self.ddb.get_item(TableName=self.table, ConsistentRead=True, Key=self._susp_key(ip, provider))
        if "Item" not in r:
            return None
        return Suspension.from_dict(codec().plain(r["Item"]))

    # ---- slots: fleet-wide connection leases and rate / warm-up windows (issue 11) ---------
    # One item per (sending IP, provider). Every change is one conditional UpdateItem, so the
    # number of leases never exceeds the cap and no window's count its limit, however many
    # senders race (DynamoDB serialises writes to an item). delivery/shaping.py decides.
    @staticmethod
    def _slot_key(ip: str, provider: str) -> dict[str, Any]:
        return {"pk": {"S": f"{_SHAPE}{ip}#{provider.lower()}"}, "sk": {"S": _SHAPE_SK}}

    @staticmethod
    def _slot_state(item: Mapping[str, Any]) -> SlotState:
        plain = codec().plain(item)
        return SlotState(leases={str(k): float(v) for k, v in (plain.get("leases") or {}).items()},
                         used={k.removeprefix(_WINDOW): int(v) for k, v in plain.items() if k.startswith(_WINDOW)})

    def _take(self, ip: str, provider: str, lease: tuple[str, float, int] | None,
              take: Mapping[str, tuple[int, int]], now: float) -> tuple[bool, SlotState | None]:
        c = codec()
        sets = ["expires_at = :exp"]
        conds: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {":exp": c.value(int(now) + 2 * 86400)}
        if take:
            values[":zero"] = c.value(0)
        if lease is not None:
            lease_id, until, cap = lease
            names["#l"] = lease_id
            sets.append("leases.#l = :until")
            conds.append("size(leases) < :cap AND attribute_not_exists(leases.#l)")  # once: _own_lease
            values[":until"], values[":cap"] = c.value(until), c.value(cap)
        for i, (window, (n, limit)) in enumerate(take.items()):
            names[f"#w{i}"] = _WINDOW + window
            sets.append(f"#w{i} = if_not_exists(#w{i}, :zero) + :n{i}")
            conds.append(f"(attribute_not_exists(#w{i}) OR #w{i} <= :m{i})")
            values[f":n{i}"], values[f":m{i}"] = c.value(n), c.value(limit - n)
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": self._slot_key(ip, provider),
                                  "UpdateExpression": "SET " + ", ".join(sets),
                                  "ExpressionAttributeValues": values, "ReturnValues": "ALL_NEW"}
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if conds:
            kwargs["ConditionExpression"] = " AND ".join(conds)
        for first in (True, False):
            try:
                return True, self._slot_state(self.ddb.update_item(**kwargs)["Attributes"])
            except self.ddb.exceptions.ConditionalCheckFailedException:
                pass
            r = self.ddb.get_item(TableName=self.table, ConsistentRead=True, Key=self._slot_key(ip, provider))
            item = r.get("Item")
            if _own_lease(item, lease):
                return True, self._slot_state(item)  # type: ignore[arg-type]
            if not first or lease is None or (item is not None and "leases" in item):
                return False, self._slot_state(item) if item is not None else None
            # The first lease for this IP and provider: the lease map is created (once, by
            # whoever gets there first: if_not_exists) and the take tried again.
            self.ddb.update_item(TableName=self.table, Key=self._slot_key(ip, provider),
                                 UpdateExpression="SET leases = if_not_exists(leases, :m), expires_at = :exp",
                                 ExpressionAttributeValues={":m": {"M": {}}, ":exp": values[":exp"]})
        return False, None  # pragma: no cover - the loop returns

    def take_slot(self, ip: str, provider: str, lease_id: str, until: float, cap: int,
                  take: Mapping[str, tuple[int, int]], now: float) -> tuple[bool, SlotState | None]:
        """A connection lease (until `until`) if fewer than `cap` are held, and `take`'s
        messages (window -> (n, limit)) if each window has room, all or nothing. (True, the
        state after it), or (False, the state that refused it: the cap or a window is full)."""
        return self._take(ip, provider, (lease_id, until, cap), take, now)

    def take_tokens(self, ip: str, provider: str, take: Mapping[str, tuple[int, int]],
                    now: float) -> tuple[bool, SlotState | None]:
        """`take`'s messages (window -> (n, limit)), all or nothing, as take_slot."""
        return self._take(ip, provider, None, take, now)

    def slot_state(self, ip: str, provider: str) -> SlotState | None:
        r = self.ddb.get_item(TableName=self.table, ConsistentRead=True, Key=self._slot_key(ip, provider))
        return self._slot_state(r["Item"]) if "Item" in r else None

    def renew_slot(self, ip: str, provider: str, lease_id: str, until: float) -> bool:
        """Extend a lease this sender holds; False if it is gone (expired and dropped)."""
        try:
            self.ddb.update_item(TableName=self.table, Key=self._slot_key(ip, provider),
                                 UpdateExpression="SET leases.#l = :u",
                                 ConditionExpression="attribute_exists(leases.#l)",
                                 ExpressionAttributeNames={"#l": lease_id},
                                 ExpressionAttributeValues={":u": codec().value(until)})
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def release_slot(self, ip: str, provider: str, lease_id: str | None, give_back: Mapping[str, int],
                     forget: Iterable[str] = ()) -> None:
        """Drop a lease, give back messages taken but not sent (window -> n), and remove the
        counters of windows that are over (`forget`), in one write."""
        c = codec()
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets, removes = [], []
        if lease_id is not None:
            names["#l"] = lease_id
            removes.append("leases.#l")
        for i, (window, n) in enumerate(give_back.items()):
            if n > 0:
                names[f"#g{i}"] = _WINDOW + window
                sets.append(f"#g{i} = if_not_exists(#g{i}, :n{i}) - :n{i}")
                values[f":n{i}"] = c.value(n)
        for i, window in enumerate(forget):
            names[f"#f{i}"] = _WINDOW + window
            removes.append(f"#f{i}")
        if not sets and not removes:
            return
        expr = (("SET " + ", ".join(sets)) if sets else "") + ((" REMOVE " + ", ".join(removes)) if removes else "")
        # With a lease, only while it is held: a retry of a release whose answer was lost (r17b)
        # must not give the messages back twice (a window then admits more than its limit).
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": self._slot_key(ip, provider),
                                  "UpdateExpression": expr.strip(), "ExpressionAttributeNames": names,
                                  "ConditionExpression": "attribute_exists(leases.#l)" if lease_id is not None
                                  else "attribute_exists(pk)"}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.ddb.update_item(**kwargs)
        except self.ddb.exceptions.ConditionalCheckFailedException:
            pass  # no such item (TTL removed it): nothing to release

    def drop_leases(self, ip: str, provider: str, expired: Mapping[str, float]) -> bool:
        """Remove leases that expired (a killed sender's), each only if it still has the
        expiry that was read (a renewal since keeps it). False if any changed."""
        if not expired:
            return True
        c = codec()
        names = {f"#x{i}": lease_id for i, lease_id in enumerate(expired)}
        values = {f":x{i}": c.value(until) for i, until in enumerate(expired.values())}
        try:
            self.ddb.update_item(TableName=self.table, Key=self._slot_key(ip, provider),
                                 UpdateExpression="REMOVE " + ", ".join(f"leases.{n}" for n in names),
                                 ConditionExpression=" AND ".join(f"leases.#x{i} = :x{i}" for i in range(len(expired))),
                                 ExpressionAttributeNames=names, ExpressionAttributeValues=values)
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    # ---- bounces and orphans --------------------------------------------------------------
    def read_inbound(self, key: str, limit: int) -> tuple[bytes, int] | None:
        """The first `limit` bytes of an inbound mail (S3, a ranged GET) and its whole size;
        None if the object is gone."""
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{limit - 1}")
        except self.s3.exceptions.NoSuchKey:
            return None
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            return b"", 0  # an empty object: no byte 0 to start a range at
        body = obj["Body"]
        try:
            raw = body.read(limit)  # bounded even if a range were ignored
        finally:
            body.close()
        # "bytes 0-1048575/5242880": the size after the slash.
        total = str(obj.get("ContentRange") or "").rpartition("/")[2]
        return bytes(raw), int(total) if total.isdigit() else len(raw)

    def put_inbound(self, key: str, raw: bytes) -> None:
        """Drop a mail where inbound mail lands (the simulator's reports, issue 14: inbound/s3/,
        whose ObjectCreated notification invokes the bounce processor)."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=raw, ContentType="message/rfc822")

    def add_bounce(self, bounce: Bounce, now: float) -> bool:
        """Store a bounce report once (idempotent on the report's id). False if already there."""
        item = dict(_fields(bounce, "message_id", "index"), pk=_MSG + bounce.message_id,
                    sk=f"BOUNCE#{bounce.index:03d}#{bounce.bounce_id}",
                    expires_at=int(now + self.retention),
                    gsi2pk=f"BOUNCE#{bounce.address.lower()}", gsi2sk=f"{iso(now)}#{bounce.message_id}")
        return put_if_absent(self.ddb, self.table, item, "pk", keys=("pk", "sk"))

    def add_orphan(self, orphan: Orphan, now: float) -> bool:
        """Keep inbound mail that changed nothing, once per (S3 key, kind)."""
        kind = orphan.kind.upper()
        item = dict(_fields(orphan), pk=f"INBOUND#{orphan.s3_key}", sk=kind,
                    expires_at=int(now + self.retention), gsi2pk=kind, gsi2sk=iso(now))
        return put_if_absent(self.ddb, self.table, item, "pk", keys=("pk", "sk"))

    def orphans(self, kind: str, limit: int = 100) -> list[Orphan]:
        """The newest orphans of one kind (unparsed, unmatched, unverified, autoreply)."""
        page = self.ddb.query(TableName=self.table, IndexName="gsi2",
                              KeyConditionExpression="gsi2pk = :p",
                              ExpressionAttributeValues={":p": {"S": kind.upper()}}, Limit=limit)
        return [_orphan(codec().plain(i)) for i in page.get("Items", [])]

    # ---- the API's lists ------------------------------------------------------------------
    def listing(self, query: str, part: str) -> Listing:
        """How a cursor of `query` ("messages_to" an address, "messages_on" a day,
        "bounces_to" an address, "bounces_of_type" a type) must look in partition `part`."""
        _, attrs, pk_attr, prefix, sort = _LISTINGS[query]
        return Listing(attrs, (pk_attr, prefix + part), sort)

    def _list(self, query: str, part: str, since: str | None, limit: int,
              start_key: dict[str, str] | None, filters: Mapping[str, Any] | None) -> Page[dict]:
        index, attrs, pk_attr, prefix, sort = _LISTINGS[query]
        page = query_page(self.ddb, self.table, index=index, pk=(pk_attr, prefix + part),
                          sk_from=(sort, since) if since else None, limit=limit,
                          start_key=start_key, filters=filters)
        return Page(page.items, page.last_key, [_keys_of(i, attrs) for i in page.items])

    def messages_to(self, address: str, *, since: str | None = None, state: str | None = None,
                    limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Recipient]:
        """Recipient records of the messages sent to `address` (normalised), newest first."""
        p = self._list("messages_to", address, since, limit, start_key, {"state": state} if state else None)
        return Page([_recipient(i) for i in p.items], p.last_key, p.keys)

    def messages_on(self, day: str, *, since: str | None = None, state: str | None = None,
                    limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Recipient]:
        """Every recipient record created on a UTC day (yyyy-mm-dd), newest first."""
        p = self._list("messages_on", day, since, limit, start_key, {"state": state} if state else None)
        return Page([_recipient(i) for i in p.items], p.last_key, p.keys)

    def bounces_to(self, address: str, *, since: str | None = None, type: str | None = None,
                   kind: str | None = None, limit: int = 50,
                   start_key: dict[str, str] | None = None) -> Page[Bounce]:
        """Bounce reports about one address (normalised), newest first."""
        filters = {k: v for k, v in (("type", type), ("kind", kind)) if v}
        p = self._list("bounces_to", address, since, limit, start_key, filters or None)
        return Page([_bounce(i) for i in p.items], p.last_key, p.keys)

    def bounces_of_type(self, type: str, *, since: str | None = None, kind: str | None = None,
                        limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Bounce]:
        """Bounce reports of one type (bounce, complaint, delay, notice), newest first."""
        p = self._list("bounces_of_type", type, since, limit, start_key, {"kind": kind} if kind else None)
        return Page([_bounce(i) for i in p.items], p.last_key, p.keys)

    # ---- the suppressions' audit log (issue 5) --------------------------------------------
    def add_suppression_event(self, event: SuppressionEvent) -> None:
        """Append an audit event of an address's suppression (added, removed: who and when).

        Audit events carry no `expires_at`: they outlive message retention on purpose.
        """
        import secrets as _secrets

        item = dict(_fields(event, "address"), pk=f"SUPPRESSION#{event.address}",
                    sk=f"EVENT#{event.at}#{_secrets.token_hex(4)}")
        self.ddb.put_item(TableName=self.table, Item=codec().item(item),
                          ConditionExpression="attribute_not_exists(pk)")

    def suppression_history(self, address: str, limit: int = 20) -> list[SuppressionEvent]:
        """The newest audit events of one address's suppression."""
        items = query_page(self.ddb, self.table, index=None, pk=("pk", f"SUPPRESSION#{address}"),
                           sk_from=("sk", "EVENT#"), limit=limit).items
        return [SuppressionEvent.from_dict(i, address=address) for i in items]

    def recipients_created(self, message_id: str, count: int,
                           known: Mapping[int, Recipient] | None = None) -> list[Recipient] | None:
        """A committed message's recipients, for the events function at its META's INSERT (s16f):
        `known` (those whose INSERT images the stream batch had, s17b), and the others as they
        are now, with one consistent BatchGetItem per 100 keys of the META and those others (its
        recipients were written before the META); None when its META is gone (expired). The
        META is always read: a message deleted since gives no events."""
        known = {i: r for i, r in (known or {}).items() if i < count}
        keys = [_META] + [rcpt_sk(i) for i in range(count) if i not in known]
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 100):
            request = {self.table: {"ConsistentRead": True, "Keys": [
                {"pk": {"S": _MSG + message_id}, "sk": {"S": sk}} for sk in keys[i:i + 100]]}}
            for r in retry_unprocessed(lambda rq: self.ddb.batch_get_item(RequestItems=rq), request,
                                       "UnprocessedKeys", sleep=self.sleep):
                for it in r.get("Responses", {}).get(self.table, []):
                    found[it["sk"]["S"]] = codec().plain(it)
        if _META not in found:
            return None
        read = [_recipient(v) for k, v in found.items() if k != _META]
        return sorted([*known.values(), *read], key=lambda x: x.index)

    def any_open(self, message_id: str, *, page: int = OPEN_PAGE) -> bool:
        """Whether the message has a recipient left open (scheduled, queued or deferred): the
        scheduled job's hop (delivery/job.py), every 15 minutes until send_at. Reads the META
        and the recipients in key order, `page` items a query, and stops at the first open one
        (one query when the first recipients are open; `load` read them all, every hop). A
        message without its META (gone, or never committed) has none: then `load`, which
        deletes recipients left without it (as the hop did before, through `load`)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :p AND sk >= :meta",
            "ExpressionAttributeValues": {":p": {"S": _MSG + message_id}, ":meta": {"S": _META}},
            "ExpressionAttributeNames": {"#st": "state"}, "ProjectionExpression": "sk, #st",
            "ConsistentRead": True, "Limit": page}
        opened = {str(s) for s in OPEN_STATES}
        first = True
        while True:
            r = self.ddb.query(**kwargs)
            items = r.get("Items", [])
            if first and (not items or items[0]["sk"]["S"] != _META):
                self.load(message_id)
                return False
            first = False
            if any(i["sk"]["S"].startswith("RCPT#") and i.get("state", {}).get("S") in opened for i in items):
                return True
            if "LastEvaluatedKey" not in r:
                return False
            kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]

    # ---- a committed message whose job was not queued (s17f) -----------------------------------
    def mark_overdue(self, message_id: str, recipients: Sequence[Recipient], created: float, by: float) -> int | None:
        """Mark a committed message whose job SQS refused (api/service.py: accepted all the same,
        never taken back) overdue: move the due time (gsi5) of its first open recipient, as
        `create` wrote it at `created` (then, or a scheduled one's send_at), `by` seconds earlier.
        With `by` the sweeper's grace, its next run queues the message's job (a scheduled one's:
        its first run after send_at), and that job takes every open recipient of the message
        that is due (delivery/job.py pick_due), so one recipient is enough: one UpdateItem. Its
        condition, open and still due as `create` put it, makes the move only ever lower that
        time and never touch a recipient a job has deferred or finished since; then the next one
        is tried. A leased one is moved (the claim leaves due_at, r18b): the sweeper skips it
        until its lease ends (`overdue`), and the claim keeps a duplicate job from sending it.
        The index moved, or None (every open one moved by a job already)."""
        for r in recipients:
            if not r.is_open:
                continue
            due = created if r.next_attempt_at is None else float(r.next_attempt_at)
            if self._update(message_id, r.index, "SET due_at = :n", "#st IN (:o0, :o1, :o2) AND due_at = :d",
                            {":n": due - by, ":d": due, ":o0": _OPEN[0], ":o1": _OPEN[1], ":o2": _OPEN[2]},
                            due_only=True):
                return r.index
        return None


class SuppressionStore:
    """Suppressions keyed by `addresses.suppression_key`: every spelling of one mailbox (A-label
    or U-label domain, quoted or unquoted local part, any case) is one item."""

    def __init__(self, ddb: Any, table: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.ddb, self.table, self.sleep = ddb, table, sleep

    def get(self, address: str) -> Suppression | None:
        r = self.ddb.get_item(TableName=self.table, Key={"address": {"S": suppression_key(address)}},
                              ConsistentRead=True)
        return _suppression(codec().plain(r["Item"])) if "Item" in r else None

    def suppressed(self, addresses: Iterable[str]) -> set[str]:
        """Which of these addresses are suppressed, each as given but lowercased: one
        BatchGetItem per 100 keys."""
        given = {a.lower(): suppression_key(a) for a in addresses}
        found = self._found(set(given.values()))
        return {a for a, key in given.items() if key in found}

    def _found(self, wanted_keys: set[str]) -> set[str]:
        wanted = sorted(wanted_keys)
        found: set[str] = set()
        for i in range(0, len(wanted), 100):
            keys = [{"address": {"S": a}} for a in wanted[i:i + 100]]
            request = {self.table: {"Keys": keys, "ProjectionExpression": "address"}}
            for r in retry_unprocessed(lambda rq: self.ddb.batch_get_item(RequestItems=rq), request,
                                       "UnprocessedKeys", sleep=self.sleep):
                found.update(it["address"]["S"] for it in r["Responses"].get(self.table, []))
        return found

    def add(self, suppression: Suppression) -> bool:
        """Add a suppression; an existing one is kept (first reason wins). True if new."""
        item = dict(_fields(suppression), address=suppression_key(suppression.address))
        return put_if_absent(self.ddb, self.table, item, "address", keys=("address",))

    def remove(self, address: str) -> bool:
        r = self.ddb.delete_item(TableName=self.table, Key={"address": {"S": suppression_key(address)}},
                                 ReturnValues="ALL_OLD")
        return "Attributes" in r

    def listing(self, source: str) -> Listing:
        _, attrs, pk_attr, _, sort = _SUPPRESSION_LISTING
        return Listing(attrs, (pk_attr, source), sort)

    def from_source(self, source: str, *, since: str | None = None, limit: int = 50,
                    start_key: dict[str, str] | None = None) -> Page[Suppression]:
        """Suppressions from one source (bounce, complaint, manual), newest first (an index on
        source / created_at, so listing never scans the table)."""
        index, attrs, pk_attr, _, sort = _SUPPRESSION_LISTING
        p = query_page(self.ddb, self.table, index=index, pk=(pk_attr, source),
                       sk_from=(sort, since) if since else None, limit=limit, start_key=start_key)
        return Page([_suppression(i) for i in p.items], p.last_key, [_keys_of(i, attrs) for i in p.items])


def _suppression(item: Mapping[str, Any]) -> Suppression:
    return Suppression.from_dict(item, source=item.get("source") or "manual",
                                 created_at=item.get("created_at") or "")


def set_remove_update(fields: Mapping[str, Any], key: str) -> dict[str, Any]:
    """UpdateItem's expression arguments that set each field (None removes it), with `#k`
    naming the key attribute for the caller's condition."""
    c = codec()
    names: dict[str, str] = {"#k": key}
    values: dict[str, Any] = {}
    sets, removes = [], []
    for i, (k, v) in enumerate(fields.items()):
        names[f"#a{i}"] = k
        if v is None:
            removes.append(f"#a{i}")
        else:
            sets.append(f"#a{i} = :a{i}")
            values[f":a{i}"] = c.value(v)
    expr = (("SET " + ", ".join(sets)) if sets else "") + ((" REMOVE " + ", ".join(removes)) if removes else "")
    out: dict[str, Any] = {"UpdateExpression": expr.strip(), "ExpressionAttributeNames": names}
    if values:
        out["ExpressionAttributeValues"] = values
    return out


class _KeyedTable:
    """A small hash-keyed table (API keys, domains): the DynamoDB calls behind ApiKeyStore and
    DomainStore. `key` is the table's key attribute (template.yaml), known only here."""

    def __init__(self, ddb: Any, table: str, key: str) -> None:
        self.ddb, self.table, self.key = ddb, table, key

    def get(self, value: str) -> dict | None:
        r = self.ddb.get_item(TableName=self.table, Key={self.key: {"S": value}})
        return codec().plain(r["Item"]) if "Item" in r else None

    def put(self, item: Mapping[str, Any]) -> None:
        self.ddb.put_item(TableName=self.table, Item=codec().item(item))

    def put_new(self, item: Mapping[str, Any]) -> bool:
        """Put an item only if its key is free. False if it already exists."""
        return put_if_absent(self.ddb, self.table, dict(item), self.key)

    def touch(self, value: str, attribute: str, when: str) -> None:
        self.ddb.update_item(TableName=self.table, Key={self.key: {"S": value}},
                             UpdateExpression=f"SET {attribute} = :w",
                             ExpressionAttributeValues={":w": {"S": when}})

    def scan_all(self) -> list[dict]:
        """Small admin tables only (keys, domains): listed by the admin CLI and the scheduled
        domain check, never on a request path."""
        out: list[dict] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            r = self.ddb.scan(**kwargs)
            out.extend(codec().plain(i) for i in r.get("Items", []))
            if "LastEvaluatedKey" not in r:
                return out
            kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]

    def update(self, value: str, fields: Mapping[str, Any]) -> dict:
        """Set attributes of an existing item (None removes one); returns the new item."""
        c = codec()
        kwargs = set_remove_update(fields, self.key)
        kwargs.update(TableName=self.table, Key={self.key: {"S": value}}, ReturnValues="ALL_NEW",
                      ConditionExpression="attribute_exists(#k)")
        return c.plain(self.ddb.update_item(**kwargs)["Attributes"])


class ApiKeyStore:
    """The API keys table: one ApiKey per key hash (the key itself is never stored)."""

    def __init__(self, ddb: Any, table: str) -> None:
        self._t = _KeyedTable(ddb, table, "key_hash")

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        item = self._t.get(key_hash)
        return ApiKey.from_dict(item) if item is not None else None

    def key_by_id(self, key_id: str) -> ApiKey | None:
        """The key with this short id (a Scan: the table holds a handful of keys; admin only)."""
        return next((k for k in self.keys() if k.key_id == key_id), None)

    def keys(self) -> list[ApiKey]:
        """Every key (a Scan; admin only), in no particular order."""
        return [ApiKey.from_dict(i) for i in self._t.scan_all()]

    def put_key(self, key: ApiKey) -> None:
        self._t.put(_fields(key))

    def touch_key(self, key_hash: str, when: str) -> None:
        """Stamp the key's `last_used_at` (one UpdateItem; no read)."""
        self._t.touch(key_hash, "last_used_at", when)

    def revoke_key(self, key_hash: str, when: str) -> ApiKey:
        """Set the key's `revoked_at`; the record stays for audit. Returns the revoked key."""
        return ApiKey.from_dict(self._t.update(key_hash, {"revoked_at": when}))


class DomainStore:
    """The domains table: one Domain per sending domain (its DKIM keys are in Secrets Manager)."""

    def __init__(self, ddb: Any, table: str) -> None:
        self._t = _KeyedTable(ddb, table, "domain")

    def domain(self, name: str) -> Domain | None:
        item = self._t.get(name)
        return Domain.from_dict(item) if item is not None else None

    def domains(self) -> list[Domain]:
        """Every domain (a Scan: a handful; the scheduled re-check and the admin CLI only)."""
        return [Domain.from_dict(i) for i in self._t.scan_all()]

    def put_domain(self, domain: Domain) -> None:
        self._t.put(_fields(domain))

    def add_domain(self, domain: Domain) -> bool:
        """Store a new domain only if its name is free (of two concurrent creates, one wins)."""
        return self._t.put_new(_fields(domain))

    def update_domain(self, name: str, **changes: Any) -> Domain:
        """Change fields of an existing domain (None removes one); returns the domain after."""
        return Domain.from_dict(self._t.update(name, changes))


class JobQueue:
    MAX_DELAY = 900  # SQS's DelaySeconds limit

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url

    def send(self, job: QueueJob, delay: float = 0) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=job.model_dump_json(exclude_none=True),
                              DelaySeconds=max(0, min(self.MAX_DELAY, int(delay))))

    def send_many(self, jobs: list[QueueJob]) -> list[str]:
        """Enqueue jobs ten per SendMessageBatch call; returns the message ids that failed. A
        call that raises fails its chunk and every later one (not tried: the queue is refusing,
        and the caller's time is short), never the chunks already queued: a sender may have
        run those already (s16e). The caller marks the failed ones overdue (s17f)."""
        failed: list[str] = []
        for i in range(0, len(jobs), 10):
            chunk = jobs[i:i + 10]
            try:
                r = self.sqs.send_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "MessageBody": j.model_dump_json(exclude_none=True)}
                    for n, j in enumerate(chunk)])
            except Exception:  # noqa: BLE001 - reported as failed ids, marked overdue by the caller
                log.exception("enqueue failed", extra={"jobs": len(jobs) - i})
                return failed + [j.message_id for j in jobs[i:]]
            failed.extend(chunk[int(f["Id"])].message_id for f in r.get("Failed", []))
        return failed


class SecretStore:
    """Secrets Manager reads, cached for the life of the container (keys load once)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._cache: dict[str, Any] = {}

    def get_json(self, secret_id: str) -> dict | None:
        if secret_id not in self._cache:
            try:
                r = self.client.get_secret_value(SecretId=secret_id)
            except self.client.exceptions.ResourceNotFoundException:
                return None
            raw = r.get("SecretString") or r["SecretBinary"].decode()
            try:
                self._cache[secret_id] = json.loads(raw)
            except ValueError:
                self._cache[secret_id] = {"value": raw}
        return self._cache[secret_id]

    def read_json(self, secret_id: str) -> dict | None:
        """An uncached read, for read-modify-write (DKIM rotation): another container may have
        changed the secret since this one cached it."""
        self._cache.pop(secret_id, None)
        return self.get_json(secret_id)

    def put_json(self, secret_id: str, value: dict) -> None:
        raw = json.dumps(value)
        try:
            self.client.put_secret_value(SecretId=secret_id, SecretString=raw)
        except self.client.exceptions.ResourceNotFoundException:
            self.client.create_secret(Name=secret_id, SecretString=raw)
        self._cache[secret_id] = value


class PolicyStore:
    """MTA-STS policies (RFC 8461) shared by every sender container: the persistent level of
    tls_policy.MtaSts's cache (its `PolicyCache`). One item per domain, pk=STS#<domain>
    sk=POLICY; `expires_at` (the table's TTL attribute) is fetched_at + max_age, so DynamoDB
    removes a policy once no sender may use it any more (§5.1: a policy is valid for max_age)."""

    SK = "POLICY"

    def __init__(self, ddb: Any, table: str) -> None:
        self.ddb, self.table = ddb, table

    def _key(self, domain: str) -> dict:
        return {"pk": {"S": f"STS#{domain.lower().rstrip('.')}"}, "sk": {"S": self.SK}}

    def get(self, domain: str) -> StsPolicy | None:
        """The stored policy, expired or not (TTL deletion lags; the caller checks expiry).
        A malformed item raises ValueError rather than passing for a policy."""
        from .tls_policy import StsPolicy

        r = self.ddb.get_item(TableName=self.table, Key=self._key(domain))
        if "Item" not in r:
            return None
        it = codec().plain(r["Item"])
        try:
            mode = it["mode"]
            if mode not in ("enforce", "testing", "none"):
                raise ValueError(f"invalid mode {mode!r}")
            return StsPolicy(str(it["id"]), mode, tuple(str(m) for m in it.get("mx") or ()),
                             int(it["max_age"]), float(it["fetched_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed MTA-STS policy item for {domain}: {exc}") from None

    def put(self, domain: str, policy: StsPolicy) -> None:
        """Write a freshly fetched policy. A conditional write: a policy fetched later by
        another container is never replaced by an older one."""
        item = {"pk": f"STS#{domain.lower().rstrip('.')}", "sk": self.SK, "id": policy.id,
                "mode": policy.mode, "mx": list(policy.mx), "max_age": policy.max_age,
                "fetched_at": policy.fetched_at, "expires_at": int(policy.expires_at()) + 1}
        try:
            self.ddb.put_item(TableName=self.table, Item=codec().item(item),
                              ConditionExpression="attribute_not_exists(pk) OR fetched_at <= :f",
                              ExpressionAttributeValues={":f": codec().value(policy.fetched_at)})
        except self.ddb.exceptions.ConditionalCheckFailedException:
            pass  # a newer policy is already stored


class ReputationStore:
    """The reputation circuit breaker's counts and states (issue 11 item 6), in MessagesTable.

    Counts: one item per (domain, key) pair and UTC hour, pk=REP#<domain scope>
    sk=H#<yyyymmddhh>#<key scope>, also filed under the key by gsi1, so one send costs one
    UpdateItem (not one per scope; issue 11 review); a message without a key (or a domain) has
    a single-scope item pk=REP#<scope> sk=H#<yyyymmddhh>, the layout before pairs, read the same
    way. Counters move by atomic ADD (no read; concurrent senders never lose a count), removed
    by TTL after REP_TTL; a 7-day rate is one Query (a key: two) over its hours. State:
    pk=REP#<scope> sk=STATE, written conditionally on the state it replaces (two evaluators
    never both trip it). Active scopes: pk=REPDAY#<yyyymmdd> sk=<scope> (mark_active)."""

    REP_TTL = 8 * 86400

    def __init__(self, ddb: Any, table: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.ddb, self.table, self.sleep = ddb, table, sleep

    @staticmethod
    def _pk(scope: str) -> str:
        return f"REP#{scope}"

    def add_counts(self, domain: str | None, key: str | None, hour: str, now: float, *, sent: int = 0,
                   hard: int = 0, complaints: int = 0) -> bool:
        """Add to the counts of a domain scope and a key scope for one hour: ONE UpdateItem (ADD)
        on the pair's item, pk=REP#<domain> sk=H#<hour>#<key>, which gsi1 (gsi1pk=REP#<key>,
        gsi1sk=H#<hour>#<domain>) also files under the key. True if the item is new (the
        pair's first count this hour: the caller marks the scopes active)."""
        adds = [(n, v) for n, v in (("sent", sent), ("hard", hard), ("complaints", complaints)) if v]
        if not adds or not (domain or key):
            return False
        values: dict[str, Any] = {f":{n}": {"N": str(int(v))} for n, v in adds}
        values[":exp"] = {"N": str(int(now + self.REP_TTL))}
        sets = "expires_at = if_not_exists(expires_at, :exp)"
        if domain and key:
            pk, sk = self._pk(domain), f"H#{hour}#{key}"
            values[":gp"], values[":gs"] = {"S": self._pk(key)}, {"S": f"H#{hour}#{domain}"}
            sets += ", gsi1pk = :gp, gsi1sk = :gs"
        else:  # one scope only: its own item (the layout before pairs; read the same way)
            pk, sk = self._pk(domain or key or ""), f"H#{hour}"
        # An ADD applied whose answer was lost would be added again by botocore's retry (r17b):
        # each call writes a fresh `wid` and requires another, so the retry is refused unless
        # another count came in between (then one call's counts are added twice: a busy
        # scope's, where one call weighs least). A refusal can only be that retry: True (the
        # item may be new; marking the scopes active again is harmless).
        values[":wid"] = {"S": _write_id()}
        try:
            r = self.ddb.update_item(
                TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                UpdateExpression="ADD " + ", ".join(f"{n} :{n}" for n, _ in adds) + " SET " + sets + ", wid = :wid",
                ConditionExpression="attribute_not_exists(wid) OR wid <> :wid",
                ExpressionAttributeValues=values, ReturnValues="ALL_OLD")
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return True
        return not r.get("Attributes")

    def counts_since(self, scope: str, hour: str) -> list[ReputationCounts]:
        """The scope's hourly counts from `hour` on: the items under its own key (a domain's
        pair items, and single-scope items), and for a key its pair items through gsi1 (one
        Query each, at most 169 small items per key or domain the pair names)."""
        out = self._counts(scope, hour, None)
        if scope.startswith("key:"):
            out += self._counts(scope, hour, "gsi1")
        return out

    def _counts(self, scope: str, hour: str, index: str | None) -> list[ReputationCounts]:
        out: list[ReputationCounts] = []
        pk, sk = ("gsi1pk", "gsi1sk") if index else ("pk", "sk")
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": f"{pk} = :p AND {sk} BETWEEN :a AND :b",
            "ExpressionAttributeValues": {":p": {"S": self._pk(scope)}, ":a": {"S": f"H#{hour}"},
                                          ":b": {"S": "H#9999999999~"}}}
        if index:
            kwargs["IndexName"] = index
        while True:
            r = self.ddb.query(**kwargs)
            for it in r.get("Items", []):
                d = codec().plain(it)
                out.append(ReputationCounts(scope, str(d[sk])[2:12], int(d.get("sent", 0)),
                                            int(d.get("hard", 0)), int(d.get("complaints", 0))))
            if "LastEvaluatedKey" not in r:
                return out
            kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]

    def rep_states(self, scopes: Iterable[str]) -> dict[str, ReputationState]:
        """The stored states of these scopes (one BatchGetItem per 100); absent ones are left out."""
        wanted = list(dict.fromkeys(scopes))
        out: dict[str, ReputationState] = {}
        for i in range(0, len(wanted), 100):
            keys = [{"pk": {"S": self._pk(sc)}, "sk": {"S": "STATE"}} for sc in wanted[i:i + 100]]
            request = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for r in retry_unprocessed(lambda rq: self.ddb.batch_get_item(RequestItems=rq), request,
                                       "UnprocessedKeys", sleep=self.sleep):
                for it in r.get("Responses", {}).get(self.table, []):
                    d = codec().plain(it)
                    scope = str(d["pk"]).removeprefix("REP#")
                    out[scope] = ReputationState.from_dict(d, scope=scope)
        return out

    def put_rep_state(self, state: ReputationState, expected: str | None) -> bool:
        """Write a scope's state if its stored state is still `expected` (None: none stored,
        or "ok"); False if another writer moved it first."""
        item = dict(_fields(state, "scope"), pk=self._pk(state.scope), sk="STATE", wid=_write_id())
        if expected is None or expected == "ok":
            cond, values = "attribute_not_exists(pk) OR #s = :e", {":e": {"S": "ok"}}
        else:
            cond, values = "#s = :e", {":e": {"S": expected}}
        try:
            self.ddb.put_item(TableName=self.table, Item=codec().item(item), ConditionExpression=cond,
                              ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues=values)
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:  # its own, retried (r17b)?
            return _wrote_own(self.ddb, self.table, {"pk": {"S": item["pk"]}, "sk": {"S": "STATE"}}, item["wid"])

    def mark_active(self, scopes: Iterable[str], day: str, now: float) -> None:
        """File scopes under a day, pk=REPDAY#<yyyymmdd> sk=<scope> (a PutItem each, once per
        scope and hour at most): the periodic evaluation's list, read without a Scan."""
        for scope in dict.fromkeys(scopes):
            self.ddb.put_item(TableName=self.table, Item=codec().item(
                {"pk": f"REPDAY#{day}", "sk": scope, "expires_at": int(now + self.REP_TTL)}))

    def active_scopes(self, days: Iterable[str]) -> list[str]:
        """The scopes filed under these days (one Query per day, a page of small items)."""
        found: dict[str, None] = {}
        for day in days:
            kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :p",
                                      "ExpressionAttributeValues": {":p": {"S": f"REPDAY#{day}"}},
                                      "ProjectionExpression": "sk"}
            while True:
                r = self.ddb.query(**kwargs)
                found.update((str(it["sk"]["S"]), None) for it in r.get("Items", []))
                if "LastEvaluatedKey" not in r:
                    break
                kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
        return list(found)


# ---- the event log (issue 12) -------------------------------------------------------------------
# Issue 15 item 4: an event is one item and ONE index entry (2 write units, not 4): the table's key
# serves the walk by message, gsi3 the walk by day, and the day walk with a filter the walk by type.
_EVT_MSG, _EVT_DAY = "EVTMSG#", "EVTDAY#"  # pk=EVTMSG#<message id> sk=<timestamp>#<event id>
_EVT_V1 = "v1:"  # a walk part over the first layout's items (pk=EVT#<event id>, until they expire)
_EVT_LISTINGS = {
    # which index answers a walk (None: the table), its partition attribute and prefix, its sort attribute
    "day": ("gsi3", "gsi3pk", _EVT_DAY, "gsi3sk"),
    "message": (None, "pk", _EVT_MSG, "sk"),
    "message_v1": ("gsi1", "gsi1pk", _EVT_MSG, "gsi1sk"),  # the first layout's index entries
}
EVENT_LIST_QUERIES = 10  # DynamoDB queries per events() call at most (a partial page beyond)
EVENT_FILTER_READ = 500  # events read per query when filtering by type (a page is cut after `limit`)


def recipient_change(change: Mapping[str, Any]) -> tuple[Recipient | None, Recipient | None] | None:
    """The recipient before and after one stream record's change (its `dynamodb` part:
    Keys, OldImage, NewImage in DynamoDB JSON); None when the item is not a recipient."""
    keys = change.get("Keys") or {}
    if not str((keys.get("sk") or {}).get("S", "")).startswith("RCPT#") or \
            not str((keys.get("pk") or {}).get("S", "")).startswith(_MSG):
        return None
    c = codec()

    def read(image: Mapping[str, Any] | None) -> Recipient | None:
        return _recipient(c.plain(image)) if image else None

    return read(change.get("OldImage")), read(change.get("NewImage"))


def committed_message(change: Mapping[str, Any]) -> Message | None:
    """The message a stream record commits (s16f): the INSERT of its META item, the create's
    last put and commit point (MessageStore.create), read from the NewImage without its stored
    request; None for any other record (a recipient, a META's update, another item)."""
    keys = change.get("Keys") or {}
    image = change.get("NewImage")
    if (keys.get("sk") or {}).get("S") != _META or not str((keys.get("pk") or {}).get("S", "")).startswith(_MSG) \
            or change.get("OldImage") or not image:
        return None
    return _message(codec().plain({k: v for k, v in image.items() if k not in ("spec", "spec_z")}))


def _event(item: Mapping[str, Any]) -> Event:
    from .events import Event

    return Event.from_dict(item, data=item.get("data") or {})


def _event_listing(kind: str, part: str) -> tuple[str | None, str, str, str, str]:
    """(index, partition attribute, its prefix, sort attribute, partition value) of one walk part."""
    if kind == "message" and part.startswith(_EVT_V1):
        return (*_EVT_LISTINGS["message_v1"], part.removeprefix(_EVT_V1))
    return (*_EVT_LISTINGS[kind], part)


def _listing_attrs(index: str | None, pk_attr: str, sort_attr: str) -> tuple[str, ...]:
    return ("pk", "sk") if index is None else ("pk", "sk", pk_attr, sort_attr)


class EventLogStore:
    """The event log (issue 12) in MessagesTable: each event once (a conditional PutItem on
    pk=EVTMSG#<message id> sk=<timestamp>#<event id>: both are functions of the change, so a
    change read twice hits the same key), with the messages' TTL rule (`expires_for`), one
    index entry each (gsi3, EVTDAY#<yyyy-mm-dd>, sorted by <timestamp>#<event id>). Listed
    without a scan: by day (gsi3), by message (the table's key), by type (the day walk with a
    filter, reading ahead EVENT_FILTER_READ events per query). Items of the first layout
    (pk=EVT#<event id>, also in gsi1 and gsi4) stay listed until their TTL: by day and type
    through gsi3 as before, by message through gsi1 after the new items (`_EVT_V1` parts).
    Lists are newest first unless `oldest_first` (replay); the cursor is opaque and bound to
    the query. Also an EventSink."""

    def __init__(self, ddb: Any, table: str, messages: MessageStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ddb, self.table, self.messages, self.clock = ddb, table, messages, clock

    def add_events(self, events: Sequence[Event], now: float) -> int:
        """Store events not stored yet; returns how many were new."""
        new = 0
        expires = self.messages.expires_for(now, None)
        for e in events:
            sort = f"{e.timestamp}#{e.event_id}"
            # Every field kept (not only in the key): code of the first layout, rolled back to, reads these too.
            item = dict(e.as_dict(), pk=_EVT_MSG + e.message_id, sk=sort, gsi3pk=_EVT_DAY + e.timestamp[:10],
                        gsi3sk=sort, expires_at=expires)
            new += put_if_absent(self.ddb, self.table, item, "pk")
        return new

    def publish(self, events: Sequence[Event]) -> None:
        self.add_events(events, self.clock())

    def tags_of(self, message_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """Each message's tags (one BatchGetItem of the META items per 100 messages); a
        message that is gone (TTL) is left out."""
        wanted = sorted(set(message_ids))
        out: dict[str, dict[str, str]] = {}
        for i in range(0, len(wanted), 100):
            keys = [{"pk": {"S": _MSG + m}, "sk": {"S": _META}} for m in wanted[i:i + 100]]
            request = {self.table: {"Keys": keys, "ProjectionExpression": "pk, tags"}}
            for r in retry_unprocessed(lambda rq: self.ddb.batch_get_item(RequestItems=rq), request,
                                       "UnprocessedKeys", sleep=self.messages.sleep):
                for it in r.get("Responses", {}).get(self.table, []):
                    d = codec().plain(it)
                    out[_message_id(d)] = {str(k): str(v) for k, v in (d.get("tags") or {}).items()}
        return out

    def _parts(self, since: str | None, message_id: str | None, oldest_first: bool) -> tuple[str, list[str]]:
        if message_id:  # the new items are all newer than the first layout's
            parts = [message_id, _EVT_V1 + message_id]
            return "message", parts[::-1] if oldest_first else parts
        now = self.clock()
        oldest = now - self.messages.retention - 86400
        if since:
            from .clock import epoch_of

            try:
                oldest = max(oldest, min(epoch_of(since), now))
            except (ValueError, OverflowError):  # year 1 formats as "1-01-01..." (strftime): before all
                pass
        days, t = [], now
        while (day := day_of(t)) >= day_of(oldest):
            days.append(day)
            t -= 86400
        return "day", days[::-1] if oldest_first else days

    def events(self, *, since: str | None = None, type: str | None = None, message_id: str | None = None,
               limit: int = 50, cursor: str | None = None, oldest_first: bool = False) -> Page[Event]:
        """Events at or after `since` (RFC 3339 as the records write it), of one `type`,
        about one message: newest first (oldest first for replay). `Page.cursor` continues
        (None: the end); a page may be short, even empty, and still have one."""
        kind, parts = self._parts(since, message_id, oldest_first)
        digest = hashlib.sha256(json.dumps([since, type, message_id, oldest_first]).encode()).hexdigest()[:16]
        n, key = _decode_event_cursor(cursor, kind, parts, digest, since)
        filters = {"type": type} if type else None
        items: list[Event] = []
        for _ in range(EVENT_LIST_QUERIES):
            if n >= len(parts) or len(items) >= limit:
                break
            index, pk_attr, prefix, sort_attr, value = _event_listing(kind, parts[n])
            want = limit - len(items)
            page = query_page(self.ddb, self.table, index=index, pk=(pk_attr, prefix + value),
                              sk_from=(sort_attr, since) if since else None,
                              limit=max(want, EVENT_FILTER_READ) if filters else want,
                              start_key=key, newest_first=not oldest_first, filters=filters)
            items.extend(_event(i) for i in page.items[:want])
            key = page.last_key if len(page.items) <= want else \
                _keys_of(page.items[want - 1], _listing_attrs(index, pk_attr, sort_attr))  # cut: after the last kept
            if key is None:
                n += 1
        nxt = None if n >= len(parts) else _encode_event_cursor(parts[n], key, digest)
        return Page(items, None, cursor=nxt)


def _encode_event_cursor(part: str, key: dict[str, str] | None, digest: str) -> str:
    raw = json.dumps({"p": part, "k": key, "q": digest}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_event_cursor(cursor: str | None, kind: str, parts: list[str], digest: str,
                         since: str | None) -> tuple[int, dict | None]:
    """(partition number, start key) of a cursor checked against the query (400 naming
    `cursor` for anything else: a forged key never reaches DynamoDB)."""
    from .errors import InvalidRequestError

    if not cursor:
        return 0, None
    bad = InvalidRequestError("invalid cursor: pass back next_cursor as given, with the same query",
                              field="cursor")
    try:
        if len(cursor) > 2048:
            raise ValueError
        doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        part, key = doc["p"], doc["k"]
        if set(doc) != {"p", "k", "q"} or doc["q"] != digest or part not in parts:
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise bad from None
    if key is not None:
        index, pk_attr, prefix, sort_attr, value = _event_listing(kind, part)
        if not isinstance(key, dict) or set(key) != set(_listing_attrs(index, pk_attr, sort_attr)) or \
                not all(isinstance(v, str) and 0 < len(v) <= 1100 for v in key.values()):
            raise bad
        if key[pk_attr] != prefix + value or (since is not None and key[sort_attr] < since):
            raise bad
    return parts.index(part), key


# ---- the interfaces the services depend on ---------------------------------------------------
# The classes above implement them on DynamoDB/S3/SQS; tests/fakes/store.py in memory. A
# service takes these, so a unit test builds it with fakes and an integration test with the
# real local stack.

class Messages(Protocol):
    """Messages, recipients, their transitions, bounce reports, orphans, uploads, the audit log."""

    def create(self, meta: Message, recipients: list[Recipient], request: StoredRequest,
               now: float, once: CreateKey | None = None) -> EarlierCreate | None: ...
    def release_key(self, once: CreateKey, message_id: str) -> None: ...
    def load(self, message_id: str) -> StoredMessage | None: ...
    def load_request(self, meta: Message) -> StoredRequest: ...
    def load_upload(self, upload_id: str) -> bytes: ...
    def upload_url(self, upload_id: str, content_type: str, size: int, expires_in: int) -> str: ...
    def uploaded(self, upload_id: str) -> tuple[int, datetime | None] | None: ...
    def put_upload(self, upload: Upload, now: float) -> None: ...
    def upload(self, upload_id: str) -> Upload | None: ...
    def count_upload(self, key_id: str, now: float, limit: int) -> bool: ...
    def claim(self, message_id: str, index: int, now: float, lease_seconds: float) -> bool: ...
    def release(self, message_id: str, index: int) -> None: ...
    def finish_attempt(self, message_id: str, index: int, state: RecipientState, now: float,
                       attempt: Attempt | None, *, last: Mapping[str, Any] | None = None,
                       next_attempt_at: float | None = None, remote_id: str | None = None,
                       bounce: Mapping[str, Any] | None = None, waiting: Waiting | None = None) -> bool: ...
    def replace_job(self, message_id: str, token: str, expected: str | None) -> bool: ...
    def mark_bounced(self, message_id: str, index: int, state: RecipientState, now: float,
                     bounce: Mapping[str, Any]) -> bool: ...
    def overdue(self, before: float, limit: int = 1000) -> list[Overdue]: ...
    def postpone_due(self, message_id: str, index: int, due_at: float, until: float) -> bool: ...
    def start_scheduled(self, message_id: str, index: int, now: float) -> bool: ...
    def cancel(self, message_id: str, index: int, now: float) -> bool: ...
    def mark_slow(self, domain: str, until: float) -> None: ...
    def slow_until(self, domain: str) -> float | None: ...
    # the reputation breaker's hold (issue 11 item 6)
    def hold(self, message_id: str, index: int, now: float, until: float, waiting: Waiting) -> bool: ...
    def read_inbound(self, key: str, limit: int) -> tuple[bytes, int] | None: ...
    def put_inbound(self, key: str, raw: bytes) -> None: ...  # the sandbox's reports (issue 14)
    def add_bounce(self, bounce: Bounce, now: float) -> bool: ...
    def add_orphan(self, orphan: Orphan, now: float) -> bool: ...
    def orphans(self, kind: str, limit: int = 100) -> list[Orphan]: ...
    def listing(self, query: str, part: str) -> Listing: ...
    def messages_to(self, address: str, *, since: str | None = None, state: str | None = None,
                    limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Recipient]: ...
    def messages_on(self, day: str, *, since: str | None = None, state: str | None = None,
                    limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Recipient]: ...
    def bounces_to(self, address: str, *, since: str | None = None, type: str | None = None,
                   kind: str | None = None, limit: int = 50,
                   start_key: dict[str, str] | None = None) -> Page[Bounce]: ...
    def bounces_of_type(self, type: str, *, since: str | None = None, kind: str | None = None,
                        limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Bounce]: ...
    def add_suppression_event(self, event: SuppressionEvent) -> None: ...
    def suppression_history(self, address: str, limit: int = 20) -> list[SuppressionEvent]: ...
    def any_open(self, message_id: str, *, page: int = ...) -> bool: ...  # the scheduled hop's question
    def mark_overdue(self, message_id: str, recipients: Sequence[Recipient], created: float,
                     by: float) -> int | None: ...


class Suspensions(Protocol):
    """Providers suspended per sending IP after a throttle reply (issue 11 item 4), shared by
    every sender container (MessagesTable)."""

    def suspend(self, suspension: Suspension, *, replaces: Suspension | None, forget_at: float) -> bool: ...
    def suspension(self, ip: str, provider: str) -> Suspension | None: ...
class Slots(Protocol):
    """Fleet-wide shaping per (sending IP, provider) (issue 11, delivery/shaping.py):
    connection leases with an expiry, and messages taken per rate / warm-up window."""

    def take_slot(self, ip: str, provider: str, lease_id: str, until: float, cap: int,
                  take: Mapping[str, tuple[int, int]], now: float) -> tuple[bool, SlotState | None]: ...
    def take_tokens(self, ip: str, provider: str, take: Mapping[str, tuple[int, int]],
                    now: float) -> tuple[bool, SlotState | None]: ...
    def slot_state(self, ip: str, provider: str) -> SlotState | None: ...
    def renew_slot(self, ip: str, provider: str, lease_id: str, until: float) -> bool: ...
    def release_slot(self, ip: str, provider: str, lease_id: str | None, give_back: Mapping[str, int],
                     forget: Iterable[str] = ()) -> None: ...
    def drop_leases(self, ip: str, provider: str, expired: Mapping[str, float]) -> bool: ...


class Suppressions(Protocol):
    """The suppression list."""

    def get(self, address: str) -> Suppression | None: ...
    def suppressed(self, addresses: Iterable[str]) -> set[str]: ...
    def add(self, suppression: Suppression) -> bool: ...
    def remove(self, address: str) -> bool: ...
    def listing(self, source: str) -> Listing: ...
    def from_source(self, source: str, *, since: str | None = None, limit: int = 50,
                    start_key: dict[str, str] | None = None) -> Page[Suppression]: ...


class Jobs(Protocol):
    """The job queue: a message id (and a schedule) per job, never the message."""

    def send(self, job: QueueJob, delay: float = 0) -> None: ...
    def send_many(self, jobs: list[QueueJob]) -> list[str]: ...


class DomainLookup(Protocol):
    """A sending domain by name (the send API's check that a sender domain is verified)."""

    def domain(self, name: str) -> Domain | None: ...


class Domains(DomainLookup, Protocol):
    """The sending domains (DomainService)."""

    def domains(self) -> list[Domain]: ...
    def put_domain(self, domain: Domain) -> None: ...
    def add_domain(self, domain: Domain) -> bool: ...
    def update_domain(self, name: str, **changes: Any) -> Domain: ...


class ApiKeys(Protocol):
    """The API keys (KeyRing: the request path reads by hash and stamps; the admin CLI the rest)."""

    def key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    def key_by_id(self, key_id: str) -> ApiKey | None: ...
    def keys(self) -> list[ApiKey]: ...
    def put_key(self, key: ApiKey) -> None: ...
    def touch_key(self, key_hash: str, when: str) -> None: ...
    def revoke_key(self, key_hash: str, when: str) -> ApiKey: ...


class Reputations(Protocol):
    """The reputation circuit breaker's hourly counts and states (issue 11 item 6)."""

    def add_counts(self, domain: str | None, key: str | None, hour: str, now: float, *, sent: int = 0,
                   hard: int = 0, complaints: int = 0) -> bool: ...
    def counts_since(self, scope: str, hour: str) -> list[ReputationCounts]: ...
    def rep_states(self, scopes: Iterable[str]) -> dict[str, ReputationState]: ...
    def put_rep_state(self, state: ReputationState, expected: str | None) -> bool: ...
    def mark_active(self, scopes: Iterable[str], day: str, now: float) -> None: ...
    def active_scopes(self, days: Iterable[str]) -> list[str]: ...


class Secrets(Protocol):
    """Secrets read and written whole (the DKIM keys of a domain, read-modify-write)."""

    def read_json(self, secret_id: str) -> dict | None: ...
    def put_json(self, secret_id: str, value: dict) -> None: ...


def _conforms(m: MessageStore, s: SuppressionStore, j: JobQueue, d: DomainStore, k: ApiKeyStore,
              x: SecretStore) -> tuple[Messages, Suppressions, Jobs, Domains, ApiKeys, Secrets, Suspensions]:
    """Never called: mypy checks here that the real adapters implement the interfaces."""
    return m, s, j, d, k, x, m


def _conforms_slots(m: MessageStore) -> Slots:
    """Never called: mypy checks that the message store implements Slots (issue 11)."""
    return m


def _conforms_reputation(r: ReputationStore) -> Reputations:
    """Never called: mypy checks the reputation breaker's adapter (issue 11 item 6)."""
    return r


class EventLog(Protocol):
    """The event log (issue 12): each event once (by event_id), listed newest first by default
    (`oldest_first` for replay), filtered by `since` (RFC 3339), `type`, `message_id`; the
    page's `cursor` continues it. Also an EventSink (`publish`)."""

    def add_events(self, events: Sequence[Event], now: float) -> int: ...  # returns how many were new
    def events(self, *, since: str | None = None, type: str | None = None, message_id: str | None = None,
               limit: int = 50, cursor: str | None = None, oldest_first: bool = False) -> Page[Event]: ...
    def publish(self, events: Sequence[Event]) -> None: ...


def _conforms_event_log(e: EventLogStore) -> EventLog:
    """Never called: mypy checks the event log's adapter (issue 12)."""
    return e
# ---- webhooks (issue 12) -------------------------------------------------------------------------
class WebhookStore:
    """WebhooksTable: the endpoints and what happened to each event sent to them.

      pk=WEBHOOKS  sk=WH#<id>                      an endpoint (webhooks.records.WebhookEndpoint),
                                                   secrets included (the table's SSE, see template)
      pk=WH#<id>   sk=EVT#<event id>               the event's delivery to it: state queued|delivered
      pk=WH#<id>   sk=ATT#<time>#<event id>#<nn>   one attempt (WebhookAttempt), newest last
    Deliveries and attempts expire with the retention (expires_at, the table's TTL); endpoints
    never do. Endpoints are few (one partition, one Query lists them all)."""

    _ALL, _WH, _EVT, _ATT = "WEBHOOKS", "WH#", "EVT#", "ATT#"

    def __init__(self, ddb: Any, table: str, *, retention_days: int = 30,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ddb, self.table, self.retention, self.sleep = ddb, table, retention_days * 86400, sleep

    def _endpoint_key(self, endpoint_id: str) -> dict:
        return {"pk": {"S": self._ALL}, "sk": {"S": self._WH + endpoint_id}}

    def add_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        item = dict(_fields(endpoint), pk=self._ALL, sk=self._WH + endpoint.endpoint_id)
        return put_if_absent(self.ddb, self.table, item, "sk")

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        r = self.ddb.get_item(TableName=self.table, Key=self._endpoint_key(endpoint_id), ConsistentRead=True)
        return WebhookEndpoint.from_item(codec().plain(r["Item"])) if "Item" in r else None

    def endpoints(self) -> list[WebhookEndpoint]:
        out: list[WebhookEndpoint] = []
        start: dict[str, str] | None = None
        while True:
            page = query_page(self.ddb, self.table, index=None, pk=("pk", self._ALL), limit=100,
                              start_key=start, newest_first=False)
            out.extend(WebhookEndpoint.from_item(i) for i in page.items)
            if page.last_key is None:
                return out
            start = page.last_key

    def delete_endpoint(self, endpoint_id: str) -> bool:
        r = self.ddb.delete_item(TableName=self.table, Key=self._endpoint_key(endpoint_id), ReturnValues="ALL_OLD")
        return "Attributes" in r

    def update_endpoint(self, endpoint_id: str, *, only_if_enabled: bool = False,
                        **changes: Any) -> WebhookEndpoint | None:
        """Set fields of an existing endpoint (None removes one); None if there is no such
        endpoint (or, with only_if_enabled, it is disabled already)."""
        c = codec()
        if "secrets" in changes and changes["secrets"] is not None:
            changes["secrets"] = [s.as_dict() for s in changes["secrets"]]
        wid = _write_id() if only_if_enabled else None  # the disable: once, even if retried (r17b)
        if wid is not None:
            changes["wid"] = wid
        kwargs = set_remove_update(changes, "sk")
        cond = "attribute_exists(#k)"
        if only_if_enabled:
            kwargs["ExpressionAttributeNames"]["#e"] = "enabled"
            kwargs.setdefault("ExpressionAttributeValues", {})[":t"] = c.value(True)
            cond += " AND #e = :t"
        kwargs.update(TableName=self.table, Key=self._endpoint_key(endpoint_id), ConditionExpression=cond,
                      ReturnValues="ALL_NEW")
        try:
            return WebhookEndpoint.from_item(c.plain(self.ddb.update_item(**kwargs)["Attributes"]))
        except self.ddb.exceptions.ConditionalCheckFailedException:
            own = wid is not None and _wrote_own(self.ddb, self.table, self._endpoint_key(endpoint_id), wid)
            return self.endpoint(endpoint_id) if own else None

    def known_events(self, endpoint_id: str, event_ids: Iterable[str]) -> set[str]:
        """Which of these events were already queued for the endpoint (BatchGetItem per 100)."""
        wanted = list(dict.fromkeys(event_ids))
        out: set[str] = set()
        for i in range(0, len(wanted), 100):
            keys = [{"pk": {"S": self._WH + endpoint_id}, "sk": {"S": self._EVT + e}} for e in wanted[i:i + 100]]
            request = {self.table: {"Keys": keys, "ProjectionExpression": "sk"}}
            for r in retry_unprocessed(lambda rq: self.ddb.batch_get_item(RequestItems=rq), request,
                                       "UnprocessedKeys", sleep=self.sleep):
                out |= {it["sk"]["S"].removeprefix(self._EVT) for it in r.get("Responses", {}).get(self.table, [])}
        return out

    def note_events(self, endpoint_id: str, event_ids: Iterable[str], now: float) -> None:
        """Remember that these events were queued for the endpoint (BatchWriteItem per 25)."""
        items = [{"PutRequest": {"Item": codec().item({"pk": self._WH + endpoint_id, "sk": self._EVT + e,
                                                       "state": "queued", "expires_at": int(now + self.retention)})}}
                 for e in dict.fromkeys(event_ids)]
        for i in range(0, len(items), 25):
            retry_unprocessed(lambda rq: self.ddb.batch_write_item(RequestItems=rq), {self.table: items[i:i + 25]},
                              "UnprocessedItems", sleep=self.sleep)

    def delivered_pairs(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (endpoint id, event id) pairs were delivered already (BatchGetItem per 100)."""
        wanted = list(dict.fromkeys(pairs))
        out: set[tuple[str, str]] = set()
        for i in range(0, len(wanted), 100):
            keys = [{"pk": {"S": self._WH + w}, "sk": {"S": self._EVT + e}} for w, e in wanted[i:i + 100]]
            request = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for r in retry_unprocessed(lambda rq: self.ddb.batch_get_item(RequestItems=rq), request,
                                       "UnprocessedKeys", sleep=self.sleep):
                for it in r.get("Responses", {}).get(self.table, []):
                    if it.get("state", {}).get("S") == "delivered":
                        out.add((it["pk"]["S"].removeprefix(self._WH), it["sk"]["S"].removeprefix(self._EVT)))
        return out

    def record_attempt(self, attempt: WebhookAttempt, now: float) -> None:
        """Store one attempt; a `delivered` one also marks the event delivered to the endpoint
        (one BatchWriteItem for both)."""
        sk = f"{self._ATT}{attempt.at}#{attempt.event_id}#{attempt.attempt:02d}#{random.randrange(1 << 30):08x}"
        expires = int(now + self.retention)
        items = [dict(_fields(attempt), pk=self._WH + attempt.endpoint_id, sk=sk, expires_at=expires)]
        if attempt.status == "delivered":
            items.append({"pk": self._WH + attempt.endpoint_id, "sk": self._EVT + attempt.event_id,
                          "state": "delivered", "expires_at": expires})
        retry_unprocessed(lambda rq: self.ddb.batch_write_item(RequestItems=rq), {self.table: [
            {"PutRequest": {"Item": codec().item(i)}} for i in items]}, "UnprocessedItems", sleep=self.sleep)

    def attempts(self, endpoint_id: str, limit: int = 25) -> list[WebhookAttempt]:
        """The endpoint's most recent attempts, newest first."""
        r = self.ddb.query(TableName=self.table, KeyConditionExpression="pk = :p AND begins_with(sk, :a)",
                           ExpressionAttributeValues={":p": {"S": self._WH + endpoint_id}, ":a": {"S": self._ATT}},
                           ScanIndexForward=False, Limit=limit)
        return [WebhookAttempt.from_dict(codec().plain(i)) for i in r.get("Items", [])]


class WebhookJobQueue:
    """WebhookQueue: one message per (event, endpoint) delivery job."""

    MAX_DELAY = 900

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url

    def send(self, job: WebhookJob, delay: float = 0) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=job.model_dump_json(exclude_none=True),
                              DelaySeconds=max(0, min(self.MAX_DELAY, int(delay))))

    def send_many(self, jobs: Sequence[WebhookJob]) -> None:
        """Ten per SendMessageBatch; raises StoreBusyError if any entry failed (the caller's
        batch is retried, and the dispatcher drops what was already delivered)."""
        for i in range(0, len(jobs), 10):
            chunk = jobs[i:i + 10]
            r = self.sqs.send_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(n), "MessageBody": j.model_dump_json(exclude_none=True)} for n, j in enumerate(chunk)])
            if r.get("Failed"):
                raise StoreBusyError(f"{len(r['Failed'])} webhook job(s) not queued: {r['Failed'][0]}")


class Webhooks(Protocol):
    """The webhook endpoints, their deliveries and attempts (issue 12; WebhookStore)."""

    def add_endpoint(self, endpoint: WebhookEndpoint) -> bool: ...
    def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None: ...
    def endpoints(self) -> list[WebhookEndpoint]: ...
    def delete_endpoint(self, endpoint_id: str) -> bool: ...
    def update_endpoint(self, endpoint_id: str, *, only_if_enabled: bool = False,
                        **changes: Any) -> WebhookEndpoint | None: ...
    def known_events(self, endpoint_id: str, event_ids: Iterable[str]) -> set[str]: ...
    def note_events(self, endpoint_id: str, event_ids: Iterable[str], now: float) -> None: ...
    def delivered_pairs(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def record_attempt(self, attempt: WebhookAttempt, now: float) -> None: ...
    def attempts(self, endpoint_id: str, limit: int = 25) -> list[WebhookAttempt]: ...


class WebhookJobs(Protocol):
    """The webhook delivery queue."""

    def send(self, job: WebhookJob, delay: float = 0) -> None: ...
    def send_many(self, jobs: Sequence[WebhookJob]) -> None: ...


def _conforms_webhooks(w: WebhookStore, q: WebhookJobQueue) -> tuple[Webhooks, WebhookJobs]:
    """Never called: mypy checks the webhook adapters (issue 12)."""
    return w, q


# ---- templates (issue 14) -----------------------------------------------------------------------
class TemplateStore:
    """TemplatesTable: stored templates, one item per version, and one head per alias.

      pk=TEMPLATES    sk=<alias>                 the head (records.TemplateHead): latest version,
                                                 name, kind; the list of aliases is this partition
      pk=TPL#<alias>  sk=V#<version, 10 digits>  one version (records.TemplateVersion), immutable
      pk=USES#<layout> sk=#count                 a layout's users (`users`, the templates whose
                                                 latest version names it; `exact`: counted since
                                                 the layout was created)
      pk=USES#<layout> sk=<alias>                one user of the layout (names a few in the 409)
    A template's create, new version or delete moves its layout's count and use item in the
    same transaction, with a ConditionCheck that the layout's head is a layout; a layout's
    delete is conditioned on its count being 0, so the two serialise on the count item (a
    template cannot start using a layout that is being deleted, nor the reverse).
    A new version is one transaction: the head's `latest` moves from n to n+1 on the condition
    that it is still n, and version n+1 is put on the condition that it does not exist; a
    writer that loses the race reads the head again and tries n+2 (distinct versions, none
    lost). Reading the latest is two GetItems (head, then the version); a pinned one is one."""

    _ALL, _TPL, _V = "TEMPLATES", "TPL#", "V#"
    ATTEMPTS = 20  # a PUT retried this often under contention before it answers 503

    def __init__(self, ddb: Any, table: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.ddb, self.table, self.sleep = ddb, table, sleep

    def _head_key(self, alias: str) -> dict:
        return {"pk": {"S": self._ALL}, "sk": {"S": alias}}

    def _version_item(self, v: TemplateVersion) -> dict:
        return codec().item(dict(_fields(v), pk=self._TPL + v.alias, sk=f"{self._V}{v.version:010d}"))

    def head(self, alias: str) -> TemplateHead | None:
        r = self.ddb.get_item(TableName=self.table, Key=self._head_key(alias), ConsistentRead=True)
        return TemplateHead.from_dict(codec().plain(r["Item"])) if "Item" in r else None

    def version(self, alias: str, version: int) -> TemplateVersion | None:
        if not 0 < version < 10**10:  # the key holds 10 digits: none such (a longer key is a 400)
            return None
        r = self.ddb.get_item(TableName=self.table, ConsistentRead=True, Key={
            "pk": {"S": self._TPL + alias}, "sk": {"S": f"{self._V}{version:010d}"}})
        return TemplateVersion.from_dict(codec().plain(r["Item"])) if "Item" in r else None

    def create_template(self, first: TemplateVersion) -> bool:
        """Version 1 and the head, together, with its layout's use (class docstring); False if
        the alias exists; InvalidRequestError (`layout`) if its layout is gone meanwhile."""
        head = TemplateHead(first.alias, 1, first.name, first.kind, first.layout, first.created_at, first.created_at)
        uses = self._use_ops(first.alias, None, first.layout, became_layout=first.kind == "layout")
        try:
            self.ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": self.table,
                         "Item": codec().item(dict(_fields(head), pk=self._ALL, sk=first.alias)),
                         "ConditionExpression": "attribute_not_exists(sk)"}},
                {"Put": {"TableName": self.table, "Item": self._version_item(first),
                         "ConditionExpression": "attribute_not_exists(sk)"}}, *uses])
            return True
        except self.ddb.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons[:2]:
                return False
            self._check_layout_reason(reasons, 2, first.layout)
            raise StoreBusyError(f"template {first.alias!r}: a concurrent write; retry") from None

    def add_version(self, alias: str, make: Callable[[int], TemplateVersion]) -> TemplateVersion | None:
        """The next version, `make(n)`, written as n = latest + 1 (see the class docstring);
        None if the alias does not exist. StoreBusyError after ATTEMPTS lost races."""
        c = codec()
        for attempt in range(self.ATTEMPTS):
            head = self.head(alias)
            if head is None:
                return None
            v = make(head.latest + 1)
            try:
                self.ddb.transact_write_items(TransactItems=[
                    {"Update": {"TableName": self.table, "Key": self._head_key(alias),
                                "UpdateExpression": "SET latest = :n, #name = :name, kind = :kind, "
                                                    "updated_at = :at" + (", layout = :layout" if v.layout else
                                                                          " REMOVE layout"),
                                "ConditionExpression": "latest = :prev",
                                "ExpressionAttributeNames": {"#name": "name"},
                                "ExpressionAttributeValues": {
                                    ":n": c.value(v.version), ":prev": c.value(head.latest), ":name": c.value(v.name),
                                    ":kind": c.value(v.kind), ":at": c.value(v.created_at),
                                    **({":layout": c.value(v.layout)} if v.layout else {})}}},
                    {"Put": {"TableName": self.table, "Item": self._version_item(v),
                             "ConditionExpression": "attribute_not_exists(sk)"}},
                    *self._use_ops(alias, head.layout, v.layout,
                                   became_layout=v.kind == "layout" and head.kind != "layout",
                                   gone_layout=head.kind == "layout" and v.kind != "layout")])
                return v
            except self.ddb.exceptions.TransactionCanceledException as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                self._check_layout_reason(reasons, 2, v.layout if v.layout != head.layout else None)
                if head.kind == "layout" and v.kind != "layout" and reasons[-1:] == ["ConditionalCheckFailed"]:
                    raise LayoutInUseError(f"layout {alias!r}: templates use it") from None
                self.sleep(batch_backoff(attempt))
        raise StoreBusyError(f"template {alias!r}: {self.ATTEMPTS} concurrent writers won the race; retry")

    def templates(self, *, limit: int, after: str | None = None) -> Page[TemplateHead]:
        """The aliases in order, a page at a time: those after `after`; the page's `cursor` is
        the alias to pass as `after` for the next (None: the end)."""
        page = query_page(self.ddb, self.table, index=None, pk=("pk", self._ALL), limit=limit,
                          start_key={"pk": self._ALL, "sk": after} if after else None, newest_first=False)
        return Page([TemplateHead.from_dict(i) for i in page.items], page.last_key,
                    cursor=page.last_key["sk"] if page.last_key else None)

    def delete_template(self, alias: str) -> bool:
        """The head, then every version (so the alias is gone for new sends at once; a POST of
        the same alias afterwards starts again at version 1). False if there was none."""
        for attempt in range(self.ATTEMPTS):
            head = self.head(alias)
            if head is None:
                return False
            try:
                self.ddb.transact_write_items(TransactItems=[
                    {"Delete": {"TableName": self.table, "Key": self._head_key(alias),
                                "ConditionExpression": "latest = :n",
                                "ExpressionAttributeValues": {":n": codec().value(head.latest)}}},
                    *self._use_ops(alias, head.layout, None, gone_layout=head.kind == "layout")])
                break
            except self.ddb.exceptions.TransactionCanceledException as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if head.kind == "layout" and reasons[1:2] == ["ConditionalCheckFailed"]:
                    raise LayoutInUseError(f"layout {alias!r}: templates use it") from None
                self.sleep(batch_backoff(attempt))  # a version was added meanwhile: delete it too
        else:
            raise StoreBusyError(f"template {alias!r}: versions kept being added; retry the delete")
        keys = [{"pk": {"S": self._TPL + alias}, "sk": {"S": f"{self._V}{n:010d}"}} for n in range(1, head.latest + 1)]
        for i in range(0, len(keys), 25):
            retry_unprocessed(lambda rq: self.ddb.batch_write_item(RequestItems=rq),
                              {self.table: [{"DeleteRequest": {"Key": k}} for k in keys[i:i + 25]]},
                              "UnprocessedItems", sleep=self.sleep)
        return True

    # ---- a layout's users (slice s17d: a layout in use is not deleted) ----------------------------
    _USES, _COUNT = "USES#", "#count"

    def _count_key(self, layout: str) -> dict:
        return {"pk": {"S": self._USES + layout}, "sk": {"S": self._COUNT}}

    def _use_ops(self, alias: str, old: str | None, new: str | None, *, became_layout: bool = False,
                 gone_layout: bool = False) -> list[dict]:
        """The transaction items that move `alias` from using layout `old` to `new` (either None).
        `became_layout`: `alias` is now a layout (its count starts at an exact 0); `gone_layout`:
        the layout `alias` is deleted or becomes a standard template, on the condition that
        nothing uses it (the LAST item)."""
        t, c = self.table, codec()
        ops: list[dict] = []
        if new is not None and new != old:  # the ConditionCheck comes first (_check_layout_reason)
            ops += [{"ConditionCheck": {"TableName": t, "Key": self._head_key(new),
                                        "ConditionExpression": "kind = :layout",
                                        "ExpressionAttributeValues": {":layout": c.value("layout")}}},
                    {"Update": {"TableName": t, "Key": self._count_key(new), "UpdateExpression": "ADD #u :one",
                                "ExpressionAttributeNames": {"#u": "users"},
                                "ExpressionAttributeValues": {":one": c.value(1)}}},
                    {"Put": {"TableName": t, "Item": c.item({"pk": self._USES + new, "sk": alias})}}]
        if old is not None and old != new:
            ops += [{"Update": {"TableName": t, "Key": self._count_key(old), "UpdateExpression": "ADD #u :minus",
                                "ExpressionAttributeNames": {"#u": "users"},
                                "ExpressionAttributeValues": {":minus": c.value(-1)}}},
                    {"Delete": {"TableName": t, "Key": {"pk": {"S": self._USES + old}, "sk": {"S": alias}}}}]
        if became_layout:
            ops.append({"Put": {"TableName": t, "Item": c.item({"pk": self._USES + alias, "sk": self._COUNT,
                                                                "users": 0, "exact": True})}})
        if gone_layout:
            ops.append({"Delete": {"TableName": t, "Key": self._count_key(alias),
                                   "ConditionExpression": "attribute_not_exists(#u) OR #u <= :zero",
                                   "ExpressionAttributeNames": {"#u": "users"},
                                   "ExpressionAttributeValues": {":zero": c.value(0)}}})
        return ops

    @staticmethod
    def _check_layout_reason(reasons: Sequence[str | None], at: int, layout: str | None) -> None:
        if layout is not None and reasons[at:at + 1] == ["ConditionalCheckFailed"]:
            from .errors import InvalidRequestError

            raise InvalidRequestError(f"layout: no layout template {layout!r}", field="layout")

    def layout_users(self, layout: str, *, limit: int = 5) -> LayoutUsers:
        """The templates whose latest version uses `layout`: how many, and the first `limit`
        aliases. A layout counted since its creation: one GetItem and one Query of at most
        `limit` use items. One created before the count existed (no `exact`): the heads'
        partition read page by page (a Query projected to two attributes, bounded by the number
        of templates, never a table Scan)."""
        r = self.ddb.get_item(TableName=self.table, Key=self._count_key(layout), ConsistentRead=True)
        count = codec().plain(r.get("Item") or {})
        if count.get("exact"):
            q = self.ddb.query(TableName=self.table, ConsistentRead=True, Limit=limit,
                               KeyConditionExpression="pk = :pk AND sk > :count",
                               ExpressionAttributeValues={":pk": {"S": self._USES + layout},
                                                          ":count": {"S": self._COUNT}})
            return LayoutUsers(layout, max(int(count.get("users") or 0), 0),
                               tuple(i["sk"]["S"] for i in q.get("Items", [])))
        users: list[str] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True, "KeyConditionExpression": "pk = :pk",
                                  "FilterExpression": "layout = :layout", "ProjectionExpression": "sk, layout",
                                  "ExpressionAttributeValues": {":pk": {"S": self._ALL}, ":layout": {"S": layout}}}
        while True:
            q = self.ddb.query(**kwargs)
            users += [i["sk"]["S"] for i in q.get("Items", [])]
            if "LastEvaluatedKey" not in q:
                return LayoutUsers(layout, len(users), tuple(users[:limit]))
            kwargs["ExclusiveStartKey"] = q["LastEvaluatedKey"]


class Templates(Protocol):
    """Stored templates (issue 14; TemplateStore)."""

    def head(self, alias: str) -> TemplateHead | None: ...
    def version(self, alias: str, version: int) -> TemplateVersion | None: ...
    def create_template(self, first: TemplateVersion) -> bool: ...
    def add_version(self, alias: str, make: Callable[[int], TemplateVersion]) -> TemplateVersion | None: ...
    def templates(self, *, limit: int, after: str | None = None) -> Page[TemplateHead]: ...
    def delete_template(self, alias: str) -> bool: ...
    def layout_users(self, layout: str, *, limit: int = 5) -> LayoutUsers: ...


def _conforms_templates(t: TemplateStore) -> Templates:
    """Never called: mypy checks the templates' adapter (issue 14)."""
    return t
