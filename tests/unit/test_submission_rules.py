"""SMTP submission's rules without sockets (issue 13): the raw message's checks and finish
(raw_message.py), SendService.send_raw with in-memory fakes, the sender's prepare step on a
raw request (signed with a real key, verified by dkimpy offline), the one error -> reply table,
enhanced codes, and the per-address guard with a clock moved by hand.

The same paths run from outside, over TLS on the local stack, in
tests/integration/test_submission.py and test_submission_clients.py."""

from __future__ import annotations

import asyncio
from typing import Any

import dkim
import pytest

from outpost.api.auth import Principal
from outpost.api.service import SendService
from outpost.errors import (
    ConflictError,
    ForbiddenError,
    InProgressError,
    InvalidRequestError,
    PayloadTooLargeError,
    SendingPausedError,
    StoreBusyError,
    ThrottledError,
    UnauthorizedError,
)
from outpost.models import MAX_MESSAGE_BYTES, RecipientState
from outpost.raw_message import MAX_HEADER_BYTES, inspect_raw
from outpost.records import Message, Recipient, Suppression
from outpost.signing import Signer, dns_name, dns_txt_value, generate_key
from outpost.stored_request import StoredRequest
from outpost.submission import replies
from outpost.submission.guard import ClientGuard
from outpost.submission.server import _AcceptDeadline
from outpost.submission.settings import SubmissionSettings
from tests.fakes.idempotency import MemoryPersistence
from tests.fakes.store import FakeClock, FakeDomains, FakeJobs, FakeMessages, FakeSuppressions

SENDER = "shop.test"
KEY = Principal(key_id="k1", name="unit", scopes=frozenset({"send"}), domains=None)
MSG = (b"From: Shop <news@shop.test>\r\nTo: a@ok.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
       b"Bcc: secret@ok.test,\r\n  other@ok.test\r\nX-Keep: yes\r\n\r\nbody line\r\n\xc3\xa9\r\n")


# ---- raw_message.py ------------------------------------------------------------------------------

def test_finish_strips_bcc_with_its_folded_lines_and_adds_message_id_and_date() -> None:
    raw = inspect_raw(MSG)
    assert raw.sender.addr == "news@shop.test" and raw.subject == "Grüße" and raw.message_id is None
    out = raw.finish("01abc", 1_700_000_000.0)
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"body line\r\n\xc3\xa9\r\n"  # byte for byte, 8-bit included
    assert b"Bcc" not in head and b"secret" not in out and b"other@ok.test" not in out
    assert head.startswith(MSG[:MSG.index(b"Bcc:")])  # the client's fields, as written, in order
    assert b"X-Keep: yes\r\nMessage-ID: <01abc@shop.test>\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT" in head


def test_finish_keeps_the_clients_message_id_and_date() -> None:
    msg = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@app>\r\n" + MSG
    raw = inspect_raw(msg)
    assert raw.message_id == "<x@app>"
    out = raw.finish("01abc", 0.0)
    assert out.count(b"Message-ID:") == 1 and out.count(b"Date:") == 1 and b"<x@app>" in out


