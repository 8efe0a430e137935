"""The sandbox's rules (issue 14 item 4) with in-memory fakes: which addresses are simulated and
how, the reports the simulator writes as the real parser reads them, the sender answering
simulated recipients with no DNS, socket or shaping slot, the bounce service recording the
reports, test-mode keys, and the reputation breaker left unfed. End to end on a real local
stack: tests/e2e/test_sandbox_pipeline.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from outpost.api.auth import KeyRing, Principal
from outpost.api.service import QueryService, SendService
from outpost.bounces.dsn import parse_bounce
from outpost.bounces.service import BounceService
from outpost.bounces.verp import make_return_path
from outpost.config import Settings
from outpost.delivery.service import DeliveryService
from outpost.delivery.simulator_mail import build_arf, build_autoreply, build_dsn
from outpost.delivery.transport import Timeouts
from outpost.models import QueueJob, RecipientState, SendRequest
from outpost.mx import MxHost
from outpost.reputation import Reputation, domain_scope, key_scope
from outpost.sandbox import (
    SIMULATOR_DOMAIN,
    is_simulated,
    refused_at_acceptance,
    simulated_outcome,
    simulator_outcome,
)
from tests.fakes.store import (
    FakeApiKeys,
    FakeClock,
    FakeDomains,
    FakeJobs,
    FakeMessages,
    FakeReputations,
    FakeSuppressions,
)
from tests.fakes.transport import FakeConnector, Peer

SENDER = "shop.test"
BOUNCE_DOMAIN = "bounces.shop.test"
VERP_KEY = b"unit-verp-key"
MX_IP = "192.0.2.1"
LIVE = Principal(key_id="klive", name="live", scopes=frozenset({"send"}))
TEST = Principal(key_id="ktest", name="test", scopes=frozenset({"send"}), mode="test")
ROOT = Path(__file__).resolve().parents[2]


def sim(name: str) -> str:
    return f"{name}@{SIMULATOR_DOMAIN}"


# ---- the addresses ------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "outcome"), [
    ("delivered@simulator.outpost.invalid", "delivered"),
    ("Bounce+signup-test@Simulator.Outpost.Invalid", "bounce"),
    ("softbounce+1@simulator.outpost.invalid", "softbounce"),
    ("complaint@simulator.outpost.invalid", "complaint"),
    ("autoreply+x@simulator.outpost.invalid", "autoreply"),
    ("suppressed+run7@simulator.outpost.invalid", "suppressed"),
    ("anyone-else@simulator.outpost.invalid", "delivered"),
    ("bounce@example.com", None),
    ("bounce@sub.simulator.outpost.invalid", None),
])
def test_the_local_part_without_its_label_picks_the_outcome(address: str, outcome: str | None) -> None:
    assert simulator_outcome(address) == outcome


def test_a_test_key_simulates_every_address_and_a_simulator_address_keeps_its_outcome() -> None:
    assert simulated_outcome("alice@example.com", "test") == "delivered"
    assert simulated_outcome("alice@example.com", None) is None
    assert simulated_outcome(sim("bounce"), "test") == "bounce"
    assert is_simulated(sim("delivered"), None) and not is_simulated("a@b.test", None)
    assert refused_at_acceptance(sim("suppressed+x")) and not refused_at_acceptance(sim("bounce"))


# ---- the reports, as the real parser reads them ---------------------------------------------------

SIGNED = (b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.test; s=s1; b=abc\r\n",
          b"From: Shop <news@shop.test>\r\nTo: x@simulator.outpost.invalid\r\nSubject: Hi\r\n"
          b"Message-ID: <m1@shop.test>\r\n\r\nBody that must not be quoted.\r\n")


def test_the_dsn_is_an_rfc3464_hard_bounce_with_the_original_headers() -> None:
    raw = build_dsn(SIGNED, address=sim("bounce"), return_path="b-tok@bounces.shop.test", envelope_id="mid1")
    report = parse_bounce(raw, strict=True)
    assert report.kind == "dsn" and report.family == "rfc3464" and report.envelope_id == "mid1"
    [r] = report.recipients
    assert (r.address, r.status, r.kind, r.action) == (sim("bounce"), "5.1.1", "hard", "failed")
    assert b"DKIM-Signature: v=1" in raw and b"Body that must not be quoted" not in raw
    assert b"To: <b-tok@bounces.shop.test>" in raw


def test_the_complaint_is_an_rfc5965_feedback_report() -> None:
    raw = build_arf(SIGNED, address=sim("complaint"), return_path="b-tok@bounces.shop.test",
                    sending_domain="shop.test", bounce_domain="bounces.shop.test")
    report = parse_bounce(raw, strict=True)
    assert report.kind == "feedback"
    assert [r.address for r in report.recipients] == [sim("complaint")]
    assert ("Return-Path", "<b-tok@bounces.shop.test>") in [(k, v) for k, v in report.original_headers]


def test_the_autoreply_is_an_rfc3834_auto_reply() -> None:
    raw = build_autoreply(SIGNED, address=sim("autoreply"), return_path="b-tok@bounces.shop.test",
                          subject="Hi", message_id="<m1@shop.test>")
    report = parse_bounce(raw, strict=True)
    assert report.kind == "autoreply" and report.family == "rfc3834"
    assert b"Auto-Submitted: auto-replied" in raw and b"In-Reply-To: <m1@shop.test>" in raw


# ---- the sender, the bounce service, the breaker ------------------------------------------------

class NoSlots:
    """Slots that fail the test if the shaper ever asks for one."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a shaping slot was asked for ({name})")


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store, self.suppressions, self.jobs = FakeMessages(), FakeSuppressions(), FakeJobs()
        self.reps = FakeReputations()
        self.rep = Reputation(self.reps, clock=self.clock)
        self.api = SendService(store=self.store, suppressions=self.suppressions, queue=FakeJobs(),
                               domains=FakeDomains(SENDER), clock=self.clock, reputation=self.rep)
        self.peer = Peer()
        self.connector = FakeConnector({MX_IP: self.peer}, timeouts=Timeouts(connect=1.0, command=1.0))
        self.resolved: list[str] = []

        def resolve(domain: str) -> list[MxHost]:
            self.resolved.append(domain)
            return [MxHost(f"mx.{domain}", 10, (MX_IP,))]

        class Signer:
            def sign(self, message: bytes) -> bytes:
                return SIGNED[0]

        self.sender = DeliveryService(
            settings=Settings.from_env({"OUTPOST_BOUNCE_DOMAIN": BOUNCE_DOMAIN}), store=self.store,
            suppressions=self.suppressions, queue=self.jobs, resolve_mx=resolve, connector=self.connector,
            signer_for=lambda d: Signer(), clock=self.clock, rng=lambda: 0.5,
            return_path=lambda mid, i: make_return_path(VERP_KEY, mid, i, BOUNCE_DOMAIN),
            slots=NoSlots(), reputation=self.rep)  # type: ignore[arg-type]
        self.bounces = BounceService(store=self.store, suppressions=self.suppressions, verp_key=VERP_KEY,
                                     bounce_domain=BOUNCE_DOMAIN, clock=self.clock, reputation=self.rep)

    def send(self, to: list[str], principal: Principal) -> dict:
        req = SendRequest.model_validate({"from": f"Shop <news@{SENDER}>", "to": to, "subject": "Hi",
                                          "text": "Hello"})
        return self.api.send_one(req, principal=principal)

    def run(self, job: QueueJob) -> None:
        event = {"Records": [{"messageId": "sqs-1", "body": job.model_dump_json()}]}
        assert self.sender.handle_sqs_event(event, lambda: 600_000)["batchItemFailures"] == []

    def states(self, mid: str) -> dict[str, RecipientState]:
        stored = self.store.load(mid)
        assert stored is not None
        return {r.address: r.state for r in stored.recipients}

    def process_inbound(self) -> list[dict]:
        out = [self.bounces.process(k, ()) for k in sorted(self.store.inbound)]
        self.store.inbound.clear()
        return out

    def counts(self, scope: str) -> tuple[int, int, int]:
        got = self.reps.counts_since(scope, "2000010100")
        return (sum(c.sent for c in got), sum(c.hard for c in got), sum(c.complaints for c in got))


