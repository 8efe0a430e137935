"""Property tests: parse_bounce never raises, whatever arrives at the bounce address
(malformed MIME, huge headers, bad charsets, truncated messages), and always returns a
well-formed report."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outpost.bounces import BounceReport, parse_bounce

GOLDEN = sorted((Path(__file__).resolve().parent.parent / "golden" / "bounces").glob("*/*.eml"))
SAMPLES = [p.read_bytes() for p in GOLDEN]
KINDS = {"dsn", "feedback", "autoreply", "none"}

_FRAGMENTS = [
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"X\"\n",
    b"Content-Type: multipart/mixed; boundary=\n", b"--X\n", b"--X--\n",
    b"Content-Type: message/delivery-status\n", b"Content-Type: message/rfc822\n",
    b"Content-Type: message/global-delivery-status; charset=utf-8\n",
    b"Content-Type: message/feedback-report\n", b"Content-Type: text/plain; charset=x-bogus\n",
    b"Content-Transfer-Encoding: base64\n", b"Content-Transfer-Encoding: quoted-printable\n",
    b"Final-Recipient: rfc822; a@b\n", b"Final-Recipient: \n", b"Status: 5.1.\n",
    b"Action: failed\n", b"Diagnostic-Code: smtp; 550 \xff\xfe\n", b"Subject: =?utf-8?B?!!?=\n",
    b"Subject: =?x-unknown?Q?a=ZZ?=\n", b"\n", b"\r", b"\r\n", b"\x00", b"<@>:\n",
    b"Auto-Submitted: auto-replied\n", b"From \n", b"=\n", b"\t folded\n",
]


def _check(raw: bytes) -> None:
    rep = parse_bounce(raw)
    assert isinstance(rep, BounceReport)
    assert rep.kind in KINDS
    for r in rep.recipients:
        assert "@" in r.address
        assert r.kind in ("hard", "soft", "unknown")
        assert isinstance(r.reason, str) and r.reason


common = settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@common
@given(st.binary(max_size=4000))
def test_random_bytes(raw: bytes) -> None:
    _check(raw)


@common
@given(st.lists(st.sampled_from(_FRAGMENTS) | st.binary(max_size=40), max_size=60))
def test_mime_shaped_garbage(parts: list[bytes]) -> None:
    _check(b"".join(parts))


@common
@given(st.sampled_from(SAMPLES), st.floats(min_value=0.0, max_value=1.0))
def test_truncated_real_bounces(raw: bytes, frac: float) -> None:
    _check(raw[: int(len(raw) * frac)])


@common
@given(st.sampled_from(SAMPLES), st.integers(min_value=0, max_value=10**6),
       st.binary(min_size=1, max_size=30))
def test_corrupted_real_bounces(raw: bytes, pos: int, junk: bytes) -> None:
    pos %= max(len(raw), 1)
    _check(raw[:pos] + junk + raw[pos + len(junk):])


@settings(max_examples=5, deadline=None)
@given(st.integers(min_value=1, max_value=3))
def test_huge_headers_and_lines(n: int) -> None:
    huge = b"X-Junk: " + b"a" * (200_000 * n) + b"\n"
    folded = b"Subject: x\n" + b" y\n" * 20_000
    _check(huge + folded + b"\n" + b"Final-Recipient: rfc822; " + b"b" * 100_000 + b"@x\n")
    _check(SAMPLES[0].replace(b"\n\n", b"\n" + huge + b"\n", 1))
