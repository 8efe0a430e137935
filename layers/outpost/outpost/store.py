"""DynamoDB, S3, SQS and Secrets Manager adapters: the only code that speaks their APIs.

Services receive these objects (built in bootstrap.py); unit tests may pass fakes with the same
methods. Every state transition of a recipient is a conditional write, so two copies of a job
(SQS redelivery, a crash and retry) can never both move the same recipient.

MessagesTable layout (single-table; every access is a key or index lookup):
  pk=MSG#<id>  sk=META                  the message: sender, subject, request spec or S3 pointer
  pk=MSG#<id>  sk=RCPT#<nnn>            one recipient: state, attempts[], last reply, bounce
  pk=MSG#<id>  sk=BOUNCE#<nnn>#<hash>   one bounce report for that recipient (idempotent)
  pk=INBOUND#<s3 key> sk=UNMATCHED|UNPARSED   inbound mail that matched nothing (kept, counted)
  gsi1: gsi1pk=RCPT#<address>  gsi1sk=<created>#<id>     messages to a recipient
  gsi2: gsi2pk=BOUNCE#<address> / UNMATCHED  gsi2sk=<time>  bounces by recipient; orphans
  pk=SUPPRESSION#<address> sk=EVENT#<time>#<rand>   suppression audit (who/when), no TTL
  pk=STS#<domain>  sk=POLICY            a cached MTA-STS policy (RFC 8461), TTL = fetched_at + max_age
  gsi3: gsi3pk=DAY#<yyyy-mm-dd> gsi3sk=<created>#<id>#<nnn>  recipients by day (API list)
  gsi4: type (bounce|complaint|delay|notice) / received_at     bounce reports by type and time
  gsi5: due_shard=DUE#<0-7> / due_at (epoch seconds), KEYS_ONLY, sparse: only open recipients
        have it (queued: created; deferred: its next attempt; leased: the lease's end); it is
        removed when the recipient becomes final. The sweeper's index of overdue work.
  expires_at: TTL (retention), never before the delivery deadline plus TTL_MARGIN
SuppressionsTable: address; GSI by_source: source / created_at (API list, never a Scan).
"""

from __future__ import annotations

import json
import math
import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .addresses import suppression_key
from .errors import StoreBusyError
from .models import OPEN_STATES, QueueJob, RecipientState
from .tls_policy import StsPolicy

_OPEN = [s.value for s in OPEN_STATES]

# A message's records outlive its delivery deadline by at least this much, whatever the
# retention: a recipient still being retried (or swept, or bounced a little late) must find
# its message. RetentionDays in the template is at least the longest lifetime plus this.
TTL_MARGIN = 86400

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


@dataclass(frozen=True)
class Overdue:
    """An open recipient whose next job should have run by now (the sweeper's question)."""

    message_id: str
    index: int
    due_at: float


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


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def put_if_absent(ddb: Any, table: str, item: dict, key: str) -> bool:
    """A conditional PutItem: True if written, False if an item with that key already exists.
    The one idempotent write behind bounce records, orphans, suppressions and new keys."""
    try:
        ddb.put_item(TableName=table, Item=codec().item(item),
                     ConditionExpression="attribute_not_exists(#k)", ExpressionAttributeNames={"#k": key})
        return True
    except ddb.exceptions.ConditionalCheckFailedException:
        return False


def rcpt_sk(index: int) -> str:
    return f"RCPT#{index:03d}"


@dataclass(frozen=True)
class Page:
    """One page of an index query: plain items and the key to continue from (None: the end)."""

    items: list[dict]
    last_key: dict[str, str] | None


def query_page(ddb: Any, table: str, *, index: str | None, pk: tuple[str, str],
               sk_from: tuple[str, str] | None = None, limit: int = 50,
               start_key: dict[str, str] | None = None, newest_first: bool = True,
               filters: Mapping[str, Any] | None = None) -> Page:
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


@dataclass
class StoredMessage:
    meta: dict
    recipients: list[dict] = field(default_factory=list)
    bounces: list[dict] = field(default_factory=list)


