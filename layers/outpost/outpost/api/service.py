"""Send and query: what the API does, without HTTP (routes.py is the HTTP side)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from ..addresses import AddressError, normalise, parse_address
from ..clock import day_of, iso
from ..config import DEFAULT_MAX_LIFETIME
from ..errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    MessageBuildError,
    NotFoundError,
    PayloadTooLargeError,
    UploadLimitReachedError,
)
from ..ids import is_message_id, new_message_id
from ..mime import check_message
from ..models import (
    MAX_MESSAGE_BYTES,
    MAX_RECIPIENTS,
    QueueJob,
    RecipientState,
    SendRequest,
    UploadRequest,
    error_field,
    rendered_trouble,
)
from ..records import (
    Bounce,
    CreateKey,
    EarlierCreate,
    Message,
    Recipient,
    Record,
    Suppression,
    SuppressionEvent,
    Upload,
)
from ..reputation import Reputation
from ..sandbox import LIVE, is_simulated, message_mode, refused_at_acceptance
from ..store import TTL_MARGIN, DomainLookup, Jobs, Listing, Messages, Page, Suppressions
from ..stored_request import StoredRequest
from ..sweeper import SWEEP_GRACE
from .auth import Principal
from .idempotency import IdempotentRequest, Once
from .paging import Cursor, check_key, decode_cursor, encode_cursor, query_digest, since_iso
from .scheduled import cancel_message, header_send_at, scheduled_for

if TYPE_CHECKING:
    from ..raw_message import RawMessage
    from ..templates.service import Rendered, TemplateCache, TemplateService

UPLOAD_URL_TTL = 900  # seconds a presigned upload URL stays valid
UPLOADS_PER_KEY_PER_DAY = 1000  # POST /v1/uploads per API key per UTC day (429 past it)
BATCH_WORKERS = 16
BATCH_RESERVE = 3.0  # seconds a batch keeps to queue what it stored (or mark overdue what it could not)
BOUNCE_TYPES = ("bounce", "complaint", "delay", "notice")
SUPPRESSION_SOURCES = ("bounce", "complaint", "manual")
# A list request's budget (GET /v1/messages, /v1/bounces, /v1/suppressions): DynamoDB queries,
# and items read by each filtered query. 10 x 100 items stay far inside API Gateway's 29 s.
LIST_MAX_QUERIES = 10
LIST_READ_PER_QUERY = 100

log = logging.getLogger("outpost.api")
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Created:
    """A create's outcome (s17b: beside the answer, never as private keys inside it, so that no
    answer, nor the idempotency record that stores it, can carry one to a client). `answer`: the
    body the client gets (SendResponse, or a BatchResult); `replayed`: found through the create's
    Idempotency-Key claim (an earlier committed create, `_earlier`, which queued its job); for a
    batch's message, stored but not queued yet: `sent`, the (From domain, key id, queued count)
    the breaker counts once the batch has queued (or marked, s17f) its jobs, and `send_at`, when
    its job is due; `stored` (s17f): its recipients and create time, for the overdue mark should
    its job not be queued."""

    answer: dict[str, Any]
    replayed: bool = False
    sent: tuple[str, str | None, int] | None = None
    send_at: float | None = None
    stored: tuple[tuple[Recipient, ...], float] | None = None


class SendService:
    """POST /v1/messages and /v1/messages/batch: check, store, enqueue.

    `idempotency` is a Powertools persistence layer (DynamoDB in production); with it, a
    request that carries an Idempotency-Key runs at most once per (API key, Idempotency-Key)
    for 24 h, and a replay with a different body is a 409.
    """

    def __init__(self, *, store: Messages, suppressions: Suppressions, queue: Jobs,
                 domains: DomainLookup, clock: Callable[[], float] = time.time,
                 idempotency: Any = None, retention_days: int | None = None, max_lifetime: int | None = None,
                 uploads_per_key_per_day: int = UPLOADS_PER_KEY_PER_DAY,
                 reputation: Reputation | None = None, templates: TemplateService | None = None) -> None:
        self.store, self.suppressions, self.queue, self.domains = store, suppressions, queue, domains
        self.templates = templates  # issue 14: `template` sends render here (None: refused)
        # The circuit breaker (issue 11 item 6): a paused domain or key is refused (403
        # sending_paused); accepted recipients are counted as sent (the rates' denominator).
        self.reputation = reputation
        # OUTPOST_MAX_LIFETIME (Postfix maximal_queue_lifetime): the lifetime of a message that
        # names none, and the cap of one that asks for more.
        self.max_lifetime = max_lifetime
        self.clock = clock
        self.retention_days = retention_days  # the bucket's lifecycle for uploads/ (None: unknown)
        self.uploads_per_day = uploads_per_key_per_day
        self._once = Once(idempotency) if idempotency is not None else None

    # ---- entry points ---------------------------------------------------------------------------
    def send(self, body: SendRequest, *, principal: Principal | None = None,
             idempotency_key: str | None = None, raw: Any = None,
             context: Any = None) -> tuple[dict, bool]:
        """(response, replayed). `raw` is the parsed JSON body, hashed for the 409 check;
        `context` is the invocation's (an in-progress idempotency record expires with it)."""
        return self._maybe_once("send", principal, idempotency_key,
                                raw if raw is not None else body.model_dump(mode="json", by_alias=True),
                                lambda once: self.create_one(body, principal=principal, once=None if once is None
                                                             else once.create_key(busy=_time_left(context))), context)

    def send_batch(self, messages: list[dict[str, Any]], *, principal: Principal | None = None,
                   idempotency_key: str | None = None, context: Any = None) -> tuple[dict, bool]:
        return self._maybe_once("batch", principal, idempotency_key, messages,
                                lambda once: self._run_batch(messages, principal, _out_of_time(context), once,
                                                             _time_left(context)),
                                context)

    def _maybe_once(self, operation: str, principal: Principal | None, key: str | None,
                    body: Any, work: Callable[[IdempotentRequest | None], Created], context: Any) -> tuple[dict, bool]:
        """(answer, replayed): replayed by the idempotency layer (its record), or found through
        the create's key (`Created.replayed`); only the answer is what the record stores."""
        if key is None or self._once is None:
            done = work(None)
            return done.answer, done.replayed
        request = IdempotentRequest(operation, principal.key_id if principal else "", key, body)
        ran: list[Created] = []  # empty when the layer answered from its record

        def run() -> dict:
            ran.append(work(request))
            return ran[-1].answer

        out, replayed = self._once.run(request, run, context)
        if not ran:  # a record stored before s17b (they live 24 h) may hold a private `_replayed`
            out = {k: v for k, v in out.items() if not k.startswith("_")}
        return out, replayed or any(c.replayed for c in ran)

    # ---- the work -------------------------------------------------------------------------------
    def _sender_domain(self, req: SendRequest, principal: Principal | None) -> str:
        return self._from_domain(req.from_, principal)

    def _from_domain(self, from_: str, principal: Principal | None) -> str:
        sender = parse_address(from_)
        if principal is not None and principal.domains is not None \
                and sender.ascii_domain not in principal.domains:
            raise ForbiddenError(f"this API key may send only from {', '.join(sorted(principal.domains))}",
                            field="from")
        domain = self.domains.domain(sender.ascii_domain)
        if domain is None or not domain.verified:
            # No open relay: only domains whose DKIM key is published and verified may send.
            raise ForbiddenError(f"the sender domain {sender.domain!r} is not a verified Outpost domain",
                            field="from")
        return sender.domain

    def create_upload(self, req: UploadRequest, principal: Principal) -> dict:
        """A presigned S3 PUT for one attachment: the bytes bypass API Gateway's 6 MB limit.

        Content-Type and Content-Length are signed (SigV4), so S3 refuses a PUT of any other
        size than the one declared; the send still checks the stored size (HEAD). The upload
        belongs to the key that created it: only that key may attach it, and each key may
        create `uploads_per_day` a UTC day.
        """
        if req.size > MAX_MESSAGE_BYTES:
            # 422, not 413: the request is small; its declared `size` breaks the documented maximum.
            raise InvalidRequestError(f"an upload of {req.size} bytes cannot fit in a message; the "
                                   f"limit is {MAX_MESSAGE_BYTES} (40 MB)", field="size")
        now = self.clock()
        if not self.store.count_upload(principal.key_id, now, self.uploads_per_day):
            raise UploadLimitReachedError(
                f"this API key has created its {self.uploads_per_day} uploads for today (UTC); "
                "attach the ones already uploaded, or retry tomorrow", int(86400 - now % 86400) + 1)
        upload_id = secrets.token_hex(16)  # unguessable: the id is what a send refers to
        self.store.put_upload(Upload(upload_id, principal.key_id, req.size, req.content_type), now)
        headers = {"Content-Type": req.content_type, "Content-Length": str(req.size)}
        url = self.store.upload_url(upload_id, req.content_type, req.size, UPLOAD_URL_TTL)
        return {"upload_id": upload_id, "url": url, "method": "PUT", "headers": headers,
                "expires_in": UPLOAD_URL_TTL}

    def _uploaded_size(self, req: SendRequest, principal: Principal | None) -> int:
        """The raw bytes of the uploaded attachments (HEAD each). An upload this key did not
        create is a 403, whether another key created it or nobody did: an upload_id is not a
        bearer token, and the answer tells nothing about other keys' ids. One created but not
        PUT yet is a 422."""
        sizes: dict[str, int] = {}
        total = 0
        for i, a in enumerate(req.attachments):
            if a.upload_id is None:
                continue
            if a.upload_id not in sizes:
                field = f"attachments[{i}].upload_id"
                record = self.store.upload(a.upload_id)
                if record is None or principal is None or record.key_id != principal.key_id:
                    raise ForbiddenError(f"no upload {a.upload_id!r} belongs to this API key: create it "
                                    "with POST /v1/uploads (with this key) first", field=field)
                got = self.store.uploaded(a.upload_id)
                if got is None:
                    raise InvalidRequestError(
                        f"no upload {a.upload_id!r}: PUT the bytes to its URL first (uploads "
                        "expire)", field=field)
                sizes[a.upload_id] = got[0]
                self._check_upload_outlives(req, a.upload_id, got[1], i)
            total += sizes[a.upload_id]  # attached twice goes out twice
        return total

    def _check_upload_outlives(self, req: SendRequest, upload_id: str, modified: Any, i: int) -> None:
        """The bucket's lifecycle deletes uploads/ RetentionDays after their upload: one the
        message may still need at its delivery deadline (plus the store's margin) is refused
        now rather than found missing on a retry (issue 8, item 10)."""
        if self.retention_days is None or modified is None:
            return
        deleted_at = modified.timestamp() + self.retention_days * 86400
        start = self.clock()
        start = scheduled_for(req.send_at, start, lifetime=self._lifetime(req), retention_days=None) or start
        if deleted_at < start + self._lifetime(req) + TTL_MARGIN:
            raise InvalidRequestError(
                f"upload {upload_id!r} is deleted before this message's delivery deadline "
                f"(uploads are kept {self.retention_days} days): upload it again, or send with a "
                "shorter expires_in", field=f"attachments[{i}].upload_id")

    def _lifetime(self, req: SendRequest) -> int:
        if self.max_lifetime is None:
            return req.expires_in
        asked = req.expires_in if "expires_in" in req.model_fields_set else self.max_lifetime
        return min(asked, self.max_lifetime)

    def send_one(self, req: SendRequest, *, enqueue: bool = True, principal: Principal | None = None,
                 paused_memo: dict | None = None, templates: TemplateCache | None = None,
                 once: CreateKey | None = None) -> dict:
        """POST /v1/messages without HTTP nor idempotency: its answer (`create_one` has the rest)."""
        return self.create_one(req, enqueue=enqueue, principal=principal, paused_memo=paused_memo,
                               templates=templates, once=once).answer

    def create_one(self, req: SendRequest, *, enqueue: bool = True, principal: Principal | None = None,
                   paused_memo: dict | None = None, templates: TemplateCache | None = None,
                   once: CreateKey | None = None) -> Created:
        # A template send is authorised before it is rendered (the From domain: 403 first)
        template_domain = self._sender_domain(req, principal) if req.template is not None else None
        req, rendered = self._from_template(req, templates)
        _check_builds(req)
        size = req.encoded_size(self._uploaded_size(req, principal))
        if size > MAX_MESSAGE_BYTES:
            raise PayloadTooLargeError(f"the message would be about {size} bytes; the limit is "
                                  f"{MAX_MESSAGE_BYTES} (40 MB)", field="attachments")
        from_domain = template_domain or self._sender_domain(req, principal)
        key_id = principal.key_id if principal is not None else None
        if self.reputation is not None:
            self.reputation.check_send(from_domain, key_id, paused_memo)
        now = self.clock()
        # issue 14: scheduled (api/scheduled.py): due then, the lifetime counted from then
        send_at = scheduled_for(req.send_at, now, lifetime=self._lifetime(req), retention_days=self.retention_days)
        message_id = new_message_id(now)
        rcpts = req.recipients()
        suppressed = self.suppressions.suppressed(a for a, _ in rcpts)
        recipients = []
        mode = message_mode(principal.mode if principal is not None else None)
        for i, (addr, kind) in enumerate(rcpts):
            state = RecipientState.SUPPRESSED if addr.lower() in suppressed or refused_at_acceptance(addr) \
                else RecipientState.QUEUED
            # The from/subject copies let a list page be answered from the index alone.
            recipients.append(Recipient(message_id, i, addr, state, field=kind, from_=req.from_,
                                        subject=req.subject[:200], mode=mode))
            if send_at is not None and state is RecipientState.QUEUED:
                recipients[-1] = recipients[-1].replace(state=RecipientState.SCHEDULED, next_attempt_at=send_at)
        meta = Message(message_id=message_id, from_=req.from_, from_domain=from_domain,
                       subject=req.subject, tags=req.tags, tls=req.tls,
                       deliver_until=(send_at or now) + self._lifetime(req), recipient_count=len(recipients),
                       size=size, key_id=key_id, send_at=send_at, mode=mode)  # size: the sender's memory budget
        if rendered is not None:  # issue 14: which template (and version) the bodies came from
            meta = meta.replace(template=rendered.alias, template_version=rendered.version)
        # What the sender will read: the stored request's own model (stored_request.py), not
        # the API's. Large ones go to S3 inside create(); the queue only ever carries the id.
        earlier = self._store_and_queue(meta, recipients, StoredRequest.from_request(req), now, enqueue, once)
        if earlier is not None:
            return self._earlier(earlier, once)
        out: dict[str, Any] = {"id": message_id, "recipients": [
            {"address": r.address, "status": r.state.value} for r in recipients]}
        # Simulated recipients (sandbox.py) are not counted by the breaker.
        queued = sum(1 for r in recipients if r.state is RecipientState.QUEUED and not is_simulated(r.address, mode))
        if not enqueue:  # the batch counts it once queued, and its job waits for send_at
            return Created(out, sent=(from_domain, key_id, queued), send_at=send_at, stored=(tuple(recipients), now))
        if self.reputation is not None:
            self.reputation.count_sent([(from_domain, key_id, queued)])
        return Created(out)

    def _from_template(self, req: SendRequest, cache: TemplateCache | None) -> tuple[SendRequest, Rendered | None]:
        """Issue 14: a request naming a template becomes the request it renders to, with the
        rendered subject, html and text (what is stored: a later edit of the template cannot
        change it). Every other field stays as given; the API's limits then apply as usual."""
        if req.template is None:
            return req, None
        if self.templates is None:
            raise InvalidRequestError("templates are not available here", field="template")
        rendered = self.templates.for_send(req.template, req.template_version, req.variables or {}, cache)
        trouble = rendered_trouble(rendered.subject, rendered.text, rendered.html)
        if trouble is not None:  # only what the rendering made is checked: the rest was, as sent
            field, msg = trouble
            raise InvalidRequestError(f"the rendered {field or 'message'}: {msg}", field="variables")
        return req.model_copy(update={"subject": rendered.subject, "html": rendered.html, "text": rendered.text,
                                      "template": None, "template_version": None, "variables": None}), rendered

    def _store_and_queue(self, meta: Message, recipients: list[Recipient], request: StoredRequest,
                         now: float, enqueue: bool = True, once: CreateKey | None = None) -> EarlierCreate | None:
        if (earlier := self.store.create(meta, recipients, request, now, once)) is not None:
            return earlier
        if enqueue and any(r.is_open for r in recipients):
            try:
                if meta.send_at is None:
                    self.queue.send(QueueJob(message_id=meta.message_id))
                else:  # scheduled: the job hops (delivery/job.py) to send_at past SQS's 15 minutes
                    self.queue.send(QueueJob(message_id=meta.message_id, not_before=meta.send_at),
                                    meta.send_at - now)
            except Exception:  # noqa: BLE001 - committed is accepted (s17f): the sweeper queues it
                log.exception("a committed message's job was not queued: the sweeper's next run queues it",
                              extra={"message_id": meta.message_id})
                self._not_queued(meta.message_id, recipients, now)
        return None

    def _not_queued(self, message_id: str, recipients: Sequence[Recipient], now: float) -> None:
        """A committed message (its META put) whose job SQS refused is accepted all the same, as
        Postfix's mail is once its queue file is written (s17f). Taking it back raced the events
        function, which may already have published `message.queued` from the META's INSERT for a
        message then answered 404 and never final. Instead it is marked overdue (store.mark_overdue:
        one recipient's due time), so the sweeper's next run (every 5 minutes) queues its job, not
        one after SWEEP_GRACE; a scheduled one's at the first run after its send_at. Best effort:
        a message not marked is swept after the grace all the same (its due times are in gsi5)."""
        try:
            self.store.mark_overdue(message_id, recipients, now, SWEEP_GRACE)
        except Exception:  # noqa: BLE001 - swept after the grace instead
            log.exception("a message not queued could not be marked overdue", extra={"message_id": message_id})

    def _earlier(self, earlier: EarlierCreate, once: CreateKey | None) -> Created:
        """The answer to a request whose Idempotency-Key an earlier, committed create holds (its
        run was killed after the commit; the idempotency record let this retry through): that
        message's id and its recipients as accepted, marked replayed; another body is the 409
        the idempotency layer gives. A job is queued for it (best effort: a job without a token
        always runs and a duplicate sends nothing twice), as its own may never have been."""
        if once is None or earlier.digest != once.digest:
            raise ConflictError("this Idempotency-Key was used with a different request body",
                                field="Idempotency-Key")
        stored = self.store.load(earlier.message_id)
        if stored is None:  # deleted since (its retention is far longer than the key's 24 h)
            raise ConflictError("this Idempotency-Key's message no longer exists", field="Idempotency-Key")
        meta = stored.meta
        if any(r.is_open for r in stored.recipients):
            try:
                self.queue.send(QueueJob(message_id=meta.message_id, not_before=meta.send_at),
                                max(0.0, (meta.send_at or 0) - self.clock()))
            except Exception:  # noqa: BLE001 - the sweeper queues it anyway
                log.warning("no job for an earlier create", extra={"message_id": meta.message_id})
        accepted = RecipientState.SCHEDULED if meta.send_at is not None else RecipientState.QUEUED
        return Created({"id": meta.message_id, "recipients": [
            {"address": r.address, "status": (r.state if r.state is RecipientState.SUPPRESSED else accepted).value}
            for r in stored.recipients]}, replayed=True)

    @staticmethod
    def _template_cache(messages: list[Any]) -> TemplateCache | None:
        if not any(isinstance(m, dict) and m.get("template") is not None for m in messages):
            return None
        from ..templates.service import TemplateCache  # light (no Mustache, no css-inline)

        return TemplateCache()

    # ---- SMTP submission (issue 13): the client's own MIME -----------------------------------------
    def send_raw(self, data: bytes, *, rcpts: list[str], principal: Principal,
                 context: Any = None) -> tuple[dict, bool]:
        """(response, replayed) for a message submitted over SMTP: `data` as written (DATA),
        to the envelope's recipients (RCPT TO; the header fields name no recipient here).

        Checked by raw_message.py (one From, on a domain verified and allowed for the key, else
        ForbiddenError; lines, sizes), then stored and queued as send_one does: suppression,
        the circuit breaker, the same records. A message with a Message-ID runs at most once per
        (API key, Message-ID, envelope recipients) for 24 h through the API's idempotency layer:
        a DATA retried after a timeout gets the first answer (the same Outpost id); the same
        Message-ID to other recipients (a client splitting a long recipient list into several
        transactions) is another message; with other bytes to the same recipients, a 409
        (ConflictError)."""
        from ..raw_message import inspect_raw  # SMTP submission's path: not the API's cold start

        msg = inspect_raw(data)
        addresses = _envelope_addresses(rcpts)
        from_domain = self._from_domain(msg.sender.addr, principal)
        if msg.message_id is None:
            return self._accept_raw(msg, addresses, from_domain, principal).answer, False
        key = "\n".join([msg.message_id, *sorted(a.lower() for a in addresses)])
        return self._maybe_once("smtp", principal, key, {"sha256": hashlib.sha256(data).hexdigest()},
                                lambda once: self._accept_raw(msg, addresses, from_domain, principal,
                                                              None if once is None else once.create_key()), context)

    def _accept_raw(self, msg: RawMessage, addresses: list[str], from_domain: str,
                    principal: Principal, once: CreateKey | None = None) -> Created:
        if self.reputation is not None:
            self.reputation.check_send(from_domain, principal.key_id, None)
        now = self.clock()
        lifetime = self.max_lifetime if self.max_lifetime is not None else DEFAULT_MAX_LIFETIME
        send_at = header_send_at(msg.send_at, now, lifetime=lifetime, retention_days=self.retention_days)
        message_id = new_message_id(now)
        final = msg.finish(message_id, send_at or now)  # a Date it lacks: when it is sent, as the API's
        suppressed = self.suppressions.suppressed(addresses)
        mode = message_mode(principal.mode)
        recipients = [Recipient(message_id, i, a, RecipientState.SUPPRESSED
                                if a.lower() in suppressed or refused_at_acceptance(a)
                                else RecipientState.QUEUED, field="envelope", from_=msg.from_header,
                                subject=msg.subject, mode=mode) for i, a in enumerate(addresses)]
        if send_at is not None:  # s17d: Outpost-Send-At, scheduled as the API's send_at
            recipients = [r.replace(state=RecipientState.SCHEDULED, next_attempt_at=send_at)
                          if r.state is RecipientState.QUEUED else r for r in recipients]
        meta = Message(message_id=message_id, from_=msg.from_header, from_domain=from_domain,
                       subject=msg.subject, tags={}, tls="opportunistic", deliver_until=(send_at or now) + lifetime,
                       recipient_count=len(recipients), size=len(final), key_id=principal.key_id, mode=mode,
                       send_at=send_at)
        request = StoredRequest.from_raw(final, msg.sender.addr)
        if (earlier := self._store_and_queue(meta, recipients, request, now, once=once)) is not None:
            return self._earlier(earlier, once)
        queued = sum(1 for r in recipients if r.state is RecipientState.QUEUED and not is_simulated(r.address, mode))
        if self.reputation is not None:
            self.reputation.count_sent([(from_domain, principal.key_id, queued)])
        return Created({"id": message_id, "recipients": [
            {"address": r.address, "status": r.state.value} for r in recipients]})

    def _batch_item(self, i: int, body: Any, principal: Principal | None, memo: dict,
                    templates: TemplateCache | None, once: CreateKey | None = None) -> Created:
        try:
            req = SendRequest.model_validate(body)
        except ValidationError as exc:
            field, msg = error_field(exc)
            return Created({"index": i, "status": 422,
                            "error": {"code": "validation_error", "message": msg,
                                      "field": f"messages[{i}].{field}" if field else f"messages[{i}]"}})
        try:
            out = self.create_one(req, enqueue=False, principal=principal, paused_memo=memo, templates=templates,
                                  once=once)
        except ApiError as exc:
            # As the single send answers it (routes.py): a InvalidRequestError is a 422.
            status = 422 if isinstance(exc, InvalidRequestError) and exc.field != "cursor" else exc.status
            return Created({"index": i, "status": status,
                            "error": {"code": exc.code, "message": exc.message, "field": exc.field}})
        except Exception:  # noqa: BLE001 - one message's trouble must not sink the batch
            log.exception("batch item failed", extra={"index": i})
            return Created({"index": i, "status": 503,
                            "error": {"code": "temporarily_unavailable",
                                      "message": "the message could not be stored; retry it", "field": None}})
        return Created({"index": i, "status": 202, **out.answer}, out.replayed, out.sent, out.send_at, out.stored)

    def _run_batch(self, messages: list[dict[str, Any]], principal: Principal | None = None,
                   out_of_time: Callable[[], bool] = lambda: False, once: IdempotentRequest | None = None,
                   busy: float | None = None) -> Created:
        memo: dict = {}  # the reputation states read once per domain and key for the batch
        templates = self._template_cache(messages)  # each (template, version) loaded and parsed once (issue 14)

        def one(i: int, body: Any) -> Created:
            if out_of_time():  # not started: never half-done by a timeout (see _out_of_time)
                return Created({"index": i, "status": 503, "error": {
                    "code": "temporarily_unavailable", "field": None,
                    "message": "the batch ran out of time before this message; send it again"}})
            return self._batch_item(i, body, principal, memo, templates,
                                    None if once is None else once.create_key(i, busy))

        with ThreadPoolExecutor(max_workers=min(BATCH_WORKERS, len(messages))) as pool:
            done = list(pool.map(one, range(len(messages)), messages))
        results = [c.answer for c in done]
        jobs = [QueueJob(message_id=c.answer["id"], not_before=c.send_at) for c in done
                if c.answer["status"] == 202 and not c.replayed  # a replayed one's job: queued by _earlier
                and any(x["status"] in ("queued", "scheduled") for x in c.answer["recipients"])]
        try:
            failed = set(self.queue.send_many(jobs))
        except Exception:  # noqa: BLE001
            log.exception("batch enqueue failed")
            failed = {j.message_id for j in jobs}
        # Committed, so accepted (s17f): the sweeper's next run queues their jobs. One UpdateItem
        # each, on the batch's pool; with no time left, the rest are swept after the grace instead.
        unqueued = [(c.answer["id"], *c.stored) for c in done if c.answer.get("id") in failed and c.stored]
        if unqueued:
            log.warning("batch messages not queued: the sweeper's next run queues them",
                        extra={"message_ids": [u[0] for u in unqueued]})

            def mark(u: tuple[str, tuple[Recipient, ...], float]) -> None:
                if not out_of_time():
                    self._not_queued(*u)

            with ThreadPoolExecutor(max_workers=min(BATCH_WORKERS, len(unqueued))) as pool:
                list(pool.map(mark, unqueued))
        if self.reputation is not None:
            self.reputation.count_sent([c.sent for c in done if c.sent is not None])
        accepted = sum(1 for r in results if r["status"] == 202)
        # Idempotent-Replayed (s17f): this request created no message, and its accepted ones
        # (at least one) were all found through their items' Idempotency-Key claims.
        replayed = any(c.replayed for c in done) and all(c.replayed for c in done if c.answer["status"] == 202)
        return Created({"accepted": accepted, "rejected": len(results) - accepted, "results": results}, replayed)

    # ---- scheduled sending and cancel (issue 14, api/scheduled.py) ----------------------------
    def cancel(self, message_id: str, principal: Principal | None = None) -> dict:
        """POST /v1/messages/{id}/cancel: scheduled, queued and deferred recipients -> canceled."""
        return cancel_message(self.store, message_id, principal, self.clock)


