"""Build the RFC 5322 / MIME message from a stored send request.

Always 7-bit clean on the wire (quoted-printable or base64 bodies) so that 8BITMIME is never
needed; UTF-8 headers (RFC 6532) only when an address has a non-ASCII local part, which then
also needs SMTPUTF8 from the receiving server.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import formatdate

from .addresses import Address, parse_address
from .models import Attachment, SendRequest

FetchUpload = Callable[[str], bytes]


def _header_address(a: Address, utf8: bool) -> HeaderAddress:
    domain = a.domain if utf8 else a.ascii_domain
    return HeaderAddress(display_name=a.display_name, username=a.local, domain=domain)


def message_id_header(message_id: str, domain: str) -> str:
    return f"<{message_id}@{domain}>"


def _attachment_bytes(a: Attachment, fetch_upload: FetchUpload | None) -> bytes:
    if a.content is not None:
        return base64.b64decode(a.content)
    if fetch_upload is None or a.upload_id is None:
        raise ValueError(f"attachment {a.filename!r} is an upload and no upload store was given")
    return fetch_upload(a.upload_id)


def build_message(req: SendRequest, message_id: str, created: float | None = None, *,
                  fetch_upload: FetchUpload | None = None) -> tuple[bytes, bool]:
    """The message bytes (CRLF line endings) and whether it needs SMTPUTF8.

    `fetch_upload(upload_id)` returns an uploaded attachment's bytes (S3 in production); it
    is only called for attachments sent by upload_id.
    """
    addrs = {name: [parse_address(v) for v in getattr(req, name)] for name in ("to", "cc", "reply_to")}
    sender = parse_address(req.from_)
    everyone = [sender, *addrs["to"], *addrs["cc"], *addrs["reply_to"]]
    everyone += [parse_address(v) for v in req.bcc]
    utf8 = any(a.needs_smtputf8 for a in everyone)
    pol = policy.SMTPUTF8 if utf8 else policy.SMTP

    msg = EmailMessage(policy=pol)
    msg["From"] = _header_address(sender, utf8)
    if addrs["to"]:
        msg["To"] = [_header_address(a, utf8) for a in addrs["to"]]
    if addrs["cc"]:
        msg["Cc"] = [_header_address(a, utf8) for a in addrs["cc"]]
    if addrs["reply_to"]:
        msg["Reply-To"] = [_header_address(a, utf8) for a in addrs["reply_to"]]
    msg["Subject"] = req.subject
    msg["Date"] = formatdate(created if created is not None else time.time(), usegmt=True)
    msg["Message-ID"] = message_id_header(message_id, sender.ascii_domain)
    for name, value in req.headers.items():
        msg[name] = value

    if req.text is not None and req.html is not None:
        msg.set_content(req.text, cte=_cte(req.text))
        msg.add_alternative(req.html, subtype="html", cte=_cte(req.html))
    elif req.html is not None:
        msg.set_content(req.html, subtype="html", cte=_cte(req.html))
    else:
        msg.set_content(req.text or "", cte=_cte(req.text or ""))

    inline = [a for a in req.attachments if a.content_id]
    regular = [a for a in req.attachments if not a.content_id]
    if inline:
        html_part = next((p for p in msg.walk() if p.get_content_type() == "text/html"), None)
        target = html_part if html_part is not None else msg
        target.make_related() if target is msg else None
        for a in inline:
            maintype, subtype = a.content_type.split("/", 1)
            data = _attachment_bytes(a, fetch_upload)
            if target is msg:
                msg.add_related(data, maintype=maintype, subtype=subtype, filename=a.filename,
                                cid=f"<{a.content_id}>", disposition="inline")
            else:
                target.add_related(data, maintype=maintype, subtype=subtype, filename=a.filename,
                                   cid=f"<{a.content_id}>", disposition="inline")
    for a in regular:
        maintype, subtype = a.content_type.split("/", 1)
        msg.add_attachment(_attachment_bytes(a, fetch_upload), maintype=maintype, subtype=subtype,
                           filename=a.filename)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # only the top level carries it (RFC 2045 §4)
    return msg.as_bytes(), utf8


def _cte(text: str) -> str:
    """7bit when it can be, else quoted-printable: the wire stays 7-bit clean."""
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"