def test_simulated_recipients_take_no_dns_socket_or_slot_and_reports_go_inbound() -> None:
    w = World()
    to = [sim("delivered"), sim("bounce"), sim("softbounce"), sim("complaint"), sim("autoreply"),
          sim("suppressed"), "alice@real.test"]
    res = w.send(to, LIVE)
    assert {r["address"]: r["status"] for r in res["recipients"]}[sim("suppressed")] == "suppressed"
    mid = res["id"]
    w.run(QueueJob(message_id=mid))
    assert w.resolved == ["real.test"] and len(w.connector.opened) == 1  # only the real recipient
    assert [d.rcpt for d in w.peer.accepted] == ["alice@real.test"]
    assert sorted(k.split("-")[-2] for k in w.store.inbound) == ["autoreply", "bounce", "complaint"]
    assert all(k.startswith("inbound/s3/simulator/") for k in w.store.inbound)
    results = w.process_inbound()
    assert sorted(r["result"] for r in results) == ["autoreply", "matched", "matched"]
    states = w.states(mid)
    assert states[sim("bounce")] is RecipientState.BOUNCED
    assert states[sim("complaint")] is RecipientState.COMPLAINED
    assert states[sim("softbounce")] is RecipientState.DEFERRED
    assert states[sim("delivered")] is states[sim("autoreply")] is RecipientState.DELIVERED
    assert w.suppressions.get(sim("bounce")).source == "bounce"  # type: ignore[union-attr]
    assert w.suppressions.get(sim("complaint")).source == "complaint"  # type: ignore[union-attr]
    # The soft bounce's next attempt (by attempt number) delivers.
    job, delay = w.jobs.sent[-1]
    w.clock.advance(delay + 1)
    w.run(job)
    stored = w.store.load(mid)
    assert stored is not None
    soft = next(r for r in stored.recipients if r.address == sim("softbounce"))
    assert soft.state is RecipientState.DELIVERED
    assert [(a.outcome, a.code) for a in soft.attempts] == [("transient", 451), ("delivered", 250)]
    assert len(w.connector.opened) == 1
    # Only the real recipient fed the breaker: sent 1, nothing bad.
    assert w.counts(key_scope("klive")) == (1, 0, 0) and w.counts(domain_scope(SENDER)) == (1, 0, 0)