class MessageStore:
    def __init__(self, ddb: Any, table: str, s3: Any, bucket: str, *,
                 inline_limit: int = 200_000, retention_days: int = 30,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ddb, self.table, self.s3, self.bucket = ddb, table, s3, bucket
        self.inline_limit, self.retention = inline_limit, retention_days * 86400
        self.sleep = sleep

    def expires_for(self, now: float, deliver_until: float | None) -> int:
        """The TTL (`expires_at`) of a message's items: the retention, but never before the
        delivery deadline plus TTL_MARGIN (issue 8: a 1-day retention deleted messages that
        were still being retried)."""
        ttl = now + self.retention
        if deliver_until is not None:
            ttl = max(ttl, float(deliver_until) + TTL_MARGIN)
        return math.ceil(ttl)

    # ---- creation -------------------------------------------------------------------------
    def create(self, meta: dict, recipients: list[dict], spec: dict, now: float) -> None:
        """Store a new message and its recipients atomically (one transaction, <= 51 items)."""
        c = codec()
        message_id = meta["message_id"]
        body = json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode()
        expires = self.expires_for(now, meta.get("deliver_until"))
        meta = dict(meta, pk=f"MSG#{message_id}", sk="META", expires_at=expires,
                    created_at=_iso(now), created_ts=now)
        if len(body) > self.inline_limit:
            key = f"bodies/{message_id}.json"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
            meta["spec_key"] = key
        else:
            meta["spec"] = body.decode()
        items = [meta]
        for r in recipients:
            addr = r["address"].lower()
            item = dict(r, pk=f"MSG#{message_id}", sk=rcpt_sk(r["index"]), expires_at=expires,
                        created_at=_iso(now), updated_at=_iso(now), attempts=[],
                        gsi1pk=f"RCPT#{addr}", gsi1sk=f"{_iso(now)}#{message_id}")
            if r.get("state") in _OPEN:
                # Due at once: if no job ever comes (the enqueue after this write failed or
                # never ran), the sweeper finds it here.
                item.update(due_shard=due_shard(message_id), due_at=now)
            items.append(item)
        self.ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": self.table, "Item": c.item(it),
                     "ConditionExpression": "attribute_not_exists(pk)"}} for it in items])

    # ---- reads ----------------------------------------------------------------------------
    def load(self, message_id: str) -> StoredMessage | None:
        c = codec()
        items: list[dict] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": f"MSG#{message_id}"}}, "ConsistentRead": True}
        while True:
            page = self.ddb.query(**kwargs)
            items.extend(c.plain(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        meta = next((i for i in items if i["sk"] == "META"), None)
        if meta is None:
            return None
        return StoredMessage(
            meta=meta,
            recipients=sorted((i for i in items if i["sk"].startswith("RCPT#")), key=lambda i: i["index"]),
            bounces=[i for i in items if i["sk"].startswith("BOUNCE#")])

    def discard(self, message_id: str, recipient_count: int) -> None:
        """Delete a message that was stored but could not be queued (the caller got an error)."""
        keys = [{"pk": {"S": f"MSG#{message_id}"}, "sk": {"S": sk}}
                for sk in ["META", *(rcpt_sk(i) for i in range(recipient_count))]]
        for i in range(0, len(keys), 25):
            request = {self.table: [{"DeleteRequest": {"Key": k}} for k in keys[i:i + 25]]}
            retry_unprocessed(lambda rq: self.ddb.batch_write_item(RequestItems=rq), request,
                              "UnprocessedItems", sleep=self.sleep)

    def load_spec(self, meta: dict) -> dict:
        if "spec" in meta:
            return json.loads(meta["spec"])
        obj = self.s3.get_object(Bucket=self.bucket, Key=meta["spec_key"])
        return json.loads(obj["Body"].read())

    def load_upload(self, upload_id: str) -> bytes:
        """An attachment uploaded through POST /v1/uploads (a presigned PUT to uploads/<id>)."""
        obj = self.s3.get_object(Bucket=self.bucket, Key=f"uploads/{upload_id}")
        return bytes(obj["Body"].read())

    # ---- uploads (POST /v1/uploads) -----------------------------------------------------------
    # pk=UPLOAD#<id> sk=META: who created it (key_id), its declared size and type.
    # pk=UPLOADS#<key id> sk=DAY#<yyyy-mm-dd>: how many that key created that day (the cap).
    def put_upload(self, upload_id: str, record: dict, now: float) -> None:
        item = dict(record, pk=f"UPLOAD#{upload_id}", sk="META", created_at=_iso(now),
                    expires_at=int(now + self.retention))
        self.ddb.put_item(TableName=self.table, Item=codec().item(item),
                          ConditionExpression="attribute_not_exists(pk)")

    def upload(self, upload_id: str) -> dict | None:
        r = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                              Key={"pk": {"S": f"UPLOAD#{upload_id}"}, "sk": {"S": "META"}})
        return codec().plain(r["Item"]) if "Item" in r else None

    def count_upload(self, key_id: str, day: str, limit: int, now: float) -> bool:
        """Count one more upload for (key, day); False, counting nothing, if `limit` is reached."""
        try:
            self.ddb.update_item(
                TableName=self.table, Key={"pk": {"S": f"UPLOADS#{key_id}"}, "sk": {"S": f"DAY#{day}"}},
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
        # While leased, the recipient is due again when the lease ends: a crashed invocation
        # leaves it for the sweeper, not for ever.
        return self._update(
            message_id, index, "SET lease_until = :l, due_at = :l, due_shard = :ds",
            "#st IN (:o0, :o1) AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            {":l": now + lease_seconds, ":now": now, ":o0": _OPEN[0], ":o1": _OPEN[1],
             ":ds": due_shard(message_id)})

    def release(self, message_id: str, index: int) -> None:
        self._update(message_id, index, "REMOVE lease_until", "attribute_exists(pk)", {})

    def finish_attempt(self, message_id: str, index: int, state: RecipientState, now: float,
                       attempt: dict | None, fields: Mapping[str, Any] | None = None) -> bool:
        """Record an attempt and move an open recipient to `state`. False if it was already final."""
        sets = ["#st = :s", "updated_at = :u"]
        values: dict[str, Any] = {":s": state.value, ":u": _iso(now), ":o0": _OPEN[0], ":o1": _OPEN[1]}
        names: dict[str, str] = {}
        if attempt is not None:
            sets.append("attempts = list_append(if_not_exists(attempts, :empty), :a)")
            values[":a"] = [attempt]
            values[":empty"] = []
        removes = ["lease_until"]
        if state in OPEN_STATES:
            # Still open: due at its next attempt (the sweeper's index), or now if unknown.
            nxt = (fields or {}).get("next_attempt_at")
            sets += ["due_at = :due", "due_shard = :ds"]
            values[":due"] = float(nxt) if nxt is not None else now
            values[":ds"] = due_shard(message_id)
        else:
            removes += ["due_at", "due_shard"]  # final: out of the sweeper's index
        for i, (k, v) in enumerate((fields or {}).items()):
            names[f"#f{i}"] = k  # field names may be reserved words ("last")
            if v is None:
                removes.append(f"#f{i}")
            else:
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
        key = {"pk": {"S": f"MSG#{message_id}"}, "sk": {"S": "META"}}
        if expected is None:
            cond = "attribute_exists(pk) AND attribute_not_exists(job_token)"
            values = {":t": c.value(token)}
        else:
            cond = "job_token = :e"
            values = {":t": c.value(token), ":e": c.value(expected)}
        try:
            self.ddb.update_item(TableName=self.table, Key=key, UpdateExpression="SET job_token = :t",
                                 ConditionExpression=cond, ExpressionAttributeValues=values)
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def mark_bounced(self, message_id: str, index: int, state: RecipientState, now: float,
                     bounce: dict) -> bool:
        """An asynchronous bounce or complaint: allowed from open or delivered, once."""
        return self._update(
            message_id, index,
            "SET #st = :s, updated_at = :u, bounce = :b REMOVE lease_until, next_attempt_at, due_at, due_shard",
            "attribute_exists(pk) AND #st IN (:o0, :o1, :d)",
            {":s": state.value, ":u": _iso(now), ":b": bounce, ":o0": _OPEN[0], ":o1": _OPEN[1],
             ":d": RecipientState.DELIVERED.value})

    def _update(self, message_id: str, index: int, expr: str, cond: str, values: dict,
                names: dict[str, str] | None = None) -> bool:
        c = codec()
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": f"MSG#{message_id}"}, "sk": {"S": rcpt_sk(index)}},
            "UpdateExpression": expr, "ConditionExpression": cond,
        }
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
            return False

    # ---- the sweeper (issue 8, item 11) ----------------------------------------------------
    def overdue(self, before: float, limit: int = 1000) -> list[Overdue]:
        """Open recipients due before `before` (their job should have run by then), oldest
        first, at most `limit` per shard: a key lookup on the sparse due index (gsi5)."""
        out: list[Overdue] = []
        for n in range(DUE_SHARDS):
            kwargs: dict[str, Any] = {
                "TableName": self.table, "IndexName": "gsi5",
                "KeyConditionExpression": "due_shard = :s AND due_at < :b",
                "ExpressionAttributeValues": {":s": {"S": f"DUE#{n}"}, ":b": {"N": repr(float(before))}},
                "Limit": min(limit, 1000)}
            got = 0
            while got < limit:
                page = self.ddb.query(**kwargs)
                for it in page.get("Items", []):
                    out.append(Overdue(it["pk"]["S"].removeprefix("MSG#"),
                                       int(it["sk"]["S"].removeprefix("RCPT#")), float(it["due_at"]["N"])))
                    got += 1
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return out

    def postpone_due(self, message_id: str, index: int, due_at: float, until: float) -> bool:
        """Move an overdue recipient's due time to `until` (a job was just queued for it), only
        if nothing moved it since it was read. False if it changed (claimed, finished, ...)."""
        return self._update(message_id, index, "SET due_at = :u",
                            "#st IN (:o0, :o1) AND due_at = :d",
                            {":u": until, ":d": due_at, ":o0": _OPEN[0], ":o1": _OPEN[1]})

    # ---- bounces and orphans --------------------------------------------------------------
    def put_bounce(self, message_id: str, index: int, bounce_id: str, record: dict, now: float) -> bool:
        """Store a bounce report once (idempotent on the report's id). False if already there."""
        item = dict(record, pk=f"MSG#{message_id}", sk=f"BOUNCE#{index:03d}#{bounce_id}",
                    expires_at=int(now + self.retention),
                    gsi2pk=f"BOUNCE#{record['address'].lower()}", gsi2sk=f"{_iso(now)}#{message_id}")
        return put_if_absent(self.ddb, self.table, item, "pk")

    def put_orphan(self, s3_key: str, kind: str, record: dict, now: float) -> bool:
        item = dict(record, pk=f"INBOUND#{s3_key}", sk=kind.upper(), s3_key=s3_key,
                    expires_at=int(now + self.retention), gsi2pk=kind.upper(), gsi2sk=_iso(now))
        return put_if_absent(self.ddb, self.table, item, "pk")

    def orphans(self, kind: str, limit: int = 100) -> list[dict]:
        page = self.ddb.query(TableName=self.table, IndexName="gsi2",
                              KeyConditionExpression="gsi2pk = :p",
                              ExpressionAttributeValues={":p": {"S": kind.upper()}}, Limit=limit)
        return [codec().plain(i) for i in page.get("Items", [])]

    # ---- API reads and the audit log (issue 5) --------------------------------------------
    def page(self, *, index: str | None, pk: tuple[str, str], sk_from: tuple[str, str] | None = None,
             limit: int = 50, start_key: dict[str, str] | None = None,
             filters: Mapping[str, Any] | None = None) -> Page:
        return query_page(self.ddb, self.table, index=index, pk=pk, sk_from=sk_from, limit=limit,
                          start_key=start_key, filters=filters)

    def put_event(self, partition: str, record: dict, now: float) -> None:
        """Append an audit event (e.g. a suppression removed: who and when) under `partition`.

        Audit events carry no `expires_at`: they outlive message retention on purpose.
        """
        import secrets as _secrets

        item = dict(record, pk=partition, sk=f"EVENT#{_iso(now)}#{_secrets.token_hex(4)}", at=_iso(now))
        self.ddb.put_item(TableName=self.table, Item=codec().item(item),
                          ConditionExpression="attribute_not_exists(pk)")

    def events(self, partition: str, limit: int = 20) -> list[dict]:
        """The newest audit events of `partition`."""
        return query_page(self.ddb, self.table, index=None, pk=("pk", partition),
                          sk_from=("sk", "EVENT#"), limit=limit).items


