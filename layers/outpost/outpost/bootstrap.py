"""The one place that builds real clients: boto3, the DNS resolver, the SMTP connector, DKIM.

Each builder runs once per container (cached), so a warm invocation pays for none of it.
Endpoints come from the environment (boto3 honours AWS_ENDPOINT_URL), which is how the embedded
local stack points the same code at moto, its DNS server and its MX hosts.
"""

from __future__ import annotations

import datetime
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .config import settings
from .snapstart import after_restore, forget_on_restore

if TYPE_CHECKING:  # for the builders' return types only: each builder imports what it builds
    import ssl

    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from dns.resolver import Resolver

    from .api.domains import DomainService
    from .api.events import EventsApi
    from .api.service import SendService
    from .bounces.service import BounceService
    from .delivery.service import DeliveryService
    from .events import EventSink
    from .events.service import EventService
    from .net import HttpsClient
    from .reputation import Reputation
    from .signing import Signer
    from .store import (
        ApiKeyStore,
        DomainStore,
        EventLogStore,
        JobQueue,
        MessageStore,
        SecretStore,
        SuppressionStore,
        WebhookJobQueue,
        WebhookStore,
    )
    from .submission.server import SubmissionServer
    from .submission.settings import SubmissionSettings
    from .sweeper import Sweeper
    from .webhooks.dispatch import Dispatcher
    from .webhooks.service import WebhookService
    from .webhooks.sink import WebhookSink
    from .webhooks.ssrf import Resolve

T = TypeVar("T")

@cache
def aws(service: str) -> Any:
    from botocore.config import Config

    # SigV4 for S3 explicitly: boto3 would presign upload URLs with SigV2 on the global endpoint
    # (deprecated, and refused in newer regions); v4 also signs the upload's Content-Length.
    cfg = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3, read_timeout=10,
                 signature_version="s3v4" if service == "s3" else None)
    with _client_lock:  # a boto3 Session is not thread-safe; its clients are
        client = _session().client(service, config=cfg)  # type: ignore[call-overload]
    _clients.add(client)  # SnapStart: forget_snapshot_state() drops its connections
    return client


_client_lock = threading.Lock()


@cache
def _session() -> Any:
    """One boto3 Session for every client (issue 15): a second client then reuses the first's
    loaded endpoint rules and partitions instead of parsing them again (~half a client's cost)."""
    import boto3

    return boto3.session.Session()


def lazy(build: Callable[[], T]) -> T:
    """A stand-in for `build()` that calls it on first use (an attribute read), once. The cold
    start pays only for what the first request touches: the S3 and Secrets Manager clients, and
    the services (with their imports) of routes that request does not hit."""
    return cast(T, _Lazy(build))


class _Lazy:
    __slots__ = ("_build", "_lock", "_target")

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build, self._lock, self._target = build, threading.Lock(), None

    def __getattr__(self, name: str) -> Any:
        if self._target is None:
            with self._lock:
                if self._target is None:
                    self._target = self._build()
        return getattr(self._target, name)


@cache
def dns_resolver(cache: bool = True) -> Resolver:
    """The DNS resolver, through OUTPOST_DNS_SERVERS or the system's: cached for delivery,
    uncached for the domain checks (a user fixing a record wants the new answer)."""
    from .mx import DNS_TIMEOUT
    from .net import dns_resolver as build

    s = settings()
    if cache:
        return build(s.dns_servers, lifetime=DNS_TIMEOUT, timeout=DNS_TIMEOUT, cache=True)
    return build(s.dns_servers, lifetime=DOMAIN_CHECK_TIMEOUT, cache=False)


DOMAIN_CHECK_TIMEOUT = 3.0  # seconds for one lookup of `outpost-admin domains verify` / the API


@cache
def https_client() -> HttpsClient:
    """HTTPS connections pinned to a chosen address, trusting OUTPOST_CA_BUNDLE when set (the
    MTA-STS policy fetch)."""
    from .net import https_client as build
    from .tls_policy import FETCH_TIMEOUT

    return build(settings().ca_bundle, timeout=FETCH_TIMEOUT)


