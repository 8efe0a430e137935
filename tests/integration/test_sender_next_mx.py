"""A soft failure in mid-transaction on an MX that is not the last one tries the next MX in the
same attempt (Postfix smtp_trouble.c), never after the final dot (RFC 1047); on the last MX it
defers (issue 9 item 3). Two real aiosmtpd MX hosts on loopback, a real DNS server (the rig).
"""

from __future__ import annotations

from typing import Any

import pytest
from sender_rig import Rig, commands

from outpost_local.mx import Behaviour, DisconnectInData, MxSmtp

pytestmark = pytest.mark.timeout(90)


class CloseWith421(Behaviour):
    """Answer `stage` (MAIL, RCPT or DATA) with 421 and close the connection (RFC 5321 §3.8)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str | None:
        return "421 4.3.2 Too busy, closing connection" if self.stage == "MAIL" else None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        return "421 4.3.2 Too busy, closing connection" if self.stage == "RCPT" else None

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        if stage == "DATA" == self.stage:
            await server.push("421 4.3.2 Too busy, closing connection")

    async def after_reply(self, stage: str, reply: str, server: MxSmtp) -> None:
        if reply.startswith("421"):
            server.drop()


class DropAfter(Behaviour):
    """Close the connection instead of answering `stage`."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        if stage == self.stage:
            server.drop()


@pytest.mark.parametrize("trouble", [CloseWith421("RCPT"), CloseWith421("MAIL"), DropAfter("MAIL"),
                                     DropAfter("RCPT")],
                         ids=["421-after-RCPT", "421-after-MAIL", "drop-after-MAIL", "drop-after-RCPT"])
def test_soft_failure_mid_transaction_moves_to_the_next_mx(rig: Rig, trouble: Behaviour) -> None:
    first = rig.mx("backup.test", 2, trouble, pref=10)
    second = rig.mx("backup.test", 3, pref=20)
    mid = rig.send("una@backup.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    # Delivered by the second MX in the same attempt: one attempt, no retry scheduled.
    assert r["state"] == "delivered", r.get("last")
    assert [a["mx"] for a in r["attempts"]] == ["mx3.backup.test"]
    [got] = second.wait_for(1)
    assert got.rcpt_tos == ["una@backup.test"]
    assert first.received == [] and len(commands(first, "MAIL")) == 1


def test_421_after_data_moves_to_the_next_mx(rig: Rig) -> None:
    first = rig.mx("backup.test", 2, CloseWith421("DATA"), pref=10)
    second = rig.mx("backup.test", 3, pref=20)
    mid = rig.send("vic@backup.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "delivered" and [a["mx"] for a in r["attempts"]] == ["mx3.backup.test"]
    assert len(second.wait_for(1)) == 1 and first.received == []
    assert len(commands(first, "DATA")) == 1  # it got as far as DATA, answered 421 and closed


def test_soft_failure_on_the_last_mx_defers(rig: Rig) -> None:
    first = rig.mx("allbusy.test", 2, CloseWith421("RCPT"), pref=10)
    last = rig.mx("allbusy.test", 3, CloseWith421("RCPT"), pref=20)
    mid = rig.send("wes@allbusy.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred" and len(r["attempts"]) == 1
    a = r["attempts"][0]
    assert (a["mx"], a["command"], a["code"], a["status"]) == ("mx3.allbusy.test", "RCPT", 421, "4.3.2")
    # Both were tried in this attempt, each once.
    assert len(commands(first, "RCPT")) == 1 and len(commands(last, "RCPT")) == 1


def test_no_next_mx_after_the_final_dot(rig: Rig) -> None:
    # The connection drops after the whole message and its final dot: the first server may
    # have kept it (RFC 1047), so the recipient is deferred, not sent to the backup at once.
    first = rig.mx("dotdrop.test", 2, DisconnectInData("end"), pref=10)
    second = rig.mx("dotdrop.test", 3, pref=20)
    mid = rig.send("xia@dotdrop.test")
    rig.run(mid)
    r = rig.rcpt(mid)
    assert r["state"] == "deferred"
    a = r["attempts"][0]
    assert (a["mx"], a["command"], a["status"]) == ("mx2.dotdrop.test", "EOD", "4.4.2")
    assert "RFC 1047" in a["text"]
    assert second.replies("CONNECT") == [] and first.received == []


def test_the_next_recipients_reuse_the_backup_session(rig: Rig) -> None:
    # The first MX closes at RCPT every time; after the first recipient moves on, the rest go
    # over the backup's session (the pool), within the attempt's two sessions.
    first = rig.mx("pair.test", 2, CloseWith421("RCPT"), pref=10)
    second = rig.mx("pair.test", 3, pref=20)
    mid = rig.send("a@pair.test", "b@pair.test", "c@pair.test")
    rig.run(mid)
    rs = rig.rcpts(mid)
    assert [r["state"] for r in rs] == ["delivered"] * 3
    assert len(second.wait_for(3)) == 3
    assert len(first.replies("CONNECT")) == 1 and len(second.replies("CONNECT")) == 1
