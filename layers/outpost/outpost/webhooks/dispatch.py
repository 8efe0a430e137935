"""The webhook dispatcher: an SQS batch of delivery jobs, each POSTed, recorded and retried.

Each job is one (event, endpoint) pair, and the batch's POSTs run concurrently, each bounded by
http.DEADLINE (10 s): a slow or dead endpoint costs its own jobs 10 s, never another endpoint's.
A batch's run, as small named steps (Postal):
  prepare    the batch's endpoints (one read each) and which of its events they already got
             (one BatchGetItem)
  per job, concurrently:
    hop      a job due later than SQS's 15-minute delay goes back to the queue (not_before)
    load     its endpoint; gone (deleted): the job ends; disabled: a `failed` attempt, ends
    dedupe   an event already delivered to this endpoint (a duplicate job) ends, unless replayed
    attempt  ssrf.check_url again (DNS may have changed), sign, POST to the checked address
    record   2xx: delivered. Anything else (a 3xx, 4xx, 5xx, a timeout, a refused address, no
             connection) fails the attempt: the next one is queued per the schedule, first, then
             the attempt is recorded; after the last, the delivery is `failed`
  settle     per endpoint, once: a success ends its failing period; failures start one; an
             endpoint whose attempts have all failed for DISABLE_AFTER (5 days) is disabled
             (metric WebhookEndpointDisabled, shown by GET /v1/webhooks/{id}), and the jobs
             still queued for it end as `failed` when they come
A job whose step raised (the store or the queue failing) is reported as a batch item failure
and comes back from SQS: at least once, never dropped.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..clock import iso
from ..errors import WebhookTransportError, WebhookUrlError
from ..store import WebhookJobs, Webhooks
from .http import HttpAnswer, post
from .jobs import DEFAULT_SCHEDULE, DISABLE_AFTER, WebhookJob, delay_after
from .records import WebhookAttempt, WebhookEndpoint
from .signing import signed_headers
from .ssrf import Resolve, check_url

log = logging.getLogger("outpost.webhooks")

Post = Callable[..., HttpAnswer]


def body_of(job: WebhookJob) -> bytes:
    """The bytes that are signed and sent: the event's payload as compact JSON."""
    return json.dumps(job.payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Batch:
    """What a batch's jobs share: their endpoints (None: deleted), the (endpoint, event) pairs
    delivered already, and each endpoint's attempts' results (True: delivered)."""

    endpoints: dict[str, WebhookEndpoint | None]
    delivered: set[tuple[str, str]]
    results: dict[str, list[bool]] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, store: Webhooks, queue: WebhookJobs, *, resolve: Resolve, context: ssl.SSLContext,
                 allow_local: bool = False, schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
                 disable_after: float = DISABLE_AFTER, clock: Callable[[], float] = time.time,
                 count: Callable[[str, int], None] = lambda name, n: None, post: Post = post) -> None:
        self.store, self.queue, self.resolve, self.context = store, queue, resolve, context
        self.allow_local, self.schedule, self.disable_after = allow_local, schedule, disable_after
        self.clock, self.count, self.post = clock, count, post

    # ---- the batch -----------------------------------------------------------------------------
    def handle_sqs_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Every record at once (threads), each bounded; failures reported per item."""
        records = event.get("Records") or []
        jobs = [self._parse(r) for r in records]
        outcomes = self.run_batch(jobs)
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                      for r, o in zip(records, outcomes, strict=True) if o is None]}

    def run_batch(self, jobs: list[WebhookJob | None]) -> list[str | None]:
        """Each job's outcome (None: it raised, and SQS must redeliver it; "malformed" for a
        body that is no job, dropped)."""
        real = [j for j in jobs if j is not None]
        if not real:
            return ["malformed"] * len(jobs)
        try:
            batch = self.prepare(real)
        except Exception:  # noqa: BLE001 - the whole batch comes back from SQS
            log.exception("reading the batch's endpoints failed")
            return [None if j is not None else "malformed" for j in jobs]
        with ThreadPoolExecutor(max_workers=len(real), thread_name_prefix="webhook-dispatch") as pool:
            done = list(pool.map(lambda j: self._run_safe(j, batch) if j is not None else "malformed", jobs))
        try:
            self.settle(batch)
        except Exception:  # noqa: BLE001 - the attempts are recorded; the next batch settles
            log.exception("updating the endpoints' failing periods failed")
        return done

    def run(self, job: WebhookJob) -> str | None:
        """One job as a batch of one."""
        return self.run_batch([job])[0]

    def _parse(self, record: dict[str, Any]) -> WebhookJob | None:
        try:
            return WebhookJob.model_validate_json(record["body"])
        except (ValidationError, KeyError):
            log.error("malformed webhook job dropped", extra={"message_id": record.get("messageId")})
            self.count("WebhookJobMalformed", 1)
            return None

    def prepare(self, jobs: list[WebhookJob]) -> Batch:
        ids = list(dict.fromkeys(j.endpoint_id for j in jobs))
        pairs = [(j.endpoint_id, j.event_id) for j in jobs if not j.replay]
        return Batch({i: self.store.endpoint(i) for i in ids}, self.store.delivered_pairs(pairs) if pairs else set())

    def _run_safe(self, job: WebhookJob, batch: Batch) -> str | None:
        try:
            return self.run_job(job, batch)
        except Exception:  # noqa: BLE001 - the job comes back from SQS (at least once)
            log.exception("webhook job failed; SQS will redeliver it",
                          extra={"event_id": job.event_id, "endpoint_id": job.endpoint_id})
            return None

    # ---- one job -------------------------------------------------------------------------------
    def run_job(self, job: WebhookJob, batch: Batch) -> str:
        """One job's steps; returns what happened (hop, gone, disabled, duplicate, delivered,
        retrying, failed)."""
        now = self.clock()
        if job.not_before is not None and job.not_before > now + 1:
            self.queue.send(job, job.not_before - now)
            return "hop"
        endpoint = batch.endpoints.get(job.endpoint_id)
        if endpoint is None:
            self.count("WebhookEndpointGone", 1)
            return "gone"
        if not endpoint.enabled:
            self._attempt_record(job, "failed", now, error="endpoint disabled")
            return "disabled"
        if not job.replay and (job.endpoint_id, job.event_id) in batch.delivered:
            self.count("WebhookDuplicate", 1)
            return "duplicate"
        started = time.monotonic()
        answer, error = self.attempt(endpoint, job)
        outcome = self.record(job, answer, error, int((time.monotonic() - started) * 1000))
        batch.results.setdefault(job.endpoint_id, []).append(outcome == "delivered")
        return outcome

    def attempt(self, endpoint: WebhookEndpoint, job: WebhookJob) -> tuple[HttpAnswer | None, str | None]:
        """Check the URL again, sign, POST. (answer, None) or (None, why no answer)."""
        body = body_of(job)
        try:
            target = check_url(endpoint.url, resolve=self.resolve, allow_local=self.allow_local)
        except WebhookUrlError as exc:
            self.count("WebhookRefused", 1)
            return None, f"refused: {exc}"
        now = self.clock()
        headers = signed_headers(endpoint.signing_secrets(now), job.event_id, int(now), body)
        try:
            return self.post(target, body, headers, context=self.context), None
        except WebhookTransportError as exc:
            return None, str(exc)

    def record(self, job: WebhookJob, answer: HttpAnswer | None, error: str | None,
               duration_ms: int | None = None) -> str:
        now = self.clock()
        took = answer.duration_ms if answer is not None else duration_ms
        if answer is not None and 200 <= answer.code < 300:
            self._attempt_record(job, "delivered", now, answer=answer, took=took)
            self.count("WebhookDelivered", 1)
            return "delivered"
        if answer is not None:
            error = f"HTTP {answer.code}" + (" (redirects are not followed)" if 300 <= answer.code < 400 else "")
        delay = delay_after(job.attempt, self.schedule)
        if delay is None:
            self._attempt_record(job, "failed", now, answer=answer, error=error, took=took)
            self.count("WebhookFailed", 1)
            return "failed"
        # Queued before it is recorded: a crash in between repeats an attempt, never loses one.
        self.queue.send(job.model_copy(update={"attempt": job.attempt + 1, "not_before": now + delay}), delay)
        self._attempt_record(job, "retrying", now, answer=answer, error=error, next_at=iso(now + delay), took=took)
        self.count("WebhookRetrying", 1)
        return "retrying"

    # ---- the endpoints, once per batch -------------------------------------------------------------
    def settle(self, batch: Batch) -> None:
        """A success ends the endpoint's failing period; failures alone start one, or, when it
        has lasted DISABLE_AFTER, disable the endpoint."""
        now = self.clock()
        for endpoint_id, results in batch.results.items():
            endpoint = batch.endpoints.get(endpoint_id)
            if endpoint is None or not results:
                continue
            if any(results):
                self.store.update_endpoint(endpoint_id, failing_since=None, last_success_at=iso(now))
            elif endpoint.failing_since is None:
                self.store.update_endpoint(endpoint_id, failing_since=now)
            elif now - endpoint.failing_since >= self.disable_after:
                self._disable(endpoint, now)

    def _disable(self, endpoint: WebhookEndpoint, now: float) -> None:
        reason = f"every attempt failed since {iso(endpoint.failing_since or now)}"
        if self.store.update_endpoint(endpoint.endpoint_id, only_if_enabled=True, enabled=False,
                                      disabled_at=iso(now), disabled_reason=reason) is not None:
            log.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint.endpoint_id, "reason": reason})
            self.count("WebhookEndpointDisabled", 1)

    def _attempt_record(self, job: WebhookJob, status: str, now: float, *, answer: HttpAnswer | None = None,
                        error: str | None = None, next_at: str | None = None, took: int | None = None) -> None:
        self.store.record_attempt(WebhookAttempt(
            endpoint_id=job.endpoint_id, event_id=job.event_id, type=job.type, attempt=job.attempt,
            status=status, at=iso(now), code=answer.code if answer else None,
            duration_ms=took, error=error,
            response=answer.excerpt if answer and answer.excerpt else None, next_at=next_at,
            replay=job.replay), now)