def test_a_test_key_s_message_is_simulated_labelled_and_uncounted() -> None:
    w = World()
    res = w.send(["alice@real.test", sim("bounce+t1")], TEST)
    mid = res["id"]
    w.run(QueueJob(message_id=mid))
    assert w.resolved == [] and w.connector.opened == []
    w.process_inbound()
    assert w.states(mid) == {"alice@real.test": RecipientState.DELIVERED, sim("bounce+t1"): RecipientState.BOUNCED}
    stored = w.store.load(mid)
    assert stored is not None and stored.meta.mode == "test" and {r.mode for r in stored.recipients} == {"test"}
    view = QueryService(store=w.store, suppressions=w.suppressions, clock=w.clock).message(mid)
    assert view["mode"] == "test"
    assert w.counts(key_scope("ktest")) == (0, 0, 0)


def test_the_control_a_live_hard_bounce_at_rcpt_is_counted() -> None:
    """What the two tests above would see if simulated outcomes were counted."""
    w = World()
    w.peer.replies["RCPT"] = (550, "5.1.1 <bob@real.test>: Recipient address rejected: User unknown")
    mid = w.send(["bob@real.test"], LIVE)["id"]
    w.run(QueueJob(message_id=mid))
    assert w.counts(key_scope("klive")) == (1, 1, 0)


# ---- keys and the template ----------------------------------------------------------------------

def test_a_key_is_live_unless_created_test_and_its_principal_carries_the_mode() -> None:
    ring = KeyRing(FakeApiKeys())
    live, rec = ring.create("a", ["send"])
    test, trec = ring.create("b", ["send"], mode="test")
    assert (rec["mode"], trec["mode"]) == ("live", "test")
    assert ring.authenticate(f"Bearer {live}", "send").mode == "live"
    assert ring.authenticate(f"Bearer {test}", "send").mode == "test"
    with pytest.raises(ValueError, match="mode"):
        ring.create("c", ["send"], mode="sandbox")


def test_the_sender_may_write_only_the_simulator_s_inbound_prefix() -> None:
    t = yaml_parse((ROOT / "template.yaml").read_text())
    puts = []
    for p in t["Resources"]["SenderFunction"]["Properties"]["Policies"]:
        for s in p.get("Statement", []) if isinstance(p, dict) else []:
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            if any(a.startswith("s3:Put") or a == "s3:*" for a in actions):
                puts.append((actions, s["Resource"]))
    assert puts == [(["s3:PutObject"], {"Fn::Sub": "${MailBucket.Arn}/inbound/s3/simulator/*"})]


