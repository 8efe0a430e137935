"""In-memory fakes of the store's interfaces (outpost.store: Messages with Suspensions,
Suppressions, Jobs, Domains, ApiKeys; and SecretStore) and a clock the test moves by hand.

They keep the rules the real store keeps with conditional writes, so a unit test of a service
sees the same answers: a recipient moves only from an open state, a claim holds until its lease
ends, a bounce report and an orphan are stored once, a suppression's first reason wins, the
current job token is replaced only by whoever read it. They keep records, never items: no key
or index name here either. Every method DeliveryService calls is here too, so a fake-store
test of the sender needs only a fake transport beside it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from outpost.addresses import suppression_key
from outpost.clock import day_of, iso
from outpost.models import OPEN_STATES, SENDABLE_STATES, QueueJob, RecipientState
from outpost.records import (
    ApiKey,
    Attempt,
    Bounce,
    CreateKey,
    Domain,
    EarlierCreate,
    Message,
    Orphan,
    Overdue,
    Recipient,
    ReputationCounts,
    ReputationState,
    SlotState,
    StoredMessage,
    Suppression,
    SuppressionEvent,
    Suspension,
    Upload,
    Waiting,
)
from outpost.store import Listing, Page
from outpost.stored_request import StoredRequest


class FakeClock:
    """Seconds since the epoch, moved only by `advance` (or set)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Unavailable(Exception):
    """What a fake raises when a test switches it off (the real adapter's ClientError)."""


@dataclass
class _Rcpt:
    record: Recipient
    due_at: float | None = None  # the sweeper's index: set while open


@dataclass
class _Msg:
    meta: Message
    request: StoredRequest
    recipients: dict[int, _Rcpt] = field(default_factory=dict)
    bounces: dict[tuple[int, str], Bounce] = field(default_factory=dict)


