"""The linear MIME splitter (bounces/_mime.py, issue 10 item 5) builds the very tree the
email package builds: same headers, payloads, preamble, epilogue and nesting, on every
corpus and golden file and on the edge cases of RFC 2046 section 5.1.1 as the feed parser
reads them; shapes it does not copy go to the email package; its scans stay linear."""

from __future__ import annotations

import email
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from outpost.bounces import _mime, dsn
from outpost.bounces.limits import MESSAGE_READ_LIMIT

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path("/work/shared/corpus/bounces")


def _reference(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data, _class=_mime.BoundedMessage, policy=_mime.POLICY)


def _shape(msg: email.message.Message) -> tuple[object, ...]:
    payload = msg._payload  # type: ignore[attr-defined]
    inner = [_shape(p) for p in payload] if isinstance(payload, list) else payload
    return (msg._headers, msg.preamble, msg.epilogue, msg.get_default_type(), inner)  # type: ignore[attr-defined]


def _split(data: bytes) -> email.message.Message:
    """The splitter itself, no fallback (a test of _mime, not of the email package)."""
    return _mime._entity(data.decode("ascii", "surrogateescape"), 0, len(data))


def _files() -> list[Path]:
    golden = sorted((ROOT / "tests/golden/bounces").rglob("*.eml"))
    corpus = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".eml", ".txt"))
    return golden + corpus


def test_same_tree_as_the_email_package_on_every_corpus_and_golden_file() -> None:
    split = 0
    for path in _files():
        data = dsn._bound_mime(dsn._normalize(path.read_bytes()[:MESSAGE_READ_LIMIT]))
        assert _shape(_mime.message_from_bytes(data)) == _shape(_reference(data)), path
        try:
            _split(data)
            split += 1
        except _mime._Unusual:
            pass
    # The splitter, not the fallback, built nearly all of them (553 of 568 when written).
    assert split >= 0.95 * len(_files())