@cache
def message_store() -> MessageStore:
    from .store import MessageStore

    s = settings()
    return MessageStore(aws("dynamodb"), s.messages_table, lazy(lambda: aws("s3")), s.bucket,
                        inline_limit=s.inline_body_limit, retention_days=s.retention_days)


@cache
def suppression_store() -> SuppressionStore:
    from .store import SuppressionStore

    return SuppressionStore(aws("dynamodb"), settings().suppressions_table)


@cache
def domains_table() -> DomainStore:
    """The sending domains (records.Domain)."""
    from .store import DomainStore

    return DomainStore(aws("dynamodb"), settings().domains_table)


@cache
def api_keys_table() -> ApiKeyStore:
    """The API keys (records.ApiKey)."""
    from .store import ApiKeyStore

    return ApiKeyStore(aws("dynamodb"), settings().api_keys_table)


@cache
def job_queue() -> JobQueue:
    from .store import JobQueue

    # The client on first use (issue 15 item 1): the send API's init builds one client, DynamoDB's
    return JobQueue(lazy(lambda: aws("sqs")), settings().send_queue_url)


@cache
def retry_queue() -> JobQueue:
    """Where retries and rescues are queued: RetryQueue, or SendQueue on a stack without one."""
    from .store import JobQueue

    s = settings()
    return JobQueue(aws("sqs"), s.retry_queue_url or s.send_queue_url)


@cache
def secrets() -> SecretStore:
    from .store import SecretStore

    return SecretStore(lazy(lambda: aws("secretsmanager")))


@cache
def verp_key() -> bytes:
    value = secrets().get_json(settings().verp_secret_id)
    if not value:
        raise RuntimeError(f"the return-path key secret {settings().verp_secret_id!r} is missing")
    raw = value.get("value") or value.get("key") or next(iter(value.values()))
    return str(raw).encode()


def dkim_secret_id(domain: str) -> str:
    return f"{settings().secret_prefix}dkim/{domain.lower()}"


_signers: dict[str, tuple[float, Signer | None]] = {}
SIGNER_TTL = 600.0  # reload keys every 10 minutes so a rotation reaches warm containers


def signer_for(domain: str) -> Signer | None:
    """The domain's DKIM signer, or None if it has no key. Keys are parsed once per container."""
    from .signing import Signer, keys_from_secret

    hit = _signers.get(domain)
    if hit and time.monotonic() - hit[0] < SIGNER_TTL:
        return hit[1]
    value = secrets().read_json(dkim_secret_id(domain))  # uncached: rotations must reach warm containers
    keys = keys_from_secret(value) if value else []
    signer = Signer(keys) if keys else None
    _signers[domain] = (time.monotonic(), signer)
    return signer


@cache
def delivery_service() -> DeliveryService:
    from .bounces.verp import make_return_path
    from .delivery.service import DeliveryService
    from .delivery.transport import SmtpConnector
    from .mx import MxResolver
    from .reputation import STATE_CACHE, PauseCheck
    from .store import PolicyStore
    from .telemetry import metrics
    from .tls_policy import HttpsPolicyFetcher, MtaSts

    s = settings()
    resolver = MxResolver(resolver=dns_resolver(), ipv6=s.ipv6, allow_private=s.allow_private_mx,
                          max_addresses=s.mx_address_limit)
    key = verp_key()
    # MTA-STS policies are fetched with the same trust store as MX certificates, and the
    # policy host is resolved through the same DNS servers (the local stack's, in tests).
    # Policies persist in MessagesTable so a cold container still enforces (RFC 8461 §5.1).
    mta_sts = MtaSts(txt=resolver.txt, fetch=HttpsPolicyFetcher(resolver.addresses, https=https_client()),
                     store=PolicyStore(aws("dynamodb"), s.messages_table),
                     deadline=s.mta_sts_deadline, negative_ttl=s.mta_sts_negative_ttl)
    return DeliveryService(
        settings=s, store=message_store(), suppressions=suppression_store(), queue=retry_queue(),
        resolve_mx=resolver.resolve,
        connector=SmtpConnector(s.ehlo_hostname, port=s.smtp_port, ca_bundle=s.ca_bundle),
        signer_for=signer_for,
        return_path=lambda mid, i: make_return_path(key, mid, i, s.bounce_domain),
        count=metrics().count, tls_policy_for=mta_sts, fetch_upload=message_store().load_upload,
        suspensions=message_store(), count_by=metrics().count_by, slots=message_store(),
        reputation=reputation(), paused=forget_on_restore(PauseCheck(
            reputation().store, ttl=min(STATE_CACHE, s.reputation_recheck / 2), count=metrics().count)),
        clock=now)


