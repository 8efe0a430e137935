"""The sender's raw path (issue 13): a message submitted over SMTP, stored as written
(StoredRequest kind "raw"), signed and delivered by the same DeliveryService as a JSON one,
against real MX hosts on loopback (sender_rig.py): inline or in S3 by size, and UTF-8 header
fields needing SMTPUTF8 exactly as the JSON path's do (RFC 6531: no downgrade)."""

from __future__ import annotations

import dkim
import pytest
from sender_rig import SENDER_DOMAIN as SENDER
from sender_rig import Rig, commands

from outpost.api.auth import Principal
from outpost.signing import dns_name, dns_txt_value

pytestmark = pytest.mark.timeout(120)
KEY = Principal("k1", "raw", frozenset({"send"}))


def _submit(rig: Rig, head: str, body: bytes, *rcpts: str) -> str:
    data = f"From: App <app@{SENDER}>\r\n{head}Subject: raw\r\n\r\n".encode() + body
    out, _ = rig.api.send_raw(data, rcpts=list(rcpts), principal=KEY)
    return str(out["id"])


def _verifies(rig: Rig, message: bytes) -> bool:
    keys = {dns_name(k): dns_txt_value(k).encode() for k in rig.signer.keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return keys.get(name.decode().rstrip("."))

    return bool(dkim.DKIM(message).verify(dnsfunc=dnsfunc))


def test_a_large_raw_message_goes_through_s3_and_arrives_byte_for_byte(rig: Rig) -> None:
    mx = rig.mx("big.test", 2)
    body = (b"0123456789" * 7 + b"\r\n") * 15_000  # ~1 MB: over the store's 200 KB inline limit
    mid = _submit(rig, "To: Bob <bob@big.test>\r\n", body, "bob@big.test")
    stored = rig.store.load(mid)
    assert stored is not None and stored.meta.spec is None and stored.meta.spec_key  # in S3
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "delivered", rig.rcpt(mid).get("last")
    [got] = mx.wait_for(1)
    assert got.data.endswith(b"\r\n\r\n" + body) and _verifies(rig, got.data)
    assert got.mail_param("BODY") is None  # a 7-bit message asks for nothing


def test_utf8_header_fields_need_smtputf8_like_the_json_path(rig: Rig) -> None:
    utf8 = rig.mx("utf8.test", 3)
    plain = rig.mx("ascii.test", 4, smtputf8=False)
    mid = _submit(rig, "To: J\u00f6rg <j\u00f6rg@utf8.test>\r\n", "Gr\u00fc\u00dfe\r\n".encode(),
                  "j\u00f6rg@utf8.test", "bob@ascii.test")
    rig.run(mid)
    to_utf8, to_plain = rig.rcpts(mid)
    assert to_utf8["state"] == "delivered", to_utf8.get("last")
    assert to_plain["state"] == "bounced" and to_plain["last"]["status"] == "5.6.7"
    [got] = utf8.wait_for(1)
    assert got.mail_param("SMTPUTF8") == "" and got.mail_param("BODY") == "8BITMIME"
    assert _verifies(rig, got.data)
    assert plain.received == [] and commands(plain, "MAIL") == []
