"""The reputation circuit breaker (issue 11 item 6): per sending domain and per API key, rolling
hard-bounce and complaint rates over 24 hours and 7 days, and a state, ok | warn | paused.

What counts (decided here, documented in the README's "Reputation"):
- the denominator is recipients *sent*: accepted by the API for delivery (queued; suppressed
  ones are not sent), as SES counts "sent". Counted when the API accepts the message, so a
  message waiting in the queue already weighs in the rate its bounces will move.
- hard bounces: the sender's permanent failures of kind "hard" (5.1.x and the like, judged by
  delivery/trouble.py) and asynchronous DSNs of kind "hard" carrying our verified token.
- complaints: feedback reports (ARF) carrying our verified token.

A rate counts only over a representative volume: `min_volume` recipients sent in its window
(SES reviews an account over a "representative volume" of mail; 200 by default here). The
state is the worst of the two windows' verdicts: `pause` over a pause threshold, `warn` over a
warn threshold (SES: review at 5% bounces / 0.1% complaints, pause at 10% / 0.5%).

The breaker trips by itself, as SES's does: each hard bounce or complaint re-evaluates the
scopes it counted for (a Query of at most 168 hourly items, only on a bad event, never per
sent message), and moves the state up (ok -> warn -> paused) with a conditional write. Only an
admin moves it down from paused (`resume`, recorded with who and when); warn goes back to ok
when an evaluation finds the rates under the warn thresholds. A resumed scope whose rate is
still over the pause threshold is paused again by its next hard bounce or complaint.

Windows roll without events too: the sweeper (sweeper.py, every 5 minutes) runs
`evaluate_active`, which re-evaluates every scope counted in the last ACTIVE_DAYS days or
not ok (the store files a scope under the day of its first count of each hour, and a not-ok
scope under each day it is evaluated, so the list is a Query per day, never a Scan). There a
warn clears by itself once the rates fall under the warn thresholds (or the volume under
min_volume), and each scope's 24 h rates are published as metrics with a `Domain` or `ApiKey`
dimension, which the template's Metrics Insights alarms read for every domain and key.
`paused` never clears by itself (decided, as SES keeps a paused account paused until a human
acts): a pause is a decision to stop and look; rates that fall only because nothing is sent
any more say nothing about the list, so resuming stays an admin's act (POST .../resume).

One write per send: a message's domain and key are counted in ONE UpdateItem on the pair's
hourly item (store.py files it under both), not one per scope; the ADD is atomic, so no crash
counts one scope and not the other. The price: a key's hours are read through an index
(gsi1), which is eventually consistent, so the evaluation right after a hard bounce may not
see that very bounce under the key for a moment (DynamoDB: usually well under a second); the
next event's evaluation or the sweeper's, within 5 minutes, does. The domain's are read from
its own partition, as before.

Paused: the API refuses new sends (403 sending_paused, SendingPausedError); the sender holds
queued mail (defers it with no attempt counted and `waiting: paused`) until resumed. A store
failure in any of this never blocks a send or a delivery (logged, counted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from .addresses import AddressError, to_ascii_domain
from .clock import iso
from .errors import SendingPausedError
from .records import ReputationCounts, ReputationState
from .store import Reputations

log = logging.getLogger("outpost.reputation")

WINDOWS = (("24h", 24), ("7d", 168))  # (name, hours)
STATES = ("ok", "warn", "paused")
# SES's published review and pause levels (SES developer guide, "Reputation metrics and
# enforcement": "under review" at 5% bounces / 0.1% complaints, "paused" at 10% / 0.5%).
WARN_BOUNCE, WARN_COMPLAINT = 0.05, 0.001
PAUSE_BOUNCE, PAUSE_COMPLAINT = 0.10, 0.005
MIN_VOLUME = 200  # recipients sent in a window before its rates count
STATE_CACHE = 10.0  # seconds the sender trusts a state it read (a pause reaches it within this)
ACTIVE_DAYS = 8  # days of the active-scope list evaluate_active reads: the 7-day window and one


@dataclass(frozen=True)
class Thresholds:
    warn_bounce: float = WARN_BOUNCE
    warn_complaint: float = WARN_COMPLAINT
    pause_bounce: float = PAUSE_BOUNCE
    pause_complaint: float = PAUSE_COMPLAINT
    min_volume: int = MIN_VOLUME

    def as_dict(self) -> dict[str, float | int]:
        return {"warn_bounce_rate": self.warn_bounce, "warn_complaint_rate": self.warn_complaint,
                "pause_bounce_rate": self.pause_bounce, "pause_complaint_rate": self.pause_complaint,
                "min_volume": self.min_volume}


@dataclass(frozen=True)
class Window:
    """One window's sums and rates; `counts`: whether its volume is representative."""

    name: str
    sent: int
    hard: int
    complaints: int
    min_volume: int

    @property
    def counts(self) -> bool:
        return self.sent >= self.min_volume

    @property
    def bounce_rate(self) -> float:
        return self.hard / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"sent": self.sent, "hard_bounces": self.hard, "complaints": self.complaints,
                "bounce_rate": round(self.bounce_rate, 6), "complaint_rate": round(self.complaint_rate, 6),
                "counts": self.counts}


