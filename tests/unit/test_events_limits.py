"""Event payloads stay within EventBridge's limits whatever a client puts in tags (issue 12,
an attacker's review): the largest tags the API accepts (50, names of 128 and values of 256
characters, 4-byte UTF-8 each) and the longest bounce diagnostic, on 10 recipients of one
message, all reach a PutEvents fake that enforces AWS's per-call limits."""

from __future__ import annotations

import json

from outpost.bounces.limits import DIAGNOSTIC_LIMIT
from outpost.events import Event
from outpost.events.bus import EventBus, entry
from outpost.models import SendRequest

ASTRAL = "\U0001F600"  # 4 bytes in UTF-8; 12 as a JSON \u escape pair


LIMIT = 256 * 1024


def _size(e: dict) -> int:
    return 14 + len(e["Source"].encode()) + len(e["DetailType"].encode()) + len(e["Detail"].encode())


class StrictEventBridge:
    """put_events with AWS's request limits: at most 10 entries and 256 KB (each entry 14
    bytes for Time plus Source, DetailType, Detail in UTF-8); over them the whole call is a
    ValidationException, as boto3 raises it."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def put_events(self, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's name
        size = sum(_size(e) for e in Entries)
        if len(Entries) > 10 or size > LIMIT:
            raise RuntimeError(f"ValidationException: {len(Entries)} entries, {size} bytes")
        self.calls.append(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"} for _ in Entries]}


def _largest_tags() -> dict[str, str]:
    tags = {f"{i:02d}" + ASTRAL * 126: ASTRAL * 256 for i in range(50)}
    return SendRequest.model_validate({"from": "a@shop.test", "to": ["r@ok.test"], "subject": "s",
                                       "text": "t", "tags": tags}).tags  # the API accepts them


def _bounced(i: int, tags: dict[str, str]) -> Event:
    rcpt = f"r{i}@" + "d" * 60 + ".test"
    return Event(event_id=f"evt_{i:032x}", type="message.bounced", timestamp="2026-01-01T00:00:00.000Z",
                 message_id="0" * 26, recipient=rcpt,
                 data={"message_id": "0" * 26, "recipient": rcpt, "state": "bounced", "tags": tags,
                       "bounce": {"kind": "hard", "reason": "unknown_user", "status": "5.1.1",
                                  "diagnostic": ASTRAL * DIAGNOSTIC_LIMIT}})


def test_the_largest_event_fits_one_entry_with_room_to_spare() -> None:
    e = entry(_bounced(0, _largest_tags()), "outpost")
    assert _size(e) < LIMIT // 2, _size(e)  # 12-byte escapes made it 280 KB
    assert json.loads(e["Detail"])["data"]["tags"] == _largest_tags()  # nothing cut


def test_ten_largest_events_of_one_message_all_reach_eventbridge() -> None:
    client = StrictEventBridge()
    events = [_bounced(i, _largest_tags()) for i in range(10)]
    EventBus(client, "outpost", sleep=lambda s: None).publish(events)
    got = [json.loads(e["Detail"])["data"]["recipient"] for call in client.calls for e in call]
    assert got == [e.recipient for e in events]  # all, once, in order
    assert len(client.calls) > 1


def test_small_events_still_go_ten_a_call() -> None:
    client = StrictEventBridge()
    EventBus(client, "outpost", sleep=lambda s: None).publish([_bounced(i, {"k": "v"}) for i in range(25)])
    assert [len(c) for c in client.calls] == [10, 10, 5]


# ---- a partial failure retried record by record puts nothing twice -----------------------------
class OneRefused(StrictEventBridge):
    """Refuses one recipient's entry every time (a poison entry); takes the rest."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    def put_events(self, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's name
        self.calls.append(Entries)
        res = [{"ErrorCode": "InternalFailure"} if json.loads(e["Detail"])["data"]["recipient"] == self.refused
               else {"EventId": "x"} for e in Entries]
        return {"FailedEntryCount": sum("ErrorCode" in r for r in res), "Entries": res}


def test_a_batch_of_50_recipients_with_one_refused_entry_puts_the_other_49_exactly_once() -> None:
    from outpost.events.service import EventService
    from outpost.store import committed_message, recipient_change
    from tests.fakes.events import FakeEventLog
    from tests.unit.test_events_source import batch, commit, image, reader, record

    client = OneRefused("r37@accept.test")
    svc = EventService(changes=recipient_change, tags=lambda ids: {}, sinks=[FakeEventLog(),
                       EventBus(client, "outpost", sleep=lambda s: None)], commits=committed_message,
                       created=reader())
    records = [record(None, image("queued", index=i), sk=f"RCPT#{i:03d}") for i in range(50)] + [commit(50)]
    out = svc.handle_stream_event(batch(*records))
    # the 50 creation events are the commit's (its META's INSERT): that record fails, and only it
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == [records[50]["dynamodb"]["SequenceNumber"]]
    taken: dict[str, int] = {}
    for call in client.calls:
        for e in call:
            rcpt = json.loads(e["Detail"])["data"]["recipient"]
            if rcpt != client.refused:
                taken[rcpt] = taken.get(rcpt, 0) + 1
    assert len(taken) == 49 and set(taken.values()) == {1}, taken  # all, none twice
