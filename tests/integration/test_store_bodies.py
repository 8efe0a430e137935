"""Where a stored request is kept (issue 15 item 4), on DynamoDB Local and moto's S3 with the real
sender and a real MX (sender_rig): deflated in the META item up to the inline limit (the price
table's break-even, bench/cost_model.py), in S3 above it; the sender delivers the same bytes
either way."""

from __future__ import annotations

import base64
import os
import zlib

import pytest
from sender_rig import Rig

from outpost.store import INLINE_LIMIT, INLINE_RAW_MAX, MessageStore

pytestmark = pytest.mark.timeout(120)


def _meta(rig: Rig, mid: str) -> dict:
    return rig.store.ddb.get_item(TableName=rig.store.table, ConsistentRead=True,
                                  Key={"pk": {"S": f"MSG#{mid}"}, "sk": {"S": "META"}})["Item"]


def _delivered_text(rig: Rig, mx: object, mid: str) -> bytes:
    rig.run(mid)
    assert rig.rcpt(mid)["state"] == "delivered"
    [got] = [r.data for r in mx.received if f"<{mid}@".encode() in r.data]  # type: ignore[attr-defined]
    return bytes(got)


def test_a_template_sized_body_is_kept_deflated_in_the_meta_item(rig: Rig) -> None:
    mx = rig.mx("bodies.test", 2)
    html = "".join(f"<tr><td>Item {i}</td><td class='price'>{i * 3}.00</td></tr>\n" for i in range(400))
    assert len(html) > 3 * INLINE_LIMIT  # a 20 KB HTML template
    mid = rig.send("t@bodies.test", html=html)
    meta = _meta(rig, mid)
    assert "spec" not in meta and "spec_key" not in meta
    packed = meta["spec_z"]["B"]
    assert len(packed) <= INLINE_LIMIT < len(zlib.decompress(packed))
    stored = rig.store.load(mid)
    assert stored is not None and rig.store.load_request(stored.meta).html == html
    data = _delivered_text(rig, mx, mid)
    assert b"Item 399" in data.replace(b"=\r\n", b"")  # quoted-printable soft breaks aside


def test_a_body_that_does_not_deflate_below_the_limit_goes_to_s3(rig: Rig) -> None:
    mx = rig.mx("bodies.test", 2)
    noise = base64.b64encode(os.urandom(INLINE_LIMIT)).decode()  # deflates to ~6.3 KB: over
    mid = rig.send("s@bodies.test", attachments=[{"filename": "n.bin", "content": noise}])
    meta = _meta(rig, mid)
    assert "spec" not in meta and "spec_z" not in meta and meta["spec_key"]["S"] == f"bodies/{mid}.json"
    assert b"n.bin" in _delivered_text(rig, mx, mid)


def test_a_long_body_goes_to_s3_whatever_it_deflates_to(rig: Rig) -> None:
    zeros = base64.b64encode(bytes(INLINE_RAW_MAX)).decode()  # deflates to ~1 KB, but over the raw cap
    mid = rig.send("z@bodies.test", attachments=[{"filename": "z.bin", "content": zeros}])
    assert "spec_key" in _meta(rig, mid)


def test_a_deflated_body_that_inflates_past_the_cap_is_refused(rig: Rig) -> None:
    """Bounded by construction: inflating reads at most INLINE_RAW_MAX + 1 bytes."""
    mid = rig.send("b@bodies.test", text="x")
    bomb = zlib.compress(b"{" + b" " * (INLINE_RAW_MAX + 10) + b"}")
    rig.store.ddb.update_item(TableName=rig.store.table, Key={"pk": {"S": f"MSG#{mid}"}, "sk": {"S": "META"}},
                              UpdateExpression="SET spec_z = :z REMOVE spec",
                              ExpressionAttributeValues={":z": {"B": bomb}})
    stored = rig.store.load(mid)
    assert stored is not None
    with pytest.raises(ValueError, match="INLINE_RAW_MAX"):
        rig.store.load_request(stored.meta)


def test_a_larger_limit_keeps_more_inline(rig: Rig) -> None:
    store = MessageStore(rig.store.ddb, rig.store.table, rig.store.s3, rig.store.bucket, inline_limit=100_000)
    rig.store = rig.api.store = store  # type: ignore[misc]
    noise = base64.b64encode(os.urandom(INLINE_LIMIT)).decode()
    mid = rig.send("l@bodies.test", attachments=[{"filename": "n.bin", "content": noise}])
    assert "spec_z" in _meta(rig, mid) or "spec" in _meta(rig, mid)
