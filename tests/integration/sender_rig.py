"""The test rig for the sender's integration tests (test_sender_*.py); it holds no tests.

The sender as an MTA, against real servers on loopback (issue 3).

Each test builds a real DeliveryService: DynamoDB from DynamoDB Local (AWS's engine; moto's
where Java is missing), S3/SQS from a moto server (outpost_local.aws), provisioned from
template.yaml, a real authoritative DNS server, scripted aiosmtpd MX hosts with real STARTTLS
(test CA), a real HTTPS MTA-STS policy server, and Postfix from Debian where it can run.
Only the clock is controlled, so retry and expiry rules run in milliseconds; messages are
created through the send API's service so the stored shape is the real one.

Addresses: 127.0.5.1 for moto, DynamoDB Local, DNS and the policy server; 127.0.5.2+ for MX
hosts, all on one high port (the connector has one SMTP port, as in production where it is 25).
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from outpost.api.service import SendService
from outpost.bounces.verp import make_return_path
from outpost.config import Settings
from outpost.delivery.service import DeliveryService
from outpost.delivery.transport import SmtpConnector, Timeouts
from outpost.models import QueueJob, SendRequest
from outpost.mx import MxResolver
from outpost.records import Domain
from outpost.signing import RSA, Signer, generate_key
from outpost.store import DomainStore, JobQueue, MessageStore, SuppressionStore
from outpost.tls_policy import HttpsPolicyFetcher, MtaSts
from outpost_local.aws import LocalAws
from outpost_local.dns import DnsServer
from outpost_local.dynamodb_local import ENGINE_LOCAL
from outpost_local.lifecycle import free_port
from outpost_local.mx import (
    Behaviour,
    MxServer,
)
from outpost_local.pki import TestPki
from outpost_local.provision import provision

pytestmark = pytest.mark.timeout(90)

PREFIX = "127.0.5"
HUB = f"{PREFIX}.1"
SENDER_DOMAIN = "sender.test"
BOUNCE_DOMAIN = "bounces.sender.test"
VERP_KEY = b"test-verp-key"
T0 = 1_800_000_000.0  # the fake clock's epoch


# -- module-wide: AWS (moto + DynamoDB Local), keys, PKI ------------------------------------------------------


class Aws(LocalAws):
    """moto (SQS serialised) and DynamoDB Local (moto's DynamoDB where Java is missing) on HUB,
    provisioned from template.yaml; `env` is the functions' environment."""

    env: dict[str, str]


@pytest.fixture(scope="module", name="aws")
def aws_fixture() -> Iterator[Aws]:
    a = Aws(HUB)
    try:
        a.start()
        stack = provision(a, stack_name="sendertest", parameters={
            "SendingHostname": "mta.sender.test", "BounceDomain": BOUNCE_DOMAIN})
        a.env = stack.env()
        DomainStore(a.client("dynamodb"), a.env["OUTPOST_DOMAINS_TABLE"]).put_domain(
            Domain(domain=SENDER_DOMAIN, verified=True))
        yield a
    finally:
        a.stop()


@pytest.fixture(scope="module", name="signer")
def signer_fixture() -> Signer:
    return Signer([generate_key(SENDER_DOMAIN, "s1", RSA)])


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("sender-pki"))


# -- per test: the rig ------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


class RecordingQueue(JobQueue):
    """The real SQS queue, remembering what was sent (SQS delays are real time; tests replay
    the recorded jobs with the fake clock instead of waiting)."""

    def __init__(self, sqs: Any, url: str) -> None:
        super().__init__(sqs, url)
        self.sent: list[tuple[QueueJob, float]] = []

    def send(self, job: QueueJob, delay: float = 0) -> None:
        super().send(job, delay)
        self.sent.append((job, delay))


