"""SendService and BounceService built with in-memory fakes of the store (tests/fakes) and a
clock moved by hand: their rules, in milliseconds, with no socket and no local stack.

The same rules run against the real local stack in tests/integration (test_api_*,
test_bounce_processor); these pin them down where a failure names the rule at once.
"""

from __future__ import annotations

import pytest

from outpost.api.auth import Principal
from outpost.api.service import QueryService, SendService
from outpost.bounces.service import BounceService
from outpost.bounces.verp import make_return_path
from outpost.errors import ConflictError
from outpost.models import RecipientState, SendRequest
from outpost.records import Suppression
from outpost.stored_request import StoredRequest
from tests.fakes.idempotency import MemoryPersistence
from tests.fakes.store import (
    FakeClock,
    FakeDomains,
    FakeJobs,
    FakeMessages,
    FakeSuppressions,
)

SENDER = "shop.test"
BOUNCE_DOMAIN = "bounces.shop.test"
VERP_KEY = b"unit-verp-key"
KEY = Principal(key_id="k1", name="unit", scopes=frozenset({"send", "read", "admin"}), domains=None)


class World:
    def __init__(self, *, idempotent: bool = False) -> None:
        self.clock = FakeClock()
        self.store, self.suppressions, self.jobs = FakeMessages(), FakeSuppressions(), FakeJobs()
        self.persistence = MemoryPersistence() if idempotent else None
        self.api = SendService(store=self.store, suppressions=self.suppressions, queue=self.jobs,
                               domains=FakeDomains(SENDER), clock=self.clock,
                               idempotency=self.persistence)
        self.queries = QueryService(store=self.store, suppressions=self.suppressions, clock=self.clock)
        self.counts: dict[str, int] = {}
        self.bounces = BounceService(store=self.store, suppressions=self.suppressions,
                                     verp_key=VERP_KEY, bounce_domain=BOUNCE_DOMAIN, clock=self.clock,
                                     count=lambda name, n: self.counts.__setitem__(
                                         name, self.counts.get(name, 0) + n))

    def request(self, *to: str, **extra: object) -> SendRequest:
        return SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": list(to),
                                           "subject": "Hello", "text": "Hi.", **extra})


def _dsn(rcpt: str, status: str, diagnostic: str, *, action: str = "failed") -> bytes:
    """A minimal RFC 3464 report (multipart/report; report-type=delivery-status)."""
    return (
        "From: MAILER-DAEMON@mx.test\r\nTo: bounce@x\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.test\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n--b--\r\n").encode()


# ---- SendService --------------------------------------------------------------------------------

def test_a_message_whose_job_cannot_be_queued_is_accepted_and_marked_overdue() -> None:
    """s17f: committed is accepted (never taken back); due for the sweeper's next run."""
    from outpost.sweeper import SWEEP_GRACE

    w = World()
    w.jobs.fail = True
    out = w.api.send_one(w.request("alice@ok.test"), principal=KEY)
    assert out["recipients"] == [{"address": "alice@ok.test", "status": "queued"}]
    assert [r.due_at for r in w.store.messages[out["id"]].recipients.values()] == [w.clock() - SWEEP_GRACE]
    assert w.jobs.sent == []


def test_a_message_stored_and_queued_is_one_job_and_the_api_s_request_as_a_stored_request() -> None:
    w = World()
    out = w.api.send_one(w.request("alice@ok.test", "bob@ok.test", headers={"X-Campaign": "7"}),
                         principal=KEY)
    [(job, delay)] = w.jobs.sent
    assert job.message_id == out["id"] and delay == 0
    stored = w.store.load(out["id"])
    assert stored is not None
    assert [(r.address, r.state) for r in stored.recipients] == [
        ("alice@ok.test", RecipientState.QUEUED), ("bob@ok.test", RecipientState.QUEUED)]
    req = w.store.load_request(stored.meta)
    assert isinstance(req, StoredRequest) and req.v == 1 and req.headers == {"X-Campaign": "7"}
    assert stored.meta.deliver_until > w.clock()


def test_suppressed_recipients_are_recorded_not_queued() -> None:
    w = World()
    w.suppressions.add(Suppression.new("Bob@OK.test", w.clock(), source="bounce", reason="userunknown",
                                       kind="hard"))
    out = w.api.send_one(w.request("alice@ok.test", "bob@ok.test"), principal=KEY)
    assert out["recipients"] == [{"address": "alice@ok.test", "status": "queued"},
                                 {"address": "bob@ok.test", "status": "suppressed"}]
    assert len(w.jobs.sent) == 1
    only = w.api.send_one(w.request("bob@ok.test"), principal=KEY)
    assert only["recipients"] == [{"address": "bob@ok.test", "status": "suppressed"}]
    assert len(w.jobs.sent) == 1  # nothing to deliver: no job


@pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time left")
def test_a_replayed_request_runs_once_and_a_different_body_is_a_conflict() -> None:
    w = World(idempotent=True)
    req = w.request("alice@ok.test")
    first, replayed = w.api.send(req, principal=KEY, idempotency_key="order-1")
    again, replayed_again = w.api.send(req, principal=KEY, idempotency_key="order-1")
    assert (replayed, replayed_again) == (False, True)
    assert again == first and len(w.store.messages) == 1 and len(w.jobs.sent) == 1
    with pytest.raises(ConflictError):
        w.api.send(w.request("mallory@ok.test"), principal=KEY, idempotency_key="order-1")
    other, _ = w.api.send(req, principal=KEY, idempotency_key="order-2")
    assert other["id"] != first["id"] and len(w.store.messages) == 2


