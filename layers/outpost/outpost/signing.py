"""DKIM signing: one RSA-SHA256 signature, plus Ed25519-SHA256 when the domain has that key.

RFC 8463 §6 recommends signing with both algorithms while receivers catch up with
Ed25519; a receiver ignores a signature whose algorithm it does not know (RFC 6376 §6.1),
so the pair costs nothing at receivers that only do RSA.

Why not just ``dkim.sign()``: dkimpy parses the PEM key with its own ASN.1 code on every
call and does the RSA private-key operation in pure Python (~120 signatures/s per core),
and needs PyNaCl for Ed25519. We keep dkimpy for what has to match what verifiers
compute (parsing the header section, relaxed header canonicalisation, header selection, the header
hash with ``b=`` blanked) and do the private-key operation with ``cryptography``
(OpenSSL), on keys parsed once per container in :class:`Signer`. One departure: the
relaxed *body* canonicalisation is :class:`RelaxedBody`, fed the body in pieces straight
from the message (a 40 MB message costs no copy of itself), byte-identical to dkimpy's
(property-tested against it, on every piece boundary) and faster on whitespace-heavy HTML.
:func:`relaxed_body` is the same rules in one shot on a CRLF body, kept as a second reference.

Heavy imports (``dkim`` pulls in dnspython, ``cryptography`` loads OpenSSL) happen on
first use, so importing this module stays cheap for the functions that never sign.
"""

from __future__ import annotations

import hashlib
import time
from binascii import b2a_base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import DkimKeyError, DkimSigningError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from datetime import datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "ALGORITHMS",
    "DkimKey",
    "DkimKeyError",
    "DkimSigningError",
    "Signer",
    "SIGNED_HEADERS",
    "dns_name",
    "dns_txt_strings",
    "dns_txt_value",
    "generate_key",
    "keys_from_secret",
    "secret_from_keys",
]

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
ALGORITHMS: tuple[str, ...] = (RSA, ED25519)

#: Header fields signed, in ``h=`` order: each occurrence once (RFC 6376 §5.4.2: instances
#: are taken bottom-up), plus one more for those in OVERSIGNED_HEADERS. Bcc, Received,
#: Return-Path are never signed (RFC 6376 §5.4.1). List-Unsubscribe and
#: List-Unsubscribe-Post MUST be covered when present (RFC 8058 §4).
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
)

#: Signed once more than they occur ("over-signing", RFC 6376 §8.15; §5.4.2: a name listed
#: more often than it occurs matches a null field). Whoever adds one of these above the
#: signed ones (verifiers take instances bottom-up, and mail clients show the topmost), or
#: adds a Cc or Reply-To the message did not have, breaks the signature. These are the
#: fields a reader sees or a client acts on; Cc and Reply-To are signed even when absent.
OVERSIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "reply-to",
    "message-id",
    "content-type",
    "mime-version",
)

_RSA_MIN_BITS = 1024  # RFC 8301 §3.2: signers MUST use at least 1024 bits
_RSA_BITS = 2048
_HEADER_NAME = b"DKIM-Signature"
_LINE = 76  # fold the header under RFC 5322 §2.1.1's 78-character SHOULD, CRLF excluded


@dataclass(frozen=True)
class DkimKey:
    """One private key for one ``selector._domainkey.domain`` record."""

    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private_key_pem: bytes  # PKCS#8 PEM, unencrypted


# --------------------------------------------------------------------------- keys