@pytest.mark.parametrize(("message", "error", "why"), [
    (b"To: a@ok.test\r\n\r\nx\r\n", ForbiddenError, "no From"),
    (b"From: a@shop.test\r\nFrom: b@shop.test\r\n\r\nx\r\n", ForbiddenError, "two From fields"),
    (b"From: a@shop.test, b@shop.test\r\n\r\nx\r\n", ForbiddenError, "two mailboxes"),
    (b"From: not an address\r\n\r\nx\r\n", ForbiddenError, "no address"),
    (b"From: a@shop.test\r\nSubject: a\r\nSubject: b\r\n\r\nx\r\n", InvalidRequestError, "two Subjects"),
    (b"From: a@shop.test\r\n\r\n" + b"x" * 999 + b"\r\n", InvalidRequestError, "a 999-octet body line"),
    (b"From: a@shop.test\r\nX: " + b"y" * 996 + b"\r\n\r\n", InvalidRequestError, "a 999-octet header line"),
    (b"From: a@shop.test\r\nnot a header\r\n\r\nx\r\n", InvalidRequestError, "a line that is no field"),
    (b" folded\r\nFrom: a@shop.test\r\n\r\nx\r\n", InvalidRequestError, "starts with a continuation"),
    (b"From: a@shop.test\r\n" + b"X: y\r\n" * (MAX_HEADER_BYTES // 6 + 1) + b"\r\n", InvalidRequestError,
     "a header section over MAX_HEADER_BYTES"),
])
def test_inspect_refuses(message: bytes, error: type[Exception], why: str) -> None:
    with pytest.raises(error):
        inspect_raw(message)


def test_a_998_octet_line_is_fine_and_over_the_size_limit_is_too_large() -> None:
    inspect_raw(b"From: a@shop.test\r\n\r\n" + b"x" * 998 + b"\r\n")
    with pytest.raises(PayloadTooLargeError):
        inspect_raw(b"From: a@shop.test\r\n\r\n" + b"x" * (MAX_MESSAGE_BYTES + 1))


def test_utf8_headers_are_noticed() -> None:
    assert not inspect_raw(MSG).utf8_headers
    assert inspect_raw("From: José <jose@shop.test>\r\n\r\nx\r\n".encode()).utf8_headers


# ---- SendService.send_raw -------------------------------------------------------------------------

class _Paused:
    def check_send(self, domain: str, key_id: str | None, memo: Any) -> None:
        raise SendingPausedError("the domain shop.test is paused", field="from")

    def count_sent(self, sent: Any) -> None:
        raise AssertionError("nothing was sent")


class World:
    def __init__(self, **service: Any) -> None:
        self.clock = FakeClock()
        self.store, self.suppressions, self.jobs = FakeMessages(), FakeSuppressions(), FakeJobs()
        self.api = SendService(store=self.store, suppressions=self.suppressions, queue=self.jobs,
                               domains=FakeDomains(SENDER), clock=self.clock,
                               idempotency=MemoryPersistence(), **service)

    def send(self, data: bytes = MSG, rcpts: tuple[str, ...] = ("a@ok.test",), key: Principal = KEY) -> str:
        out, _ = self.api.send_raw(data, rcpts=list(rcpts), principal=key, context=_AcceptDeadline())
        return str(out["id"])


def test_send_raw_stores_the_finished_bytes_for_the_envelope_recipients_and_queues_a_job() -> None:
    w = World()
    w.suppressions.add(Suppression.new("gone@ok.test", w.clock(), source="manual", reason="x", kind="manual"))
    mid = w.send(rcpts=("a@ok.test", "B@OK.test", "b@ok.test", "gone@ok.test"))
    stored = w.store.load(mid)
    assert stored is not None and stored.meta.from_ == "Shop <news@shop.test>" and stored.meta.subject == "Grüße"
    assert [(r.address, r.state) for r in stored.recipients] == [
        ("a@ok.test", RecipientState.QUEUED), ("B@ok.test", RecipientState.QUEUED),
        ("gone@ok.test", RecipientState.SUPPRESSED)]
    req = w.store.load_request(stored.meta)
    assert req.kind == "raw" and req.from_ == "news@shop.test"
    assert req.raw_bytes() == inspect_raw(MSG).finish(mid, w.clock())
    assert stored.meta.size == len(req.raw_bytes())
    assert [j.message_id for j, _ in w.jobs.sent] == [mid]


def test_the_same_message_id_and_recipients_within_the_ttl_is_the_same_message() -> None:
    w = World()
    data = b"Message-ID: <m1@app>\r\n" + MSG
    first = w.send(data)
    assert w.send(data) == first and len(w.jobs.sent) == 1  # a DATA retried: sent once
    assert w.send(data, rcpts=("z@ok.test",)) != first  # a split recipient list: another message
    with pytest.raises(ConflictError):
        w.send(data.replace(b"body line", b"other body"))
    assert w.send(MSG) != w.send(MSG)  # no Message-ID: no idempotency


@pytest.mark.parametrize(("case", "error"), [
    ("unverified", ForbiddenError), ("bound to another domain", ForbiddenError),
    ("paused", SendingPausedError), ("no recipient", InvalidRequestError), ("51 recipients", InvalidRequestError),
])
def test_send_raw_refuses(case: str, error: type[Exception]) -> None:
    w = World(reputation=_Paused()) if case == "paused" else World()
    data, rcpts, key = MSG, ("a@ok.test",), KEY
    if case == "unverified":
        data = MSG.replace(b"news@shop.test", b"news@other.test")
    elif case == "bound to another domain":
        key = Principal("k2", "bound", frozenset({"send"}), frozenset({"other.test"}))
    elif case == "no recipient":
        rcpts = ()
    elif case == "51 recipients":
        rcpts = tuple(f"r{i}@ok.test" for i in range(51))
    with pytest.raises(error):
        w.send(data, rcpts, key)
    assert w.store.messages == {} and w.jobs.sent == []


def test_a_raw_message_whose_job_cannot_be_queued_is_accepted_and_marked_overdue() -> None:
    """s17f: 250 (not 451) once committed; the sweeper's next run queues its job."""
    from outpost.sweeper import SWEEP_GRACE

    w = World()
    w.jobs.fail = True
    mid = w.send()
    assert [r.due_at for r in w.store.messages[mid].recipients.values()] == [w.clock() - SWEEP_GRACE]


# ---- Outpost-Send-At: a scheduled submission (s17d) ------------------------------------------------

def _at(seconds: float) -> bytes:
    from outpost.clock import iso

    return iso(FakeClock()() + seconds).encode()


def test_outpost_send_at_schedules_the_message_and_is_removed_from_it() -> None:
    from email.utils import formatdate

    w = World()
    at = w.clock() + 7200
    mid = w.send(b"Outpost-Send-At: " + _at(7200) + b"\r\n" + MSG)
    stored = w.store.load(mid)
    assert stored is not None and stored.meta.send_at == at and stored.meta.deliver_until > at
    assert [(r.state, r.next_attempt_at) for r in stored.recipients] == [(RecipientState.SCHEDULED, at)]
    sent = w.store.load_request(stored.meta).raw_bytes()
    assert b"Outpost-Send-At" not in sent and b"outpost-send-at" not in sent.lower()
    assert f"Date: {formatdate(at, usegmt=True)}".encode() in sent  # a Date it lacks: the send time
    [(job, delay)] = w.jobs.sent
    assert job.not_before == at and delay == 7200


def test_outpost_send_at_in_the_past_sends_at_once_and_is_removed() -> None:
    w = World()
    mid = w.send(b"Outpost-Send-At: " + _at(-60) + b"\r\n" + MSG)
    stored = w.store.load(mid)
    assert stored is not None and stored.meta.send_at is None
    assert [r.state for r in stored.recipients] == [RecipientState.QUEUED]
    assert b"Outpost-Send-At" not in w.store.load_request(stored.meta).raw_bytes()


@pytest.mark.parametrize(("value", "reason"), [
    (b"tomorrow", "must be an RFC 3339 date-time with an offset or Z"),
    (b"2026-12-01T09:00:00", "must be an RFC 3339 date-time with an offset or Z"),  # no offset
    (b"2026-02-29T09:00:00Z", "is not a valid date-time"),
    (None, "is more than 30 days ahead"),
    (b"twice", "the field appears more than once"),
])
def test_a_bad_outpost_send_at_is_550_naming_the_field_with_the_apis_reason(value: bytes | None, reason: str) -> None:
    w = World()
    if value == b"twice":
        head = b"Outpost-Send-At: " + _at(60) + b"\r\nOutpost-Send-At: " + _at(120) + b"\r\n"
    else:
        head = b"Outpost-Send-At: " + (value if value is not None else _at(31 * 86400)) + b"\r\n"
    with pytest.raises(InvalidRequestError) as err:
        w.send(head + MSG)
    assert err.value.field == "Outpost-Send-At" and reason in err.value.message, err.value.message
    assert "send_at" not in err.value.message
    reply = replies.reply_for(err.value)
    assert reply.startswith("550 5.6.0 Outpost-Send-At") and reason in reply, reply
    assert w.store.messages == {} and w.jobs.sent == []


def test_outpost_send_at_past_the_retention_is_refused_as_the_apis_send_at() -> None:
    w = World(retention_days=10)
    with pytest.raises(InvalidRequestError, match="RetentionDays") as err:
        w.send(b"Outpost-Send-At: " + _at(9 * 86400) + b"\r\n" + MSG)
    assert err.value.field == "Outpost-Send-At"


# ---- the sender's prepare step --------------------------------------------------------------------

def test_prepare_signs_and_sends_a_raw_request_as_stored() -> None:
    from outpost.delivery.prepare import prepare

    key = generate_key(SENDER, "s1")
    data = inspect_raw("From: José <jose@shop.test>\r\n\r\nhi\r\n".encode()).finish("01x", 0.0)
    req = StoredRequest.from_raw(data, "jose@shop.test")
    meta = Message(message_id="01x", from_="x", from_domain=SENDER, subject="", deliver_until=1e10,
                   recipient_count=1)
    active = [Recipient("01x", 0, "a@ok.test", RecipientState.QUEUED)]
    prepared = asyncio.run(prepare("01x", meta, active, load_request=lambda m: StoredRequest.from_json(req.to_json()),
                                   signer_for=lambda d: Signer([key]) if d == SENDER else None, fetch_upload=None))
    signature, message = prepared.data
    assert message == data and prepared.sender_domain == SENDER
    assert prepared.rcpts[0].utf8  # UTF-8 in the header section: SMTPUTF8 for every recipient

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return dns_txt_value(key).encode() if name.decode().rstrip(".") == dns_name(key) else None

    assert dkim.DKIM(signature + message).verify(dnsfunc=dnsfunc)


# ---- replies.py --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "reply"), [
    (SendingPausedError("paused", field="from"), "550 5.7.1 "),
    (ForbiddenError("not verified", field="from"), "550 5.7.1 not verified"),
    (UnauthorizedError("revoked", field="Authorization"), "535 5.7.8 "),
    (ThrottledError("slow down", 3), "451 4.7.1 "),
    (PayloadTooLargeError("big"), "552 5.3.4 "),
    (InProgressError("running", field=None), "451 4.3.0 "),
    (ConflictError("other body", field=None), "554 5.6.0 "),
    (InvalidRequestError("a line is\r\n too long", field="message"), "550 5.6.0 a line is too long"),
    (StoreBusyError("busy"), "451 4.3.0 "),
    (RuntimeError("anything"), "451 4.3.0 "),
])
def test_each_error_has_its_reply(error: Exception, reply: str) -> None:
    assert replies.reply_for(error).startswith(reply)


