"""Sending domains: DKIM keys in Secrets Manager, the DNS records to publish, live checks,
and key rotation.

`POST /v1/domains` makes an RSA-2048 and an Ed25519 key (RFC 8463 §6: sign with both) under
dated selectors and answers the records to publish. `GET /v1/domains/{domain}` (read scope)
looks each record up in DNS and reports it verified, missing or wrong with what DNS holds; it
writes nothing. The writes happen in `verify()`: `POST /v1/domains/{domain}/verify` (admin
scope) and the scheduled re-check (DomainCheckFunction, `recheck_all`). A domain may send once
every current DKIM record verifies (no open relay). Verification is not forever: a re-check
that finds a current DKIM record missing or wrong (a definite DNS answer; a failed lookup
changes nothing) marks the domain failing, and after `unverify_after` (72 h, as SES waits
before an identity's DKIM fails) un-verifies it: the API then refuses new mail from it (403,
as SES stops sending for the identity), while mail accepted earlier is still delivered.
Rotation (RFC 6376 §3.6.1 lets a domain publish many selectors): new keys wait in the
secret's `pending` list, which the signer ignores, until a verify finds their records; then
they sign, and the old keys are kept `retire_at` a grace period (messages in flight and
forwarded copies still verify against the old record), after which they are retired
(`retired_at`, ignored by keys_from_secret) and their records may be deleted."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..addresses import AddressError, check_domain, to_ascii_domain
from ..clock import epoch_of, iso, iso_micro
from ..errors import ConflictError, DnsUnavailableError, InvalidRequestError, NotFoundError
from ..records import Domain
from ..store import Domains, Secrets

if TYPE_CHECKING:
    import dns.resolver

log = logging.getLogger("outpost.domains")
UNVERIFY_AFTER_HOURS = 72  # a verified domain whose DKIM record is gone keeps sending this long

Lookup = Callable[[str, str], list[str]]  # (name, "TXT" | "MX") -> answers; [] if none


class DomainService:
    def __init__(self, *, domains: Domains, secrets: Secrets, secret_id: Callable[[str], str],
                 lookup: Lookup, sender_ip: str | None, bounce_domain: str, region: str,
                 grace_days: int = 7, unverify_after_hours: float = UNVERIFY_AFTER_HOURS,
                 clock: Callable[[], float] = time.time) -> None:
        self.domains, self.secrets, self.secret_id, self.lookup = domains, secrets, secret_id, lookup
        self.sender_ip, self.bounce_domain, self.region = sender_ip, bounce_domain, region
        self.grace, self.clock = grace_days * 86400, clock
        self.unverify_after = unverify_after_hours * 3600

    # ---- commands -------------------------------------------------------------------------------
    def create(self, domain: str, *, mta_sts: bool = False) -> dict:
        name = _domain(domain)
        now = self.clock()
        existing = self.domains.domain(name)
        if existing is not None and self.secrets.read_json(self.secret_id(name)) is not None:
            raise ConflictError(f"{name} is already an Outpost domain (rotate its keys with "
                           f"POST /v1/domains/{name}/rotate)", field="domain")
        keys = _new_keys(name, now, taken=set())
        record = Domain(domain=name, verified=False, created_at=iso(now),
                        selectors=tuple(k.selector for k in keys), mta_sts=mta_sts)
        # Claim the name first: of two concurrent creates only the winner writes keys, so the
        # records a caller is told to publish are the ones that will sign.
        if existing is not None:  # an earlier create stopped before its keys were stored: finish it
            self.domains.put_domain(record)
        elif not self.domains.add_domain(record):
            raise ConflictError(f"{name} is already an Outpost domain", field="domain")
        secret = {"domain": name, "keys": [_entry(k, now) for k in keys], "pending": []}
        self.secrets.put_json(self.secret_id(name), secret)
        return self.check(name)

    def rotate(self, domain: str) -> dict:
        name = _domain(domain)
        self._domain_record(name)
        secret = self._secret(name)
        if secret.get("pending"):
            raise ConflictError("a rotation is already waiting for its DNS records; publish them and "
                           f"GET /v1/domains/{name}", field="domain")
        now = self.clock()
        taken = {e["selector"] for e in secret["keys"]}
        secret["pending"] = [_entry(k, now) for k in _new_keys(name, now, taken)]
        self.secrets.put_json(self.secret_id(name), secret)
        record = self.domains.update_domain(
            name, pending_selectors=tuple(e["selector"] for e in secret["pending"]))
        return self.check(name, record=record)

    def check(self, domain: str, *, record: Domain | None = None) -> dict:
        """GET: look every record up and report; writes nothing (read scope)."""
        return self._inspect(domain, record=record, apply=False)

    def verify(self, domain: str) -> dict:
        """Look every record up and act on it: promote verified pending keys, retire old keys
        past their grace, verify the domain, or count towards un-verifying it."""
        return self._inspect(domain, apply=True)

    def recheck_all(self, count: Callable[[str, int], None] = lambda name, n: None) -> dict:
        """The scheduled re-check: `verify` every domain; one domain's trouble skips only it.
        `count(metric, n)` records how many were un-verified and how many fail DKIM."""
        out: dict[str, Any] = {"checked": 0, "verified": [], "failing": [], "unverified": [], "errors": []}
        for record in self.domains.domains():
            name = record.domain
            try:
                view = self.verify(name)
            except Exception:  # noqa: BLE001 - logged; the next schedule tries again
                log.exception("domain re-check failed", extra={"domain": name})
                out["errors"].append(name)
                continue
            out["checked"] += 1
            if view["verified"]:
                out["verified"].append(name)
            elif record.verified:
                out["unverified"].append(name)
            if view.get("dkim_failing_since"):
                out["failing"].append(name)
        count("DomainUnverified", len(out["unverified"]))
        count("DomainDkimFailing", len(out["failing"]))
        return out

    def _inspect(self, domain: str, *, record: Domain | None = None, apply: bool) -> dict:
        from ..signing import dns_txt_value, keys_from_secret

        name = _domain(domain)
        record = record or self._domain_record(name)
        secret = self._secret(name)
        now = self.clock()
        records: list[dict] = []
        ascii_name = to_ascii_domain(name)

        # The rotation moves first (pending keys whose records verify start signing; old keys
        # past their grace period retire), so the answer describes the state after this call.
        pending_records = []
        for k in keys_from_secret({"domain": ascii_name, "keys": secret.get("pending") or []}):
            rec = self._dkim_record(k.selector, ascii_name, dns_txt_value(k))
            rec["note"] = "new key (rotation): publish it next to the current one"
            pending_records.append(rec)
        pending_ok = bool(pending_records) and all(r["status"] == "verified" for r in pending_records)
        changed = self._advance(secret, now, promote=pending_ok) if apply else False
        if pending_ok and apply:
            pending_records = []
        elif pending_ok:
            for rec in pending_records:
                rec["note"] = (f"new key (rotation), published: POST /v1/domains/{name}/verify (or "
                               "wait for the scheduled check) to start signing with it")

        retiring = {e["selector"]: e.get("retire_at") for e in secret["keys"]
                    if e.get("retire_at") and not e.get("retired_at")}
        current_ok, failing = True, False
        for k in keys_from_secret({"domain": ascii_name, "keys": secret["keys"]}):
            rec = self._dkim_record(k.selector, ascii_name, dns_txt_value(k))
            if k.selector in retiring:
                rec["status"] = "retiring" if rec["status"] == "verified" else rec["status"]
                rec["required"] = False
                rec["note"] = f"old key, signing stopped; keep published until {iso(retiring[k.selector])}"
            elif rec["status"] != "verified":
                current_ok = False
                failing = failing or rec["status"] in ("missing", "wrong")  # not "unchecked"
            records.append(rec)
        records.extend(pending_records)
        records.append(self._spf(ascii_name))
        records.append(self._dmarc(ascii_name))
        records.append(self._bounce_mx())
        policy = None
        if record.mta_sts:
            rec, policy = self._mta_sts(ascii_name, now)
            records.append(rec)

        if apply:
            record = self._record(record, secret, now, changed=changed, ok=current_ok, failing=failing)
        return {"domain": name, "verified": record.verified,
                "created_at": record.created_at, "verified_at": record.verified_at,
                "selectors": list(record.selectors),
                "pending_selectors": list(record.pending_selectors or ()),
                "records": records, "mta_sts_policy": policy,
                "checked_at": record.checked_at, "dkim_failing_since": record.dkim_failing_since,
                "unverified_at": record.unverified_at}

    def _record(self, record: Domain, secret: dict, now: float, *, changed: bool, ok: bool,
                failing: bool) -> Domain:
        """The writes of a verify: the rotation's new state, and the domain's verification."""
        name = record.domain
        if changed:
            self.secrets.put_json(self.secret_id(name), secret)
        updates: dict[str, Any] = {"checked_at": iso(now)}
        if ok:
            if not record.verified:
                updates.update(verified=True, verified_at=iso(now))
            if record.dkim_failing_since:
                updates["dkim_failing_since"] = None
        elif failing and record.verified:
            since = record.dkim_failing_since
            if not since:
                updates["dkim_failing_since"] = iso(now)
                log.warning("DKIM record missing or wrong", extra={"domain": name})
            elif now - epoch_of(since) >= self.unverify_after:
                updates.update(verified=False, unverified_at=iso(now), dkim_failing_since=None)
                log.warning("domain un-verified: its DKIM record is gone", extra={"domain": name})
        if changed:
            updates.update(selectors=tuple(e["selector"] for e in secret["keys"] if not e.get("retired_at")),
                           pending_selectors=None if not secret.get("pending") else
                           tuple(e["selector"] for e in secret["pending"]))
        return self.domains.update_domain(name, **updates)

    # ---- rotation -------------------------------------------------------------------------------
    def _advance(self, secret: dict, now: float, *, promote: bool) -> bool:
        changed = False
        if promote and secret.get("pending"):
            for e in secret["keys"]:
                if not e.get("retired_at") and not e.get("retire_at"):
                    e["retire_at"] = now + self.grace
            for e in secret["pending"]:
                e["created_at"] = iso_micro(now)  # newest first: the new keys sign from now on
            secret["keys"] = secret["pending"] + secret["keys"]
            secret["pending"] = []
            changed = True
        for e in secret["keys"]:
            if e.get("retire_at") and not e.get("retired_at") and e["retire_at"] <= now:
                e["retired_at"] = iso_micro(now)
                changed = True
        return changed

    # ---- records --------------------------------------------------------------------------------
    def _answers(self, name: str, rtype: str) -> tuple[list[str] | None, str | None]:
        try:
            return self.lookup(name, rtype), None
        except DnsUnavailableError as exc:
            return None, f"DNS lookup failed: {exc}"

    def _dkim_record(self, selector: str, domain: str, value: str) -> dict:
        name = f"{selector}._domainkey.{domain}"
        rec = {"purpose": "dkim", "type": "TXT", "name": name, "value": value, "required": True}
        found, err = self._answers(name, "TXT")
        if found is None:
            return dict(rec, status="unchecked", note=err)
        want = _tag(value, "p")
        if any(_tag(f, "p") == want for f in found):
            return dict(rec, status="verified", found=found)
        return dict(rec, status="wrong" if found else "missing", found=found)

    def _spf(self, domain: str) -> dict:
        if self.sender_ip is None:
            return {"purpose": "spf", "type": "TXT", "name": domain, "value": "v=spf1 ~all",
                    "required": False, "status": "unchecked",
                    "note": "the sender's IP is unknown (set OUTPOST_SENDER_IP / SenderPublicIp)"}
        ip = ipaddress.ip_address(self.sender_ip)
        mech = f"ip{ip.version}:{ip}"
        rec = {"purpose": "spf", "type": "TXT", "name": domain, "value": f"v=spf1 {mech} ~all",
               "required": False,
               "note": f"already have SPF? add {mech} to it: a domain may have one SPF record only"}
        found, err = self._answers(domain, "TXT")
        if found is None:
            return dict(rec, status="unchecked", note=err)
        spf = [f for f in found if f.lower().startswith("v=spf1")]
        if not spf:
            return dict(rec, status="missing", found=spf)
        if len(spf) == 1 and _spf_allows(spf[0], ip):
            return dict(rec, status="verified", found=spf)
        return dict(rec, status="wrong", found=spf)  # RFC 7208 §4.5: two records is permerror

    def _dmarc(self, domain: str) -> dict:
        name = f"_dmarc.{domain}"
        rec = {"purpose": "dmarc", "type": "TXT", "name": name, "required": False,
               "value": f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}; adkim=r; aspf=r",
               "note": "a suggestion: start with p=none, read the reports, then quarantine/reject"}
        found, err = self._answers(name, "TXT")
        if found is None:
            return dict(rec, status="unchecked", note=err)
        dmarc = [f for f in found if f.replace(" ", "").upper().startswith("V=DMARC1")]
        return dict(rec, status="verified" if dmarc else "missing", found=dmarc)

    def _bounce_mx(self) -> dict:
        target = f"inbound-smtp.{self.region}.amazonaws.com"
        name = to_ascii_domain(self.bounce_domain)
        rec = {"purpose": "bounce_mx", "type": "MX", "name": name, "value": f"10 {target}",
               "required": False,
               "note": "once per installation: bounces come back to this domain through SES receiving"}
        found, err = self._answers(name, "MX")
        if found is None:
            return dict(rec, status="unchecked", note=err)
        hosts = {f.split()[-1].rstrip(".").lower() for f in found if f.split()}
        status = "verified" if target in hosts else ("wrong" if found else "missing")
        return dict(rec, status=status, found=found)

    def _mta_sts(self, domain: str, now: float) -> tuple[dict, str]:
        name = f"_mta-sts.{domain}"
        rec = {"purpose": "mta_sts", "type": "TXT", "name": name, "required": False,
               "value": f"v=STSv1; id={time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}",
               "note": f"serve mta_sts_policy at https://mta-sts.{domain}/.well-known/mta-sts.txt "
                       "(RFC 8461); it protects mail *to* your domain"}
        mx, _ = self._answers(domain, "MX")
        hosts = sorted({m.split()[-1].rstrip(".") for m in (mx or []) if m.split()}) or [f"mx.{domain}"]
        policy = "version: STSv1\nmode: testing\n" + "".join(f"mx: {h}\n" for h in hosts) + "max_age: 604800\n"
        found, err = self._answers(name, "TXT")
        if found is None:
            return dict(rec, status="unchecked", note=err), policy
        sts = [f for f in found if f.replace(" ", "").startswith("v=STSv1")]
        return dict(rec, status="verified" if sts else "missing", found=sts), policy

    # ---- storage --------------------------------------------------------------------------------
    def _domain_record(self, name: str) -> Domain:
        found = self.domains.domain(name)
        if found is None:
            raise NotFoundError(f"{name} is not an Outpost domain", field="domain")
        return found

    def _secret(self, name: str) -> dict:
        secret = self.secrets.read_json(self.secret_id(name))
        if not secret or "keys" not in secret:
            raise NotFoundError(f"{name} has no DKIM keys", field="domain")
        secret.setdefault("pending", [])
        return secret


def _domain(domain: str) -> str:
    """The domain's key everywhere (table, secret, DKIM d=): its lowercase A-label form."""
    try:
        return to_ascii_domain(check_domain(domain))
    except AddressError as exc:
        raise InvalidRequestError(f"invalid domain: {exc}", field="domain") from None


