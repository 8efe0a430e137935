"""Email address parsing and validation (RFC 5322 addr-spec, RFC 6531 internationalised).

Returns normalised addresses: the local part as given, the domain lowercased and in its
Unicode form (IDNA 2008 via the `idna` codec is not in the stdlib; Python's `idna` codec is
IDNA 2003, good enough to validate and to produce the A-label for DNS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"^{_ATEXT}+(\.{_ATEXT}+)*$")
_QUOTED = re.compile(r'^"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$')
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class AddressError(ValueError):
    pass


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


def to_ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise AddressError(f"invalid internationalised domain {domain!r}") from exc


def check_domain(domain: str) -> str:
    """A valid domain name (IDN allowed), lowercased, Unicode form. Raises AddressError."""
    if not isinstance(domain, str) or any(c in domain for c in "\r\n\0 @"):
        raise AddressError("not a domain name")
    return _check_domain(domain)


def _check_domain(domain: str) -> str:
    domain = domain.rstrip(".").lower()
    if not domain or len(domain) > 253:
        raise AddressError("domain is empty or too long")
    ascii_domain = to_ascii_domain(domain)
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise AddressError(f"domain {domain!r} has no dot")
    for label in labels:
        if not _LABEL.match(label):
            raise AddressError(f"invalid domain label {label!r}")
    if labels[-1].isdigit():
        raise AddressError("a numeric top-level domain is not a domain")
    return domain


def parse_address(value: str, *, allow_name: bool = True) -> Address:
    """Parse `a@b.c` or `Name <a@b.c>` strictly. Raises AddressError with a reason."""
    if not isinstance(value, str):
        raise AddressError("must be a string")
    if "\r" in value or "\n" in value or "\0" in value:
        raise AddressError("contains a line break or NUL (header injection)")
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
        if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
            raise AddressError("invalid characters in the local part")
    else:
        # RFC 6531: UTF-8 atext; still no specials, spaces or controls.
        specials = any(c in ' ()<>[]:;@\\,"' or ord(c) < 32 for c in local)
        if specials or ".." in local or local.startswith(".") or local.endswith("."):
            raise AddressError("invalid characters in the local part")
    try:
        domain = _check_domain(domain)
    except AddressError:
        raise
    if len(local.encode()) + len(to_ascii_domain(domain)) + 1 > 254:
        raise AddressError("address longer than 254 octets")
    return Address(local=local, domain=domain, display_name=name.strip())


def normalise(addr: str) -> str:
    """The key used for suppression lookups: local part as is, domain lowercased.

    Local parts are case-sensitive in theory (RFC 5321 §2.4) but not in practice; we fold the
    whole address to lowercase, as SES and Postmark do for their suppression lists.
    """
    a = parse_address(addr, allow_name=False)
    return f"{a.local}@{a.domain}".lower()
