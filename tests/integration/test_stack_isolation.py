"""Two local stacks in one process (s16f item 3): while a test module's own stack is up
(api_rig.start_stack), it holds os.environ and bootstrap's cached clients and settings, and the
session stack's background work (its SQS pollers, stream poller, sweeper timer, inbound
listener) must not run: its functions would read and write the module stack's tables and
queues. They wait (outpost_local.runtime.Gate) and run on their own stack once it is back.

The proof uses the session sender's SQS poller: a job put on the session's queue while the other
stack is up. Before the gate, the poller took it at once and the sender, built from the other
stack's environment, found no such message and dropped the job: never delivered."""

from __future__ import annotations

import time

import pytest
from api_rig import start_stack, stop_stack

from outpost.api.service import SendService
from outpost.models import QueueJob, SendRequest
from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(240)


def _state(store, mid: str) -> str:  # type: ignore[no-untyped-def]
    stored = store.load(mid)
    assert stored is not None
    return str(stored.recipients[0].state.value)


def test_the_session_stacks_pollers_wait_while_another_stack_holds_the_environment(local_stack) -> None:  # type: ignore[no-untyped-def]
    from outpost.bootstrap import domains_table, job_queue, message_store, suppression_store

    # The session stack's own objects, built now with its environment (their clients keep its endpoints).
    store, queue = message_store(), job_queue()
    svc = SendService(store=store, suppressions=suppression_store(), queue=queue, domains=domains_table())
    mid = str(svc.send_one(SendRequest.model_validate({
        "from": f"shop@{SENDING_DOMAIN}", "to": "isolated@accept.test", "subject": "isolation",
        "text": "hello"}), enqueue=False)["id"])
    poller = local_stack.pollers["SenderFunction.Send"]
    other = start_stack("127.0.47")
    try:
        before = poller.invocations
        queue.send(QueueJob(message_id=mid))  # on the session's queue
        time.sleep(5)  # the poller's receive waits up to 1 s: five rounds, even on a loaded machine
        assert poller.invocations == before  # nothing ran on the other stack's environment
        assert _state(store, mid) == "queued"
    finally:
        stop_stack(other)
    deadline = time.time() + 90
    while _state(store, mid) in ("queued", "deferred") and time.time() < deadline:
        time.sleep(0.5)
    assert _state(store, mid) == "delivered"  # the job waited on its queue and ran on its own stack
    server = local_stack.mx["accept.test"].server
    assert [r for r in server.received if f"<{mid}@" in r.data.decode("ascii", "replace")]


def test_an_environment_changed_without_a_stack_of_its_own_holds_the_session_stack(local_stack, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """r17: a test that changes os.environ and drops bootstrap's caches with no stack of its own
    (tests/unit/test_net.py's fixture: DNS servers that answer nothing) ran while the session
    stack's pollers were live, so its sender ran on that environment, and kept the resolver it
    built from it once the environment was put back. With runtime.functions_paused (the
    stacks_paused fixture) the job waits, then runs on the session's own environment."""
    from outpost import bootstrap
    from outpost.bootstrap import domains_table, job_queue, message_store, suppression_store
    from outpost_local.runtime import functions_paused

    store, queue = message_store(), job_queue()
    svc = SendService(store=store, suppressions=suppression_store(), queue=queue, domains=domains_table())
    mid = str(svc.send_one(SendRequest.model_validate({
        "from": f"shop@{SENDING_DOMAIN}", "to": "held@accept.test", "subject": "held", "text": "hello"}),
        enqueue=False)["id"])
    server = local_stack.mx["accept.test"].server
    with functions_paused():
        monkeypatch.setenv("OUTPOST_DNS_SERVERS", "127.0.0.53:5353,127.0.0.54")  # as test_net.py's fixture
        bootstrap.reset()
        queue.send(QueueJob(message_id=mid))
        time.sleep(5)  # the poller's receive waits up to 1 s: five rounds, even on a loaded machine
        # (a receive already in flight may take the job: its invocation waits at the gate)
        assert _state(store, mid) == "queued" and not [r for r in server.received if f"<{mid}@" in
                                                       r.data.decode("ascii", "replace")]
        monkeypatch.undo()
    deadline = time.time() + 90
    while _state(store, mid) in ("queued", "deferred") and time.time() < deadline:
        time.sleep(0.5)
    assert _state(store, mid) == "delivered"
    assert [r for r in server.received if f"<{mid}@" in r.data.decode("ascii", "replace")]


def test_the_session_submission_server_keeps_its_own_stack_while_another_holds_the_environment(  # type: ignore[no-untyped-def]
        local_stack) -> None:
    """The session stack's SMTP submission server (s17d item 3) is not a function behind a gate:
    it keeps serving while a module stack holds os.environ and bootstrap's caches, so it must
    not read them per request. Its SendService and key ring are built once, at the session
    stack's start, with that stack's clients (bootstrap.submission_server): AUTH with the
    session's key, the message and its Message-ID claim land in the session's tables and
    queue, none in the other stack's; the job waits on the session's queue (its poller paused)
    and is delivered once the other stack is gone."""
    import smtplib
    import ssl
    import uuid

    from outpost.bootstrap import message_store

    store = message_store()  # the session's (built with its environment)
    other = start_stack("127.0.47")
    try:
        other_store = message_store()  # the other stack's (bootstrap's caches now point at it)
        s = smtplib.SMTP(local_stack.config.ip(1), local_stack.submission.ports["starttls"], timeout=60)
        s.starttls(context=ssl.create_default_context(cafile=str(local_stack.pki.ca_bundle)))
        s.login("outpost", local_stack.api_key)  # a key of the session's ApiKeysTable only
        data = (f"From: Shop <shop@{SENDING_DOMAIN}>\r\nTo: sub-isolated@accept.test\r\nSubject: isolation\r\n"
                f"Message-ID: <{uuid.uuid4().hex}@app.example>\r\n\r\nhello\r\n").encode()
        s.mail("app@example.org")
        s.rcpt("sub-isolated@accept.test")
        code, text = s.data(data)
        s.quit()
        assert code == 250, text
        mid = text.decode().rsplit(" ", 1)[-1]
        assert _state(store, mid) == "queued" and other_store.load(mid) is None
    finally:
        stop_stack(other)
    deadline = time.time() + 90
    while _state(store, mid) in ("queued", "deferred") and time.time() < deadline:
        time.sleep(0.5)
    assert _state(store, mid) == "delivered"
