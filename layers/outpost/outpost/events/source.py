"""Where events come from: a recipient's change (the old and new record of one DynamoDB stream
record, as the store reads them) becomes at most one Event.

One event per recipient state change, and a pure function of the change:
  - a new recipient: `message.queued`, or its state when it is created final (suppressed at
    send by the API), or `message.scheduled` when it waits for a send_at (issue 14); that one
    gives `message.queued` when its time comes (delivery/scheduling.py), then as any other;
  - a cancel: `message.canceled` (from scheduled, queued or deferred; final);
  - a change of state: `message.<new state>`;
  - deferred again with one more attempt: another `message.deferred` (one per attempt);
  - anything else (a lease taken or given back, a hold's `waiting`, a due time, a TTL
    deletion): nothing.
The event id hashes (message id, recipient index, new state, attempt count), so a stream record
read twice, or a batch retried, gives the same event, and two different changes never do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ..models import RecipientState
from ..records import Recipient
from . import Event

# What an event's `attempt` and `bounce` carry (the contract).
ATTEMPT_FIELDS = ("mx", "ip", "tls", "code", "status", "text")
BOUNCE_FIELDS = ("kind", "reason", "status", "diagnostic")
_WITH_ATTEMPT = (RecipientState.DELIVERED, RecipientState.DEFERRED)
_WITH_BOUNCE = (RecipientState.BOUNCED, RecipientState.COMPLAINED)


def event_id(message_id: str, index: int, state: str, attempts: int) -> str:
    """"evt_" + 32 hex digits of SHA-256 over the change's identity."""
    raw = f"{message_id}|{index}|{state}|{attempts}".encode()
    return "evt_" + hashlib.sha256(raw).hexdigest()[:32]


def is_event(old: Recipient | None, new: Recipient | None) -> bool:
    """Whether this change is a state change worth an event (see the module docstring)."""
    if new is None:
        return False  # deleted (TTL, a discarded message): not a state change
    if old is None or old.state != new.state:
        return True
    return new.state == RecipientState.DEFERRED and len(new.attempts) > len(old.attempts)


def event_for(old: Recipient | None, new: Recipient | None,
              tags: Mapping[str, str] | None = None) -> Event | None:
    """The event of one recipient change, or None when it is not a state change. `tags` are
    the message's (the recipient item does not carry them)."""
    if new is None or not is_event(old, new):
        return None
    state = new.state
    data: dict[str, Any] = {"message_id": new.message_id, "recipient": new.address,
                            "state": state.value, "tags": dict(tags or {})}
    if state in _WITH_ATTEMPT and new.attempts:
        last = new.attempts[-1].as_dict()
        data["attempt"] = {k: last.get(k) for k in ATTEMPT_FIELDS}
    if state in _WITH_BOUNCE and new.bounce:
        data["bounce"] = {k: new.bounce.get(k) for k in BOUNCE_FIELDS}
    return Event(event_id=event_id(new.message_id, new.index, state.value, len(new.attempts)),
                 type=f"message.{state.value}", timestamp=new.updated_at or new.created_at or "",
                 message_id=new.message_id, recipient=new.address, data=data)


def as_created(r: Recipient, scheduled: bool) -> Recipient:
    """The recipient as the API created it, from how it is now (s16f: its creation event comes
    from the message's commit, read after the sender may have moved it): created suppressed
    when it is suppressed with no verdict (the sender's suppression at send records `last`),
    else scheduled for a message with a send_at, else queued; no attempts yet."""
    if r.state == RecipientState.SUPPRESSED and r.last is None and not r.attempts:
        state = RecipientState.SUPPRESSED
    else:
        state = RecipientState.SCHEDULED if scheduled else RecipientState.QUEUED
    return r.replace(state=state, attempts=(), updated_at=r.created_at, last=None, bounce=None)

