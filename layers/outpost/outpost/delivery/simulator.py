"""The mailbox simulator's side of the sender (issue 14 item 4; the addresses: sandbox.py).

After the prepare step (the message is built and DKIM-signed as for real mail), the recipients
the sandbox simulates (an address at SIMULATOR_DOMAIN, or any recipient of a message sent with
a test-mode key) are answered here instead of by an MX: no DNS lookup, no socket, no shaping
slot, no circuit-breaker count. Everything else is the real pipeline: the claim before, and
here the verdict from trouble.judge() of the simulated reply, the attempt record, the
recorder's finish_attempt (hence the events). An outcome that comes later in real life (a DSN,
a complaint, an auto-reply) is built from the real signed message (simulator_mail.py) and
written where inbound mail lands for the bounce processor (S3 inbound/s3/, whose ObjectCreated
notification invokes it), to be parsed and recorded by the real parser and service.

A report that cannot be written (S3 failing past the retries) is logged and counted
(`SimulatorReportFailed`); the recipient stays delivered, as when a real DSN is lost. So does
one whose 250 could not be recorded and is carried to the next job (the store failing: job.py),
which records the 2xx and writes no report.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

from aiosmtplib import SMTPStatus

from ..models import RecipientState
from ..records import Message
from ..sandbox import AUTOREPLY, BOUNCE, COMPLAINT, SIMULATOR_DOMAIN, SOFTBOUNCE, SUPPRESSED, simulated_outcome
from .job import JobRun, Rcpt, Record, RecordFailed, Result, write_retrying
from .simulator_mail import build_arf, build_autoreply, build_dsn, original_message_id
from .transport import remote_queue_id
from .trouble import Outcome, SmtpReply, judge

if TYPE_CHECKING:
    from .prepare import Prepared
    from .service import DeliveryService

log = logging.getLogger("outpost.sender")

INBOUND_PREFIX = "inbound/s3/"  # the template's S3 notification on MailBucket (BounceProcessor)
REPORT_RETRIES = (0.2, 1.0, 3.0)


def split(p: Prepared, mode: str | None) -> tuple[list[Rcpt], list[Rcpt]]:
    """(simulated, real) recipients of a prepared message."""
    sim = [rc for rc in p.rcpts if simulated_outcome(rc.address, mode) is not None]
    return sim, [rc for rc in p.rcpts if simulated_outcome(rc.address, mode) is None]


async def deliver_simulated(svc: DeliveryService, run: JobRun, meta: Message, p: Prepared,
                            record: Record) -> Prepared | None:
    """Answer the simulated recipients; the prepared message for the rest (None: nobody left)."""
    sim, real = split(p, meta.mode)
    for rc in sim:
        try:
            await _simulate(svc, run, meta, rc, p.data, record)
        except RecordFailed:
            # Left unrecorded: reschedule releases it and its job comes back (as for real mail).
            log.exception("recording a simulated outcome failed", extra={"message_id": meta.message_id})
    if sim:
        svc.count("Simulated", len(sim))
    return replace(p, rcpts=real) if real else None


def reply_for(outcome: str, attempts: int) -> SmtpReply:
    """The reply the simulator gives: a 4xx to `softbounce@`'s first attempt, else a 250."""
    if outcome == SOFTBOUNCE and attempts == 0:
        return SmtpReply(451, "4.2.0 Mailbox temporarily unavailable, try again later "
                              "(Outpost simulator: soft bounce)", "RCPT")
    return SmtpReply(SMTPStatus.completed, f"2.0.0 Ok: queued as SIM{secrets.token_hex(6).upper()} "
                                           "(Outpost simulator)", "EOD")


async def _simulate(svc: DeliveryService, run: JobRun, meta: Message, rc: Rcpt, data: tuple[bytes, ...],
                    record: Record) -> None:
    mid = meta.message_id
    outcome = simulated_outcome(rc.address, meta.mode) or ""
    if outcome == SUPPRESSED:
        # Refused at acceptance (api/service.py); a message stored before that rule: as listed.
        last = {"status": "5.7.1", "text": "address is on the suppression list (Outpost simulator)"}
        await asyncio.to_thread(functools.partial(
            svc.store.finish_attempt, mid, rc.index, RecipientState.SUPPRESSED, svc.clock(), None, last=last))
        run.recorded.add(rc.index)
        return
    reply = reply_for(outcome, rc.attempts)
    v = judge(reply)
    remote_id = remote_queue_id(reply.text) if v.outcome is Outcome.DELIVERED else None  # as an MX's
    await record(rc, Result(v, svc._attempt(v, SIMULATOR_DOMAIN, None, None, remote_id)))
    if v.outcome is Outcome.DELIVERED and outcome in (BOUNCE, COMPLAINT, AUTOREPLY) \
            and rc.index in run.recorded:
        await _report(svc, meta, rc, outcome, data)


async def _report(svc: DeliveryService, meta: Message, rc: Rcpt, outcome: str, data: tuple[bytes, ...]) -> None:
    mid = meta.message_id
    now = svc.clock()
    return_path = svc.return_path(mid, rc.index)
    if outcome == BOUNCE:
        raw = build_dsn(data, address=rc.smtp_addr, return_path=return_path, envelope_id=mid, now=now)
    elif outcome == COMPLAINT:
        raw = build_arf(data, address=rc.smtp_addr, return_path=return_path,
                        sending_domain=meta.from_domain or "", bounce_domain=svc.settings.bounce_domain, now=now)
    else:
        raw = build_autoreply(data, address=rc.smtp_addr, return_path=return_path, subject=meta.subject,
                              message_id=original_message_id(data), now=now)
    key = f"{INBOUND_PREFIX}simulator/{mid}-{rc.index:03d}-{outcome}-{secrets.token_hex(4)}.eml"
    try:
        await write_retrying(svc, lambda: svc.store.put_inbound(key, raw), REPORT_RETRIES)
    except Exception:  # noqa: BLE001 - a lost report is logged and counted, never raised
        log.exception("could not write a simulated report", extra={"message_id": mid, "s3_key": key})
        svc.count("SimulatorReportFailed", 1)
        return
    log.info("simulated report written", extra={"message_id": mid, "s3_key": key, "outcome": outcome})