class FakeMessages:
    """outpost.store.Messages in memory."""

    def __init__(self) -> None:
        self.messages: dict[str, _Msg] = {}
        self.orphan_records: dict[tuple[str, str], Orphan] = {}
        self.uploads: dict[str, Upload] = {}
        self.upload_bytes: dict[str, bytes] = {}
        self.upload_counts: dict[tuple[str, str], int] = {}
        self.inbound: dict[str, bytes] = {}  # raw mail at the bounce domain, by S3 key
        self.events: list[SuppressionEvent] = []
        self.fail_create = False
        self.slow: dict[str, float] = {}  # recipient domain -> until (mark_slow)
        self.slow_reads: list[str] = []  # the domains slow_until was asked about, in order
        self.fail_slow_reads = False
        self.suspensions: dict[tuple[str, str], Suspension] = {}  # (ip, provider) -> suspension
        self.suspension_reads: list[str] = []  # providers asked about, in order
        self.fail_suspension_reads = False
        self.fail_suspension_writes = False
        self.claims: dict[str, tuple[str, str, float]] = {}  # create keys: (message id, digest, hold until)

    # ---- creation and reads ----------------------------------------------------------------
    def create(self, meta: Message, recipients: list[Recipient], request: StoredRequest,
               now: float, once: CreateKey | None = None) -> EarlierCreate | None:
        if self.fail_create:
            raise Unavailable("the message store is unavailable")
        if once is not None:  # as MessageStore._claim_key: a committed earlier create wins
            held = self.claims.get(once.key)
            if held is not None and held[2] >= now and held[0] in self.messages:
                return EarlierCreate(held[0], held[1])
            self.claims[once.key] = (meta.message_id, once.digest, now + once.ttl)
        if meta.message_id in self.messages:
            raise ValueError(f"message {meta.message_id} exists")
        created = iso(now)
        meta = meta.replace(created_at=created, created_ts=now, spec=request.to_json().decode())
        m = _Msg(meta, request)
        for r in recipients:
            rec = r.replace(created_at=created, updated_at=created, attempts=())
            due = (now if rec.next_attempt_at is None else rec.next_attempt_at) if rec.is_open else None
            m.recipients[r.index] = _Rcpt(rec, due)
        self.messages[meta.message_id] = m
        return None

    def release_key(self, once: CreateKey, message_id: str) -> None:
        if self.claims.get(once.key, ("",))[0] == message_id:
            del self.claims[once.key]

    def load(self, message_id: str) -> StoredMessage | None:
        m = self.messages.get(message_id)
        if m is None:
            return None
        return StoredMessage(m.meta, [m.recipients[i].record for i in sorted(m.recipients)],
                             list(m.bounces.values()))

    def load_request(self, meta: Message) -> StoredRequest:
        return self.messages[meta.message_id].request

    # ---- uploads ---------------------------------------------------------------------------
    def load_upload(self, upload_id: str) -> bytes:
        return self.upload_bytes[upload_id]

    def upload_url(self, upload_id: str, content_type: str, size: int, expires_in: int) -> str:
        return f"https://uploads.invalid/{upload_id}?type={content_type}&size={size}&ttl={expires_in}"

    def uploaded(self, upload_id: str) -> tuple[int, datetime | None] | None:
        data = self.upload_bytes.get(upload_id)
        return None if data is None else (len(data), None)

    def put_upload(self, upload: Upload, now: float) -> None:
        self.uploads[upload.upload_id] = upload.replace(created_at=iso(now))

    def upload(self, upload_id: str) -> Upload | None:
        return self.uploads.get(upload_id)

    def count_upload(self, key_id: str, now: float, limit: int) -> bool:
        k = (key_id, day_of(now))
        if self.upload_counts.get(k, 0) >= limit:
            return False
        self.upload_counts[k] = self.upload_counts.get(k, 0) + 1
        return True

    # ---- recipient transitions -------------------------------------------------------------
    def _get(self, message_id: str, index: int) -> _Rcpt | None:
        m = self.messages.get(message_id)
        return None if m is None else m.recipients.get(index)

    def claim(self, message_id: str, index: int, now: float, lease_seconds: float) -> bool:
        r = self._get(message_id, index)
        if r is None or r.record.state not in SENDABLE_STATES:
            return False
        if r.record.lease_until is not None and r.record.lease_until >= now:
            return False
        r.record = r.record.replace(lease_until=now + lease_seconds)
        if r.due_at is None:  # as store.py: the claim leaves the due time as it was
            r.due_at = now + lease_seconds
        return True

    def release(self, message_id: str, index: int) -> None:
        r = self._get(message_id, index)
        if r is not None:
            r.record = r.record.replace(lease_until=None)

    def finish_attempt(self, message_id: str, index: int, state: RecipientState, now: float,
                       attempt: Attempt | None, *, last: Mapping[str, Any] | None = None,
                       next_attempt_at: float | None = None, remote_id: str | None = None,
                       bounce: Mapping[str, Any] | None = None, waiting: Waiting | None = None) -> bool:
        r = self._get(message_id, index)
        if r is None or r.record.state not in SENDABLE_STATES:
            return False
        rec = r.record
        changes: dict[str, Any] = {"state": state, "updated_at": iso(now), "lease_until": None,
                                   "attempts": rec.attempts + ((attempt,) if attempt else ()),
                                   "waiting": waiting}
        for k, v in (("last", last), ("remote_id", remote_id), ("bounce", bounce)):
            if v is not None:
                changes[k] = v
        if state in OPEN_STATES:
            if next_attempt_at is not None:
                changes["next_attempt_at"] = next_attempt_at
            r.due_at = next_attempt_at if next_attempt_at is not None else now
        else:
            changes["next_attempt_at"] = None
            r.due_at = None
        r.record = rec.replace(**changes)
        return True

    def replace_job(self, message_id: str, token: str, expected: str | None) -> bool:
        m = self.messages.get(message_id)
        if m is None or m.meta.job_token != expected:
            return False
        m.meta = m.meta.replace(job_token=token)
        return True

    def mark_bounced(self, message_id: str, index: int, state: RecipientState, now: float,
                     bounce: Mapping[str, Any]) -> bool:
        r = self._get(message_id, index)
        if r is None or not (r.record.state in SENDABLE_STATES or r.record.state is RecipientState.DELIVERED):
            return False
        r.record = r.record.replace(state=state, updated_at=iso(now), bounce=dict(bounce),
                                    lease_until=None, next_attempt_at=None, waiting=None)
        r.due_at = None
        return True

    # ---- the reputation breaker's hold (issue 11 item 6) -------------------------------------
    def hold(self, message_id: str, index: int, now: float, until: float, waiting: Waiting) -> bool:
        r = self._get(message_id, index)
        if r is None or r.record.state not in SENDABLE_STATES:
            return False
        if r.record.lease_until is not None and r.record.lease_until >= now:
            return False
        r.record = r.record.replace(state=RecipientState.DEFERRED, updated_at=iso(now), next_attempt_at=until,
                                    lease_until=None, waiting=waiting)
        r.due_at = until
        return True

    # ---- the sweeper -----------------------------------------------------------------------
    def overdue(self, before: float, limit: int = 1000) -> list[Overdue]:
        # as store.py: a recipient leased until `before` or later is not overdue
        out = [Overdue(mid, i, r.due_at) for mid, m in self.messages.items()
               for i, r in m.recipients.items() if r.due_at is not None and r.due_at < before
               and (r.record.lease_until is None or r.record.lease_until < before)]
        return sorted(out, key=lambda o: o.due_at)[:limit]

    def postpone_due(self, message_id: str, index: int, due_at: float, until: float) -> bool:
        r = self._get(message_id, index)
        if r is None or not r.record.is_open or r.due_at != due_at:
            return False
        r.due_at = until
        return True

    # ---- scheduled sending and cancel (issue 14) ----------------------------------------------
    def start_scheduled(self, message_id: str, index: int, now: float) -> bool:
        r = self._get(message_id, index)
        if r is None or r.record.state is not RecipientState.SCHEDULED:
            return False
        if r.record.next_attempt_at is None or r.record.next_attempt_at > now:
            return False
        r.record = r.record.replace(state=RecipientState.QUEUED, updated_at=iso(now), next_attempt_at=None)
        r.due_at = now
        return True

    def cancel(self, message_id: str, index: int, now: float) -> bool:
        r = self._get(message_id, index)
        if r is None or not r.record.is_open:
            return False
        if r.record.lease_until is not None and r.record.lease_until >= now:
            return False
        r.record = r.record.replace(state=RecipientState.CANCELED, updated_at=iso(now), lease_until=None,
                                    next_attempt_at=None, waiting=None)
        r.due_at = None
        return True

    # ---- slow recipient domains -------------------------------------------------------------
    def mark_slow(self, domain: str, until: float) -> None:
        key = domain.lower().rstrip(".")
        self.slow[key] = max(until, self.slow.get(key, until))  # a later mark is never replaced

    def slow_until(self, domain: str) -> float | None:
        self.slow_reads.append(domain)
        if self.fail_slow_reads:
            raise Unavailable("the message store is unavailable")
        return self.slow.get(domain.lower().rstrip("."))

    # ---- suspended providers (store.Suspensions, issue 11) ---------------------------------
    def suspend(self, suspension: Suspension, *, replaces: Suspension | None, forget_at: float) -> bool:
        if self.fail_suspension_writes:
            raise Unavailable("the message store is unavailable")
        key = (suspension.ip, suspension.provider.lower())
        if self.suspensions.get(key) != replaces:
            return False  # another container wrote first (the real store's conditional put)
        self.suspensions[key] = suspension
        return True

    def suspension(self, ip: str, provider: str) -> Suspension | None:
        self.suspension_reads.append(provider)
        if self.fail_suspension_reads:
            raise Unavailable("the message store is unavailable")
        return self.suspensions.get((ip, provider.lower()))
    # ---- slots (store.Slots, issue 11) ------------------------------------------------------
    # (ip, provider) -> leases (id -> expiry) and windows (name -> messages taken); `slot_calls`
    # counts the calls, as the real store's requests. The same all-or-nothing rules.
    slot_calls = 0
    fail_slots = False
    slot_lock = threading.Lock()

    def _slot(self, ip: str, provider: str) -> tuple[dict[str, float], dict[str, int]]:
        if not hasattr(self, "slot_items"):
            self.slot_items: dict[tuple[str, str], tuple[dict[str, float], dict[str, int]]] = {}
        return self.slot_items.setdefault((ip, provider.lower()), ({}, {}))

    def _slot_take(self, ip: str, provider: str, lease: tuple[str, float, int] | None,
                   take: Mapping[str, tuple[int, int]]) -> tuple[bool, SlotState | None]:
        leases, used = self._slot(ip, provider)
        with self.slot_lock:
            self.slot_calls += 1
            if self.fail_slots:
                raise Unavailable("the message store is unavailable")
            ok = (lease is None or len(leases) < lease[2]) and all(
                used.get(w, 0) <= limit - n for w, (n, limit) in take.items())
            if ok:
                if lease is not None:
                    leases[lease[0]] = lease[1]
                for w, (n, _) in take.items():
                    used[w] = used.get(w, 0) + n
            return ok, SlotState(dict(leases), dict(used))

    def take_slot(self, ip: str, provider: str, lease_id: str, until: float, cap: int,
                  take: Mapping[str, tuple[int, int]], now: float) -> tuple[bool, SlotState | None]:
        return self._slot_take(ip, provider, (lease_id, until, cap), take)

    def take_tokens(self, ip: str, provider: str, take: Mapping[str, tuple[int, int]],
                    now: float) -> tuple[bool, SlotState | None]:
        return self._slot_take(ip, provider, None, take)

    def slot_state(self, ip: str, provider: str) -> SlotState | None:
        leases, used = self._slot(ip, provider)
        return SlotState(dict(leases), dict(used))

    def renew_slot(self, ip: str, provider: str, lease_id: str, until: float) -> bool:
        leases, _ = self._slot(ip, provider)
        with self.slot_lock:
            self.slot_calls += 1
            if lease_id not in leases:
                return False
            leases[lease_id] = until
            return True

    def release_slot(self, ip: str, provider: str, lease_id: str | None, give_back: Mapping[str, int],
                     forget: Iterable[str] = ()) -> None:
        leases, used = self._slot(ip, provider)
        with self.slot_lock:
            self.slot_calls += 1
            if lease_id is not None:
                leases.pop(lease_id, None)
            for w, n in give_back.items():
                used[w] = used.get(w, n) - n
            for w in forget:
                used.pop(w, None)

    def drop_leases(self, ip: str, provider: str, expired: Mapping[str, float]) -> bool:
        leases, _ = self._slot(ip, provider)
        with self.slot_lock:
            self.slot_calls += 1
            if any(leases.get(k) != v for k, v in expired.items()):
                return False
            for k in expired:
                del leases[k]
            return True

    # ---- bounces and orphans ---------------------------------------------------------------
    def read_inbound(self, key: str, limit: int) -> tuple[bytes, int] | None:
        raw = self.inbound.get(key)
        return None if raw is None else (raw[:limit], len(raw))

    def put_inbound(self, key: str, raw: bytes) -> None:
        self.inbound[key] = raw

    def add_bounce(self, bounce: Bounce, now: float) -> bool:
        m = self.messages.get(bounce.message_id)
        if m is None:
            raise ValueError(f"no message {bounce.message_id}")
        k = (bounce.index, bounce.bounce_id)
        if k in m.bounces:
            return False
        m.bounces[k] = bounce
        return True

    def add_orphan(self, orphan: Orphan, now: float) -> bool:
        k = (orphan.s3_key, orphan.kind)
        if k in self.orphan_records:
            return False
        self.orphan_records[k] = orphan
        return True

    def orphans(self, kind: str, limit: int = 100) -> list[Orphan]:
        found = [o for (_, k), o in self.orphan_records.items() if k == kind]
        return sorted(found, key=lambda o: o.received_at, reverse=True)[:limit]

    # ---- lists (one page: the fake never splits a partition) -------------------------------
    def listing(self, query: str, part: str) -> Listing:
        return Listing(("at", "id"), ("part", f"{query}:{part}"), "at")

    def _page(self, found: list[Any], limit: int, at: str) -> Page[Any]:
        found = sorted(found, key=lambda x: getattr(x, at) or "", reverse=True)
        keys = [{"at": str(getattr(x, at)), "id": str(n)} for n, x in enumerate(found)]
        return Page(found[:limit], None, keys[:limit])

    def _recipients(self) -> list[Recipient]:
        return [r.record for m in self.messages.values() for r in m.recipients.values()]

    def messages_to(self, address: str, *, since: str | None = None, state: str | None = None,
                    limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Recipient]:
        return self._page([r for r in self._recipients() if r.address.lower() == address
                           and (state is None or r.state == state)
                           and (since is None or (r.created_at or "") >= since)], limit, "created_at")

    def messages_on(self, day: str, *, since: str | None = None, state: str | None = None,
                    limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Recipient]:
        return self._page([r for r in self._recipients() if (r.created_at or "").startswith(day)
                           and (state is None or r.state == state)
                           and (since is None or (r.created_at or "") >= since)], limit, "created_at")

    def _bounces(self) -> list[Bounce]:
        return [b for m in self.messages.values() for b in m.bounces.values()]

    def bounces_to(self, address: str, *, since: str | None = None, type: str | None = None,
                   kind: str | None = None, limit: int = 50,
                   start_key: dict[str, str] | None = None) -> Page[Bounce]:
        return self._page([b for b in self._bounces() if b.address.lower() == address
                           and (type is None or b.type == type) and (kind is None or b.kind == kind)
                           and (since is None or b.received_at >= since)], limit, "received_at")

    def bounces_of_type(self, type: str, *, since: str | None = None, kind: str | None = None,
                        limit: int = 50, start_key: dict[str, str] | None = None) -> Page[Bounce]:
        return self._page([b for b in self._bounces() if b.type == type
                           and (kind is None or b.kind == kind)
                           and (since is None or b.received_at >= since)], limit, "received_at")

    # ---- the suppressions' audit log -------------------------------------------------------
    def add_suppression_event(self, event: SuppressionEvent) -> None:
        self.events.append(event)

    def suppression_history(self, address: str, limit: int = 20) -> list[SuppressionEvent]:
        return [e for e in reversed(self.events) if e.address == address][:limit]

    open_pages = 0  # the queries any_open made (pages of `page` items, the META first), as the real store

    def any_open(self, message_id: str, *, page: int = 8) -> bool:
        m = self.messages.get(message_id)
        if m is None:
            self.open_pages += 1
            return False
        items = [None, *(m.recipients[i].record for i in sorted(m.recipients))]  # None: the META
        for start in range(0, len(items), page):
            self.open_pages += 1
            if any(r is not None and r.is_open for r in items[start:start + page]):
                return True
        return False

    # ---- a committed message whose job was not queued (s17f) -----------------------------------
    def mark_overdue(self, message_id: str, recipients: Iterable[Recipient], created: float,
                     by: float) -> int | None:
        for rec in recipients:  # as store.py: the first open one still due as created
            r = self._get(message_id, rec.index)
            due = created if rec.next_attempt_at is None else float(rec.next_attempt_at)
            if rec.is_open and r is not None and r.record.is_open and r.due_at == due:
                r.due_at = due - by
                return rec.index
        return None


