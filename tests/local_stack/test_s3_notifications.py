"""The local stack's S3 event notifications (outpost_local/s3events.py), against moto's real S3
server: a new object under the watched prefix invokes the function once with S3's event (the key
URL-encoded, as S3 sends it), objects there before the start are not replayed, other prefixes
never invoke, and a failing invocation is retried as Lambda retries an async event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import pytest

from outpost_local.aws import LocalAws
from outpost_local.s3events import ASYNC_RETRIES, S3NotificationPoller

HOST = "127.0.46.1"
BUCKET = "outpost-mail-notify"


class Recorder:
    """A LocalFunction stand-in: the events it was invoked with; fails its first `fail` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.events: list[dict] = []
        self.fail = fail
        self.calls = 0
        self.lock = threading.Lock()

    def invoke(self, event: dict) -> Any:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail:
                raise RuntimeError("a failing invocation")
            self.events.append(event)
        return {"ok": True}

    def keys(self) -> list[str]:
        with self.lock:
            return [unquote_plus(e["Records"][0]["s3"]["object"]["key"]) for e in self.events]


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    aws = LocalAws(HOST, dynamodb_local=False)
    aws.start()
    try:
        client = aws.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        aws.stop()


def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_new_objects_under_the_prefix_invoke_once_and_old_ones_are_not_replayed(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="inbound/s3/old.eml", Body=b"old")
    fn = Recorder()
    poller = S3NotificationPoller(s3, BUCKET, "inbound/s3/", fn, name="BounceProcessorFunction.InboundObject")  # type: ignore[arg-type]
    poller.start()
    try:
        s3.put_object(Bucket=BUCKET, Key="inbound/s3/simulator/a b+c.eml", Body=b"12345")
        s3.put_object(Bucket=BUCKET, Key="inbound/ses/not-mine.eml", Body=b"x")
        s3.put_object(Bucket=BUCKET, Key="bodies/not-mine.json", Body=b"x")
        _until(lambda: fn.keys() == ["inbound/s3/simulator/a b+c.eml"])
        time.sleep(1.0)  # several more polls: nothing is invoked twice
    finally:
        poller.stop()
    assert fn.keys() == ["inbound/s3/simulator/a b+c.eml"]
    rec = fn.events[0]["Records"][0]
    assert rec["eventSource"] == "aws:s3" and rec["eventName"] == "ObjectCreated:Put"
    assert rec["s3"]["bucket"]["name"] == BUCKET and rec["s3"]["object"]["size"] == 5
    assert rec["s3"]["object"]["key"] == "inbound/s3/simulator/a+b%2Bc.eml"  # S3's encoding


def test_a_failing_invocation_is_retried_as_an_async_event(s3: Any) -> None:
    fn = Recorder(fail=ASYNC_RETRIES)
    poller = S3NotificationPoller(s3, BUCKET, "inbound/s3/", fn, name="retry")  # type: ignore[arg-type]
    poller.start()
    try:
        s3.put_object(Bucket=BUCKET, Key="inbound/s3/retried.eml", Body=b"x")
        _until(lambda: fn.keys() == ["inbound/s3/retried.eml"])
    finally:
        poller.stop()
    assert fn.calls == ASYNC_RETRIES + 1 and fn.keys() == ["inbound/s3/retried.eml"]


def test_the_poller_keeps_a_bounded_number_of_results() -> None:
    """Review r14: `make dev` runs for hours; each invocation's result used to be kept forever."""
    from outpost_local.s3events import KEPT_RESULTS

    class Listing:
        def __init__(self) -> None:
            self.n = 0

        def list_objects_v2(self, **_: Any) -> dict:
            self.n += 50
            return {"Contents": [{"Key": f"inbound/s3/{i}.eml", "Size": 1} for i in range(self.n)]}

    fn = Recorder()
    poller = S3NotificationPoller(Listing(), BUCKET, "inbound/s3/", fn, name="bounded")  # type: ignore[arg-type]
    for _ in range(3 * KEPT_RESULTS // 50):
        poller.poll_once()
    assert len(fn.events) > 2 * KEPT_RESULTS  # every new object invoked once
    assert len(poller.results) == KEPT_RESULTS


def test_an_overwritten_key_is_notified_again_and_an_unchanged_one_is_not(s3: Any) -> None:
    """S3 notifies every PUT: a key written again (another ETag or LastModified) is a new object,
    and a key deleted and written again too."""
    fn = Recorder()
    poller = S3NotificationPoller(s3, BUCKET, "inbound/s3/again/", fn, name="again")  # type: ignore[arg-type]
    poller.start()
    key = "inbound/s3/again/report.eml"
    try:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"first")
        _until(lambda: len(fn.keys()) == 1)
        time.sleep(1.0)  # several polls of the unchanged object: no second event
        assert fn.keys() == [key]
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"second, longer")
        _until(lambda: len(fn.keys()) == 2)
        s3.delete_object(Bucket=BUCKET, Key=key)
        time.sleep(0.5)
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"third")
        _until(lambda: len(fn.keys()) == 3)
        time.sleep(1.0)
    finally:
        poller.stop()
    assert fn.keys() == [key] * 3
    assert [e["Records"][0]["s3"]["object"]["size"] for e in fn.events] == [5, 14, 5]


def test_an_overwrite_with_the_same_bytes_within_one_second_is_notified(s3: Any) -> None:
    """s17d: the same bytes PUT again within one LastModified second listed exactly as before
    (stock moto lists LastModified to the second, and the ETag is the bytes' MD5), so the
    overwrite was never notified. Two polls by hand around the second PUT, both PUTs inside one
    wall-clock second (tried again if a loaded machine spills over it; the last try is checked
    either way: every overwrite is notified, within a second or not)."""
    key = "inbound/s3/same/report.eml"
    for _ in range(10):
        fn = Recorder()
        poller = S3NotificationPoller(s3, BUCKET, "inbound/s3/same/", fn, name="same")  # type: ignore[arg-type]
        while time.time() % 1 > 0.2:  # start near the beginning of a second
            time.sleep(0.01)
        second = int(time.time())
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"the same bytes")
        first = poller.poll_once()
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"the same bytes")
        again = poller.poll_once()
        if int(time.time()) == second:
            break
        s3.delete_object(Bucket=BUCKET, Key=key)
    assert (first, again) == (1, 1) and fn.keys() == [key, key]
    assert poller.poll_once() == 0  # and not again while it stays unchanged
