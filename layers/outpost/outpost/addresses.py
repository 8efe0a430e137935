"""Email address parsing and validation (RFC 5322 addr-spec, RFC 6531 internationalised).

Returns canonical addresses, so that one mailbox has one spelling everywhere (envelope,
stored recipient, suppression key):

* the domain is lowercased and in its Unicode form (U-labels), mapped and checked with IDNA 2008
  / UTS #46 non-transitional processing (the `idna` package; RFC 5890-5893, UTS #46 §4).
  Python's own `idna` codec is IDNA 2003: it maps `faß.de` to `fass.de` (another registrant's
  domain) and silently drops zero-width joiners, so it is not used.
* a quoted local part is written unquoted when it can be (RFC 5321 §4.1.2: `"john"@x` and
  `john@x` are the same mailbox, and the quoted form SHOULD NOT be used when the unquoted one
  exists), otherwise with only the backslashes that are needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr

import idna

from .errors import AddressError

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# All used with fullmatch(): `$` also matches before a trailing newline.
_DOT_ATOM = re.compile(rf"{_ATEXT}+(\.{_ATEXT}+)*")
_QUOTED = re.compile(r'"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_PAIR = re.compile(r"\\(.)")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")

# What cannot go into one header line: every character str.splitlines() breaks at (CR, LF, VT,
# FF, FS, GS, RS, NEL, LINE/PARAGRAPH SEPARATOR: Python's email package refuses them all in a
# header value), the other C0/C1 controls and DEL (not VCHAR, RFC 5322 §2.2), and lone
# surrogates (JSON can carry them; they cannot be encoded as UTF-8). Tab is folding white space.
_NOT_ONE_LINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def line_trouble(value: str) -> str | None:
    """Why `value` cannot be (part of) one header line, or None when it can."""
    m = _NOT_ONE_LINE.search(value)
    if m is None:
        return None
    c = m.group()
    if c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
        return f"contains a line break (U+{ord(c):04X}; header injection)"
    if "\ud800" <= c <= "\udfff":
        return f"contains a lone surrogate (U+{ord(c):04X}), which is not valid Unicode"
    return f"contains a control character (U+{ord(c):04X})"


@dataclass(frozen=True)
class Address:
    local: str
    domain: str  # lowercase, Unicode form
    display_name: str = ""

    @property
    def addr(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def ascii_domain(self) -> str:
        return to_ascii_domain(self.domain)

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is non-ASCII (RFC 6531); an IDN domain alone can use its A-label."""
        return not self.local.isascii()

    @property
    def smtp_addr(self) -> str:
        """The address for the SMTP envelope: A-label domain, local part as is."""
        return f"{self.local}@{self.ascii_domain}"


def _is_plain_ascii(domain: str) -> bool:
    """ASCII with no A-label: nothing for IDNA to map or check (LDH rules are checked apart)."""
    return domain.isascii() and "xn--" not in domain.lower()


def to_ascii_domain(domain: str) -> str:
    """The A-label form for DNS and the SMTP envelope (IDNA 2008, UTS #46 non-transitional)."""
    if _is_plain_ascii(domain):
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError and its kinds are UnicodeErrors
        raise AddressError(f"invalid internationalised domain {domain!r} (IDNA 2008: {exc})") from None


def to_unicode_domain(domain: str) -> str:
    """The U-label form, lowercased: `Faß.DE` and `xn--fa-hia.de` are one domain and get one
    spelling, `faß.de`; `fass.de` is another domain and stays another spelling."""
    ascii_domain = to_ascii_domain(domain)
    if "xn--" not in ascii_domain:
        return ascii_domain
    try:
        return idna.decode(ascii_domain)
    except UnicodeError as exc:
        raise AddressError(f"invalid internationalised domain {domain!r} (IDNA 2008: {exc})") from None


def check_domain(domain: str) -> str:
    """A valid domain name (IDN allowed), lowercased, Unicode form. Raises AddressError."""
    if not isinstance(domain, str) or any(c in domain for c in "\r\n\0 @"):
        raise AddressError("not a domain name")
    return _check_domain(domain)


def _check_domain(domain: str) -> str:
    # No str.lower() on an IDN: UTS #46 does its own case mapping (str.lower() differs on some
    # letters); to_ascii_domain lowercases plain ASCII.
    domain = domain.rstrip(".")
    if not domain or len(domain) > 253:
        raise AddressError("domain is empty or too long")
    ascii_domain = to_ascii_domain(domain)
    if len(ascii_domain) > 253:
        raise AddressError("domain is too long")
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise AddressError(f"domain {domain!r} has no dot")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise AddressError(f"invalid domain label {label!r}")
    if labels[-1].isdigit():
        raise AddressError("a numeric top-level domain is not a domain")
    return to_unicode_domain(ascii_domain)


def parse_address(value: str, *, allow_name: bool = True) -> Address:
    """Parse `a@b.c` or `Name <a@b.c>` strictly. Raises AddressError with a reason."""
    if not isinstance(value, str):
        raise AddressError("must be a string")
    trouble = line_trouble(value)
    if trouble is not None:
        raise AddressError(trouble)
    value = value.strip()
    name = ""
    spec = value
    if "<" in value or ">" in value:
        if not allow_name:
            raise AddressError("a display name is not allowed here")
        name, spec = parseaddr(value)
        if not spec or not value.endswith(">"):
            raise AddressError("malformed 'Name <address>'")
    if spec.count("@") < 1:
        raise AddressError("missing '@'")
    local, _, domain = spec.rpartition("@")
    if not local or len(local.encode("utf-8")) > 64:
        raise AddressError("local part is empty or longer than 64 octets")
    if local.isascii():
        if not (_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local)):
            raise AddressError("invalid characters in the local part")
        local = _canonical_local(local)
    else:
        # RFC 6531: UTF-8 atext; still no specials, spaces or controls.
        specials = any(c in ' ()<>[]:;@\\,"' or ord(c) < 32 for c in local)
        if specials or ".." in local or local.startswith(".") or local.endswith("."):
            raise AddressError("invalid characters in the local part")
    domain = _check_domain(domain)
    if len(local.encode()) + len(to_ascii_domain(domain)) + 1 > 254:
        raise AddressError("address longer than 254 octets")
    return Address(local=local, domain=domain, display_name=name.strip())


def _canonical_local(local: str) -> str:
    """A valid ASCII local part in its one canonical spelling (RFC 5321 §4.1.2): unquoted
    when the quoted content is a dot-atom, else quoted with only `\\` and `"` escaped."""
    if not local.startswith('"'):
        return local
    content = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    if _DOT_ATOM.fullmatch(content):
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def normalise(addr: str) -> str:
    """The suppression key of a mailbox: its canonical address (see the module docstring),
    lowercased. One mailbox, one key: `"Jo"@FASS.de`, `jo@fass.de`; `jörg@xn--fa-hia.de`,
    `Jörg@faß.de`.

    Local parts are case-sensitive in theory (RFC 5321 §2.4) but not in practice; we fold the
    whole address to lowercase, as SES and Postmark do for their suppression lists.
    """
    return parse_address(addr, allow_name=False).addr.lower()


def suppression_key(addr: str) -> str:
    """`normalise`, for addresses that may predate the canonical spelling (stored records):
    one that no longer parses keeps its lowercased form rather than failing the lookup."""
    try:
        return normalise(addr)
    except AddressError:
        return addr.strip().lower()