@cache
def sweeper() -> Sweeper:
    from .sweeper import Sweeper
    from .telemetry import metrics

    return Sweeper(store=message_store(), queue=retry_queue(), grace=settings().sweep_grace,
                   count=metrics().count, reputation=reputation(), clock=now)


@cache
def reputation() -> Reputation:
    """The reputation circuit breaker (issue 11 item 6): counts and states in MessagesTable."""
    from .reputation import Reputation, Thresholds
    from .store import ReputationStore
    from .telemetry import metrics

    s = settings()
    return Reputation(ReputationStore(aws("dynamodb"), s.messages_table), thresholds=Thresholds(
        warn_bounce=s.reputation_warn_bounce, warn_complaint=s.reputation_warn_complaint,
        pause_bounce=s.reputation_pause_bounce, pause_complaint=s.reputation_pause_complaint,
        min_volume=s.reputation_min_volume), count=metrics().count, gauge=metrics().gauge)


@cache
def idempotency_store() -> DynamoDBPersistenceLayer:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    # The template's IdempotencyTable: key `id`, TTL attribute `expiration` (Powertools' names).
    return DynamoDBPersistenceLayer(table_name=settings().idempotency_table, boto3_client=aws("dynamodb"))


@cache
def domain_service() -> DomainService:
    from .api.domains import DomainService, dns_lookup

    s = settings()
    return DomainService(domains=domains_table(), secrets=secrets(), secret_id=dkim_secret_id,
                         lookup=dns_lookup(dns_resolver(cache=False)), sender_ip=s.sender_ip,
                         bounce_domain=s.bounce_domain, region=s.region, grace_days=s.dkim_grace_days,
                         unverify_after_hours=s.dkim_unverify_hours)


@cache
def api_app() -> APIGatewayRestResolver:
    """The send API (routes + services), built once per container."""
    from .api.auth import KeyRing, TokenBuckets
    from .api.reputation import ReputationApi
    from .api.routes import build_app
    from .api.service import QueryService, SendService

    s = settings()
    return build_app(
        keys=forget_on_restore(KeyRing(api_keys_table(), buckets=TokenBuckets(s.api_rate, s.api_burst))),
        sender=SendService(store=message_store(), suppressions=suppression_store(), queue=job_queue(),
                           domains=domains_table(), idempotency=lazy(idempotency_store),
                           retention_days=s.retention_days,
                           max_lifetime=s.max_lifetime, uploads_per_key_per_day=s.uploads_per_key_per_day,
                           reputation=reputation(), templates=lazy(template_service), clock=now),
        queries=QueryService(store=message_store(), suppressions=suppression_store(),
                             retention_days=s.retention_days, clock=now),
        domains=lazy(domain_service),
        reputation=ReputationApi(reputation(), domains=domains_table(), keys=api_keys_table()),
        events=lazy(events_api),
        webhooks=lazy(webhook_service),
        templates=lazy(template_service))


def events_api() -> EventsApi:
    """GET /v1/events' service (built on the first request that reads the event log)."""
    from .api.events import EventsApi

    return EventsApi(event_log())