class FakeSuppressions:
    """outpost.store.Suppressions in memory, keyed like the real one (suppression_key)."""

    def __init__(self) -> None:
        self.records: dict[str, Suppression] = {}

    def get(self, address: str) -> Suppression | None:
        return self.records.get(suppression_key(address))

    def suppressed(self, addresses: Iterable[str]) -> set[str]:
        return {a.lower() for a in addresses if suppression_key(a) in self.records}

    def add(self, suppression: Suppression) -> bool:
        key = suppression_key(suppression.address)
        if key in self.records:
            return False
        self.records[key] = suppression.replace(address=key)
        return True

    def remove(self, address: str) -> bool:
        return self.records.pop(suppression_key(address), None) is not None

    def listing(self, source: str) -> Listing:
        return Listing(("at", "id"), ("part", source), "at")

    def from_source(self, source: str, *, since: str | None = None, limit: int = 50,
                    start_key: dict[str, str] | None = None) -> Page[Suppression]:
        found = sorted((s for s in self.records.values() if s.source == source
                        and (since is None or s.created_at >= since)),
                       key=lambda s: s.created_at, reverse=True)
        return Page(found[:limit], None, [{"at": s.created_at, "id": s.address} for s in found[:limit]])


class FakeJobs:
    """outpost.store.Jobs in memory: the jobs sent, or an error when `fail` is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[QueueJob, float]] = []
        self.fail = False

    def send(self, job: QueueJob, delay: float = 0) -> None:
        if self.fail:
            raise Unavailable("the queue is unavailable")
        self.sent.append((job, delay))

    def send_many(self, jobs: list[QueueJob]) -> list[str]:
        if self.fail:
            return [j.message_id for j in jobs]
        self.sent.extend((j, 0.0) for j in jobs)
        return []


class FakeDomains:
    """outpost.store.Domains in memory (the send API's DomainLookup too): `FakeDomains(*names)`
    starts with those domains verified. A new domain is added once (the real store's
    conditional put); an update needs the domain to exist, and None removes a field."""

    def __init__(self, *verified: str) -> None:
        self.records: dict[str, Domain] = {d: Domain(domain=d, verified=True) for d in verified}

    def domain(self, name: str) -> Domain | None:
        return self.records.get(name)

    def domains(self) -> list[Domain]:
        return list(self.records.values())

    def put_domain(self, domain: Domain) -> None:
        self.records[domain.domain] = domain

    def add_domain(self, domain: Domain) -> bool:
        if domain.domain in self.records:
            return False
        self.records[domain.domain] = domain
        return True

    def update_domain(self, name: str, **changes: Any) -> Domain:
        if name not in self.records:
            raise Unavailable(f"no domain {name}: the conditional update fails")
        record = Domain.from_dict({**self.records[name].as_dict(), **changes})
        self.records[name] = record
        return record


class FakeApiKeys:
    """outpost.store.ApiKeys in memory; `reads` counts the lookups by hash (the KeyRing's cache
    keeps warm requests from reading)."""

    def __init__(self, *keys: ApiKey) -> None:
        self.records: dict[str, ApiKey] = {k.key_hash: k for k in keys}
        self.reads = 0

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        self.reads += 1
        return self.records.get(key_hash)

    def key_by_id(self, key_id: str) -> ApiKey | None:
        return next((k for k in self.records.values() if k.key_id == key_id), None)

    def keys(self) -> list[ApiKey]:
        return list(self.records.values())

    def put_key(self, key: ApiKey) -> None:
        self.records[key.key_hash] = key

    def touch_key(self, key_hash: str, when: str) -> None:
        self.records[key_hash] = self.records[key_hash].replace(last_used_at=when)

    def revoke_key(self, key_hash: str, when: str) -> ApiKey:
        if key_hash not in self.records:
            raise Unavailable("no such key: the conditional update fails")
        self.records[key_hash] = self.records[key_hash].replace(revoked_at=when)
        return self.records[key_hash]


class FakeSecrets:
    """outpost.store.SecretStore in memory (DKIM keys): JSON copies in and out, as the real
    one serialises them."""

    def __init__(self) -> None:
        self.data: dict[str, dict] = {}

    def get_json(self, secret_id: str) -> dict | None:
        return self.read_json(secret_id)

    def read_json(self, secret_id: str) -> dict | None:
        return json.loads(json.dumps(self.data[secret_id])) if secret_id in self.data else None

    def put_json(self, secret_id: str, value: dict) -> None:
        self.data[secret_id] = json.loads(json.dumps(value))


class FakeReputations:
    """outpost.store.Reputations in memory: hourly counts per (domain, key) pair (one item for
    both scopes, as the real store's), states written only over the state the writer read
    (the real store's conditional put), the active-scope list per day."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str | None, str | None, str], ReputationCounts] = {}
        self.states: dict[str, ReputationState] = {}
        self.active: dict[str, set[str]] = {}  # day -> scopes
        self.adds = 0  # UpdateItems the real store would make
        self.fail = False

    def add_counts(self, domain: str | None, key: str | None, hour: str, now: float, *, sent: int = 0,
                   hard: int = 0, complaints: int = 0) -> bool:
        if self.fail:
            raise Unavailable("the reputation store is unavailable")
        if not (sent or hard or complaints) or not (domain or key):
            return False
        self.adds += 1
        new = (domain, key, hour) not in self.counts
        c = self.counts.get((domain, key, hour)) or ReputationCounts(domain or key or "", hour)
        self.counts[(domain, key, hour)] = c.replace(sent=c.sent + sent, hard=c.hard + hard,
                                                     complaints=c.complaints + complaints)
        return new

    def counts_since(self, scope: str, hour: str) -> list[ReputationCounts]:
        if self.fail:
            raise Unavailable("the reputation store is unavailable")
        return sorted((c.replace(scope=scope) for (d, k, h), c in self.counts.items()
                       if scope in (d, k) and h >= hour), key=lambda c: c.hour)

    def mark_active(self, scopes: Iterable[str], day: str, now: float) -> None:
        if self.fail:
            raise Unavailable("the reputation store is unavailable")
        self.active.setdefault(day, set()).update(scopes)

    def active_scopes(self, days: Iterable[str]) -> list[str]:
        if self.fail:
            raise Unavailable("the reputation store is unavailable")
        return sorted({s for d in days for s in self.active.get(d, ())})

    def rep_states(self, scopes: Iterable[str]) -> dict[str, ReputationState]:
        if self.fail:
            raise Unavailable("the reputation store is unavailable")
        return {s: self.states[s] for s in scopes if s in self.states}

    def put_rep_state(self, state: ReputationState, expected: str | None) -> bool:
        current = self.states.get(state.scope)
        now = current.state if current is not None else None
        if (now or "ok") != (expected or "ok"):
            return False
        self.states[state.scope] = state
        return True
