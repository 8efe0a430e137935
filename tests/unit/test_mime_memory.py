"""mime.build_message without copies of large bodies (issue 8 item 13): attachment bodies are
base64-encoded straight into the output, and the bytes are exactly those the email package
writes when it encodes the attachments itself (`_compose(..., splice=False)`, the way the
message was built before, still used by check_message)."""

from __future__ import annotations

import base64
import os
import random
import tracemalloc
from email import message_from_bytes
from email import policy as email_policy
from typing import Any

import pytest

from outpost.mime import _compose, build_message
from outpost.models import SendRequest

UPLOADS = {f"{i:032x}": os.urandom(n) for i, n in enumerate([0, 1, 56, 57, 58, 57 * 4096, 57 * 4096 + 5, 700_001])}
IDS = list(UPLOADS)


def upload(i: int, name: str = "f.bin", ctype: str = "application/octet-stream", **kw: Any) -> dict[str, Any]:
    return {"filename": name, "content_type": ctype, "upload_id": IDS[i], **kw}


def inline(data: bytes, name: str, ctype: str = "image/png", **kw: Any) -> dict[str, Any]:
    return {"filename": name, "content_type": ctype, "content": base64.b64encode(data).decode(), **kw}


SHAPES: dict[str, dict[str, Any]] = {
    "text-only": {"text": "hello"},
    "text-and-one-upload": {"text": "see attached", "attachments": [upload(7)]},
    "every-length-class": {"text": "x", "attachments": [upload(i, f"f{i}.bin") for i in range(8)]},
    "html-related-and-mixed": {
        "text": "plain", "html": "<p>caf\u00e9 <img src=cid:logo></p>",
        "attachments": [inline(os.urandom(3000), "logo.png", content_id="logo"),
                        upload(5, "r\u00e9sum\u00e9.pdf", "application/pdf"),
                        inline(b"", "empty.txt", "text/plain"), inline(b"a,b\r\n", "t.csv", "text/csv")]},
    "html-only-related": {"html": "<img src=cid:a>",
                          "attachments": [inline(os.urandom(100), "a.gif", "image/gif", content_id="a")]},
    "utf8-headers": {"from": "\u00fcser@example.com", "text": "t", "attachments": [upload(6)]},
}


def request(shape: str) -> SendRequest:
    base = {"from": "App <app@example.com>", "to": ["bob@example.org"], "cc": ["c@example.net"], "subject": "S"}
    return SendRequest.model_validate({**base, **SHAPES[shape]})


@pytest.mark.parametrize("shape", list(SHAPES))
def test_spliced_message_is_byte_identical_to_the_email_package_build(shape: str) -> None:
    req = request(shape)
    built = []
    for splice in (False, True):
        random.seed(8)  # the email package draws multipart boundaries from `random`
        data, utf8 = _compose(req, "m1", 1_700_000_000.0, fetch_upload=UPLOADS.__getitem__, skeleton=False,
                              splice=splice)
        built.append((data, utf8))
    assert built[0] == built[1]
    # And the attachments come back out of it, byte for byte, for any MIME parser.
    parsed = message_from_bytes(built[1][0], policy=email_policy.SMTP)
    got = [p.get_payload(decode=True) for p in parsed.walk() if p.get_filename()]
    want = [UPLOADS[a.upload_id] if a.upload_id else base64.b64decode(a.content or "") for a in req.attachments]
    assert sorted(got, key=len) == sorted(want, key=len)


@pytest.mark.parametrize("mib", [4, 16])
def test_building_a_large_message_costs_about_its_size(mib: int) -> None:
    # Before: the email package held the base64 text as str, its lines, a generator buffer
    # and the final bytes (~4x the message). Now: the output plus one encoded block.
    data = os.urandom(mib << 20)
    uid = "f" * 32
    req = SendRequest.model_validate({"from": "app@example.com", "to": ["b@example.org"], "subject": "big",
                                      "text": "see attached", "attachments": [
                                          {"filename": "big.bin", "content_type": "application/octet-stream",
                                           "upload_id": uid}]})
    tracemalloc.start()
    message, _ = build_message(req, "m1", 1.0, fetch_upload=lambda u: data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(message) > 1.35 * len(data)
    assert peak < 1.3 * len(message) + 2_000_000, (peak, len(message))
    assert message_from_bytes(message, policy=email_policy.SMTP).get_payload()[1].get_content() == data
