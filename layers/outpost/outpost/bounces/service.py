"""Inbound mail at the bounce domain -> parse -> match -> record, suppress. Never drops one.

Matching, strongest first:
1. the return-path token (VERP) in the envelope recipient, the bounce's To: header, or the
   Return-Path of the original it quotes (feedback loops send the whole original). A token
   whose HMAC does not verify is recorded as `unverified` and suppresses nobody;
2. the DSN's Original-Envelope-Id (we send ENVID = message id, RFC 3461);
3. the Message-ID of the original, from the headers the DSN includes.
Only a verified token may change a recipient's state or suppress an address. The message id in
ENVID or Message-ID is seen by every recipient of the message, so a report matched that way
alone could be forged by one recipient against another: it is recorded (visible under the
message, `verified: false`) and acts on nothing.
What matches nothing is recorded as `unmatched`, what is not a report as `unparsed`, both with
the S3 key of the raw mail, and counted in a metric. A failure of the parser itself is a bug: it
is logged with its stack, counted (`BounceParserError`) and the mail kept as `unparsed` with the
error's name. Only the first MESSAGE_READ_LIMIT bytes of the inbound object are read (a ranged
GET: a report needs its first parts, and the whole mail stays in S3); a longer one is recorded
with its size and `truncated`. Recording is idempotent: a redelivered DSN
(same bytes) writes nothing new.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..clock import iso
from ..ids import is_message_id
from ..models import RecipientState
from ..records import Bounce, Message, Orphan, Recipient, StoredMessage, Suppression
from ..sandbox import is_simulated
from ..store import Messages, Suppressions
from .limits import MESSAGE_READ_LIMIT
from .report import NOT_A_BOUNCE, BounceRecipient, BounceReport
from .verp import ReturnPath, read_return_path

if TYPE_CHECKING:
    from ..reputation import Reputation

log = logging.getLogger("outpost.bounces")
_MSGID = re.compile(r"<?([0-9a-hjkmnp-tv-z]{26})@", re.I)


class BounceService:
    def __init__(self, *, store: Messages, suppressions: Suppressions,
                 verp_key: bytes, bounce_domain: str, clock: Callable[[], float] = time.time,
                 count: Callable[[str, int], None] = lambda name, n: None,
                 parse: Callable[[bytes], BounceReport] | None = None,
                 ses_prefix: str = "inbound/ses/", reputation: Reputation | None = None) -> None:
        self.reputation = reputation  # counts hard bounces and complaints (issue 11 item 6)
        self.store, self.suppressions = store, suppressions
        self.verp_key, self.bounce_domain, self.clock, self.count = verp_key, bounce_domain, clock, count
        self.ses_prefix = ses_prefix  # where the SES receipt rule writes mail (Settings.inbound_ses_prefix)
        if parse is None:
            from functools import partial

            from .dsn import parse_bounce

            parse = partial(parse_bounce, strict=True)  # its failures are logged and counted here
        self.parse = parse

    # ---- events -------------------------------------------------------------------------------
    def handle(self, event: dict) -> dict:
        """The bounce processor's answer to one Lambda event: `{"results": [one per mail]}`."""
        return {"results": self.handle_event(event)}

    def handle_event(self, event: dict) -> list[dict]:
        """An SES receipt-rule event or an S3 ObjectCreated event -> one result per mail."""
        from urllib.parse import unquote_plus

        results = []
        for record in event.get("Records", []):
            if record.get("eventSource") == "aws:ses":
                ses = record["ses"]
                key = f"{self.ses_prefix}{ses['mail']['messageId']}"
                rcpts = ses.get("receipt", {}).get("recipients") or ses["mail"].get("destination") or []
                results.append(self.process(key, rcpts))
            elif record.get("eventSource") == "aws:s3":
                key = unquote_plus(record["s3"]["object"]["key"])
                results.append(self.process(key, ()))
            else:
                log.warning("ignored an event record of unknown source",
                            extra={"event_source": record.get("eventSource")})
        return results

    def process(self, key: str, envelope_recipients: Iterable[str]) -> dict:
        got = self.store.read_inbound(key, MESSAGE_READ_LIMIT)
        if got is None:
            log.warning("inbound object is gone", extra={"s3_key": key})
            self.count("InboundMissing", 1)
            return {"s3_key": key, "result": "missing"}
        raw, size = got
        return self.process_raw(key, raw, list(envelope_recipients), size=size)

    def process_raw(self, key: str, raw: bytes, envelope_recipients: list[str],
                    size: int | None = None) -> dict:
        now = self.clock()
        parser_error = None
        try:
            report = self.parse(raw)
        except Exception as exc:  # a parser bug: never a lost mail, never a silent one
            log.exception("bounce parser failed", extra={"s3_key": key, "size": len(raw)})
            self.count("BounceParserError", 1)
            report, parser_error = NOT_A_BOUNCE, f"{type(exc).__name__}: {exc}"[:200]
        bounce_id = hashlib.sha256(raw).hexdigest()[:20]
        rp = self._return_path(envelope_recipients, report)
        truncated = size is not None and size > len(raw)
        base = Orphan(s3_key=key, kind="unparsed", received_at=iso(now), family=report.family,
                      report_kind=report.kind, envelope_recipients=tuple(envelope_recipients[:5]),
                      parser_error=parser_error, size=size if truncated else None,
                      truncated=True if truncated else None)

        if report.kind == "autoreply":
            self._orphan(base.replace(kind="autoreply"), now)
            return {"s3_key": key, "result": "autoreply"}
        if report.kind == "none" or not report.recipients:
            self._orphan(base, now)
            return {"s3_key": key, "result": "unparsed"}
        if rp is not None and not rp.verified:
            # Right shape, wrong MAC: forged or mangled. Keep it, act on nothing.
            self._orphan(base.replace(kind="unverified", token=rp.address,
                                      recipients=tuple(r.address for r in report.recipients)), now)
            return {"s3_key": key, "result": "unverified"}

        message_id = rp.message_id if rp else self._message_id(report)
        stored = self.store.load(message_id) if message_id else None
        if stored is None:
            self._orphan(base.replace(kind="unmatched", envelope_id=report.envelope_id,
                                      recipients=tuple(r.address for r in report.recipients)), now)
            return {"s3_key": key, "result": "unmatched"}

        recorded = []
        for stored_rcpt, bounce_rcpt in self._pairs(stored, report, rp):
            if stored_rcpt is None:
                self._orphan(base.replace(s3_key=f"{key}#{bounce_rcpt.address}", kind="unmatched",
                                          recipients=(bounce_rcpt.address,), message_id=message_id), now)
                continue
            recorded.append(self._record(key, bounce_id, report, stored.meta.message_id,
                                         stored_rcpt, bounce_rcpt, rp is not None and rp.verified, now,
                                         stored.meta))
        return {"s3_key": key, "result": "matched", "message_id": message_id, "recipients": recorded}

    # ---- matching -----------------------------------------------------------------------------
    def _return_path(self, envelope: list[str], report: BounceReport) -> ReturnPath | None:
        """The first verified token, else the first token seen (to record it as unverified)."""
        quoted = [v for k, v in report.original_headers if k.lower() in ("return-path", "x-original-return-path")]
        first: ReturnPath | None = None
        for text in [*envelope, *report.to_addresses, *quoted]:
            rp = read_return_path(self.verp_key, text, self.bounce_domain)
            if rp is not None and rp.verified:
                return rp
            first = first or rp
        return first

    @staticmethod
    def _message_id(report: BounceReport) -> str | None:
        envid = (report.envelope_id or "").strip().lower()
        if is_message_id(envid):
            return envid
        candidates = [report.original_message_id or ""]
        candidates += [v for k, v in report.original_headers if k.lower() == "message-id"]
        for c in candidates:
            m = _MSGID.search(c or "")
            if m and is_message_id(m.group(1).lower()):
                return m.group(1).lower()
        return None

    @staticmethod
    def _pairs(stored: StoredMessage, report: BounceReport, rp: ReturnPath | None
               ) -> list[tuple[Recipient | None, BounceRecipient]]:
        by_addr = {r.address.lower(): r for r in stored.recipients}
        out: list[tuple[Recipient | None, BounceRecipient]] = []
        if rp is not None:
            target = next((r for r in stored.recipients if r.index == rp.recipient_index), None)
            if target is None:
                return [(None, b) for b in report.recipients]
            same = [b for b in report.recipients if b.address.lower() == target.address.lower()
                    or (b.original_recipient or "").lower().endswith(target.address.lower())]
            # The token names the recipient even when a forwarder rewrote the address.
            chosen = same or ([report.recipients[0]] if len(report.recipients) == 1 else [])
            return [(target, b) for b in chosen] or [(None, b) for b in report.recipients]
        for b in report.recipients:
            orcpt = (b.original_recipient or "").split(";")[-1].strip().lower()
            out.append((by_addr.get(b.address.lower()) or by_addr.get(orcpt), b))
        return out

    # ---- recording ----------------------------------------------------------------------------
    def _record(self, key: str, bounce_id: str, report: BounceReport, message_id: str, rcpt: Recipient,
                b: BounceRecipient, verified: bool, now: float, meta: Message | None = None) -> dict:
        complaint = report.kind == "feedback"
        action = (b.action or ("failed" if not complaint else None))
        kind = "complaint" if complaint else {"delayed": "delay", "failed": "bounce"}.get(action or "", "notice")
        record = Bounce(message_id=message_id, index=rcpt.index, bounce_id=bounce_id,
                        address=rcpt.address, type=kind, received_at=iso(now), verified=verified,
                        action=b.action, status=b.status, kind=b.kind, reason=b.reason,
                        diagnostic=b.diagnostic, reporting_mta=report.reporting_mta,
                        remote_mta=b.remote_mta, s3_key=key, family=report.family)
        new = self.store.add_bounce(record, now)
        if new:
            self.count({"complaint": "Complaint", "bounce": "Bounce", "delay": "DelayNotice"}.get(kind, "Notice"), 1)
        # State and suppression are idempotent themselves, so they run even when the record
        # existed: a crash between the two writes is healed by the redelivery. Only a report
        # carrying our verified token may act (see the module docstring).
        if kind in ("complaint", "bounce") and verified:
            state = RecipientState.COMPLAINED if complaint else RecipientState.BOUNCED
            view = record.as_dict()
            summary: dict[str, Any] = {k: view[k] for k in (
                "type", "status", "kind", "reason", "diagnostic", "reporting_mta", "remote_mta", "s3_key")
                if view.get(k)}
            summary["source"] = "dsn" if not complaint else "feedback"
            summary["at"] = record.received_at
            self.store.mark_bounced(message_id, rcpt.index, state, now, summary)
            if complaint or b.kind == "hard":
                self.suppressions.add(Suppression.new(
                    rcpt.address, now, source="complaint" if complaint else "bounce",
                    reason="complaint" if complaint else b.reason,
                    kind="complaint" if complaint else b.kind, message_id=message_id,
                    status=b.status, diagnostic=b.diagnostic, s3_key=key))
            if new and meta is not None and self.reputation is not None and (complaint or b.kind == "hard") \
                    and not is_simulated(rcpt.address, meta.mode):  # the sandbox's are not counted
                # Once per report (`new`): a redelivered report is not counted again.
                if complaint:
                    self.reputation.count_complaint(meta.from_domain, meta.key_id)
                else:
                    self.reputation.count_bounce(meta.from_domain, meta.key_id)
        return {"address": rcpt.address, "type": kind, "status": b.status, "kind": b.kind,
                "reason": b.reason, "new": new}

    def _orphan(self, orphan: Orphan, now: float) -> None:
        if self.store.add_orphan(orphan, now):
            self.count({"unparsed": "BounceUnparsed", "unmatched": "BounceUnmatched",
                        "unverified": "BounceUnverified", "autoreply": "AutoReply"}[orphan.kind], 1)
        log.info("inbound mail kept as %s", orphan.kind, extra={"s3_key": orphan.s3_key})
