"""The sweeper's question (store.MessageStore.overdue) on DynamoDB Local: its per-shard limit
counts the recipients it returns, not the leased ones it reads past. More recipients leased
(in long transactions) than the limit, due before an unleased one in the same shard, hid that
one until their leases ended."""

from __future__ import annotations

import pytest
from sender_rig import Rig

from outpost.store import MessageStore, due_shard

pytestmark = pytest.mark.timeout(120)


def _in_shard(rig: Rig, shard: str) -> str:
    """A new one-recipient message whose recipients land in `shard` of the due index."""
    for i in range(200):
        mid = rig.send(f"due-{i}@lease.test")
        if due_shard(mid) == shard:
            return mid
    raise AssertionError("no message landed in the shard")


def test_leased_recipients_beyond_the_limit_do_not_hide_a_due_one(rig: Rig) -> None:
    leased = rig.send(*(f"busy{i}@lease.test" for i in range(6)))
    now = rig.clock()
    for i in range(6):  # six transactions running for another hour
        assert rig.store.claim(leased, i, now, 3600)
    rig.clock.advance(5)
    due = _in_shard(rig, due_shard(leased))  # due after the leased six: read after them
    rig.clock.advance(5)
    found = rig.store.overdue(rig.clock(), limit=3)
    mine = [(o.message_id, o.index) for o in found if o.message_id in (leased, due)]
    assert mine == [(due, 0)]  # was []: the first 3 read were leased, and the limit was spent
    assert len([o for o in found if due_shard(o.message_id) == due_shard(leased)]) <= 3


def test_the_read_past_leased_ones_is_bounded(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    leased = rig.send(*(f"busy{i}@bound.test" for i in range(6)))
    now = rig.clock()
    for i in range(6):
        assert rig.store.claim(leased, i, now, 3600)
    rig.clock.advance(5)
    due = _in_shard(rig, due_shard(leased))
    rig.clock.advance(5)
    monkeypatch.setattr(MessageStore, "OVERDUE_READ_PER_SHARD", 4)  # stops among the leased ones
    assert due not in {o.message_id for o in rig.store.overdue(rig.clock(), limit=3)}