# ---- BounceService ------------------------------------------------------------------------------

def _sent(w: World, *to: str) -> str:
    return str(w.api.send_one(w.request(*to), principal=KEY)["id"])


def test_a_hard_bounce_matched_by_its_token_bounces_and_suppresses_that_recipient() -> None:
    w = World()
    mid = _sent(w, "alice@ok.test", "bob@ok.test")
    token = make_return_path(VERP_KEY, mid, 1, BOUNCE_DOMAIN)
    out = w.bounces.process_raw("inbound/1", _dsn("bob@ok.test", "5.1.1", "550 5.1.1 user unknown"), [token])
    assert out["result"] == "matched" and out["recipients"][0]["new"] is True
    stored = w.store.load(mid)
    assert stored is not None
    assert [r.state for r in stored.recipients] == [RecipientState.QUEUED, RecipientState.BOUNCED]
    [b] = stored.bounces
    assert (b.index, b.address, b.type, b.kind, b.status, b.verified) == (
        1, "bob@ok.test", "bounce", "hard", "5.1.1", True)
    s = w.suppressions.get("bob@ok.test")
    assert s is not None and (s.source, s.kind, s.message_id) == ("bounce", "hard", mid)
    assert w.suppressions.get("alice@ok.test") is None
    assert w.counts == {"Bounce": 1}


def test_the_same_report_twice_is_one_bounce_record() -> None:
    w = World()
    mid = _sent(w, "bob@ok.test")
    token = make_return_path(VERP_KEY, mid, 0, BOUNCE_DOMAIN)
    raw = _dsn("bob@ok.test", "5.1.1", "550 5.1.1 user unknown")
    first = w.bounces.process_raw("inbound/1", raw, [token])
    again = w.bounces.process_raw("inbound/1", raw, [token])  # S3/SES redelivery
    assert (first["recipients"][0]["new"], again["recipients"][0]["new"]) == (True, False)
    stored = w.store.load(mid)
    assert stored is not None and len(stored.bounces) == 1
    assert w.counts == {"Bounce": 1}


def test_a_soft_bounce_bounces_the_recipient_but_suppresses_nobody() -> None:
    w = World()
    mid = _sent(w, "bob@ok.test")
    token = make_return_path(VERP_KEY, mid, 0, BOUNCE_DOMAIN)
    w.bounces.process_raw("inbound/2", _dsn("bob@ok.test", "5.2.2", "552 5.2.2 mailbox full"), [token])
    stored = w.store.load(mid)
    assert stored is not None and stored.recipients[0].state is RecipientState.BOUNCED
    assert stored.bounces[0].kind == "soft"
    assert w.suppressions.get("bob@ok.test") is None


def test_a_forged_token_or_no_match_acts_on_nobody_and_is_kept() -> None:
    w = World()
    mid = _sent(w, "bob@ok.test")
    forged = make_return_path(b"another key", mid, 0, BOUNCE_DOMAIN)
    raw = _dsn("bob@ok.test", "5.1.1", "550 5.1.1 user unknown")
    assert w.bounces.process_raw("inbound/3", raw, [forged])["result"] == "unverified"
    assert w.bounces.process_raw("inbound/4", raw, [])["result"] == "unmatched"
    stored = w.store.load(mid)
    assert stored is not None and stored.recipients[0].state is RecipientState.QUEUED
    assert w.suppressions.get("bob@ok.test") is None
    assert [o.s3_key for o in w.store.orphans("unverified")] == ["inbound/3"]
    assert [o.s3_key for o in w.store.orphans("unmatched")] == ["inbound/4"]


def test_inbound_mail_is_read_through_the_store_and_a_missing_object_is_counted() -> None:
    w = World()
    mid = _sent(w, "bob@ok.test")
    token = make_return_path(VERP_KEY, mid, 0, BOUNCE_DOMAIN)
    w.store.inbound["inbound/ses/1"] = _dsn("bob@ok.test", "5.1.1", "550 5.1.1 user unknown")
    assert w.bounces.process("inbound/ses/1", [token])["result"] == "matched"
    assert w.bounces.process("inbound/ses/gone", [token])["result"] == "missing"
    assert w.counts["InboundMissing"] == 1


# ---- the read side: a suppression's manual edits, with who and when --------------------------------

def test_a_manual_suppression_and_its_removal_are_audited() -> None:
    w = World()
    item, new = w.queries.suppress("Someone@OK.test", "asked us", KEY)
    assert new and item["source"] == "manual" and item["added_by"] == "unit (k1)"
    w.clock.advance(60)
    gone = w.queries.unsuppress("someone@ok.test", KEY)
    assert w.suppressions.get("someone@ok.test") is None
    history = w.store.suppression_history("someone@ok.test")
    assert [(e.action, e.at) for e in history] == [("removed", gone["removed_at"]),
                                                   ("added", item["created_at"])]
    assert history[0].previous is not None and history[0].previous["reason"] == "asked us"
