"""Who runs an MX host, and how hard we may push it (issue 11, items 1 and 2).

Mailbox providers throttle by sending IP across all of their MX hosts, so shaping is keyed by
(sending IP, provider), not by recipient domain: gmail.com, googlemail.com and every Google
Workspace domain share Google's limits. `provider_for` maps an MX host name to a provider by
suffix; a host no row knows is its own provider (KumoMTA's "site" falls back to the MX host).

The limits are data with their source. A stack overrides them without a code change through
`OUTPOST_SHAPING` (template parameter `ShapingOverrides`), a JSON object keyed by provider name,
e.g. `{"google": {"connections": 3, "per_minute": 120}, "default": {"per_connection": 50}}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from ..errors import ConfigError


@dataclass(frozen=True)
class Provider:
    name: str
    suffixes: tuple[str, ...]  # MX host name suffixes (a whole label boundary), lower case
    source: str


# Each row: the MX host names the provider publishes, with where that fact comes from.
PROVIDERS: tuple[Provider, ...] = (
    Provider("google", ("google.com", "googlemail.com"),
             "Google Workspace MX records (aspmx.l.google.com, smtp.google.com); "
             "gmail.com MX gmail-smtp-in.l.google.com"),
    Provider("microsoft", ("protection.outlook.com", "outlook.com", "hotmail.com"),
             "Microsoft 365 MX <tenant>.mail.protection.outlook.com; "
             "outlook.com/hotmail.com MX *.olc.protection.outlook.com"),
    Provider("yahoo", ("yahoodns.net", "yahoo.com", "aol.com"),
             "yahoo.com, aol.com, att.net MX mta*.am0.yahoodns.net / mx-aol.mail.gm0.yahoodns.net"),
    Provider("apple", ("icloud.com", "me.com", "mac.com"), "icloud.com, me.com, mac.com MX mx0*.mail.icloud.com"),
    Provider("united-internet", ("gmx.net", "gmx.com", "gmx.de", "web.de", "kundenserver.de", "ionos.com", "ionos.de"),
             "GMX MX mx00.gmx.net, WEB.DE MX mx-ha0*.web.de, IONOS MX mx00.kundenserver.de / mx00.ionos.com"),
    Provider("mailru", ("mail.ru",), "mail.ru, bk.ru, list.ru MX mxs.mail.ru"),
    Provider("yandex", ("yandex.ru", "yandex.net"), "yandex.ru MX mx.yandex.ru; Yandex 360 MX mx.yandex.net"),
    Provider("zoho", ("zoho.com", "zoho.eu", "zoho.in", "zohomail.com"), "Zoho Mail MX mx.zoho.com / mx.zoho.eu"),
    Provider("proton", ("protonmail.ch", "proton.me"), "Proton Mail MX mail.protonmail.ch, mailsec.protonmail.ch"),
    Provider("comcast", ("comcast.net",), "comcast.net MX mx*.comcast.net"),
    Provider("fastmail", ("messagingengine.com",), "Fastmail MX in*-smtp.messagingengine.com"),
    Provider("t-online", ("t-online.de",), "t-online.de MX mx0*.t-online.de"),
    Provider("orange", ("orange.fr", "wanadoo.fr"), "orange.fr MX smtp-in.orange.fr"),
    Provider("tencent", ("qq.com",), "qq.com MX mx*.qq.com"),
    Provider("netease", ("netease.com", "163.com", "126.com"), "163.com MX 163mx0*.mxmail.netease.com"),
    Provider("mimecast", ("mimecast.com",), "Mimecast MX *-smtp-inbound-*.mimecast.com"),
    Provider("proofpoint", ("pphosted.com", "ppe-hosted.com"), "Proofpoint MX mx*.pphosted.com"),
    Provider("barracuda", ("barracudanetworks.com",), "Barracuda Email Security MX *.ess.barracudanetworks.com"),
)


def _host(mx_host: str) -> str:
    return mx_host.strip().rstrip(".").lower()


def provider_for(mx_host: str, providers: tuple[Provider, ...] = PROVIDERS) -> str:
    """The provider that runs this MX host: a row's name, or the host itself."""
    host = _host(mx_host)
    for p in providers:
        for suffix in p.suffixes:
            if host == suffix or host.endswith("." + suffix):
                return p.name
    return host


@dataclass(frozen=True)
class Limits:
    """How hard one sending IP may push one provider, across the whole sender fleet."""

    connections: int  # concurrent SMTP sessions
    per_connection: int  # messages per session before it is closed
    per_minute: int | None = None  # messages a minute (None: no limit)
    per_hour: int | None = None  # messages an hour (None: no limit)
    source: str = ""


# KumoMTA's published shaping defaults (shaping.toml, "default" and the provider sections):
# 10 connections per site, 100 messages per connection; Google and Microsoft 5 connections and
# 50 messages per connection; Yahoo 20 messages per connection. No published message rates:
# providers answer a rate they dislike with a throttle reply, which suspends them (trouble.py).
DEFAULT_LIMITS = Limits(10, 100, source="KumoMTA shaping.toml default: connection_limit 10, "
                                        "max_deliveries_per_connection 100")
LIMITS: Mapping[str, Limits] = {
    "google": Limits(5, 50, source="KumoMTA shaping.toml gmail.com: connection_limit 5, "
                                   "max_deliveries_per_connection 50"),
    "microsoft": Limits(5, 50, source="KumoMTA shaping.toml outlook.com: connection_limit 5, "
                                      "max_deliveries_per_connection 50 (Microsoft allows at most 500)"),
    "yahoo": Limits(10, 20, source="KumoMTA shaping.toml yahoo.com: max_deliveries_per_connection 20"),
}

_FIELDS = {f.name: f for f in fields(Limits) if f.name != "source"}


def parse_overrides(raw: str | None) -> dict[str, dict[str, int | None]]:
    """OUTPOST_SHAPING: {"provider": {"connections": 3, ...}}; a bad value names its field."""
    if not raw or not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"OUTPOST_SHAPING: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError("OUTPOST_SHAPING: must be a JSON object keyed by provider")
    out: dict[str, dict[str, int | None]] = {}
    for provider, row in doc.items():
        if not isinstance(row, dict):
            raise ConfigError(f"OUTPOST_SHAPING.{provider}: must be an object")
        for key, value in row.items():
            where = f"OUTPOST_SHAPING.{provider}.{key}"
            if key not in _FIELDS:
                raise ConfigError(f"{where}: unknown limit (known: {', '.join(_FIELDS)})")
            nullable = key in ("per_minute", "per_hour")
            if value is None and nullable:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}: must be a positive integer" + (" or null" if nullable else ""))
        out[str(provider).lower()] = dict(row)
    return out


def limits_for(provider: str, overrides: Mapping[str, Mapping[str, int | None]] | None = None) -> Limits:
    """The provider's limits: its row (or the default), then the stack's overrides on top
    ("default" overrides apply to every provider, the provider's own after them)."""
    base = LIMITS.get(provider, DEFAULT_LIMITS)
    for key in ("default", provider):
        row = (overrides or {}).get(key)
        if row:
            changes: dict[str, object] = {k: v for k, v in row.items() if k in _FIELDS}
            base = replace(base, source=f"{base.source}; overridden by OUTPOST_SHAPING.{key}", **changes)  # type: ignore[arg-type]
    return base