def test_a_test_key_sends_only_from_a_verified_domain_like_a_live_key() -> None:
    from outpost.errors import ForbiddenError

    w = World()
    req = SendRequest.model_validate({"from": "news@unverified.test", "to": [sim("delivered")],
                                      "subject": "Hi", "text": "Hello"})
    with pytest.raises(ForbiddenError, match="not a verified"):
        w.api.send_one(req, principal=TEST)


def test_smtp_submission_honours_the_key_s_mode_and_refuses_suppressed_at_once() -> None:
    w = World()
    data = (f"From: Shop <news@{SENDER}>\r\nTo: x@real.test\r\nSubject: Hi\r\n\r\nHello\r\n").encode()
    out, _ = w.api.send_raw(data, rcpts=["alice@real.test", sim("suppressed+s1")], principal=TEST)
    assert [r["status"] for r in out["recipients"]] == ["queued", "suppressed"]
    stored = w.store.load(out["id"])
    assert stored is not None and stored.meta.mode == "test"
    w.run(QueueJob(message_id=out["id"]))
    assert w.connector.opened == [] and w.states(out["id"])["alice@real.test"] is RecipientState.DELIVERED
    assert w.counts(key_scope("ktest")) == (0, 0, 0)


def test_a_suppressed_address_queued_before_the_acceptance_rule_ends_suppressed_unsent() -> None:
    """The sender's own guard: a `suppressed@` recipient stored queued (before the API refused
    it at acceptance) is finished `suppressed` with no attempt and no report."""
    from outpost.records import Message, Recipient
    from outpost.stored_request import StoredRequest

    w = World()
    req = SendRequest.model_validate({"from": f"news@{SENDER}", "to": [sim("suppressed")], "subject": "Hi",
                                      "text": "Hello"})
    meta = Message(message_id="01m8dxb0asys87tj7gka4pks5q", from_=req.from_, subject="Hi",
                   deliver_until=w.clock() + 3600, recipient_count=1, from_domain=SENDER)
    w.store.create(meta, [Recipient(meta.message_id, 0, sim("suppressed"), RecipientState.QUEUED)],
                   StoredRequest.from_request(req), w.clock())
    w.run(QueueJob(message_id=meta.message_id))
    stored = w.store.load(meta.message_id)
    assert stored is not None
    [r] = stored.recipients
    assert r.state is RecipientState.SUPPRESSED and r.attempts == () and w.store.inbound == {}
    assert w.connector.opened == [] and w.resolved == []


def test_a_subject_with_line_breaks_cannot_forge_headers_or_a_report_in_the_auto_reply() -> None:
    """Review r14: SMTP submission keeps the client's Subject as decoded (an RFC 2047 word may
    carry CR LF), and the auto-reply copies it. It must stay one header field: no injected
    field, no early end of the header section turning the auto-reply into a forged DSN."""
    forged = ("a\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; "
              "victim@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n")
    evil = SIGNED[1].replace(b"Message-ID: <m1@shop.test>", b"Message-ID: <m1@shop.test>\r\nBcc: x@y.test")
    raw = build_autoreply((SIGNED[0], evil), address=sim("autoreply"), return_path="b-tok@bounces.shop.test",
                          subject=forged, message_id="<m1@shop.test>\r\nBcc: victim@example.com")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"Auto-Submitted: auto-replied" in head and b"\r\nContent-Type: message/delivery-status" not in head
    assert b"\r\nBcc:" not in head and b"\r\nAction:" not in raw
    report = parse_bounce(raw, strict=True)
    assert report.kind == "autoreply" and [r.address for r in report.recipients] == [sim("autoreply")]
    assert b"In-Reply-To" not in raw  # a Message-ID that is not one is not quoted


def test_the_reports_of_a_40_mb_message_quote_its_headers_only() -> None:
    """Review r14: a report's size is bounded by the header section, whatever the body's."""
    big = (SIGNED[0], SIGNED[1].replace(b"Body that must not be quoted.\r\n", b"x" * 76 + b"\r\n") * 1
           + (b"y" * 998 + b"\r\n") * 40_000)
    for raw in (build_dsn(big, address=sim("bounce"), return_path="b-tok@bounces.shop.test", envelope_id="m"),
                build_arf(big, address=sim("complaint"), return_path="b-tok@bounces.shop.test",
                          sending_domain="shop.test", bounce_domain="bounces.shop.test"),
                build_autoreply(big, address=sim("autoreply"), return_path="b-tok@bounces.shop.test",
                                subject="Hi", message_id="<m1@shop.test>")):
        assert len(raw) < 5_000 and b"yyyy" not in raw
