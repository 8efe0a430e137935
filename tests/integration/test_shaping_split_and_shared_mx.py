"""The review of issue 11's shaping (slice s11a) against real servers: DynamoDB Local (the
slots' conditional writes), the local DNS server, aiosmtpd MX hosts on loopback with TLS
verified against the test CA (sender_rig.py).

- A domain whose MX set spans two providers, the primary refusing connections: the session
  opens on the backup with a slot at the backup's provider (never over its cap), the primary's
  slot given back.
- Two domains on one MX host (like Google Workspace domains): one batch's jobs for both share
  the site's sessions; the MX sees at most SESSIONS_PER_DOMAIN connections, not that per domain.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sender_rig import PREFIX, Rig
from test_shaping_slots import _container, _require_dynamodb_local

from outpost.config import Settings
from outpost.delivery import shaping
from outpost.models import QueueJob
from outpost_local.mx import END_OF_DATA, Behaviour, MxSmtp, Slow

pytestmark = pytest.mark.timeout(240)


class SlotsSeen(Behaviour):
    """At each RCPT, the leases the store holds for two providers (while the session is open)."""

    def __init__(self, rig: Rig, ip: str, providers: tuple[str, str]) -> None:
        self.rig, self.ip, self.providers = rig, ip, providers
        self.seen: list[tuple[int, int]] = []

    async def handle_RCPT(self, server: MxSmtp, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        states = [self.rig.store.slot_state(self.ip, p) for p in self.providers]
        self.seen.append(tuple(len(s.leases) if s else 0 for s in states))  # type: ignore[arg-type]
        return None


def _batch(service: Any, mids: list[str]) -> None:
    event = {"Records": [{"messageId": f"m{i}", "body": QueueJob(message_id=m, attempt=1).model_dump_json()}
                         for i, m in enumerate(mids)]}
    assert service.handle_sqs_event(event, lambda: 300_000)["batchItemFailures"] == []


def test_the_slot_follows_the_session_to_a_backup_mx_at_another_provider(rig: Rig) -> None:
    _require_dynamodb_local(rig)
    domain, ip = "split.test", "192.0.2.31"
    primary, backup = "mx150.alpha-split.test", "mx151.split.test"  # each its own provider
    rig.dns.add(domain, "MX", (10, primary))
    rig.dns.add(primary, "A", f"{PREFIX}.150")  # nothing listens there: the connection is refused
    probe = SlotsSeen(rig, ip, (backup, primary))
    mx = rig.mx(domain, 151, probe, pref=20)
    settings = Settings.from_env({**rig.aws.env, "OUTPOST_SENDER_IP": ip,
                                  "OUTPOST_SHAPING": json.dumps({backup: {"connections": 1}})})
    service = _container(rig, settings)
    now = rig.clock()
    ok, _ = rig.store.take_slot(ip, backup, "another-sender", now + 120, 1, {}, now)  # the backup's one slot
    assert ok
    mid = rig.send(f"alice@{domain}")
    _batch(service, [mid])
    assert mx.received == []  # no connection to the backup over its provider's cap
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and not r.get("attempts")  # waits, no attempt
    assert r["waiting"]["provider"] == backup and r["waiting"]["reason"] == "shaping"
    primary_state = rig.store.slot_state(ip, primary)
    assert primary_state is None or primary_state.leases == {}  # the primary's slot given back
    # The other sender is done: the next job delivers on the backup, holding the backup's slot.
    rig.store.release_slot(ip, backup, "another-sender", {})
    job, _ = rig.queue.sent[-1]
    rig.clock.advance((job.not_before or now) - rig.clock() + 0.001)
    assert service.handle_sqs_event({"Records": [{"messageId": "m1", "body": job.model_dump_json()}]},
                                    lambda: 300_000)["batchItemFailures"] == []
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and len(r["attempts"]) == 1 and r["attempts"][0]["mx"] == backup
    assert len(mx.received) == 1 and mx.received[0].tls
    assert probe.seen == [(1, 0)]  # in the session: a lease at the backup's provider, none at the primary's
    assert rig.store.slot_state(ip, backup).leases == {}  # type: ignore[union-attr]


class PerConnection(Behaviour):
    """The recipient domains each connection carried (by the client's port)."""

    def __init__(self) -> None:
        self.domains: dict[int, set[str]] = {}

    async def handle_RCPT(self, server: MxSmtp, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        self.domains.setdefault(int(session.peer[1]), set()).add(address.rpartition("@")[2].lower())
        return None


def test_two_domains_on_one_mx_host_share_the_sites_sessions(rig: Rig) -> None:
    _require_dynamodb_local(rig)
    site = "mx152.shared-site.test"
    seen = PerConnection()
    mx = rig.mx("site-a.test", 152, [seen, Slow(END_OF_DATA, 0.1)], name=site)  # sessions that overlap
    rig.dns.add("site-b.test", "MX", (10, site))
    settings = Settings.from_env({**rig.aws.env, "OUTPOST_SENDER_IP": "192.0.2.32"})
    service = _container(rig, settings)
    mids = [rig.send(f"user{i}@{d}") for i in range(5) for d in ("site-a.test", "site-b.test")]
    _batch(service, mids)  # ten jobs at once, five per domain
    assert all(r["state"] == "delivered" for m in mids for r in rig.rcpts(m))
    assert len(mx.received) == 10 and all(m.tls for m in mx.received)
    # One site, one container: its SESSIONS_PER_DOMAIN sessions, not that many per domain.
    assert len(seen.domains) <= shaping.SESSIONS_PER_DOMAIN, seen.domains
    assert any(d == {"site-a.test", "site-b.test"} for d in seen.domains.values()), seen.domains
