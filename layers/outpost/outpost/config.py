"""Settings, read once per container from the environment.

The template sets these variables on each function; the embedded local stack sets the same
names with local values (endpoints, DNS server, ports, CA bundle). Nothing else differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

from .delivery.providers import parse_overrides
from .webhooks.schedule import DEFAULT_SCHEDULE as WEBHOOK_SCHEDULE

# Retry schedule in seconds (issue 3): 1, 5, 15, 30 min, then 1, 2, 4 h, then every 4 h.
DEFAULT_RETRY_SCHEDULE: tuple[int, ...] = (60, 300, 900, 1800, 3600, 7200, 14400)
# Suspension of a throttling provider (issue 11 item 4): 10, 30, 60, 120, 240 minutes.
DEFAULT_THROTTLE_BACKOFF: tuple[int, ...] = (600, 1800, 3600, 7200, 14400)
DEFAULT_THROTTLE_RAMP = 120.0  # seconds per extra connection after a suspension ends
DEFAULT_MAX_LIFETIME = 2 * 24 * 3600  # two days, like SES's and Postfix's order of magnitude
SQS_MAX_RETENTION = 14 * 24 * 3600


def _schedule(raw: str | None) -> tuple[int, ...]:
    if not raw:
        return DEFAULT_RETRY_SCHEDULE
    return tuple(int(float(x)) for x in raw.split(",") if x.strip())


def _hostport(raw: str | None, default_port: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        out.append((host or item, int(port) if port else default_port))
    return out


def _ip(raw: str | None) -> str | None:
    """An IP address, or None: the template passes "" (or an unresolved placeholder locally)
    when the stack does not own the sender's network, and SPF must never list garbage."""
    import ipaddress

    try:
        return str(ipaddress.ip_address((raw or "").strip()))
    except ValueError:
        return None


def _memory_budget(e: dict[str, str] | os._Environ[str]) -> int | None:
    raw = e.get("OUTPOST_SENDER_MEMORY_BUDGET")
    if raw:
        return int(raw)
    mb = e.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    return int(int(mb) * 1024 * 1024 * 0.6) if mb else None


