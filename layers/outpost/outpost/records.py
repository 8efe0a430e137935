"""The records Outpost keeps, one typed shape each, from the moment one is read to the moment
it is written: a message, its recipients and their attempts, a bounce report, a suppression,
inbound mail that matched nothing (an orphan), an upload, a suppression's audit event.

Frozen dataclasses: only the store (store.py) turns them into DynamoDB items and back, and only
the store knows a key or an index name. `as_dict()` is the record's plain view (the API's
answers, logs): the field names of the public API (`from`, not `from_`), None left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, TypeVar

from .clock import iso
from .models import OPEN_STATES, RecipientState

R = TypeVar("R", bound="Record")

# Python names that are not the record's field names (a keyword).
_RENAMED = {"from_": "from"}
_NAMES = {v: k for k, v in _RENAMED.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)  # a plain record (Waiting)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Record:
    """What every record can do: show itself as a dict, and be read from one (lenient: keys
    it does not know are ignored, missing ones take their defaults)."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is not None:
                out[_RENAMED.get(f.name, f.name)] = _plain(v)
        return out

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any], **override: Any) -> R:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        args = {_NAMES.get(k, k): v for k, v in d.items() if _NAMES.get(k, k) in known}
        args.update(override)
        return cls(**args)

    def replace(self: R, **changes: Any) -> R:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class Attempt(Record):
    """One delivery attempt of one recipient: when, where (MX, IP, TLS), and the reply as the
    failure policy judged it (command, code, enhanced status, text, outcome)."""

    at: str
    outcome: str
    mx: str | None = None
    ip: str | None = None
    tls: Mapping[str, Any] | None = None
    command: str | None = None
    code: int | None = None
    status: str | None = None
    text: str | None = None
    remote_id: str | None = None
    kind: str | None = None
    reason: str | None = None
    mta_sts: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Message(Record):
    """A message as accepted (its "meta"): who sent it, until when it may be delivered, and
    where its stored request is (inline JSON, or an S3 key for a large one)."""

    message_id: str
    from_: str
    subject: str
    deliver_until: float
    recipient_count: int
    from_domain: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    tls: str | None = None
    size: int | None = None  # the estimated MIME size (the sender's memory budget)
    created_at: str | None = None
    created_ts: float | None = None
    job_token: str | None = None  # the current job (issue 8 item 12)
    key_id: str | None = None  # the API key that sent it (the reputation breaker's per-key counts)
    spec: str | None = None  # the stored request's JSON, when small enough to keep inline
    spec_key: str | None = None  # else its S3 key
    send_at: float | None = None  # issue 14: scheduled for this time (epoch seconds); None: at once
    spec_z: bytes | None = None  # or, inline, its JSON deflated (zlib; store.py, issue 15 item 4)
    mode: str | None = None  # "test": sent with a test-mode API key, simulated (sandbox.py); None: live
    template: str | None = None  # the template it was rendered from (issue 14), and its version
    template_version: int | None = None


@dataclass(frozen=True)
class Waiting(Record):
    """Why an open recipient waits with no attempt counted, and until when (issue 11 item 7):
    `reason` is suspended | shaping | warmup | paused; `provider` the provider (or, paused, the
    sending domain or API key that is paused); `until` epoch seconds."""

    reason: str
    provider: str
    until: float
    detail: str = ""
    waits: int = 0  # shaping: this recipient's consecutive waits for room, this one included


@dataclass(frozen=True)
class Recipient(Record):
    """One envelope recipient of a message, and where its delivery stands."""

    message_id: str
    index: int
    address: str
    state: RecipientState
    field: str = "to"  # to, cc or bcc
    from_: str | None = None  # copies of the message's, so a list page needs no second read
    subject: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    attempts: tuple[Attempt, ...] = ()
    last: Mapping[str, Any] | None = None  # the last verdict (trouble.Verdict.as_dict())
    bounce: Mapping[str, Any] | None = None  # why it bounced (SMTP, DSN or complaint)
    remote_id: str | None = None  # the receiving server's queue id, when delivered
    next_attempt_at: float | None = None
    lease_until: float | None = None
    waiting: Waiting | None = None  # why it waits (issue 11: suspended, shaping, warm-up)
    mode: str | None = None  # a copy of the message's (sandbox.py), for list pages

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **override: Any) -> Recipient:
        r = super().from_dict(d, **override)
        waiting = r.waiting
        if isinstance(waiting, Mapping):
            waiting = Waiting(str(waiting["reason"]), str(waiting["provider"]), float(waiting["until"]),
                              str(waiting.get("detail") or ""), int(waiting.get("waits") or 0))
        return dataclasses.replace(
            r, state=RecipientState(r.state), index=int(r.index), waiting=waiting,
            attempts=tuple(a if isinstance(a, Attempt) else Attempt.from_dict(a) for a in r.attempts or ()))