EDGE_CASES = {
    "preamble and epilogue": b"Content-Type: multipart/report; boundary=b\n\npre\namble\n--b\n"
    b"Content-Type: text/plain\n\nhello\n\n--b\nContent-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@b\nStatus: 5.1.1\n\n\n\n"
    b"Action: failed\n--b--\nepi\nlogue\n",
    "no close delimiter": b"Content-Type: multipart/mixed; boundary=\"q q\"\n\n--q q\n\nbody\n",
    "close then nothing": b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--",
    "blanks after delimiters": b"Content-Type: multipart/mixed; boundary=b\n\n--b \t\n\nx\n--b-- \n",
    "nested and rfc822": b"Content-Type: multipart/mixed; boundary=o\n\n--o\n"
    b"Content-Type: multipart/alternative; boundary=o1\n\n--o1\n\nt\n--o1--\nep\n\n--o\n"
    b"Content-Type: message/rfc822\n\nSubject: s\nContent-Type: multipart/mixed; boundary=i\n\n"
    b"--i\n\ninner\n--o\n--ox\n\nlast\n--o--\n",
    "outer delimiter ends the inner part": b"Content-Type: multipart/mixed; boundary=o\n\n--o\n"
    b"Content-Type: multipart/mixed; boundary=i\n\n--i\n\nx\n--o--\n",
    "missing header separator": b"Subject: x\nnot a header\nbody\n",
    "headers only": b"Subject: x\nTo: y\n folded\n\tagain",
    "8-bit header and body": "Subject: caf\u00e9\n\nna\u00efve\n".encode(),
    "folded Content-Type": b"Content-Type:\n multipart/mixed;\n boundary=b\n\n--b\n\nx\n--b--\n",
    "long MIME header": b"Content-Type: text/plain;" + b" a=b;" * 100 + b"\n\nx\n",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_same_tree_on_edge_cases(name: str) -> None:
    data = EDGE_CASES[name]
    assert _shape(_split(data)) == _shape(_reference(data))


FALLBACKS = {
    "start delimiter missing": b"Content-Type: multipart/mixed; boundary=b\n\nx\n--c\n\ny\n--c--\n",
    "consecutive delimiters": b"Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\nx\n--b--\n",
    "digest": b"Content-Type: multipart/digest; boundary=b\n\n--b\n\nSubject: x\n\ny\n--b--\n",
    "continuation first": b" folded\nSubject: x\n\nbody\n",
    "envelope line": b"Subject: x\nFrom someone\n\nbody\n",
    "form feed": b"Subject: x\x0c\n\nbody\n",
}


@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_odd_shapes_go_to_the_email_package(name: str) -> None:
    data = FALLBACKS[name]
    if name != "form feed":  # (that one is caught before the splitter runs)
        with pytest.raises(_mime._Unusual):
            _split(data)
    assert _shape(_mime.message_from_bytes(data)) == _shape(_reference(data))


def test_headers_from_text_as_the_header_parser() -> None:
    for text in ("Subject: x\nTo: a@b\n folded\n\nbody: no\n", "From: x\n\x85Subject: y\n",
                 "Received: from a\n\tby b\nMessage-ID: <m@x>", "junk\nSubject: x\n"):
        ref = email.parser.HeaderParser(_mime.BoundedMessage, policy=_mime.POLICY).parsestr(text)
        assert _mime.headers_from_text(text)._headers == ref._headers  # type: ignore[attr-defined]


def _seconds(data: bytes) -> float:
    best = 9.0
    for _ in range(2):
        t = time.process_time()
        _mime.message_from_bytes(data)
        best = min(best, time.process_time() - t)
    return best


@pytest.mark.parametrize("line", [b"--b--b--b--b--b", b"--b", b"Subject: x"])
def test_scans_are_linear(line: bytes) -> None:
    """Lines that look like delimiters (or headers), at 100 KB and 1.6 MB: 16 times the
    input may cost at most about 16 times the time (no rescans)."""
    head = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n"

    def body(size: int) -> bytes:
        return head + (line + b"x\n") * (size // (len(line) + 2))

    small, big = _seconds(body(100_000)), _seconds(body(1_600_000))
    assert big < 0.5 and big < 16 * 3 * max(small, 0.002)


# Content-Type values for BoundedMessage.get_param's short path and for the email
# package's path it leaves them to (RFC 2231 names, backslashes, non-ASCII).
PARAM_VALUES = (
    'multipart/report; report-type=delivery-status; boundary="abc:def"',
    "multipart/mixed;\n\tboundary=----=_Part_1 ; charset = ISO-8859-1 ",
    'text/plain; charset="UTF-8"; charset=latin1; name="a;b"; x; =y; z=',
    "boundary=first; charset=<us-ascii>",
    'multipart/mixed; boundary=""; charset="\'quoted\'"',
    'multipart/mixed; boundary="a\\"b"; charset="x\\\\y"',
    "text/plain; charset*=utf-8''%41; boundary*0=ab; boundary*1=cd",
    'text/plain; name="a"b"; boundary=" spaced  "',
    "text/plain; charset=\u00e9; boundary=\udce9x",
    "text/plain",
    "",
)


def _answer(ask: Callable[[email.message.Message], object], msg: email.message.Message
            ) -> object:
    try:
        return ask(msg)
    except Exception as e:  # the email package raises on some values: so must we
        return type(e)


@pytest.mark.parametrize("value", PARAM_VALUES)
def test_params_as_the_email_package(value: str) -> None:
    ours = _mime.BoundedMessage(policy=_mime.POLICY)
    ref = email.message.Message(policy=_mime.POLICY)
    for m in (ours, ref):
        m._headers = [("X-Other", "boundary=no"), ("Content-Type", value),  # type: ignore[attr-defined]
                      ("Content-Type", "text/html; boundary=second")]
    asks: list[Callable[[email.message.Message], object]] = [
        lambda m: m.get_boundary(), lambda m: m.get_content_charset(),
        lambda m: m.get_param("boundary", header="x-other"),
        lambda m: m.get_param("charset", unquote=False)]
    for name in ("boundary", "charset", "name", "x", "", "z", "report-type", "BOUNDARY"):
        asks.append(lambda m, name=name: m.get_param(name, "missing"))  # type: ignore[misc]
    for ask in asks:
        assert _answer(ask, ours) == _answer(ask, ref)


def test_params_as_the_email_package_on_every_part_of_the_corpus() -> None:
    asked = 0
    for path in _files():
        msg = dsn._read_message(path.read_bytes())
        for part in msg.walk() if msg is not None else ():
            ref = email.message.Message(policy=_mime.POLICY)
            ref._headers = part._headers  # type: ignore[attr-defined]
            for name in ("boundary", "charset", "report-type", "name"):
                assert part.get_param(name) == ref.get_param(name), (path, name)
                asked += 1
            assert part.get_boundary() == ref.get_boundary()
            assert part.get_content_charset() == ref.get_content_charset()
    assert asked > 5000


def test_decode_params_quoting_round_trip_is_the_identity() -> None:
    # What get_param's short path relies on: decode_params() stores quote(v) in quotes and
    # get_param() unquotes it, which gives v back, backslashes and quotes included.
    import itertools
    from email.utils import quote, unquote

    for n in range(1, 8):
        for chars in itertools.product('a\\"', repeat=n):
            v = "".join(chars)
            assert unquote(f'"{quote(v)}"') == v


def test_header_lookups_as_the_email_package_after_every_kind_of_change() -> None:
    # BoundedMessage indexes its headers for get() / get_all(): every way the email package
    # changes a header list must show in the next answer.
    ours = _mime.BoundedMessage(policy=_mime.POLICY)
    ref = email.message.Message(policy=_mime.POLICY)
    changes: list[Callable[[email.message.Message], object]] = [
        lambda m: m.set_raw("To", "a@example.com"),
        lambda m: m.set_raw("to", "b@example.com"),
        lambda m: m.set_raw("Subject", "caf\udce9"),  # an 8-bit byte, as the parser keeps it
        lambda m: m.__setitem__("Content-Type", "text/plain; charset=us-ascii"),
        lambda m: m.replace_header("to", "c@example.com"),
        lambda m: m.add_header("X-Extra", "v", name="n"),
        lambda m: m.set_param("charset", "utf-8"),
        lambda m: m.set_type("multipart/mixed"),
        lambda m: m.set_boundary("bb"),
        lambda m: m.del_param("charset"),
        lambda m: m.__delitem__("To"),
        lambda m: setattr(m, "_headers", [("From", "x@y"), ("TO", "d@example.com")]),
        lambda m: m.replace_header("From", "z@y"),
    ]
    names = ("to", "TO", "subject", "content-type", "x-extra", "from", "absent")
    for change in changes:
        change(ours)
        change(ref)
        for name in names:
            assert ours.get(name, "-") == ref.get(name, "-"), name
            got, want = ours.get_all(name), ref.get_all(name)
            assert (got is None and want is None) or [str(v) for v in got] == [str(v) for v in want]
            assert ours[name] == ref[name]
        assert [(k, str(v)) for k, v in ours.items()] == [(k, str(v)) for k, v in ref.items()]
        assert ours.get_content_type() == ref.get_content_type(), change
        assert ours.get_boundary() == ref.get_boundary()


def test_blank_line_is_the_patterns_answer() -> None:
    import itertools

    for n in range(0, 7):
        for chars in itertools.product("a\n", repeat=n):
            text = "".join(chars)
            for pos in range(len(text) + 1):
                for end in range(pos, len(text) + 1):
                    m = _mime._BLANK_LINE.search(text, pos, end)
                    assert _mime._blank_line(text, pos, end) == (m.start() if m else -1)


@pytest.mark.parametrize("brk", _mime._ODD_BREAKS)
def test_each_odd_line_break_goes_to_the_email_package(brk: bytes) -> None:
    data = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx" + brk + b"y\n--b--\n"
    assert _shape(_mime.message_from_bytes(data)) == _shape(_reference(data))
    calls: list[bytes] = []
    real = email.message_from_bytes
    try:
        email.message_from_bytes = lambda d, **kw: calls.append(d) or real(d, **kw)  # type: ignore[assignment]
        _mime.message_from_bytes(data)
    finally:
        email.message_from_bytes = real  # type: ignore[assignment]
    assert calls == [data]
