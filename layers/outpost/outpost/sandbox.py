"""The sandbox (issue 14 item 4): the simulator domain's addresses, and test-mode API keys.

SIMULATOR_DOMAIN is under `.invalid` (RFC 2606 section 2: it can never resolve), so mail to it
could not leave even by mistake; the sender never opens a socket, resolves DNS or takes a
shaping slot for it (delivery/simulator.py answers instead). The local part, without a
`+label` subaddress (so each test run can use fresh addresses despite suppression), picks the
outcome:

  delivered    250 with a remote id
  bounce       250, then a real RFC 3464 DSN (5.1.1) to the message's VERP return path,
               through the bounce processor: bounced, suppressed (source bounce)
  softbounce   451 4.2.0 on the first attempt, 250 on the next (by attempt number)
  complaint    250, then a real ARF report (RFC 5965): complained, suppressed (complaint)
  autoreply    250, then an RFC 3834 auto-reply: kept as an `autoreply` orphan, nothing else
  suppressed   refused at acceptance with status `suppressed`, with no suppression entry
  (any other)  as `delivered` (a test suite may invent names; the list above is the contract)

A message sent with a test-mode key (`mode: "test"`) is simulated whatever its recipients: a
simulator address keeps its outcome, any other address behaves as `delivered`. Simulated
recipients are not counted by the reputation breaker (sent, hard bounces, complaints), as SES's
mailbox simulator does not count against a sender's metrics.
"""

from __future__ import annotations

SIMULATOR_DOMAIN = "simulator.outpost.invalid"
LIVE, TEST = "live", "test"
MODES = (LIVE, TEST)

DELIVERED, BOUNCE, SOFTBOUNCE, COMPLAINT, AUTOREPLY, SUPPRESSED = (
    "delivered", "bounce", "softbounce", "complaint", "autoreply", "suppressed")
OUTCOMES = (DELIVERED, BOUNCE, SOFTBOUNCE, COMPLAINT, AUTOREPLY, SUPPRESSED)


def simulator_outcome(address: str) -> str | None:
    """The outcome a simulator address asks for; None for an address elsewhere."""
    local, _, domain = address.strip().rpartition("@")
    if domain.lower().rstrip(".") != SIMULATOR_DOMAIN:
        return None
    name = local.strip('"').split("+", 1)[0].lower()
    return name if name in OUTCOMES else DELIVERED


def simulated_outcome(address: str, mode: str | None) -> str | None:
    """What the sender simulates for this recipient of a message sent in `mode`; None: real
    delivery."""
    outcome = simulator_outcome(address)
    if outcome is None and mode == TEST:
        return DELIVERED
    return outcome


def is_simulated(address: str, mode: str | None) -> bool:
    return simulated_outcome(address, mode) is not None


def refused_at_acceptance(address: str) -> bool:
    """`suppressed@`: refused when the API accepts the message, as a listed address is."""
    return simulator_outcome(address) == SUPPRESSED


def message_mode(mode: str | None) -> str | None:
    """A key's mode as stored on its messages: "test", or None for live (items unchanged)."""
    return TEST if mode == TEST else None