def generate_key(domain: str, selector: str, algorithm: str = RSA) -> DkimKey:
    """A fresh key: RSA-2048 for ``rsa-sha256``, Ed25519 for ``ed25519-sha256``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    _check_algorithm(algorithm)
    private: RSAPrivateKey | Ed25519PrivateKey
    if algorithm == RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return DkimKey(_domain(domain), _selector(selector), algorithm, pem)


def dns_name(key: DkimKey) -> str:
    """The TXT record name for the key (RFC 6376 §3.6.2.1), without a trailing dot."""
    return f"{key.selector}._domainkey.{key.domain}"


def dns_txt_value(key: DkimKey) -> str:
    """The key record (RFC 6376 §3.6.1) as one string.

    RSA: ``p=`` is the DER SubjectPublicKeyInfo. Ed25519: ``p=`` is the raw 32-byte
    public key, not wrapped in ASN.1 (RFC 8463 §4.2). A TXT character-string holds at
    most 255 octets, so a 2048-bit RSA record must be published as several strings;
    see :func:`dns_txt_strings`.
    """
    from cryptography.hazmat.primitives import serialization

    private = _load_private_key(key)
    if key.algorithm == RSA:
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "v=DKIM1; k=rsa; p=" + _b64(der).decode("ascii")
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return "v=DKIM1; k=ed25519; p=" + _b64(raw).decode("ascii")


def dns_txt_strings(key: DkimKey) -> list[str]:
    """:func:`dns_txt_value` split into <=255-octet character-strings (RFC 1035 §3.3.14).

    Verifiers concatenate the strings of one TXT record without separators
    (RFC 6376 §3.6.2.2), so the split points are arbitrary.
    """
    value = dns_txt_value(key)
    return [value[i : i + 255] for i in range(0, len(value), 255)]


def keys_from_secret(secret_json: dict[str, Any]) -> list[DkimKey]:
    """The active (``retired_at`` null) keys of a domain's secret, newest first.

    Secret shape: ``{"domain": str, "keys": [{"selector", "algorithm", "private_key"
    (PKCS#8 PEM), "created_at" (ISO 8601), "retired_at" (ISO 8601 | null)}]}``. Newest
    first because :class:`Signer` uses the first key of each algorithm: during a
    rotation the new selector signs while the old one stays published.
    """
    try:
        domain = _domain(str(secret_json["domain"]))
        entries = list(secret_json["keys"])
        active: list[tuple[datetime, DkimKey]] = []
        for entry in entries:
            if entry.get("retired_at"):
                continue
            algorithm = str(entry["algorithm"])
            _check_algorithm(algorithm)
            pem = entry["private_key"]
            key = DkimKey(
                domain=domain,
                selector=_selector(str(entry["selector"])),
                algorithm=algorithm,
                private_key_pem=pem.encode("ascii") if isinstance(pem, str) else bytes(pem),
            )
            active.append((_parse_time(entry.get("created_at")), key))
    except (KeyError, TypeError, AttributeError) as exc:
        raise DkimKeyError(f"malformed DKIM key secret: {exc!r}") from exc
    # sort() is stable, so keys created at the same instant keep the secret's order.
    active.sort(key=lambda pair: pair[0], reverse=True)
    return [key for _, key in active]


def secret_from_keys(
    domain: str, keys: list[DkimKey], *, created_at: datetime | None = None
) -> dict[str, Any]:
    """The secret JSON for ``keys`` (all active); inverse of :func:`keys_from_secret`."""
    from datetime import UTC, datetime

    domain = _domain(domain)
    stamp = (created_at or datetime.now(UTC)).isoformat()
    out = []
    for key in keys:
        if _domain(key.domain) != domain:
            raise DkimKeyError(f"key {dns_name(key)} does not belong to {domain}")
        _check_algorithm(key.algorithm)
        out.append(
            {
                "selector": key.selector,
                "algorithm": key.algorithm,
                "private_key": key.private_key_pem.decode("ascii"),
                "created_at": stamp,
                "retired_at": None,
            }
        )
    return {"domain": domain, "keys": out}


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class _LoadedKey:
    key: DkimKey
    private: Any  # RSAPrivateKey | Ed25519PrivateKey, parsed once


class Signer:
    """Signs messages for one domain. Build it once per container: key parsing is slow.

    ``sign(message)`` returns the DKIM-Signature field(s) to prepend to the message,
    CRLF-terminated and folded: the RSA signature first, then the Ed25519 one. Each
    signature covers neither DKIM-Signature field, so the order does not matter for
    validity; RSA goes on top because some verifiers check only the topmost signature.
    """

    def __init__(self, keys: Sequence[DkimKey], *, clock: Callable[[], float] = time.time) -> None:
        # The heavy imports happen here, once per container, not in sign().
        import dkim
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils
        from dkim.canonicalization import CanonicalizationPolicy, Relaxed

        domains = {_domain(k.domain) for k in keys}
        if len(domains) > 1:
            raise DkimKeyError(f"one Signer signs for one domain, got {sorted(domains)}")
        by_algorithm: dict[str, _LoadedKey] = {}
        for key in keys:
            _check_algorithm(key.algorithm)
            _selector(key.selector)
            # First key per algorithm wins: keys_from_secret() puts the newest first.
            if key.algorithm not in by_algorithm:
                by_algorithm[key.algorithm] = _LoadedKey(key, _load_private_key(key))
        if RSA not in by_algorithm:
            # An Ed25519-only signature is ignored by most receivers (RFC 8463 §6), which
            # would fail DMARC silently; refuse the configuration instead.
            raise DkimKeyError("a DKIM signer needs an rsa-sha256 key")
        self.domain = domains.pop()
        self._keys = [by_algorithm[a] for a in ALGORITHMS if a in by_algorithm]
        self._clock = clock
        self._dkim = dkim
        self._relaxed = Relaxed  # headers; the body goes through relaxed_body_hash()
        self._policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        # EMSA-PKCS1-v1_5 over a SHA-256 digest we computed (RFC 6376 §3.3.1, RFC 8017 §8.2).
        self._rsa_args = (padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    @property
    def keys(self) -> list[DkimKey]:
        """The keys in use, in signature order."""
        return [k.key for k in self._keys]

    def sign(self, message: bytes) -> bytes:
        """The DKIM-Signature field(s) for ``message`` (CRLF or LF line ends).

        Only the header section is parsed (by dkimpy); the body is canonicalised and hashed
        in pieces of :data:`BODY_CHUNK` bytes straight from ``message``, so a large message
        costs no copy of itself here.
        """
        head, body_start = split_header_section(message)
        try:
            headers, _ = self._dkim.rfc822_parse(head)
        except self._dkim.MessageFormatError as exc:
            raise DkimSigningError(str(exc)) from exc

        present = [name.lower() for name, _ in headers]
        if b"from" not in present:
            raise DkimSigningError("the message has no From field (RFC 6376 §5.4)")
        include = [
            name.encode("ascii")
            for name in SIGNED_HEADERS
            for _ in range(present.count(name.encode("ascii")) + (name in OVERSIGNED_HEADERS))
        ]

        # Relaxed body (RFC 6376 §3.4.4), hashed once: both algorithms use SHA-256.
        # The whole body is signed; never l= (RFC 6376 §8.2: it lets anyone append).
        bodyhash = relaxed_body_hash(message, body_start)
        canon_headers = self._relaxed.canonicalize_headers(headers)
        timestamp = int(self._clock())
        return b"".join(
            self._sign_one(loaded, canon_headers, include, bodyhash, timestamp)
            for loaded in self._keys
        )

    def _sign_one(
        self,
        loaded: _LoadedKey,
        canon_headers: list[Any],
        include: list[bytes],
        bodyhash: bytes,
        timestamp: int,
    ) -> bytes:
        key = loaded.key
        tags = [
            b"v=1",
            b"a=" + key.algorithm.encode("ascii"),
            b"c=relaxed/relaxed",
            b"d=" + self.domain.encode("ascii"),
            b"s=" + key.selector.encode("ascii"),
            b"t=%d" % timestamp,
            # FWS is allowed around the colons (RFC 6376 §3.5 sig-h-tag): fold points.
            b"h=" + b" : ".join(include),
            b"bh=" + _b64(bodyhash),
            b"b=",
        ]
        unsigned = _fold(b"; ".join(tags), len(_HEADER_NAME) + 2)
        # RFC 6376 §3.7: the header hash covers the selected fields and then this field
        # with an empty b=, without its trailing CRLF. dkimpy's hash_headers is the same
        # code its verifier runs, so signer and verifier cannot disagree on it.
        hasher = hashlib.sha256()
        self._dkim.hash_headers(
            hasher, self._policy, canon_headers, list(include), (_HEADER_NAME, b" " + unsigned), {}
        )
        digest = hasher.digest()
        if key.algorithm == RSA:
            signature: bytes = loaded.private.sign(digest, *self._rsa_args)
        else:
            # RFC 8463 §3: PureEdDSA over the SHA-256 hash, not over the data itself.
            signature = loaded.private.sign(digest)
        return _HEADER_NAME + b": " + unsigned + _fold_b64(_b64(signature), unsigned)


# --------------------------------------------------------------------------- helpers


BODY_CHUNK = 1 << 16  # bytes of body canonicalised at a time: the working set is a few of these
_END_OF_HEADERS = rb"\n\r?\n"
_WSP_RUN = rb"\t[\t ]*| [\t ]+"  # every run that is not already one space
_CRLFS = b"\r\n" * 4096


def split_header_section(message: bytes) -> tuple[bytes, int]:
    """The header section (through the CRLF or LF ending its last field) and where the body
    starts, as dkimpy's ``rfc822_parse`` splits them: at the first empty line, with CRLF
    or LF line ends; no empty line means no body. Linear in the header section's size."""
    if message.startswith(b"\n"):
        return b"", 1
    if message.startswith(b"\r\n"):
        return b"", 2
    import re  # on first use: importing this module stays cheap

    found = re.search(_END_OF_HEADERS, message)
    if found is None:
        return message, len(message)
    return message[: found.start() + 1], found.end()


class RelaxedBody:
    """RFC 6376 §3.4.4 relaxed body canonicalisation of a body fed in pieces of any size.

    Gives what dkimpy computes for a message body: lines end at CRLF or a bare LF (as
    ``rfc822_parse`` reads them; a bare CR is content), WSP before a line end goes, runs of
    WSP become one space, empty lines at the end go, a non-empty body ends in one CRLF and
    an empty one is empty. ``write`` receives the canonical body in order, in pieces.

    Each piece is handled with a few whole-buffer operations (no per-line objects, no
    pattern that backtracks), so time is linear and memory a few pieces. What a later
    piece can still change is held back: a trailing run of WSP with an optional CR (one
    space and a flag: a run becomes one space anyway, or goes before a line end), and the
    number of line ends not followed by content yet (trailing empty lines are dropped).
    """

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._carry = b""  # undecided tail: b"", b" ", b"\r" or b" \r"
        self._pending = 0  # line ends seen and not yet written
        self._content = False  # anything but line ends written yet

    def update(self, piece: bytes | memoryview) -> None:
        data = self._carry + bytes(piece)
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        keep = len(data[:end].rstrip(b" \t"))
        self._carry = (b" " if keep < end else b"") + (b"\r" if end < len(data) else b"")
        if keep:
            self._lines(data[:keep])

    def _lines(self, data: bytes) -> None:
        # A CR is held back above, so no CRLF is split between two calls; a WSP run is held
        # back whole, so none is either. Order as dkimpy: line ends, then WSP.
        import re

        text = re.sub(_WSP_RUN, b" ", data.replace(b"\r\n", b"\n")).replace(b" \n", b"\n")
        core = text.rstrip(b"\n")
        if core:
            self._flush_pending()
            self._write(core.replace(b"\n", b"\r\n"))
            self._content = True
        self._pending += len(text) - len(core)

    def _flush_pending(self) -> None:
        while self._pending:
            n = min(self._pending, len(_CRLFS) // 2)
            self._write(_CRLFS[: 2 * n])
            self._pending -= n

    def finish(self) -> None:
        """The end of the body: an unterminated last line keeps its WSP (as in dkimpy)."""
        if self._carry:
            self._flush_pending()
            self._write(self._carry)
            self._content = True
            self._carry = b""
        if self._content:
            self._pending = 0
            self._write(b"\r\n")

def relaxed_body_hash(message: bytes, body_start: int, chunk: int = BODY_CHUNK) -> bytes:
    """SHA-256 of the relaxed canonical body of ``message[body_start:]`` (RFC 6376 §3.7),
    fed to :class:`RelaxedBody` in pieces of ``chunk`` bytes: no copy of the body is made."""
    hasher = hashlib.sha256()
    canon = RelaxedBody(hasher.update)
    view = memoryview(message)
    for i in range(body_start, len(message), chunk):
        canon.update(view[i : i + chunk])
    canon.finish()
    return hasher.digest()


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalisation; same output as dkimpy's, faster.

    dkimpy's ``Relaxed.canonicalize_body`` runs ``[\\t ]+\\r\\n`` and ``[\\t ]+``
    over the whole body; the first backtracks at every run of spaces and the second
    rewrites every single space, ~3x the cost of an RSA-2048 signature on a 50 KB HTML
    body. Here trailing WSP goes with ``rstrip`` per line and only runs or tabs are
    rewritten. ``tests/unit/test_signing.py`` checks byte-equality with dkimpy.
    """
    import re

    from dkim.canonicalization import correct_empty_body, strip_trailing_lines

    lines = body.split(b"\r\n")
    # Like dkimpy, strip only WSP that a CRLF follows: not on the last, unterminated piece.
    stripped = [line.rstrip(b" \t") for line in lines[:-1]]
    stripped.append(lines[-1])
    compressed = re.sub(rb"\t[\t ]*| [\t ]+", b" ", b"\r\n".join(stripped))
    canonical: bytes = correct_empty_body(strip_trailing_lines(compressed))
    return canonical


def _b64(data: bytes) -> bytes:
    # binascii is built in; the base64 module would pull in re at import time.
    return b2a_base64(data, newline=False)


def _fold(value: bytes, first_col: int) -> bytes:
    """Fold at spaces so that no line passes _LINE columns (RFC 5322 §2.2.3)."""
    lines: list[bytes] = []
    line = b""
    col = first_col
    for word in value.split(b" "):
        if line and col + 1 + len(word) > _LINE:
            lines.append(line)
            line, col = b" " + word, 1 + len(word)
        else:
            sep = b" " if line else b""
            line += sep + word
            col += len(sep) + len(word)
    lines.append(line)
    return b"\r\n".join(lines)


def _fold_b64(b64: bytes, unsigned: bytes) -> bytes:
    """b= data after ``unsigned``: fill its last line, then whole continuation lines.

    FWS inside b= is allowed (RFC 6376 §3.5) and verifiers drop the whole value,
    whitespace included, before hashing, so these breaks cannot change the signature.
    """
    last = unsigned.rsplit(b"\r\n", 1)[-1]
    col = len(last) + (len(_HEADER_NAME) + 2 if b"\r\n" not in unsigned else 0)
    room = max(_LINE - col, 0)
    parts = [b64[:room]]
    rest = b64[room:]
    width = _LINE - 1
    parts += [b"\r\n " + rest[i : i + width] for i in range(0, len(rest), width)]
    return b"".join(parts) + b"\r\n"


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise DkimKeyError(f"unsupported DKIM algorithm {algorithm!r}, expected {ALGORITHMS}")


def _domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain or not domain.isascii():
        # d= is compared with the From domain by DMARC; use A-labels (RFC 6376 §3.5).
        raise DkimKeyError(f"DKIM domain must be a non-empty ASCII (A-label) name: {domain!r}")
    return domain


def _selector(selector: str) -> str:
    selector = selector.strip()
    if not selector or not selector.isascii() or any(c in selector for c in " ;=\t"):
        raise DkimKeyError(f"bad DKIM selector: {selector!r}")
    return selector


def _parse_time(raw: object) -> datetime:
    from datetime import UTC, datetime

    if not raw:
        return datetime.min.replace(tzinfo=UTC)
    stamp = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _load_private_key(key: DkimKey) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        private = serialization.load_pem_private_key(key.private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"{dns_name(key)}: unreadable private key: {exc}") from exc
    if key.algorithm == RSA:
        if not isinstance(private, rsa.RSAPrivateKey):
            raise DkimKeyError(f"{dns_name(key)}: rsa-sha256 needs an RSA key")
        if private.key_size < _RSA_MIN_BITS:
            raise DkimKeyError(f"{dns_name(key)}: RSA key of {private.key_size} bits < 1024")
    elif not isinstance(private, ed25519.Ed25519PrivateKey):
        raise DkimKeyError(f"{dns_name(key)}: ed25519-sha256 needs an Ed25519 key")
    return private