@dataclass(frozen=True)
class Bounce(Record):
    """One report (DSN, feedback report, delay notice) about one recipient, kept once per
    report (`bounce_id` is a hash of the raw mail)."""

    message_id: str
    index: int
    bounce_id: str
    address: str
    type: str  # bounce, complaint, delay, notice
    received_at: str
    verified: bool = False
    action: str | None = None
    status: str | None = None
    kind: str | None = None
    reason: str | None = None
    diagnostic: str | None = None
    reporting_mta: str | None = None
    remote_mta: str | None = None
    s3_key: str | None = None
    family: str | None = None


@dataclass(frozen=True)
class Suppression(Record):
    """An address Outpost no longer sends to, and why (the first reason wins)."""

    address: str
    source: str  # bounce, complaint, manual
    created_at: str
    reason: str | None = None
    kind: str | None = None
    message_id: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    s3_key: str | None = None
    added_by: str | None = None

    @classmethod
    def new(cls, address: str, now: float, *, source: str, reason: str | None, kind: str | None,
            message_id: str | None = None, status: str | None = None, diagnostic: str | None = None,
            s3_key: str | None = None, added_by: str | None = None) -> Suppression:
        """The one way a suppression is made: by the sender (a hard bounce at SMTP time), the
        bounce processor (a hard DSN, a complaint) or an API key (manual)."""
        return cls(address=address, source=source, created_at=iso(now), reason=reason, kind=kind,
                   message_id=message_id, status=status, diagnostic=diagnostic, s3_key=s3_key,
                   added_by=added_by)


@dataclass(frozen=True)
class SuppressionEvent(Record):
    """An audit event of one address's suppression (added, removed: who and when)."""

    address: str
    action: str
    at: str
    by: str | None = None
    reason: str | None = None
    previous: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Orphan(Record):
    """Inbound mail at the bounce domain that changed nothing: unparsed, unmatched,
    unverified or an auto-reply. Kept (with the S3 key of the raw mail) and counted."""

    s3_key: str
    kind: str  # unparsed, unmatched, unverified, autoreply
    received_at: str
    family: str | None = None
    report_kind: str | None = None
    envelope_recipients: tuple[str, ...] = ()
    parser_error: str | None = None
    size: int | None = None
    truncated: bool | None = None
    token: str | None = None
    recipients: tuple[str, ...] | None = None
    envelope_id: str | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class Upload(Record):
    """An attachment upload (POST /v1/uploads): who created it, its declared size and type."""

    upload_id: str
    key_id: str
    size: int
    content_type: str
    created_at: str | None = None


@dataclass(frozen=True)
class Overdue(Record):
    """An open recipient whose next job should have run by now (the sweeper's question)."""

    message_id: str
    index: int
    due_at: float


@dataclass
class StoredMessage:
    """A message with its recipients (in index order) and the bounce reports about them."""

    meta: Message
    recipients: list[Recipient] = field(default_factory=list)
    bounces: list[Bounce] = field(default_factory=list)


@dataclass(frozen=True)
class ApiKey(Record):
    """An API key as stored: only the SHA-256 of the key (`key_hash`), its short id (`key_id`,
    the hash's first 12 hex digits) for lists and logs, its scopes, an optional own rate and
    burst, the sending domains it is bound to (None: any), and its audit times. Revoking sets
    `revoked_at`; the record stays."""

    key_hash: str = field(metadata={"secret": True})
    key_id: str = ""  # from_dict fills it from the hash when an item lacks it
    name: str = ""
    scopes: tuple[str, ...] = ()
    created_at: str | None = None
    rate: float | None = None
    burst: int | None = None
    domains: tuple[str, ...] | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None
    mode: str = "live"  # "test": every message it sends is simulated (sandbox.py, issue 14)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **override: Any) -> ApiKey:
        k = super().from_dict(d, **override)
        return dataclasses.replace(k, key_id=k.key_id or k.key_hash[:12], scopes=tuple(k.scopes or ()),
                                   domains=tuple(k.domains) if k.domains else None)

    def public(self) -> dict[str, Any]:
        """The key as lists and the admin CLI show it: everything but its hash."""
        hidden = {_RENAMED.get(f.name, f.name) for f in fields(self) if f.metadata.get("secret")}
        return {k: v for k, v in self.as_dict().items() if k not in hidden}