def _time_left(context: Any) -> float | None:
    """Seconds the Lambda invocation has left (it is stopped then), for a create's claim
    (CreateKey.busy); None outside Lambda."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return None if remaining is None else remaining() / 1000


def _out_of_time(context: Any) -> Callable[[], bool]:
    """True once the invocation has less than BATCH_RESERVE seconds left. A batch that ran into
    the function's timeout would have stored and queued some messages while its caller got a
    504 and sent them all again; instead, the messages not started by then are answered 503 at
    their index (as a store failure is), and the time left queues what was stored. Outside
    Lambda (no context), never."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return lambda: False
    return lambda: remaining() < BATCH_RESERVE * 1000


class QueryService:
    """The read side, and the suppression list's manual edits. Only key and index lookups."""

    def __init__(self, *, store: Messages, suppressions: Suppressions,
                 clock: Callable[[], float] = time.time, retention_days: int = 30,
                 max_queries: int = LIST_MAX_QUERIES, read_per_query: int = LIST_READ_PER_QUERY) -> None:
        self.store, self.suppressions, self.clock = store, suppressions, clock
        self.retention_days = retention_days
        self.max_queries, self.read_per_query = max_queries, read_per_query

    # ---- one message --------------------------------------------------------------------------
    def message(self, message_id: str) -> dict:
        if not is_message_id(message_id):
            raise NotFoundError(f"no message {message_id!r}", field="id")
        stored = self.store.load(message_id)
        if stored is None:
            raise NotFoundError(f"no message {message_id!r}", field="id")
        m = stored.meta
        bounces: dict[int, list[dict]] = {}
        for b in stored.bounces:
            bounces.setdefault(b.index, []).append(_public(b, _BOUNCE_FIELDS))
        recipients = []
        for r in stored.recipients:
            out = _public(r, ("address", "field", "state", "updated_at", "remote_id", "last", "bounce"))
            if r.next_attempt_at and r.state in (RecipientState.DEFERRED, RecipientState.SCHEDULED):
                out["next_attempt_at"] = iso(r.next_attempt_at)
            if r.waiting is not None and r.state is RecipientState.DEFERRED and r.waiting.until > self.clock():
                # Issue 11: why it waits (its provider suspended, shaping, warm-up) and until when.
                out["waiting"] = {"reason": r.waiting.reason, "provider": r.waiting.provider,
                                  "until": iso(r.waiting.until), "detail": r.waiting.detail}
            out["attempts"] = [a.as_dict() for a in r.attempts]
            out["bounces"] = bounces.get(r.index, [])
            recipients.append(out)
        states = {r["state"] for r in recipients}
        return {"id": message_id, "from": m.from_, "subject": m.subject,
                "created_at": m.created_at, "expires_at": iso(m.deliver_until),
                **({"send_at": iso(m.send_at)} if m.send_at is not None else {}),
                "tags": dict(m.tags or {}), "tls": m.tls,
                "status": _summary(states), "recipients": recipients, "mode": m.mode or LIVE,
                **({"template": m.template, "template_version": m.template_version} if m.template else {})}

    # ---- lists ----------------------------------------------------------------------------------
    def messages(self, *, recipient: str | None, status: str | None, since: datetime | None,
                 limit: int, cursor: str | None) -> dict:
        since_at = since_iso(since)
        items: list[Recipient]
        if recipient:
            address = _address_key(recipient)
            # (the digest of the partition's value, as cursors issued before this code had it)
            q = query_digest("messages", self.store.listing("messages_to", address).partition[1],
                             status, since_at)
            items, nxt = self._walk(
                ["r"], cursor, q, lambda _: self.store.listing("messages_to", address), since_at, limit,
                lambda _, start, n: self.store.messages_to(address, since=since_at, state=status,
                                                           limit=n, start_key=start), bool(status))
        else:
            q = query_digest("messages", None, status, since_at)
            items, nxt = self._walk(
                self._days(since), cursor, q, lambda day: self.store.listing("messages_on", day),
                since_at, limit,
                lambda day, start, n: self.store.messages_on(day, since=since_at, state=status, limit=n,
                                                             start_key=start), bool(status))
        out = [{"id": r.message_id, "recipient": r.address, "status": r.state.value,
                "created_at": r.created_at, "updated_at": r.updated_at, "from": r.from_,
                "subject": r.subject, "mode": r.mode or LIVE} for r in items]
        return {"items": out, "next_cursor": encode_cursor(nxt, q)}

    def bounces(self, *, recipient: str | None, kind: str | None, since: datetime | None,
                limit: int, cursor: str | None) -> dict:
        since_at = since_iso(since)
        # kind: hard / soft / undetermined narrow the 'bounce' type; complaint and delay are types.
        if kind in ("complaint", "delay"):
            types, btype, bkind = [kind], kind, None
        elif kind:
            types, btype, bkind = ["bounce"], "bounce", kind
        else:
            types, btype, bkind = list(BOUNCE_TYPES), None, None
        items: list[Bounce]
        if recipient:
            address = _address_key(recipient)
            q = query_digest("bounces", self.store.listing("bounces_to", address).partition[1],
                             kind, since_at)
            items, nxt = self._walk(
                ["r"], cursor, q, lambda _: self.store.listing("bounces_to", address), since_at, limit,
                lambda _, start, n: self.store.bounces_to(address, since=since_at, type=btype, kind=bkind,
                                                          limit=n, start_key=start), bool(kind))
        else:
            q = query_digest("bounces", None, kind, since_at)
            items, nxt = self._walk(
                types, cursor, q, lambda t: self.store.listing("bounces_of_type", t), since_at, limit,
                lambda t, start, n: self.store.bounces_of_type(t, since=since_at, kind=bkind, limit=n,
                                                               start_key=start), bool(bkind))
        out = []
        for b in items:
            view = _public(b, _BOUNCE_FIELDS)
            view["message_id"] = b.message_id
            out.append(view)
        return {"items": out, "next_cursor": encode_cursor(nxt, q)}

    def suppression_list(self, *, source: str | None, since: datetime | None, limit: int,
                         cursor: str | None) -> dict:
        sources = [source] if source else list(SUPPRESSION_SOURCES)
        since_at = since_iso(since)
        q = query_digest("suppressions", source, since_at)
        items, nxt = self._walk(
            sources, cursor, q, self.suppressions.listing, since_at, limit,
            lambda part, start, n: self.suppressions.from_source(part, since=since_at, limit=n,
                                                                 start_key=start))
        return {"items": [_public(i, _SUPPRESSION_FIELDS) for i in items],
                "next_cursor": encode_cursor(nxt, q)}

    def _walk(self, parts: list[str], cursor: str | None, query: str,
              listing: Callable[[str], Listing], since: str | None, limit: int,
              fetch: Callable[[str, dict[str, str] | None, int], Page[R]],
              filtered: bool = False) -> tuple[list[R], Cursor | None]:
        """Fill a page from consecutive partitions; the cursor says where to go on.

        The cursor is checked against the store's `listing` of its partition (api/paging.py):
        its key must have exactly that listing's attributes, its partition, and a sort key not
        below `since`. Bounded by construction: at most `max_queries` DynamoDB queries per
        request, each reading at most `read_per_query` items (DynamoDB applies Limit before a
        filter), so a rare filter value over a large table answers a partial page, possibly
        empty, with a cursor to continue, never a timeout. Unfiltered reads ask for exactly
        what is missing. Filtered reads ask for more and, if they overshoot, resume after the
        last item kept: the store gives each item's own start key.
        """
        cur = decode_cursor(cursor, parts=parts, key_attrs=lambda part: listing(part).key_attrs,
                            query=query)
        if cur is not None and cur.key is not None:
            where = listing(cur.part)
            check_key(cur, *where.partition, sort=(where.sort, since))
        n = parts.index(cur.part) if cur else 0
        key = cur.key if cur else None
        from_client = key is not None
        items: list[R] = []
        keys: list[dict[str, str]] = []
        calls = 0
        while n < len(parts):
            part = parts[n]
            if calls >= self.max_queries:
                return items, Cursor(part, key)  # the budget is spent: a partial page
            want = limit - len(items)
            try:
                page = fetch(part, key, max(want, self.read_per_query) if filtered else want)
            except Exception as exc:
                if from_client and _invalid_start_key(exc):
                    # The last line of defence: DynamoDB refused the client's start key.
                    raise InvalidRequestError("invalid cursor: pass back next_cursor as given",
                                           field="cursor") from None
                raise
            calls += 1
            from_client = False
            items.extend(page.items)
            keys.extend(page.keys)
            key = page.last_key
            if len(items) >= limit:
                if len(items) > limit:
                    items = items[:limit]
                    key = keys[limit - 1]
                if key is not None:
                    return items, Cursor(part, key)
                return items, (Cursor(parts[n + 1], None) if n + 1 < len(parts) else None)
            if key is None:
                n += 1
        return items, None

    def _days(self, since: datetime | None) -> list[str]:
        """The day partitions of a listing, newest first, back to `since` or the retention."""
        now = self.clock()
        oldest = now - self.retention_days * 86400
        if since is not None:
            oldest = max(oldest, since.timestamp() if since.tzinfo else
                         since.replace(tzinfo=UTC).timestamp())
        first = day_of(min(oldest, now))
        days, t = [], now
        while (day := day_of(t)) >= first:
            days.append(day)
            t -= 86400
        return days

    # ---- suppressions ---------------------------------------------------------------------------
    def suppression(self, address: str) -> dict:
        key = _address_key(address)
        item = self.suppressions.get(key)
        if item is None:
            raise NotFoundError(f"{key} is not suppressed", field="address")
        out = _public(item, _SUPPRESSION_FIELDS)
        out["history"] = [_public(e, ("action", "at", "by", "reason"))
                          for e in self.store.suppression_history(key)]
        return out

    def suppress(self, address: str, reason: str, principal: Principal) -> tuple[dict, bool]:
        key = _address_key(address)
        now = self.clock()
        by = f"{principal.name} ({principal.key_id})"
        new = self.suppressions.add(Suppression.new(key, now, source="manual", reason=reason,
                                                    kind="manual", added_by=by))
        if new:
            self.store.add_suppression_event(SuppressionEvent(key, "added", iso(now), by=by, reason=reason))
        item = self.suppressions.get(key)
        return (_public(item, _SUPPRESSION_FIELDS) if item else {"address": key}), new

    def unsuppress(self, address: str, principal: Principal) -> dict:
        key = _address_key(address)
        now = self.clock()
        previous = self.suppressions.get(key)
        if previous is None or not self.suppressions.remove(key):
            raise NotFoundError(f"{key} is not suppressed", field="address")
        by = f"{principal.name} ({principal.key_id})"
        # Who and when: the suppression item is gone, so the audit event keeps what it was.
        self.store.add_suppression_event(SuppressionEvent(
            key, "removed", iso(now), by=by, reason=previous.reason,
            previous=_public(previous, _SUPPRESSION_FIELDS)))
        return {"address": key, "removed_at": iso(now), "removed_by": by}