class AdvanceClockOnAccept(Behaviour):
    """Each message's end of data takes `seconds` of the fake clock (a slow transaction)."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | None:
        self.clock.advance(self.seconds)  # before the reply goes out: no race with the client
        return None


class PolicyServer:
    """HTTPS on loopback serving /.well-known/mta-sts.txt per Host header (RFC 8461 §3.3)."""

    def __init__(self, host: str, ctx: ssl.SSLContext) -> None:
        self.policies: dict[str, str] = {}
        self.fetches: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = (self.headers.get("Host") or "").split(":")[0].lower()
                outer.fetches.append(name)
                body = outer.policies.get(name)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Rig:
    aws: Aws
    pki: TestPki
    signer: Signer
    clock: FakeClock = field(default_factory=FakeClock)
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(connect=3, command=3, end_of_data=5))
    rng: Callable[[], float] = lambda: 0.5  # no jitter unless a test wants some
    servers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = self.aws.env
        self.settings = Settings.from_env(env)
        ddb = self.aws.client("dynamodb")
        self.store = MessageStore(ddb, env["OUTPOST_MESSAGES_TABLE"], self.aws.client("s3"), env["OUTPOST_BUCKET"])
        self.suppressions = SuppressionStore(ddb, env["OUTPOST_SUPPRESSIONS_TABLE"])
        self.queue = RecordingQueue(self.aws.client("sqs"), env["OUTPOST_SEND_QUEUE_URL"])
        self.api = SendService(store=self.store, suppressions=self.suppressions, queue=self.queue,
                               domains=DomainStore(ddb, env["OUTPOST_DOMAINS_TABLE"]),
                               clock=self.clock)
        self.dns = DnsServer(HUB, 0)
        self.dns.start()
        self.servers.append(self.dns)
        self.smtp_port = free_port(f"{PREFIX}.2")
        # The local stack's setting (OUTPOST_ALLOW_PRIVATE_MX): every peer here is on loopback.
        self.resolver = MxResolver([(HUB, self.dns.port)], timeout=1.0, allow_private=True)
        self.policy_server: PolicyServer | None = None
        self.mta_sts: MtaSts | None = None
        self.build()

    def build(self, tls_policy_for: Callable[[str], Any] | None = None) -> DeliveryService:
        kwargs: dict[str, Any] = {} if tls_policy_for is None else {"tls_policy_for": tls_policy_for}
        self.service = DeliveryService(
            settings=self.settings, store=self.store, suppressions=self.suppressions, queue=self.queue,
            resolve_mx=self.resolver.resolve,
            connector=SmtpConnector("mta.sender.test", port=self.smtp_port, ca_bundle=str(self.pki.ca_bundle),
                                    timeouts=self.timeouts),
            signer_for=lambda domain: self.signer if domain == SENDER_DOMAIN else None,
            return_path=lambda mid, i: make_return_path(VERP_KEY, mid, i, BOUNCE_DOMAIN),
            clock=self.clock, rng=self.rng, **kwargs)
        return self.service

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()
        if self.policy_server:
            self.policy_server.stop()

    # -- peers --------------------------------------------------------------------------------
    def mx(self, domain: str, n: int, behaviour: Any = None, *, pref: int = 10, tls: str = "good",
           name: str | None = None, **kwargs: Any) -> MxServer:
        """An MX host for `domain` at 127.0.5.n. tls: good | untrusted | none."""
        name = name or f"mx{n}.{domain}"
        ip = f"{PREFIX}.{n}"
        ctx = {"good": lambda: self.pki.server_context(name),
               "untrusted": lambda: self.pki.untrusted_server_context(name),
               "none": lambda: None}[tls]()
        server = MxServer(ip, self.smtp_port, behaviour, ctx, hostname=name, **kwargs)
        server.start()
        self.servers.append(server)
        self.dns.add(domain, "MX", (pref, name))
        self.dns.add(name, "A", ip)
        return server

    def sts(self, domain: str, policy: str, pid: str = "20240101") -> PolicyServer:
        """Publish an MTA-STS policy for `domain` and wire the service to use MTA-STS."""
        if self.policy_server is None:
            self.policy_server = PolicyServer(HUB, self.pki.server_context(*[f"mta-sts.{d}" for d in (
                "sts.test", "testing.test", "other.test")]))
            fetch = HttpsPolicyFetcher(lambda n: list(self.resolver.addresses(n)),
                                       ca_bundle=str(self.pki.ca_bundle), port=self.policy_server.port)
            self.mta_sts = MtaSts(txt=self.resolver.txt, fetch=fetch, clock=self.clock)
            self.build(self.mta_sts)
        self.policy_server.policies[f"mta-sts.{domain}"] = policy
        self.dns.remove(f"_mta-sts.{domain}", "TXT")
        self.dns.add(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={pid}", ttl=0)
        self.dns.add(f"mta-sts.{domain}", "A", HUB)
        return self.policy_server

    # -- messages -------------------------------------------------------------------------------
    def send(self, *to: str, **extra: Any) -> str:
        body = {"from": f"App <app@{SENDER_DOMAIN}>", "to": list(to), "subject": "Outpost MTA test",
                "text": "Hello from the sender tests.\n"}
        body.update(extra)
        req = SendRequest.model_validate(body)
        # The send API's own service stores the message (send_one: no HTTP, no idempotency).
        out = self.api.send_one(req) if hasattr(self.api, "send_one") else self.api.send(req)
        return str(out["id"])

    def current_token(self, mid: str) -> str | None:
        stored = self.store.load(mid)
        return None if stored is None else stored.meta.job_token

    def run(self, mid: str, *, attempt: int = 1, not_before: float | None = None,
            remaining_ms: int = 300_000, token: str | None | object = "current") -> dict:
        """Run the message's current job (the token stored on the message), or a job with
        `token` (None: the API's first job) to play a stale duplicate."""
        tok = self.current_token(mid) if token == "current" else token
        job = QueueJob(message_id=mid, attempt=attempt, not_before=not_before, token=tok)  # type: ignore[arg-type]
        return self.run_jobs([job], remaining_ms=remaining_ms)

    def run_jobs(self, jobs: list[QueueJob], *, remaining_ms: int = 300_000) -> dict:
        event = {"Records": [{"messageId": f"m{i}", "body": j.model_dump_json(exclude_none=True)}
                             for i, j in enumerate(jobs)]}
        return self.service.handle_sqs_event(event, lambda: remaining_ms)

    def retry(self) -> QueueJob:
        """Advance the clock to the last requeued job's not_before and run it."""
        job, _ = self.queue.sent[-1]
        if job.not_before:
            self.clock.advance(job.not_before - self.clock() + 0.001)
        self.run_jobs([job])
        return job

    def rcpts(self, mid: str) -> list[dict]:
        """The recipient records, each as its plain view (records.Recipient.as_dict)."""
        stored = self.store.load(mid)
        assert stored is not None
        return [r.as_dict() for r in stored.recipients]

    def rcpt(self, mid: str, index: int = 0) -> dict:
        return self.rcpts(mid)[index]


@pytest.fixture(name="rig")
def rig_fixture(aws: Aws, pki: TestPki, signer: Signer) -> Iterator[Rig]:
    r = Rig(aws, pki, signer)
    try:
        yield r
    finally:
        r.stop()


class AlwaysDefer(Behaviour):
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        return "451 4.3.0 Temporary local problem"


def commands(server: MxServer, prefix: str) -> list[str]:
    return [c for c, _ in server.log if c.upper().startswith(prefix)]


@pytest.fixture(name="engine")
def engine_fixture(rig: Rig) -> Rig:
    """The rig on DynamoDB Local (moto reports no consumed capacity, and its conditional writes
    are not atomic), with the store's clock the rig's: the uncommitted age is measured on it."""
    if shutil.which("java") is None:
        pytest.skip("no Java: DynamoDB Local cannot run")
    assert rig.aws.dynamodb_engine == ENGINE_LOCAL, rig.aws.dynamodb_engine_reason
    rig.store.clock = rig.clock
    return rig