class SuppressionStore:
    """Suppressions keyed by `addresses.suppression_key`: every spelling of one mailbox (A-label
    or U-label domain, quoted or unquoted local part, any case) is one item."""

    def __init__(self, ddb: Any, table: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.ddb, self.table, self.sleep = ddb, table, sleep

    def get(self, address: str) -> dict | None:
        r = self.ddb.get_item(TableName=self.table, Key={"address": {"S": suppression_key(address)}},
                              ConsistentRead=True)
        return codec().plain(r["Item"]) if "Item" in r else None

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

    def add(self, address: str, record: dict, now: float) -> bool:
        """Add a suppression; an existing one is kept (first reason wins). True if new."""
        item = dict(record, address=suppression_key(address), created_at=_iso(now))
        return put_if_absent(self.ddb, self.table, item, "address")

    def remove(self, address: str) -> bool:
        r = self.ddb.delete_item(TableName=self.table, Key={"address": {"S": suppression_key(address)}},
                                 ReturnValues="ALL_OLD")
        return "Attributes" in r

    def page(self, *, source: str, since: str | None = None, limit: int = 50,
             start_key: dict[str, str] | None = None) -> Page:
        """Suppressions from one source (bounce, complaint, manual), newest first: the
        `by_source` index (source / created_at), so listing never scans the table."""
        return query_page(self.ddb, self.table, index="by_source", pk=("source", source),
                          sk_from=("created_at", since) if since else None, limit=limit,
                          start_key=start_key)


class KeyValueTable:
    """A small hash-keyed table (API keys, domains)."""

    def __init__(self, ddb: Any, table: str, key: str) -> None:
        self.ddb, self.table, self.key = ddb, table, key

    def get(self, value: str) -> dict | None:
        r = self.ddb.get_item(TableName=self.table, Key={self.key: {"S": value}})
        return codec().plain(r["Item"]) if "Item" in r else None

    def put(self, item: dict) -> None:
        self.ddb.put_item(TableName=self.table, Item=codec().item(item))

    def touch(self, value: str, attribute: str, when: str) -> None:
        self.ddb.update_item(TableName=self.table, Key={self.key: {"S": value}},
                             UpdateExpression=f"SET {attribute} = :w",
                             ExpressionAttributeValues={":w": {"S": when}})

    def scan_all(self) -> list[dict]:
        """Small admin tables only (keys, domains): listed by the admin CLI, never on a hot path."""
        out: list[dict] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            r = self.ddb.scan(**kwargs)
            out.extend(codec().plain(i) for i in r.get("Items", []))
            if "LastEvaluatedKey" not in r:
                return out
            kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]

    def update(self, value: str, fields: Mapping[str, Any], *, condition_exists: bool = True) -> dict:
        """Set attributes of an existing item (None removes one); returns the new item."""
        c = codec()
        names: dict[str, str] = {"#k": self.key}
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
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": {self.key: {"S": value}},
                                  "UpdateExpression": expr.strip(), "ExpressionAttributeNames": names,
                                  "ReturnValues": "ALL_NEW"}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if condition_exists:
            kwargs["ConditionExpression"] = "attribute_exists(#k)"
        return c.plain(self.ddb.update_item(**kwargs)["Attributes"])

    def put_new(self, item: dict) -> bool:
        """Put an item only if its key is free. False if it already exists."""
        return put_if_absent(self.ddb, self.table, item, self.key)


class JobQueue:
    MAX_DELAY = 900  # SQS's DelaySeconds limit

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url

    def send(self, job: QueueJob, delay: float = 0) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=job.model_dump_json(exclude_none=True),
                              DelaySeconds=max(0, min(self.MAX_DELAY, int(delay))))

    def send_many(self, jobs: list[QueueJob]) -> list[str]:
        """Enqueue jobs ten per SendMessageBatch call; returns the message ids that failed."""
        failed: list[str] = []
        for i in range(0, len(jobs), 10):
            chunk = jobs[i:i + 10]
            r = self.sqs.send_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(n), "MessageBody": j.model_dump_json(exclude_none=True)}
                for n, j in enumerate(chunk)])
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
