"""The webhook dispatcher: an SQS batch of delivery jobs, each POSTed, recorded and retried.

Each job is one (event, endpoint) pair, and the batch's POSTs run concurrently, each bounded by
http.DEADLINE (10 s): a slow or dead endpoint costs its own jobs 10 s, never another endpoint's.
One job's run, as small named steps (Postal):
  hop        a job due later than SQS's 15-minute delay goes back to the queue (not_before)
  load       the endpoint; gone (deleted): the job ends; disabled: a `failed` attempt, ends
  dedupe     an event already delivered to this endpoint (a duplicate job) ends, unless replayed
  attempt    ssrf.check_url again (DNS may have changed), sign, POST to the checked address
  record     2xx: delivered. Anything else (a 3xx, 4xx, 5xx, a timeout, a refused address, no
             connection) fails the attempt: the next one is queued per the schedule, first, then
             the attempt is recorded; after the last, the delivery is `failed`. An endpoint whose
             attempts have all failed for DISABLE_AFTER (5 days) is disabled (metric
             WebhookEndpointDisabled, shown by GET /v1/webhooks/{id}).
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
        if not records:
            return {"batchItemFailures": []}
        with ThreadPoolExecutor(max_workers=len(records)) as pool:
            done = list(pool.map(self._run_record, records))
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                      for r, ok in zip(records, done, strict=True) if not ok]}

    def _run_record(self, record: dict[str, Any]) -> bool:
        try:
            job = WebhookJob.model_validate_json(record["body"])
        except (ValidationError, KeyError):
            log.error("malformed webhook job dropped", extra={"message_id": record.get("messageId")})
            self.count("WebhookJobMalformed", 1)
            return True
        try:
            self.run(job)
            return True
        except Exception:  # noqa: BLE001 - the job comes back from SQS (at least once)
            log.exception("webhook job failed; SQS will redeliver it",
                          extra={"event_id": job.event_id, "endpoint_id": job.endpoint_id})
            return False

    # ---- one job -------------------------------------------------------------------------------
    def run(self, job: WebhookJob) -> str:
        """One job's steps; returns what happened (hop, gone, disabled, duplicate, delivered,
        retrying, failed)."""
        now = self.clock()
        if job.not_before is not None and job.not_before > now + 1:
            self.queue.send(job, job.not_before - now)
            return "hop"
        endpoint = self.store.endpoint(job.endpoint_id)
        if endpoint is None:
            self.count("WebhookEndpointGone", 1)
            return "gone"
        if not endpoint.enabled:
            self._attempt_record(job, "failed", now, error="endpoint disabled")
            return "disabled"
        if not job.replay and self.store.delivered(job.endpoint_id, job.event_id):
            self.count("WebhookDuplicate", 1)
            return "duplicate"
        started = time.monotonic()
        answer, error = self.attempt(endpoint, job)
        return self.record(endpoint, job, answer, error, int((time.monotonic() - started) * 1000))

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

    def record(self, endpoint: WebhookEndpoint, job: WebhookJob, answer: HttpAnswer | None,
               error: str | None, duration_ms: int | None = None) -> str:
        now = self.clock()
        took = answer.duration_ms if answer is not None else duration_ms
        if answer is not None and 200 <= answer.code < 300:
            self.store.mark_delivered(job.endpoint_id, job.event_id, now)
            self._attempt_record(job, "delivered", now, answer=answer, took=took)
            if endpoint.failing_since is not None or endpoint.last_success_at is None:
                self.store.update_endpoint(job.endpoint_id, failing_since=None, last_success_at=iso(now))
            self.count("WebhookDelivered", 1)
            return "delivered"
        if answer is not None:
            error = f"HTTP {answer.code}" + (" (redirects are not followed)" if 300 <= answer.code < 400 else "")
        if self._disable_if_failing(endpoint, now):
            self._attempt_record(job, "failed", now, answer=answer, error=f"{error}; endpoint disabled", took=took)
            return "failed"
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

    def _disable_if_failing(self, endpoint: WebhookEndpoint, now: float) -> bool:
        """Start the endpoint's failing period, or end the endpoint when it has lasted
        DISABLE_AFTER. True if the endpoint is (now) disabled."""
        since = endpoint.failing_since
        if since is None:
            self.store.update_endpoint(endpoint.endpoint_id, failing_since=now)
            return False
        if now - since < self.disable_after:
            return False
        reason = f"every attempt failed since {iso(since)}"
        if self.store.update_endpoint(endpoint.endpoint_id, only_if_enabled=True, enabled=False,
                                      disabled_at=iso(now), disabled_reason=reason) is not None:
            log.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint.endpoint_id, "reason": reason})
            self.count("WebhookEndpointDisabled", 1)
        return True

    def _attempt_record(self, job: WebhookJob, status: str, now: float, *, answer: HttpAnswer | None = None,
                        error: str | None = None, next_at: str | None = None, took: int | None = None) -> None:
        self.store.record_attempt(WebhookAttempt(
            endpoint_id=job.endpoint_id, event_id=job.event_id, type=job.type, attempt=job.attempt,
            status=status, at=iso(now), code=answer.code if answer else None,
            duration_ms=took, error=error,
            response=answer.excerpt if answer and answer.excerpt else None, next_at=next_at,
            replay=job.replay), now)