@dataclass(frozen=True)
class Finding:
    """The verdict of an evaluation: the state the rates call for, and the worst crossing."""

    state: str  # ok | warn | paused
    reason: str | None = None  # e.g. "bounce rate 12.5% over 24h >= 10%"
    rate: float | None = None
    threshold: float | None = None


def domain_scope(domain: str) -> str:
    return f"domain:{domain}"


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def sending_domain(domain: str | None) -> str | None:
    """The scope's name of a From domain: its lowercase A-label (as the domains table keys it)."""
    if not domain:
        return None
    try:
        return to_ascii_domain(domain).lower().rstrip(".")
    except AddressError:
        return domain.lower().rstrip(".")


def hour_of(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%d%H")


def days_back(t: float, n: int) -> list[str]:
    """The UTC days (yyyymmdd) of `t` and the n-1 before it, newest first."""
    return [datetime.fromtimestamp(t - i * 86400, UTC).strftime("%Y%m%d") for i in range(n)]


def windows(buckets: Iterable[ReputationCounts], now: float, min_volume: int) -> dict[str, Window]:
    """Sum hourly buckets into the rolling windows: a window of H hours holds the current hour
    and the H-1 before it (a pure function)."""
    items = list(buckets)
    out: dict[str, Window] = {}
    for name, hours in WINDOWS:
        start = hour_of(now - (hours - 1) * 3600)
        inside = [b for b in items if b.hour >= start]
        out[name] = Window(name, sum(b.sent for b in inside), sum(b.hard for b in inside),
                           sum(b.complaints for b in inside), min_volume)
    return out


def judge_rates(ws: dict[str, Window], t: Thresholds) -> Finding:
    """The state the rates call for: paused over a pause threshold, warn over a warn one, in a
    window with a representative volume; the worst crossing names the reason (pure)."""
    found: list[tuple[int, Finding]] = []
    for w in ws.values():
        if not w.counts:
            continue
        for what, rate, warn, pause in (("bounce", w.bounce_rate, t.warn_bounce, t.pause_bounce),
                                        ("complaint", w.complaint_rate, t.warn_complaint, t.pause_complaint)):
            for level, limit in ((2, pause), (1, warn)):
                if rate >= limit:
                    state = STATES[level]
                    found.append((level, Finding(state, f"{what} rate {rate:.2%} over {w.name} "
                                                 f"({w.hard if what == 'bounce' else w.complaints} of "
                                                 f"{w.sent}) >= {limit:.2%}", round(rate, 6), limit)))
                    break
    if not found:
        return Finding("ok")
    return max(found, key=lambda f: f[0])[1]


class Reputation:
    """The breaker: counts, evaluations, state changes, the API's check and views, resume."""

    def __init__(self, store: Reputations, *, thresholds: Thresholds | None = None,
                 clock: Callable[[], float] = time.time,
                 count: Callable[[str, int], None] = lambda name, n: None,
                 gauge: Callable[[str, float, Mapping[str, str]], None] = lambda name, v, dims: None) -> None:
        self.store, self.t, self.clock, self.count = store, thresholds or Thresholds(), clock, count
        # BounceRate / ComplaintRate (24 h) of a scope after an evaluation, with its Domain or
        # ApiKey dimension: the alarms' input (template.yaml, Metrics Insights per dimension)
        self.gauge = gauge

    # ---- counting -----------------------------------------------------------------------------
    def count_sent(self, sends: Iterable[tuple[str | None, str | None, int]]) -> None:
        """Recipients accepted for delivery, as (From domain, key id, n): summed per (domain,
        key) pair first, so a send, or a batch of 500 messages from one domain and key, costs
        one UpdateItem (the pair's item counts for both scopes)."""
        now = self.clock()
        totals: dict[tuple[str | None, str | None], int] = {}
        for domain, key_id, n in sends:
            pair = self._pair(domain, key_id)
            if pair != (None, None):
                totals[pair] = totals.get(pair, 0) + n
        for (d, k), n in totals.items():
            if n:
                self._add(d, k, now, sent=n)

    def count_bounce(self, domain: str | None, key_id: str | None) -> None:
        """A hard bounce of a message from this domain and key: counted, then evaluated."""
        self._bad(domain, key_id, hard=1)

    def count_complaint(self, domain: str | None, key_id: str | None) -> None:
        self._bad(domain, key_id, complaints=1)

    def _bad(self, domain: str | None, key_id: str | None, *, hard: int = 0, complaints: int = 0) -> None:
        d, k = self._pair(domain, key_id)
        if not self._add(d, k, self.clock(), hard=hard, complaints=complaints):
            return
        for scope in (d, k):
            if scope is None:
                continue
            try:
                self.evaluate(scope)
            except Exception:  # noqa: BLE001 - an evaluation is retried by the next event
                log.exception("reputation evaluation failed", extra={"scope": scope})
                self.count("ReputationStoreError", 1)

    def _add(self, domain: str | None, key: str | None, now: float, **counts: int) -> bool:
        """One UpdateItem for the pair; on the pair's first count of the hour, file both scopes
        under today (evaluate_active's list). False if the count was lost (logged, counted)."""
        try:
            new = self.store.add_counts(domain, key, hour_of(now), now, **counts)
        except Exception:  # noqa: BLE001 - a lost count never fails a send or a bounce
            log.exception("reputation count failed", extra={"scope": domain or key, **counts})
            self.count("ReputationStoreError", 1)
            return False
        if new:
            try:
                self.store.mark_active([s for s in (domain, key) if s], days_back(now, 1)[0], now)
            except Exception:  # noqa: BLE001 - the next hour's first count files it again
                log.exception("reputation active mark failed", extra={"scope": domain or key})
                self.count("ReputationStoreError", 1)
        return True

    @staticmethod
    def _pair(domain: str | None, key_id: str | None) -> tuple[str | None, str | None]:
        d = sending_domain(domain)
        return (domain_scope(d) if d else None, key_scope(key_id) if key_id else None)

    @staticmethod
    def _scopes(domain: str | None, key_id: str | None) -> list[str]:
        d = sending_domain(domain)
        return [s for s in (domain_scope(d) if d else None, key_scope(key_id) if key_id else None) if s]

    # ---- evaluation ---------------------------------------------------------------------------
    def windows(self, scope: str) -> dict[str, Window]:
        now = self.clock()
        since = hour_of(now - (WINDOWS[-1][1] - 1) * 3600)
        return windows(self.store.counts_since(scope, since), now, self.t.min_volume)

    def evaluate(self, scope: str, current: ReputationState | None = None) -> ReputationState:
        """Re-judge a scope's rates and move its state: up by itself (ok -> warn -> paused),
        warn back to ok; never out of paused (an admin resumes). `current`: its state as just
        read (else read here); a write conditional on it never overwrites a newer one."""
        ws = self.windows(scope)
        day = ws["24h"]
        if day.counts:
            kind, name = scope.split(":", 1)
            dims = {"Domain" if kind == "domain" else "ApiKey": name}
            self.gauge("BounceRate", day.bounce_rate, dims)
            self.gauge("ComplaintRate", day.complaint_rate, dims)
        found = judge_rates(ws, self.t)
        if current is None:
            current = self.store.rep_states([scope]).get(scope) or ReputationState(scope)
        if current.state == "paused" or found.state == current.state:
            return current
        if found.state == "ok" and current.state != "warn":
            return current
        new = ReputationState(scope, found.state, iso(self.clock()), found.reason, found.rate,
                              found.threshold, current.resumed_by, current.resumed_at)
        if self.store.put_rep_state(new, current.state):
            log.warning("reputation state changed", extra={"scope": scope, "from": current.state,
                                                           "to": new.state, "reason": new.reason})
            self.count({"paused": "ReputationPaused", "warn": "ReputationWarn"}.get(new.state, "ReputationOk"), 1)
            return new
        return self.store.rep_states([scope]).get(scope) or current

    def evaluate_active(self) -> dict[str, int]:
        """The periodic evaluation (the sweeper's schedule): every scope counted in the last
        ACTIVE_DAYS days or not ok, re-judged as its windows roll (warn clears by itself,
        paused never; rates published). A scope that stays not ok is filed under today, so it
        is found after its counts have aged out. One scope's failure never stops the rest."""
        now = self.clock()
        days = days_back(now, ACTIVE_DAYS)
        today = self.store.active_scopes(days[:1])
        scopes = list(dict.fromkeys([*today, *self.store.active_scopes(days[1:])]))
        states = self.store.rep_states(scopes)  # one BatchGetItem per 100 scopes
        moved = failed = 0
        for scope in scopes:
            try:
                before = states.get(scope) or ReputationState(scope)
                after = self.evaluate(scope, before)
                moved += before.state != after.state
                if after.state != "ok" and scope not in today:
                    self.store.mark_active([scope], days[0], now)
            except Exception:  # noqa: BLE001 - the next run retries it
                log.exception("reputation evaluation failed", extra={"scope": scope})
                self.count("ReputationStoreError", 1)
                failed += 1
        self.count("ReputationScopesEvaluated", len(scopes) - failed)
        return {"reputation_scopes": len(scopes), "reputation_moved": moved, "reputation_failed": failed}

    # ---- the API ------------------------------------------------------------------------------
    def check_send(self, domain: str | None, key_id: str | None,
                   memo: dict[tuple[str, ...], dict[str, ReputationState]] | None = None) -> None:
        """SendingPausedError (403 sending_paused) if the domain or the key is paused. One
        BatchGetItem (a batch shares one per domain and key through `memo`); a failed read
        lets the send through (logged, counted)."""
        scopes = self._scopes(domain, key_id)
        states = memo.get(tuple(scopes)) if memo is not None else None
        if states is None:
            try:
                states = self.store.rep_states(scopes)
            except Exception:  # noqa: BLE001 - the breaker never takes the API down with it
                log.exception("reputation state read failed; the send goes through")
                self.count("ReputationStoreError", 1)
                return
            if memo is not None:
                memo[tuple(scopes)] = states
        for scope in scopes:
            st = states.get(scope)
            if st is not None and st.state == "paused":
                kind, name = scope.split(":", 1)
                what = "sending domain" if kind == "domain" else "API key"
                raise SendingPausedError(
                    f"sending is paused for the {what} {name!r} since {st.since}: {st.reason}; "
                    "an admin resumes it (POST /v1/reputation/...)",
                    field="from" if kind == "domain" else "Authorization")

    def view(self, scopes: Iterable[str]) -> dict:
        """GET /v1/reputation: each scope's windows, state, since when; the thresholds."""
        wanted = list(dict.fromkeys(scopes))
        states = self.store.rep_states(wanted)
        items = []
        for scope in wanted:
            kind, name = scope.split(":", 1)
            st = states.get(scope) or ReputationState(scope)
            ws = self.windows(scope)
            items.append({"type": kind, "name": name, "state": st.state, "since": st.since,
                          "reason": st.reason, "resumed_by": st.resumed_by, "resumed_at": st.resumed_at,
                          "windows": {k: w.as_dict() for k, w in ws.items()}})
        return {"thresholds": self.t.as_dict(), "items": items}

    def resume(self, scope: str, by: str) -> ReputationState | None:
        """An admin's resume of a paused scope (recorded with who and when); None if it was
        not paused. Its held mail goes out at the sender's next check."""
        current = self.store.rep_states([scope]).get(scope)
        if current is None or current.state != "paused":
            return None
        now = iso(self.clock())
        new = ReputationState(scope, "ok", now, f"resumed by {by}", None, None, by, now)
        if not self.store.put_rep_state(new, "paused"):
            return self.store.rep_states([scope]).get(scope)
        log.warning("reputation resumed", extra={"scope": scope, "by": by})
        self.count("ReputationResumed", 1)
        return new


class PauseCheck:
    """The sender's question, one per job: is this message's domain or key paused? Answers are
    cached per container for `ttl` seconds (a pause or a resume reaches every sender within
    it), and a failing read answers "not paused": the breaker never blocks delivery."""

    def __init__(self, store: Reputations, *, ttl: float = STATE_CACHE,
                 monotonic: Callable[[], float] = time.monotonic,
                 count: Callable[[str, int], None] = lambda name, n: None) -> None:
        self.store, self.ttl, self.monotonic, self.count = store, ttl, monotonic, count
        self._cache: dict[str, tuple[float, ReputationState | None]] = {}

    def paused(self, domain: str | None, key_id: str | None) -> ReputationState | None:
        """The paused state of the domain or the key (the domain's first), or None."""
        scopes = Reputation._scopes(domain, key_id)
        now = self.monotonic()
        missing = [s for s in scopes if s not in self._cache or now - self._cache[s][0] >= self.ttl]
        if missing:
            try:
                got = self.store.rep_states(missing)
            except Exception:  # noqa: BLE001 - a failing read never blocks delivery
                log.exception("reputation state read failed; delivering")
                self.count("ReputationStoreError", 1)
                return None
            if len(self._cache) > 10_000:
                self._cache.clear()
            for s in missing:
                self._cache[s] = (now, got.get(s))
        for s in scopes:
            st = self._cache[s][1]
            if st is not None and st.state == "paused":
                return st
        return None

    def forget(self) -> None:
        """SnapStart restore: cached states dropped (their times are the snapshot's clock)."""
        self._cache.clear()