@pytest.mark.parametrize(("stock", "enhanced"), [
    ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
    ("552 Error: Too much mail data", "552 5.3.4 Message too big for system"),
    ("250 OK", "250 2.0.0 OK"),
    ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
    ("530 5.7.0 Authentication required", "530 5.7.0 Authentication required"),
    ("421 4.7.0 too many", "421 4.7.0 too many"),
    ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
])
def test_every_reply_carries_an_enhanced_code(stock: str, enhanced: str) -> None:
    assert replies.enhance(stock) == enhanced


# ---- guard.py -------------------------------------------------------------------------------------

def test_five_failures_in_the_window_lock_the_address_for_the_lockout() -> None:
    clock = FakeClock()
    g = ClientGuard(SubmissionSettings(auth_failures=5, auth_window=300, lockout=900), clock=clock)
    for _ in range(4):
        assert not g.failed("10.0.0.1")
    clock.advance(301)  # the first four are out of the window
    assert not any(g.failed("10.0.0.1") for _ in range(4))
    assert g.failed("10.0.0.1") and g.locked("10.0.0.1") and not g.locked("10.0.0.2")
    clock.advance(899)
    assert g.locked("10.0.0.1")
    clock.advance(2)
    assert not g.locked("10.0.0.1")


def test_connections_are_bounded_per_address_and_in_all() -> None:
    g = ClientGuard(SubmissionSettings(max_connections_per_ip=2, max_connections=3))
    assert g.connect("a") and g.connect("a") and not g.connect("a")
    assert g.connect("b") and not g.connect("c")  # 3 in all
    g.disconnect("a")
    assert g.connect("c")


def test_the_same_message_while_the_first_is_still_being_accepted_is_451_not_a_second_send() -> None:
    w = World()
    data = b"Message-ID: <m2@app>\r\n" + MSG
    create = w.store.create
    inner: list[BaseException] = []

    def create_while_retried(*args: Any) -> None:
        # The client's retry arrives while the first DATA is still being stored.
        try:
            w.send(data)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            inner.append(exc)
        create(*args)

    w.store.create = create_while_retried  # type: ignore[method-assign]
    first = w.send(data)
    assert len(inner) == 1 and isinstance(inner[0], InProgressError)
    assert replies.reply_for(inner[0]).startswith("451 4.3.0 ")
    w.store.create = create  # type: ignore[method-assign]
    assert w.send(data) == first and len(w.jobs.sent) == 1
