"""The local AWS itself: DynamoDB Local is the engine when Java is there, it listens on loopback
only, and moto's SQS (through outpost_local.moto_server) loses and duplicates nothing under
concurrent send / receive / delete."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from outpost_local.aws import LocalAws
from outpost_local.dynamodb_local import ENGINE_LOCAL, DynamoDbLocal, installed
from outpost_local.lifecycle import free_port

pytestmark = pytest.mark.timeout(240)

HOST = "127.0.12.1"


def test_the_local_stack_runs_dynamodb_local_when_java_is_available(local_stack: Any) -> None:
    if shutil.which("java") is None:
        pytest.skip("no Java here: the stack falls back to moto's DynamoDB (and says so)")
    assert local_stack.dynamodb_engine == ENGINE_LOCAL, local_stack.dynamodb_engine_reason
    ddb = local_stack.aws.client("dynamodb")
    names = ddb.list_tables()["TableNames"]
    assert any(n.endswith("MessagesTable") for n in names)
    # The handlers' environment points DynamoDB (only) at it.
    assert local_stack.env["AWS_ENDPOINT_URL_DYNAMODB"] == local_stack.aws.dynamodb.endpoint
    assert local_stack.env["AWS_ENDPOINT_URL"] == local_stack.aws.endpoint
    # moto's DynamoDB holds no tables: nothing was provisioned there by mistake.
    import boto3

    moto = boto3.client("dynamodb", endpoint_url=local_stack.aws.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    assert moto.list_tables()["TableNames"] == []


def test_dynamodb_local_listens_on_its_loopback_address_only() -> None:
    if shutil.which("java") is None or not installed():
        pytest.skip("DynamoDB Local is not installed here")
    port = free_port(HOST)
    db = DynamoDbLocal(HOST, port)
    assert db.loopback_only, "the loopback launcher was not built (javac missing at make install)"
    db.start()
    try:
        listening = _listening_addresses(port)
        assert listening == {HOST}, listening
        assert db.rss_bytes() > 0
    finally:
        db.stop()


def _listening_addresses(port: int) -> set[str]:
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                    if len(addr) == 8 or addr.startswith("0000000000000000FFFF0000"):  # v4, v4-mapped
                        v4 = addr[-8:]
                        out.add(".".join(str(int(v4[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                    else:
                        out.add(addr)  # any other IPv6 address, e.g. :: (all interfaces)
    return out


# -- moto's SQS, serialised -------------------------------------------------------------------


def test_a_delete_waits_for_the_queue_lock() -> None:
    """Stock moto rebuilds a queue's message list in delete_message without the lock that
    add_message takes, so a message sent meanwhile is dropped. After patch_sqs() a delete
    waits while another thread holds the queue's lock (deterministic, in process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    from outpost_local.moto_server import patch_sqs

    patch_sqs()
    backend = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-3"]
    queue = backend.create_queue("lock-probe")
    backend.send_message("lock-probe", "a")
    backend.send_message("lock-probe", "b")
    [m] = backend.receive_message("lock-probe", 1, 0, 300)
    done = threading.Event()
    with queue._messages_lock:  # what add_message holds while it appends
        t = threading.Thread(target=lambda: (backend.delete_message("lock-probe", m.receipt_handle),
                                             done.set()))
        t.start()
        assert not done.wait(0.3), "delete_message ran while the queue's lock was held"
    assert done.wait(10)
    t.join()
    assert [x.body for x in queue._messages] == ["b"]


@pytest.fixture(scope="module")
def moto_sqs() -> Iterator[LocalAws]:
    aws = LocalAws(HOST, dynamodb_local=False)  # SQS only: no JVM
    aws.start()
    try:
        yield aws
    finally:
        aws.stop()


def test_concurrent_send_receive_delete_loses_and_duplicates_nothing(moto_sqs: LocalAws) -> None:
    """8 threads on one queue: 4 send 2,000 messages one by one while 4 receive (10 at a time)
    and delete them one by one. Every message is received exactly once and the queue ends
    empty. (Stock moto handed the same message to two receivers in each of two runs of this
    shape, 1 and 3 times; it can also drop a message sent during a delete.)"""
    total, senders, receivers = 2000, 4, 4
    url = moto_sqs.client("sqs").create_queue(QueueName="race", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []
    sending = [senders]

    def send(n: int) -> None:
        try:
            sqs = moto_sqs.client("sqs")
            for k in range(total // senders):
                sqs.send_message(QueueUrl=url, MessageBody=f"{n}-{k}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            with lock:
                sending[0] -= 1

    def receive() -> None:
        try:
            sqs = moto_sqs.client("sqs")
            idle = 0
            while idle < 3:
                msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                with lock:
                    seen.update(m["Body"] for m in msgs)
                    idle = idle + 1 if not msgs and sending[0] == 0 else 0
                for m in msgs:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t0 = time.monotonic()
    pool = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    pool += [threading.Thread(target=receive) for _ in range(receivers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(200)
    assert not errors, errors
    sent = {f"{n}-{k}" for n in range(senders) for k in range(total // senders)}
    assert set(seen) == sent, f"lost {len(sent - set(seen))}"
    assert {b: c for b, c in seen.items() if c > 1} == {}
    sqs = moto_sqs.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert time.monotonic() - t0 < 200
