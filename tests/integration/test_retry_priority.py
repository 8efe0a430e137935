"""Retries keep their schedule under a backlog of new mail (issue 8, the harness's finding).

Through the local stack as deployed: the API stores a batch, the SQS event source mappings
(one poller per mapping of template.yaml: SendQueue for new mail, RetryQueue for retries)
invoke the sender's handler, and real MX hosts answer on loopback. A greylisted recipient is
the first job of a batch of new mail; its retry (451 4.7.1 first, due one schedule step
later) must be attempted while the rest of the batch is still waiting, not after it.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from datetime import datetime
from typing import Any

import pytest

from outpost.bootstrap import message_store
from outpost_local.mx import Behaviour
from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(240)

BACKLOG = 200


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _count(sqs, url: str) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return sum(int(v) for v in a.values())


def test_the_sender_and_the_sweeper_queue_retries_on_the_retry_queue(local_stack, monkeypatch):
    from outpost import bootstrap

    retry_url = local_stack.env["OUTPOST_RETRY_QUEUE_URL"]
    assert retry_url and retry_url != local_stack.env["OUTPOST_SEND_QUEUE_URL"]
    assert bootstrap.delivery_service().queue.url == retry_url
    assert bootstrap.sweeper().queue.url == retry_url
    assert bootstrap.job_queue().url == local_stack.env["OUTPOST_SEND_QUEUE_URL"]  # the API's: new mail
    # A stack deployed before the retry queue has no such variable: retries go to SendQueue.
    try:
        monkeypatch.setenv("OUTPOST_RETRY_QUEUE_URL", "")
        bootstrap.settings.cache_clear()
        bootstrap.retry_queue.cache_clear()
        assert bootstrap.retry_queue().url == local_stack.env["OUTPOST_SEND_QUEUE_URL"]
    finally:
        monkeypatch.undo()
        bootstrap.settings.cache_clear()
        bootstrap.retry_queue.cache_clear()
    assert bootstrap.retry_queue().url == retry_url


def test_the_local_stack_polls_both_of_the_senders_queues(local_stack):
    pollers = local_stack.pollers
    # every SQS mapping of the template: the sender's two queues, and the webhook dispatcher's
    assert set(pollers) == {"SenderFunction.Send", "SenderFunction.Retry", "WebhookDispatcherFunction.Deliver"}
    urls = {name: p.url for name, p in pollers.items()}
    assert urls["SenderFunction.Send"] == local_stack.env["OUTPOST_SEND_QUEUE_URL"]
    assert urls["SenderFunction.Retry"] == local_stack.env["OUTPOST_RETRY_QUEUE_URL"]
    assert urls["SenderFunction.Send"] != urls["SenderFunction.Retry"]
    # Each mapping sends events with its own queue's ARN, as Lambda's do.
    assert pollers["SenderFunction.Retry"].arn == local_stack.stack.attributes[("RetryQueue", "Arn")]


class HeldGreylist(Behaviour):
    """451 4.7.1 to a recipient's first RCPT, answered only once `release` is set (or after
    `hold` seconds); every later RCPT is accepted. Holding the first reply until the test's
    batch is accepted (stored and every job queued) puts the retry's job behind the whole
    backlog, as it is when a retry falls due during a burst of new mail."""

    def __init__(self, release: threading.Event, hold: float = 30.0) -> None:
        self.release, self.hold = release, hold
        self.seen: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        if address.lower() in self.seen:
            return None
        self.seen.add(address.lower())
        await asyncio.to_thread(self.release.wait, self.hold)
        return "451 4.7.1 Greylisted, please retry"


def test_a_due_retry_is_attempted_before_a_new_mail_backlog_drains(local_stack, api, mx_factory):
    import boto3

    tag = secrets.token_hex(4)
    domain = f"held-{tag}.test"
    name = f"mx.{domain}"
    release = threading.Event()
    held = mx_factory(local_stack.config.ip(30), local_stack.smtp_port, HeldGreylist(release),
                      local_stack.pki.server_context(name), hostname=name)
    local_stack.dns.add(domain, "MX", (10, name))
    local_stack.dns.add(name, "A", local_stack.config.ip(30))
    greylisted = f"retry@{domain}"
    body = {"from": f"Shop <shop@{SENDING_DOMAIN}>", "subject": f"Priority {tag}", "text": "Hello."}
    # One batch: the greylisted message first, then the backlog of new mail.
    messages = [dict(body, to=[greylisted])] + [dict(body, to=[f"bulk-{tag}-{i}@accept.test"])
                                                for i in range(BACKLOG)]
    retry_poller = local_stack.pollers["SenderFunction.Retry"]
    retry_before = retry_poller.invocations
    status, res = api.call("POST", "/v1/messages/batch", {"messages": messages})
    release.set()  # every job is queued: now the first attempt gets its 451
    assert status in (200, 207), res
    assert res["accepted"] == BACKLOG + 1, res
    mid = res["results"][0]["id"]

    accept = local_stack.mx["accept.test"].server
    sqs = boto3.client("sqs")
    send_url = local_stack.env["OUTPOST_SEND_QUEUE_URL"]
    marker = f"Priority {tag}".encode()
    retried_at = drained_at = None
    waiting: int | None = None  # new-mail jobs still on SendQueue when the retry got through
    deadline = time.time() + 200
    while (retried_at is None or drained_at is None) and time.time() < deadline:
        now = time.time()
        if retried_at is None and any(greylisted in r.rcpt_tos for r in held.received):
            retried_at = now
            waiting = _count(sqs, send_url)
        if drained_at is None and sum(1 for r in accept.received if marker in r.data) >= BACKLOG:
            drained_at = now
        time.sleep(0.05)
    assert retried_at is not None, "the greylisted recipient was never retried"
    assert drained_at is not None, "the backlog never drained"

    r = message_store().load(mid).recipients[0].as_dict()
    assert r["state"] == "delivered"
    attempts = r["attempts"]
    assert [a["code"] for a in attempts] == [451, 250]  # greylisted once, then taken
    first, second = _ts(attempts[0]["at"]), _ts(attempts[1]["at"])
    step = float(local_stack.env["OUTPOST_RETRY_SCHEDULE"].split(",")[0])  # the schedule's first step
    print(f"retry {second - first:.1f} s after the first attempt (schedule: {step:.0f} s); backlog of "
          f"{BACKLOG} drained {drained_at - first:.1f} s after it; {waiting} new-mail jobs still queued")
    # The retry is attempted while new mail is still waiting, about on schedule (the sender
    # takes a recipient due within a second), far sooner than the backlog takes to drain.
    # Before the retry queue its job waited behind the backlog: 0 left, after the drain.
    assert waiting and waiting > 0
    assert second < drained_at - 1.0
    # How late on schedule is not asserted: the local stack runs one function's invocations one
    # at a time (new-mail and retry alike), so on two loaded cores the retry waits for the
    # new-mail invocation in progress. bench/retry_priority.py measures the lateness.
    assert retry_poller.invocations > retry_before  # it came through the Retry mapping