def _new_keys(domain: str, now: float, taken: set[str]) -> list[Any]:
    from ..signing import ED25519, RSA, generate_key

    day = time.strftime("%Y%m%d", time.gmtime(now))
    n = 1
    while True:
        suffix = "" if n == 1 else str(n)
        sel_rsa, sel_ed = f"o{day}r{suffix}", f"o{day}e{suffix}"
        if sel_rsa not in taken and sel_ed not in taken:
            break
        n += 1
    return [generate_key(domain, sel_rsa, RSA), generate_key(domain, sel_ed, ED25519)]


def _entry(key: Any, now: float) -> dict:
    return {"selector": key.selector, "algorithm": key.algorithm,
            "private_key": key.private_key_pem.decode("ascii"), "created_at": iso_micro(now),
            "retired_at": None}


def _tag(record: str, tag: str) -> str | None:
    """A tag's value in a `k=v; k=v` record (RFC 6376 §3.2), whitespace removed."""
    for part in record.split(";"):
        k, sep, v = part.partition("=")
        if sep and k.strip() == tag:
            return "".join(v.split())
    return None


def _spf_allows(record: str, ip: Any) -> bool:
    for term in record.split()[1:]:
        term = term.lstrip("+")
        if term.lower().startswith(("ip4:", "ip6:")):
            try:
                if ip in ipaddress.ip_network(term[4:], strict=False):
                    return True
            except ValueError:
                continue
    return False


def dns_lookup(resolver: dns.resolver.Resolver) -> Lookup:
    """A live lookup through `resolver` (bootstrap's dns_resolver(cache=False): a user fixing
    a record wants the new answer, not ours from a minute ago)."""
    import dns.exception
    import dns.resolver

    def lookup(name: str, rtype: str) -> list[str]:
        try:
            answer = resolver.resolve(name, rtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers) as exc:
            if isinstance(exc, dns.resolver.NXDOMAIN):
                return []
            raise DnsUnavailableError(str(exc)) from None
        except dns.exception.DNSException as exc:
            raise DnsUnavailableError(type(exc).__name__) from None
        out = []
        for r in answer:
            if rtype == "TXT":
                out.append(b"".join(r.strings).decode("utf-8", "replace"))
            elif rtype == "MX":
                out.append(f"{r.preference} {str(r.exchange).rstrip('.')}")
            else:
                out.append(r.to_text())
        return out

    return lookup