def _warmup_start(raw: str | None) -> str | None:
    """OUTPOST_WARMUP_START: a UTC date (YYYY-MM-DD) or empty; anything else names itself."""
    from datetime import date

    from .errors import ConfigError

    if not raw or not raw.strip():
        return None
    try:
        return date.fromisoformat(raw.strip()).isoformat()
    except ValueError:
        raise ConfigError(f"OUTPOST_WARMUP_START: {raw!r} is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Settings:
    messages_table: str = "outpost-messages"
    suppressions_table: str = "outpost-suppressions"
    api_keys_table: str = "outpost-api-keys"
    domains_table: str = "outpost-domains"
    bucket: str = "outpost-mail"
    send_queue_url: str = ""
    # Where every job for a retry goes (the sender's re-queues, the sweeper's rescues), so that
    # retries never wait behind a backlog of new mail. Empty: SendQueue (a stack from before).
    retry_queue_url: str = ""
    ehlo_hostname: str = "localhost"
    bounce_domain: str = "bounces.localhost"
    secret_prefix: str = "outpost/"
    verp_secret_id: str = "outpost/verp-key"
    dns_servers: list[tuple[str, int]] = field(default_factory=list)
    smtp_port: int = 25
    ca_bundle: str | None = None
    retry_schedule: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE
    # OUTPOST_MAX_LIFETIME (seconds), like Postfix's maximal_queue_lifetime: when set, both the
    # lifetime of a message that names none and the cap on `expires_in`; unset, a message lives
    # DEFAULT_MAX_LIFETIME unless it asks for up to 14 days (SQS retention).
    max_lifetime: int | None = None
    ipv6: bool = False
    # bytes of a stored request (deflated) kept in DynamoDB; larger go to S3. 6,300: where an
    # S3 PUT + GET costs what the bytes cost in DynamoDB (bench/cost_model.py, inline_break_even)
    inline_body_limit: int = 6_300
    retention_days: int = 45  # template.yaml RetentionDays
    inbound_ses_prefix: str = "inbound/ses/"
    # ---- send API (issue 5) ----
    idempotency_table: str = "outpost-idempotency"
    sender_ip: str | None = None  # the sender's public (Elastic) IP, for the SPF record we suggest
    region: str = "us-east-1"  # for the bounce domain's SES inbound MX
    api_rate: float = 20.0  # requests per second per API key (token bucket, per container)
    api_burst: int = 40  # bucket size per API key
    dkim_grace_days: int = 7  # a rotated-out DKIM key stays published and loadable this long
    sweep_grace: int = 900  # seconds an open recipient may be overdue before the sweeper requeues it
    # ---- hostile recipient domains (issue 8) ----
    # MX and mta-sts hosts on private, loopback, link-local... addresses are refused; only the
    # local stack (its MX hosts live on 127.0.0.0/8) sets OUTPOST_ALLOW_PRIVATE_MX=true.
    allow_private_mx: bool = False
    mx_address_limit: int = 5  # addresses tried per attempt over all MX hosts (smtp_mx_address_limit)
    mta_sts_deadline: float = 10.0  # seconds for one MTA-STS lookup, TXT and HTTPS together
    mta_sts_negative_ttl: float = 600.0  # a failed lookup means "no policy" this long (RFC 8461 §3.3, §5)
    # Bytes of memory the sender lets one invocation's messages cost at once (issue 8 item 13);
    # None: no limit. Default: 60% of the function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
    sender_memory_budget: int | None = None
    dkim_unverify_hours: float = 72  # a verified domain whose DKIM record is gone is un-verified after
    uploads_per_key_per_day: int = 1000  # POST /v1/uploads per API key per UTC day
    # ---- shaping per provider (issue 11) ----
    # OUTPOST_SHAPING: JSON overrides of delivery/providers.py's limits, keyed by provider.
    shaping: dict[str, dict[str, int | None]] = field(default_factory=dict)
    # ---- throttle (issue 11) ----
    # OUTPOST_THROTTLE_BACKOFF: seconds a throttling provider is suspended, per level
    # (delivery/suspension.py); OUTPOST_THROTTLE_RAMP: seconds per extra connection after it.
    throttle_backoff: tuple[int, ...] = DEFAULT_THROTTLE_BACKOFF
    throttle_ramp: float = DEFAULT_THROTTLE_RAMP
    # ---- slots (issue 11) ----
    # OUTPOST_SHAPING_ENABLED=false: no fleet-wide connection slots, rates or warm-up (and no
    # store calls for them): the sender behaves as before issue 11 (benches, emergencies).
    shaping_enabled: bool = True
    # OUTPOST_WARMUP_START (YYYY-MM-DD, UTC; template WarmupStartDate): day 1 of the IP warm-up
    # (delivery/shaping.py WARMUP); empty: no warm-up caps.
    warmup_start: str | None = None
    # ---- reputation (issue 11) ----
    # The circuit breaker's thresholds (rates, 0..1; SES's review and pause levels by default),
    # the volume a window needs before its rates count, and how often held mail looks again.
    reputation_warn_bounce: float = 0.05
    reputation_warn_complaint: float = 0.001
    reputation_pause_bounce: float = 0.10
    reputation_pause_complaint: float = 0.005
    reputation_min_volume: int = 200  # recipients sent in the window
    reputation_recheck: int = 300  # seconds a held (paused) recipient waits before the next check
    event_bus: str = ""  # the EventBridge bus events also go to (issue 12); empty: none
    # ---- webhooks (issue 12) ----
    webhooks_table: str = "outpost-webhooks"
    webhook_queue_url: str = ""
    # Seconds between a failed attempt and the next (webhooks/schedule.py DEFAULT_SCHEDULE: 5 s,
    # 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); the local stack passes a short one.
    webhook_retry_schedule: tuple[float, ...] = WEBHOOK_SCHEDULE
    # OUTPOST_WEBHOOKS_LOCAL=true (the local stack only): http:// and https:// URLs whose every
    # address is in 127.0.0.0/8 are accepted (webhooks/ssrf.py); never set in AWS.
    webhooks_local: bool = False
    templates_table: str = "outpost-templates"  # stored templates (issue 14; template TemplatesTable)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        d = cls()
        return cls(
            messages_table=e.get("OUTPOST_MESSAGES_TABLE", d.messages_table),
            suppressions_table=e.get("OUTPOST_SUPPRESSIONS_TABLE", d.suppressions_table),
            api_keys_table=e.get("OUTPOST_API_KEYS_TABLE", d.api_keys_table),
            domains_table=e.get("OUTPOST_DOMAINS_TABLE", d.domains_table),
            bucket=e.get("OUTPOST_BUCKET", d.bucket),
            send_queue_url=e.get("OUTPOST_SEND_QUEUE_URL", d.send_queue_url),
            retry_queue_url=e.get("OUTPOST_RETRY_QUEUE_URL", d.retry_queue_url),
            ehlo_hostname=e.get("OUTPOST_EHLO_HOSTNAME", d.ehlo_hostname),
            bounce_domain=e.get("OUTPOST_BOUNCE_DOMAIN", d.bounce_domain),
            secret_prefix=e.get("OUTPOST_SECRET_PREFIX", d.secret_prefix),
            verp_secret_id=e.get("OUTPOST_VERP_SECRET_ID", d.verp_secret_id),
            dns_servers=_hostport(e.get("OUTPOST_DNS_SERVERS"), 53),
            smtp_port=int(e.get("OUTPOST_SMTP_PORT", d.smtp_port)),
            ca_bundle=e.get("OUTPOST_CA_BUNDLE") or None,
            retry_schedule=_schedule(e.get("OUTPOST_RETRY_SCHEDULE")),
            max_lifetime=int(e["OUTPOST_MAX_LIFETIME"]) if e.get("OUTPOST_MAX_LIFETIME") else None,
            ipv6=e.get("OUTPOST_IPV6", "").lower() in ("1", "true", "yes"),
            retention_days=int(e.get("OUTPOST_RETENTION_DAYS", d.retention_days)),
            inbound_ses_prefix=e.get("OUTPOST_INBOUND_SES_PREFIX", d.inbound_ses_prefix),
            idempotency_table=e.get("OUTPOST_IDEMPOTENCY_TABLE", d.idempotency_table),
            sender_ip=_ip(e.get("OUTPOST_SENDER_IP")),
            region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or d.region,
            api_rate=float(e.get("OUTPOST_API_RATE", d.api_rate)),
            api_burst=int(e.get("OUTPOST_API_BURST", d.api_burst)),
            dkim_grace_days=int(e.get("OUTPOST_DKIM_GRACE_DAYS", d.dkim_grace_days)),
            sweep_grace=int(e.get("OUTPOST_SWEEP_GRACE", d.sweep_grace)),
            allow_private_mx=e.get("OUTPOST_ALLOW_PRIVATE_MX", "").lower() in ("1", "true", "yes"),
            mx_address_limit=int(e.get("OUTPOST_MX_ADDRESS_LIMIT", d.mx_address_limit)),
            mta_sts_deadline=float(e.get("OUTPOST_MTA_STS_DEADLINE", d.mta_sts_deadline)),
            mta_sts_negative_ttl=float(e.get("OUTPOST_MTA_STS_NEGATIVE_TTL", d.mta_sts_negative_ttl)),
            sender_memory_budget=_memory_budget(e),
            dkim_unverify_hours=float(e.get("OUTPOST_DKIM_UNVERIFY_HOURS", d.dkim_unverify_hours)),
            uploads_per_key_per_day=int(e.get("OUTPOST_UPLOADS_PER_KEY_PER_DAY", d.uploads_per_key_per_day)),
            shaping=parse_overrides(e.get("OUTPOST_SHAPING")),
            throttle_backoff=_schedule(e.get("OUTPOST_THROTTLE_BACKOFF")) if e.get("OUTPOST_THROTTLE_BACKOFF")
            else DEFAULT_THROTTLE_BACKOFF,
            throttle_ramp=float(e.get("OUTPOST_THROTTLE_RAMP", d.throttle_ramp)),
            shaping_enabled=e.get("OUTPOST_SHAPING_ENABLED", "true").strip().lower() not in ("0", "false", "no", "off"),
            warmup_start=_warmup_start(e.get("OUTPOST_WARMUP_START")),
            reputation_warn_bounce=float(e.get("OUTPOST_REPUTATION_WARN_BOUNCE") or d.reputation_warn_bounce),
            reputation_warn_complaint=float(e.get("OUTPOST_REPUTATION_WARN_COMPLAINT")
                                            or d.reputation_warn_complaint),
            reputation_pause_bounce=float(e.get("OUTPOST_REPUTATION_PAUSE_BOUNCE") or d.reputation_pause_bounce),
            reputation_pause_complaint=float(e.get("OUTPOST_REPUTATION_PAUSE_COMPLAINT")
                                             or d.reputation_pause_complaint),
            reputation_min_volume=int(e.get("OUTPOST_REPUTATION_MIN_VOLUME") or d.reputation_min_volume),
            reputation_recheck=int(e.get("OUTPOST_REPUTATION_RECHECK") or d.reputation_recheck),
            event_bus=e.get("OUTPOST_EVENT_BUS", d.event_bus).strip(),
            webhooks_table=e.get("OUTPOST_WEBHOOKS_TABLE", d.webhooks_table),
            webhook_queue_url=e.get("OUTPOST_WEBHOOK_QUEUE_URL", d.webhook_queue_url),
            webhook_retry_schedule=tuple(float(x) for x in e["OUTPOST_WEBHOOK_RETRY_SCHEDULE"].split(",") if x.strip())
            if e.get("OUTPOST_WEBHOOK_RETRY_SCHEDULE") else WEBHOOK_SCHEDULE,
            webhooks_local=e.get("OUTPOST_WEBHOOKS_LOCAL", "").lower() in ("1", "true", "yes"),
            templates_table=e.get("OUTPOST_TEMPLATES_TABLE", d.templates_table),
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The container's settings, read once."""
    return Settings.from_env()
