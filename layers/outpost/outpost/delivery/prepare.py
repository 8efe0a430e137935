"""The prepare step of a job: recipients' SMTP addresses, the stored request, the message
(MIME), its DKIM signature, the TLS mode it asks for. Whatever fails here fails for every
recipient alike; the caller (service.py) judges it like any reply."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..addresses import parse_address
from ..mime import build_message
from ..records import Message, Recipient
from ..signing import split_header_section
from ..stored_request import StoredRequest
from .job import Rcpt
from .transport import TlsMode


class DkimSigner(Protocol):
    """signing.Signer as the sender uses it: message bytes in, a DKIM-Signature header out."""

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Prepared:
    rcpts: list[Rcpt]
    data: tuple[bytes, ...]  # (signature, message): two parts, no copy of a large message
    signed: bool  # False: the sender's domain has no DKIM key (and data is empty)
    sender_domain: str
    tls_mode: TlsMode


def tls_mode_for(tls: str | None) -> TlsMode:
    """The request's `tls` option as the transport's mode."""
    return "verify" if tls == "verified" else "required" if tls == "required" else "opportunistic"


def unprepared(active: list[Recipient]) -> list[Rcpt]:
    """The recipients as they are, for recording a failure to prepare their message."""
    return [Rcpt(r.index, r.address, r.address, "", len(r.attempts), False) for r in active]


async def prepare(mid: str, meta: Message, active: list[Recipient], *,
                  load_request: Callable[[Message], StoredRequest],
                  signer_for: Callable[[str], DkimSigner | None],
                  fetch_upload: Callable[[str], bytes] | None) -> Prepared:
    rcpts: list[Rcpt] = []
    for r in active:
        a = parse_address(r.address)
        waited = r.waiting.waits if r.waiting is not None and r.waiting.reason == "shaping" else 0
        rcpts.append(Rcpt(r.index, r.address, a.smtp_addr, a.ascii_domain, len(r.attempts), a.needs_smtputf8,
                          waited))
    # The stored request's own model (stored_request.py), not the API's: what was accepted
    # under older rules still builds.
    req = await asyncio.to_thread(load_request, meta)
    if req.kind == "raw":
        # SMTP submission: the client's message as accepted (raw_message.py), signed and sent
        # as is. Its body may be 8-bit: the transport asks for BODY=8BITMIME, or refuses (5.6.3)
        # an MX without it, as it does a JSON message with UTF-8 headers.
        data = await asyncio.to_thread(req.raw_bytes)
        utf8_headers = not split_header_section(data)[0].isascii()
    else:
        # A thread: uploaded attachments are read from S3 while the message is built.
        data, utf8_headers = await asyncio.to_thread(
            build_message, req, mid, meta.send_at or meta.created_ts, fetch_upload=fetch_upload)
    sender_domain = parse_address(req.from_).ascii_domain
    signer = await asyncio.to_thread(signer_for, sender_domain)
    signed = (signer.sign(data), data) if signer is not None else (b"",)
    for rc in rcpts:
        rc.utf8 = rc.utf8 or utf8_headers
    return Prepared(rcpts, signed, signer is not None, sender_domain, tls_mode_for(req.tls))
