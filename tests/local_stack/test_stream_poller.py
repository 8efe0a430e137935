"""The local DynamoDB stream event source mapping (outpost_local.poller.StreamPoller) against a
scripted stream: shards that split (a child is read only after its parent is read to its end),
Lambda's FilterCriteria, ReportBatchItemFailures (resume at the first failed record), an
invocation that raises (the batch again) and the OnFailure destination after the retries. The
real stream (DynamoDB Local) is exercised end to end by tests/e2e/test_events.py."""

from __future__ import annotations

import json
from typing import Any

from outpost_local.poller import StreamPoller, matches

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"
PATTERN = {"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "RCPT#"}]}}}}


class _Exc:
    class TrimmedDataAccessException(Exception):
        pass

    class ExpiredIteratorException(Exception):
        pass


class Streams:
    """DescribeStream, GetShardIterator and GetRecords over scripted shards: shard id ->
    (parent, records, closed). An iterator is "<shard>:<position>"."""

    exceptions = _Exc

    def __init__(self) -> None:
        self.shards: dict[str, tuple[str | None, list[dict], bool]] = {}

    def add(self, shard: str, seqs: list[int], *, parent: str | None = None, closed: bool = False,
            sk: str = "RCPT#000") -> None:
        recs = [{"eventID": f"e{s}", "eventName": "MODIFY", "eventVersion": "1.1",
                 "dynamodb": {"Keys": {"pk": {"S": "MSG#m"}, "sk": {"S": sk}}, "SequenceNumber": str(s)}}
                for s in seqs]
        self.shards[shard] = (parent, recs, closed)

    def describe_stream(self, StreamArn: str, **kw: Any) -> dict:  # noqa: N803 - boto3's names
        return {"StreamDescription": {"Shards": [{"ShardId": k, **({"ParentShardId": p} if p else {})}
                                                 for k, (p, _, _) in self.shards.items()]}}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str,  # noqa: N803
                           SequenceNumber: str | None = None) -> dict:
        recs = self.shards[ShardId][1]
        if ShardIteratorType == "TRIM_HORIZON":
            pos = 0
        elif ShardIteratorType == "AT_SEQUENCE_NUMBER":
            pos = next(i for i, r in enumerate(recs) if r["dynamodb"]["SequenceNumber"] == SequenceNumber)
        else:  # AFTER_SEQUENCE_NUMBER
            pos = 1 + next(i for i, r in enumerate(recs) if r["dynamodb"]["SequenceNumber"] == SequenceNumber)
        return {"ShardIterator": f"{ShardId}:{pos}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict:  # noqa: N803
        shard, pos = ShardIterator.rsplit(":", 1)
        _, recs, closed = self.shards[shard]
        got = recs[int(pos):int(pos) + Limit]
        end = int(pos) + len(got)
        out: dict[str, Any] = {"Records": got}
        if not (closed and end >= len(recs)):
            out["NextShardIterator"] = f"{shard}:{end}"
        return out


class Fn:
    """A function that records the sequence numbers it was given and answers from a script."""

    def __init__(self, answer: Any = None) -> None:
        self.batches: list[list[str]] = []
        self.answer = answer or (lambda seqs: {"batchItemFailures": []})

    def invoke(self, event: dict) -> Any:
        seqs = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        assert all(r["eventSource"] == "aws:dynamodb" and r["eventSourceARN"] == ARN for r in event["Records"])
        self.batches.append(seqs)
        return self.answer(seqs)


class Sqs:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:  # noqa: N803
        self.sent.append(json.loads(MessageBody))


def poller(streams: Streams, fn: Fn, **kw: Any) -> StreamPoller:
    return StreamPoller(streams, ARN, fn, retry_wait=0, **kw)  # type: ignore[arg-type]


def test_the_filter_is_lambdas_pattern_syntax():
    rec = {"dynamodb": {"Keys": {"sk": {"S": "RCPT#001"}}}}
    assert matches(PATTERN, rec)
    assert not matches(PATTERN, {"dynamodb": {"Keys": {"sk": {"S": "META"}}}})
    assert not matches(PATTERN, {"dynamodb": {}})
    assert matches({"eventName": ["INSERT", "MODIFY"]}, {"eventName": "MODIFY"})


def test_a_child_shard_is_read_only_after_its_parent_and_filtered_records_never_reach_the_function():
    s = Streams()
    s.add("parent", [1, 2], closed=True)
    s.add("child", [3, 4], parent="parent")
    s.add("meta", [5], sk="META")
    fn = Fn()
    p = poller(s, fn, filters=[PATTERN])
    p.poll_once()
    assert fn.batches == [["1", "2"]]  # the child waits for its parent's end
    p.poll_once()
    assert fn.batches == [["1", "2"], ["3", "4"]] and p.iterators["parent"] is None


def test_partial_failure_resumes_at_the_first_failed_record_and_a_crash_retries_the_batch():
    s = Streams()
    s.add("a", [1, 2, 3, 4])
    calls = {"n": 0}

    def answer(seqs: list[str]) -> dict:
        calls["n"] += 1
        if calls["n"] == 1:
            return {"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "4"}]}
        if calls["n"] == 2:
            raise RuntimeError("crashed")
        return {"batchItemFailures": []}

    fn = Fn(answer)
    p = poller(s, fn)
    p.poll_once()
    p.poll_once()
    assert fn.batches == [["1", "2", "3", "4"], ["3", "4"], ["3", "4"]]
    assert p.last_read["a"] == "4"


def test_a_batch_failing_every_retry_is_skipped_and_described_on_the_failure_queue():
    s = Streams()
    s.add("a", [1, 2])
    sqs = Sqs()
    fn = Fn(lambda seqs: {"batchItemFailures": [{"itemIdentifier": seqs[0]}]})
    p = poller(s, fn, max_retries=2, on_failure=(sqs, "url"))
    p.poll_once()
    assert len(fn.batches) == 3
    assert sqs.sent == [{"DDBStreamBatchInfo": {"streamArn": ARN, "startSequenceNumber": "1",
                                                "endSequenceNumber": "2", "batchSize": 2}}]
    p.poll_once()
    assert len(fn.batches) == 3  # gone on: the shard is past it