@dataclass(frozen=True)
class Domain(Record):
    """A sending domain (its lowercase A-label form): whether it may send (`verified`), its
    current and pending DKIM selectors (the keys themselves are in Secrets Manager), whether
    it asked for an MTA-STS policy, and the times of its checks."""

    domain: str
    verified: bool = False
    created_at: str | None = None
    verified_at: str | None = None
    selectors: tuple[str, ...] = ()
    pending_selectors: tuple[str, ...] | None = None
    mta_sts: bool = False
    checked_at: str | None = None
    dkim_failing_since: str | None = None
    unverified_at: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **override: Any) -> Domain:
        r = super().from_dict(d, **override)
        return dataclasses.replace(r, verified=bool(r.verified), mta_sts=bool(r.mta_sts),
                                   selectors=tuple(r.selectors or ()),
                                   pending_selectors=tuple(r.pending_selectors) if r.pending_selectors else None)


# ---- throttle and suspension (issue 11) ---------------------------------------------------------
@dataclass(frozen=True)
class Suspension(Record):
    """A provider suspended for one sending IP after a throttle reply (delivery/suspension.py):
    no sender connects to it before `until`; then it ramps up from one connection. `level`
    is the step of OUTPOST_THROTTLE_BACKOFF it used (1-based); `reply` the throttle reply."""

    ip: str
    provider: str
    until: float
    level: int
    reply: str = ""
    since: float | None = None  # when it was recorded
# ---- slots (issue 11: fleet-wide shaping) -------------------------------------------------------
@dataclass(frozen=True)
class SlotState:
    """What the store holds for one (sending IP, provider) (delivery/shaping.py): the
    connection leases (lease id -> expiry, epoch seconds) and the messages taken in each
    rate or warm-up window (window name -> count)."""

    leases: Mapping[str, float]
    used: Mapping[str, int]
# ---- reputation circuit breaker (issue 11 item 6) ---------------------------------------------
@dataclass(frozen=True)
class ReputationCounts(Record):
    """One hour's counts of one scope (a sending domain, `domain:<name>`, or an API key,
    `key:<id>`): recipients sent (accepted for delivery), hard bounces, complaints."""

    scope: str
    hour: str  # yyyymmddhh, UTC
    sent: int = 0
    hard: int = 0
    complaints: int = 0


@dataclass(frozen=True)
class ReputationState(Record):
    """Where a scope's breaker stands: ok | warn | paused, since when, and why (the rate and
    the threshold it crossed); a resume records who and when."""

    scope: str
    state: str = "ok"
    since: str | None = None
    reason: str | None = None
    rate: float | None = None
    threshold: float | None = None
    resumed_by: str | None = None
    resumed_at: str | None = None


# ---- templates (issue 14) ----------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateVersion(Record):
    """One version of a stored template, immutable once written: `kind` standard | layout;
    `layout`, a standard template's layout (its alias); `text` None: derived from the HTML."""

    alias: str
    version: int
    name: str
    kind: str = "standard"
    subject: str | None = None  # None for a layout
    html: str = ""
    text: str | None = None
    layout: str | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class TemplateHead(Record):
    """A template alias as listed: its latest version, and when it was created and changed."""

    alias: str
    latest: int
    name: str
    kind: str = "standard"
    layout: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


# ---- an Idempotency-Key's hold on what its create made (store.MessageStore.create) ---------------
@dataclass(frozen=True)
class CreateKey(Record):
    """What a create keyed by an Idempotency-Key claims: `key`, a hash of (operation, API key id,
    Idempotency-Key[, batch index]); `digest`, the request body's hash (another body is a 409);
    `ttl`, the seconds the claim holds (the idempotency record's 24 h); `busy`, the seconds its
    create may still be running (the Lambda invocation's time left; None: store.UNCOMMITTED_AGE)."""

    key: str
    digest: str
    ttl: int = 86400
    busy: float | None = None


@dataclass(frozen=True)
class EarlierCreate(Record):
    """The committed message an earlier create with the same CreateKey made, and its digest."""

    message_id: str
    digest: str


# ---- the templates that use a layout (store.TemplateStore.layout_users; slice s17d) -------------
@dataclass(frozen=True)
class LayoutUsers(Record):
    """How many templates' latest versions use `layout`, and a few of their aliases."""

    layout: str
    count: int
    aliases: tuple[str, ...] = ()
