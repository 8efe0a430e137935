"""GET /v1/reputation and POST /v1/reputation/.../resume without HTTP (routes.py is the HTTP
side): which scopes a caller sees, and the admin's resume (issue 11 item 6)."""

from __future__ import annotations

from ..addresses import AddressError, check_domain
from ..errors import ConflictError, InvalidRequestError, NotFoundError
from ..reputation import Reputation, domain_scope, key_scope, sending_domain
from ..store import ApiKeys, Domains
from .auth import Principal


class ReputationApi:
    def __init__(self, reputation: Reputation, *, domains: Domains, keys: ApiKeys) -> None:
        self.reputation, self.domains, self.keys = reputation, domains, keys

    def scopes_for(self, principal: Principal) -> list[str]:
        """An admin sees every sending domain and key; any other key its own key and the
        domains it may send from (those it is bound to, else every verified domain)."""
        if "admin" in principal.scopes:
            domains = sorted(d.domain for d in self.domains.domains())
            keys = sorted(k.key_id for k in self.keys.keys())
        else:
            domains = sorted(principal.domains) if principal.domains is not None else sorted(
                d.domain for d in self.domains.domains() if d.verified)
            keys = [principal.key_id]
        return [*(domain_scope(d) for d in domains), *(key_scope(k) for k in keys)]

    def list(self, principal: Principal) -> dict:
        return self.reputation.view(self.scopes_for(principal))

    def resume_domain(self, domain: str, principal: Principal) -> dict:
        try:
            name = sending_domain(check_domain(domain))
        except AddressError as exc:
            raise InvalidRequestError(f"domain: {exc}", field="domain") from None
        if name is None or self.domains.domain(name) is None:
            raise NotFoundError(f"no sending domain {domain!r}", field="domain")
        return self._resume(domain_scope(name), principal)

    def resume_key(self, key_id: str, principal: Principal) -> dict:
        if self.keys.key_by_id(key_id) is None:
            raise NotFoundError(f"no API key {key_id!r}", field="key_id")
        return self._resume(key_scope(key_id), principal)

    def _resume(self, scope: str, principal: Principal) -> dict:
        by = f"key:{principal.key_id} ({principal.name})" if principal.name else f"key:{principal.key_id}"
        if self.reputation.resume(scope, by) is None:
            raise ConflictError(f"{scope} is not paused", field="domain" if scope.startswith("domain:") else "key_id")
        return self.reputation.view([scope])["items"][0]