_BOUNCE_FIELDS = ("address", "type", "action", "status", "kind", "reason", "diagnostic",
                  "reporting_mta", "remote_mta", "received_at", "s3_key", "verified")
_SUPPRESSION_FIELDS = ("address", "source", "reason", "kind", "message_id", "status", "diagnostic",
                       "created_at", "added_by")


def _check_builds(req: SendRequest) -> None:
    """Refuse now (422) what the sender could not build later: it would retry for the message's
    whole lifetime and end `expired`. The same code as the sender's build (mime.py)."""
    try:
        check_message(req)
    except MessageBuildError as exc:
        raise InvalidRequestError(exc.message, field=exc.field) from None
    except Exception as exc:  # noqa: BLE001 - deterministic for this request: retrying cannot help
        log.warning("a request does not build", exc_info=exc)
        raise InvalidRequestError(f"the message cannot be built: {exc}", field=None) from None


def _envelope_addresses(rcpts: list[str]) -> list[str]:
    """RCPT TO's addresses, canonical and once each, at most MAX_RECIPIENTS (the API's limit)."""
    out: list[str] = []
    seen: set[str] = set()
    for rcpt in rcpts:
        try:
            a = parse_address(rcpt, allow_name=False)
        except AddressError as exc:
            raise InvalidRequestError(f"invalid recipient {rcpt!r}: {exc}", field="recipients") from None
        if a.addr.lower() not in seen:
            seen.add(a.addr.lower())
            out.append(a.addr)
    if not out or len(out) > MAX_RECIPIENTS:
        raise InvalidRequestError(f"1 to {MAX_RECIPIENTS} recipients, got {len(out)}", field="recipients")
    return out


def _address_key(address: str) -> str:
    try:
        return normalise(address)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid address: {exc}", field="address") from None


def _invalid_start_key(exc: Exception) -> bool:
    """DynamoDB's ValidationException (a start key it will not use), from botocore."""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "ValidationException"


def _public(record: Record, fields: tuple[str, ...]) -> dict:
    """The named fields of a record's plain view (None left out)."""
    view = record.as_dict()
    return {k: view[k] for k in fields if k in view}


def _summary(states: set[str]) -> str:
    """One word for the message: 'sending' while any recipient is queued or deferred,
    'scheduled' while any waits for its send_at (and none is sending), else the final mix."""
    if states & {RecipientState.QUEUED.value, RecipientState.DEFERRED.value}:
        return "sending"
    if RecipientState.SCHEDULED.value in states:
        return "scheduled"
    if len(states) == 1:
        return next(iter(states))
    return "partial"