@cache
def bounce_service() -> BounceService:
    from .bounces.service import BounceService
    from .telemetry import metrics

    s = settings()
    return BounceService(store=message_store(), suppressions=suppression_store(),
                         verp_key=verp_key(), bounce_domain=s.bounce_domain,
                         count=metrics().count, ses_prefix=s.inbound_ses_prefix,
                         reputation=reputation())


@cache
def event_log() -> EventLogStore:
    """The event log (issue 12) in MessagesTable: GET /v1/events, replay, and the first sink."""
    from .store import EventLogStore

    return EventLogStore(aws("dynamodb"), settings().messages_table, message_store())


@cache
def event_sinks() -> list[EventSink]:
    """Where the events function publishes, in this order: the event log first (what replay
    reads), then EventBridge when OUTPOST_EVENT_BUS names a bus, then the webhooks."""
    from .events.bus import EventBus

    sinks: list[EventSink] = [event_log()]
    if settings().event_bus:
        sinks.append(EventBus(aws("events"), settings().event_bus))
    sinks.append(webhook_sink())
    return sinks


@cache
def event_service() -> EventService:
    """The events function's service: recipient changes (the stream) -> events -> sinks."""
    from .events.service import EventService
    from .store import committed_message, recipient_change
    from .telemetry import metrics

    return EventService(changes=recipient_change, tags=event_log().tags_of, sinks=event_sinks(),
                        count=metrics().count, commits=committed_message, created=message_store().recipients_created)


def reset() -> None:
    """Forget every cached client and setting (a new local stack in the same process, tests)."""
    from . import config

    config.settings.cache_clear()
    for fn in (aws, dns_resolver, https_client, message_store, suppression_store, domains_table, api_keys_table,
               job_queue, retry_queue, secrets, verp_key, delivery_service, api_app, bounce_service,
               idempotency_store, domain_service, sweeper, reputation, event_log, event_sinks, event_service):
        fn.cache_clear()
    _signers.clear()
    send_service.cache_clear()
    reset_webhooks()
    reset_templates()
    _session.cache_clear()


@cache
def send_service() -> SendService:
    """The API's SendService, built as api_app builds it (SMTP submission's raw path uses it)."""
    from .api.service import SendService

    s = settings()
    return SendService(store=message_store(), suppressions=suppression_store(), queue=job_queue(),
                       domains=domains_table(), idempotency=idempotency_store(),
                       retention_days=s.retention_days, max_lifetime=s.max_lifetime,
                       uploads_per_key_per_day=s.uploads_per_key_per_day, reputation=reputation(),
                       clock=now)


def submission_server(config: SubmissionSettings, tls_context: ssl.SSLContext | None = None) -> SubmissionServer:
    """The SMTP submission server (issue 13): the API's SendService and key ring (with its
    per-key token buckets), the certificate from Secrets Manager unless one is given."""
    from .api.auth import KeyRing, TokenBuckets
    from .submission.server import SubmissionServer
    from .submission.tls import context_from_secret

    s = settings()
    if tls_context is None:
        if not config.tls_secret:
            raise RuntimeError("OUTPOST_SUBMISSION_TLS_SECRET names no certificate secret")
        tls_context = context_from_secret(secrets().read_json(config.tls_secret), config.tls_secret)
    return SubmissionServer(config, sender=send_service(),
                            keys=KeyRing(api_keys_table(), buckets=TokenBuckets(s.api_rate, s.api_burst)),
                            tls_context=tls_context)


# ---- SnapStart (issue 15 item 2): what one snapshot must not share between its restored copies ----
_clients: weakref.WeakSet[Any] = weakref.WeakSet()  # every boto3 client aws() built


@after_restore
def forget_snapshot_state() -> None:
    """After a SnapStart restore (outpost/snapstart.py): every copy restored from one snapshot
    starts with init's memory, so re-seed and drop what must be each copy's own. Message ids
    and lease ids need nothing: they come from os.urandom / secrets (the kernel's, per copy)."""
    # The random module's state: the sender's retry and release jitter (DeliveryService.rng)
    # and the MX address shuffle; unseeded, every copy would draw the same sequence.
    random.seed(os.urandom(32))
    for client in list(_clients):
        forget_connections(client)
    # DKIM keys re-read: their times are the snapshot's monotonic clock, and a rotation made
    # since the snapshot must reach the copy. (The DNS cache holds answers, not sockets, and
    # expires them by wall-clock time: kept. The SMTP connector pools no sessions.)
    _signers.clear()


def forget_connections(client: Any) -> None:
    """A boto3 client's pooled connections closed (client.close(): its urllib3 pools emptied;
    the next call connects anew) and its cached credentials marked expired, so the next call
    fetches this copy's own (refreshable credentials: SnapStart's container provider)."""
    client.close()
    creds = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if creds is not None and hasattr(creds, "_expiry_time"):
        creds._expiry_time = datetime.datetime.fromtimestamp(0, datetime.UTC)  # noqa: SLF001


# ---- webhooks (issue 12) ------------------------------------------------------------------------
@cache
def webhook_store() -> WebhookStore:
    from .store import WebhookStore

    s = settings()
    return WebhookStore(aws("dynamodb"), s.webhooks_table, retention_days=s.retention_days)


@cache
def webhook_queue() -> WebhookJobQueue:
    from .store import WebhookJobQueue

    return WebhookJobQueue(aws("sqs"), settings().webhook_queue_url)


def _webhook_resolve() -> Resolve:
    from .webhooks.ssrf import dns_resolve

    return dns_resolve(dns_resolver(cache=False))


@cache
def webhook_sink() -> WebhookSink:
    """Where the events function hands events for webhooks (an events.EventSink)."""
    from .webhooks.sink import WebhookSink

    return WebhookSink(webhook_store(), webhook_queue())


@cache
def webhook_service() -> WebhookService:
    """The webhooks API's side; `log`, the event log, is what a replay reads."""
    from .webhooks.service import WebhookService

    return WebhookService(webhook_store(), webhook_queue(), resolve=_webhook_resolve(),
                          allow_local=settings().webhooks_local, log=event_log())


@cache
def webhook_dispatcher() -> Dispatcher:
    from .net import tls_client_context
    from .telemetry import metrics
    from .webhooks.dispatch import Dispatcher

    s = settings()
    return Dispatcher(webhook_store(), webhook_queue(), resolve=_webhook_resolve(),
                      context=tls_client_context(s.ca_bundle), allow_local=s.webhooks_local,
                      schedule=s.webhook_retry_schedule, count=metrics().count)


def reset_webhooks() -> None:
    for fn in (webhook_store, webhook_queue, webhook_sink, webhook_service, webhook_dispatcher):
        fn.cache_clear()


# ---- the clock (issue 14): "now" for every service built here --------------------------------
_clock: Callable[[], float] = time.time


def now() -> float:
    """The time the API's services, the sender and the sweeper read: time.time, unless the local
    stack or a test moved it with set_clock (scheduled sending without waiting real hours)."""
    return _clock()


def set_clock(clock: Callable[[], float] | None) -> None:
    """Replace the services' clock (None: back to time.time). For the local stack and tests."""
    global _clock
    _clock = clock if clock is not None else time.time


# ---- templates (issue 14) -----------------------------------------------------------------------
if TYPE_CHECKING:
    from .store import TemplateStore
    from .templates.service import TemplateService


@cache
def template_store() -> TemplateStore:
    from .store import TemplateStore

    return TemplateStore(aws("dynamodb"), settings().templates_table)


@cache
def template_service() -> TemplateService:
    """The templates' routes and `template` sends (built on the first request that uses one)."""
    from .templates.service import TemplateService

    return TemplateService(template_store())


def reset_templates() -> None:
    for fn in (template_store, template_service):
        fn.cache_clear()
