"""The embedded local stack: Outpost end to end on loopback, no AWS account, no Docker.

  DynamoDB Local      AWS's own DynamoDB engine (Java; dynamodb_local.py) for the tables, when
                      Java and the npm package are installed; else moto's DynamoDB (a fallback:
                      its conditional writes are not atomic under concurrent requests)
  moto (server mode)  SQS, S3, Secrets Manager, SSM (and DynamoDB in the fallback), run through
                      moto_server.py, which serialises moto's SQS queue mutations; the
                      template's queues/tables/bucket/secrets are created from the template
  DnsServer           authoritative DNS for the test zones (MX, A, PTR, TXT: DKIM, SPF, DMARC)
  TestPki             a test CA; every MX presents a certificate the sender verifies
  MX hosts            accept / reject unknown users (550 5.1.1) / greylist (451 4.7.1) /
                      accept then send a DSN later / Postfix (when installed and root) /
                      (providers=True) Gmail, Outlook, Yahoo look-alikes that throttle
  InboundListener     SES receiving for the bounce domain: store to S3, invoke the processor
  S3NotificationPoller the template's S3 events: a new inbound/s3/ object invokes the processor
  ApiServer           http://127.0.0.1:3000 -> API Gateway proxy events -> the send-API handler
  SqsPoller           the sender's SQS event source mappings (new mail, retries): one each
  StreamPoller        MessagesTable's stream -> the events function (issue 12), filtered as the template says
  SubmissionServer    SMTP submission (issue 13): 127.0.0.1:2587 STARTTLS, :2465 implicit TLS

The handlers are the template's own files, loaded with the environment the template gives
them; only endpoints, the DNS server, the SMTP port, the CA bundle and the retry schedule are
local. As root the MX hosts listen on port 25; otherwise on 2525 (OUTPOST_SMTP_PORT tells the
sender), each on its own 127.0.0.x address.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .lifecycle import Server, free_port

log = logging.getLogger("outpost_local")

SENDING_DOMAIN = "outpost.test"
BOUNCE_DOMAIN = "bounces.outpost.test"
EHLO_HOSTNAME = "mta.outpost.test"
SUBMISSION_HOSTNAME = "smtp.outpost.test"  # the submission server's certificate also names it
STACK_NAME = "outpost"
# Where `make dev` publishes the running stack's Outputs for `outpost-admin --local`.
OUTPUTS_FILE = Path(__file__).resolve().parents[2] / ".local-aws" / f"{STACK_NAME}-outputs.json"


@dataclass
class StackConfig:
    ip_prefix: str = "127.0.0"  # .1: API, moto, DNS, sender; .2 and up: MX hosts
    api_port: int = 3000
    moto_port: int = 4566
    dynamodb_port: int = 4567  # DynamoDB Local (0: a free port)
    dns_port: int = 5353
    smtp_port: int | None = None  # None: 25 as root, else 2525
    retry_schedule: str = "2,4,8,15,30"  # seconds: fast enough for a demo; AWS uses the default
    max_lifetime: int | None = None
    schedule_interval: float = 60.0  # seconds between runs of each Schedule-triggered function
    postfix: bool | None = None  # None: when installed and running as root
    providers: bool = False  # provider-like MX hosts (providers_rig.py): gmail.test, outlook.test, yahoo.test
    state_dir: Path | None = None
    outputs_file: Path | None = None  # publish describe() here while running (make dev: OUTPUTS_FILE)
    quiet: bool = True
    env: dict[str, str] = field(default_factory=dict)  # set last, over the template's (benches)
    # SMTP submission (587 and 465 in AWS). None: 2587 and 2465 when the API has a fixed port
    # (make dev, make demo), else free ports (tests and benches, which set every port to 0).
    submission_port: int | None = None  # STARTTLS
    submission_tls_port: int | None = None  # implicit TLS
    webhook_port: int = 0  # the local webhook receiver on .20 (0: a free port)
    webhook_retry_schedule: str = "1,2,4,8,15,30,60"  # seconds between webhook attempts (AWS: 5 s ... 10 h)
    # The template's S3 event notifications (the bounce processor on inbound/s3/, where the
    # sandbox's simulator writes its reports). False: objects there wait for a manual invoke.
    s3_notifications: bool = True

    def ip(self, n: int) -> str:
        return f"{self.ip_prefix}.{n}"


@dataclass
class MxSpec:
    domain: str
    ip: str
    kind: str
    server: Any = None


@dataclass
class LocalStack(Server):
    config: StackConfig = field(default_factory=StackConfig)

    def __post_init__(self) -> None:
        self.components: list[Any] = []
        self.mx: dict[str, MxSpec] = {}
        self.api_key: str = ""
        self.env: dict[str, str] = {}
        self.aws: Any = None  # an aws.LocalAws: moto, and DynamoDB Local when available
        self.dynamodb_engine: str = ""  # dynamodb_local.ENGINE_LOCAL or ENGINE_MOTO
        self.dynamodb_engine_reason: str = ""
        self._tmp: str | None = None
        self._published: Path | None = None

    @property
    def dynamodb_endpoint(self) -> str:
        return self.env.get("AWS_ENDPOINT_URL_DYNAMODB") or self.env.get("AWS_ENDPOINT_URL", "")

    # ---- life cycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        for c in reversed(self.components):
            try:
                c.stop()
            except Exception:  # noqa: BLE001 - stop everything we can
                log.exception("stopping %r", c)
        self.components.clear()
        if self._published is not None:
            self._published.unlink(missing_ok=True)
            self._published = None
        if self.aws is not None:
            self.aws.stop()
            self.aws = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _start(self) -> None:
        import warnings

        # Powertools warns when an invocation published no metric (every GET): noise locally.
        warnings.filterwarnings("ignore", "No application metrics to publish")
        cfg = self.config
        if cfg.state_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="outpost-local-")
            cfg.state_dir = Path(self._tmp)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        root = os.geteuid() == 0
        smtp_port = cfg.smtp_port if cfg.smtp_port is not None else (25 if root else 2525)
        if smtp_port == 0:
            smtp_port = free_port(cfg.ip(2))
        self.smtp_port = smtp_port
        host = cfg.ip(1)

        # AWS APIs: moto (SQS serialised) for everything, DynamoDB Local for DynamoDB when it can
        from .aws import LocalAws

        self.aws = LocalAws(host, cfg.moto_port, cfg.dynamodb_port).start()
        self.dynamodb_engine = self.aws.dynamodb_engine
        self.dynamodb_engine_reason = self.aws.dynamodb_engine_reason
        aws_env = self.aws.env()
        os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)  # a previous stack in this process
        os.environ.update(aws_env)

        import boto3

        from .provision import provision

        self.stack = provision(boto3.Session(), stack_name=STACK_NAME, parameters={
            "SendingHostname": EHLO_HOSTNAME, "BounceDomain": BOUNCE_DOMAIN})

        # DNS and PKI
        from .dns import DnsServer
        from .pki import TestPki

        self.dns = DnsServer(host, cfg.dns_port)
        self.dns.start()
        self.components.append(self.dns)
        self.pki = TestPki(cfg.state_dir / "pki")

        self.env = dict(self.stack.env())
        self.env.update(aws_env)
        self.env.update({
            "OUTPOST_DNS_SERVERS": f"{host}:{self.dns.port}",
            "OUTPOST_SMTP_PORT": str(smtp_port),
            "OUTPOST_CA_BUNDLE": str(self.pki.ca_bundle),
            "OUTPOST_RETRY_SCHEDULE": cfg.retry_schedule,
            "OUTPOST_SENDER_IP": host,  # what SPF must list: the local "Elastic IP"
            "OUTPOST_ALLOW_PRIVATE_MX": "true",  # the local MX and policy hosts live on 127.0.0.0/8
            "POWERTOOLS_DEV": "false",
        })
        # Webhooks (issue 12): the local receivers live on 127.0.0.0/8, over http://.
        self.env.update({"OUTPOST_WEBHOOKS_LOCAL": "true",
                         "OUTPOST_WEBHOOK_RETRY_SCHEDULE": cfg.webhook_retry_schedule})
        if cfg.max_lifetime:
            self.env["OUTPOST_MAX_LIFETIME"] = str(cfg.max_lifetime)
        if cfg.quiet:
            self.env["LOG_LEVEL"] = "WARNING"
            self.env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
            self.env["POWERTOOLS_METRICS_DISABLED"] = "true"
        self.env.update(cfg.env)
        os.environ.update(self.env)
        from outpost.bootstrap import reset

        reset()  # a previous stack in this process may have cached clients and settings

        self._publish_sender_dns(host)
        self._setup_domain()
        self._start_functions()
        self._start_mx_hosts(root)
        self._start_inbound()
        self._start_s3_notifications()
        self._start_api_and_poller(host)
        self._start_submission(host)
        self._start_webhook_receiver()
        from outpost.api.auth import KeyRing
        from outpost.bootstrap import api_keys_table

        self.api_key, _ = KeyRing(api_keys_table()).create("local admin", ["admin"])
        if cfg.outputs_file is not None:
            self.publish(cfg.outputs_file)

    # ---- what it publishes --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """This stack as `aws cloudformation describe-stacks` describes a deployed one: the
        template's Outputs, resolved by provision() (the API's URL and the sender's IP are the
        local ones), plus the endpoints a client needs to reach it (Environment)."""
        outputs = dict(self.stack.outputs, ApiUrl=self.api.url, SenderPublicIp=self.env["OUTPOST_SENDER_IP"])
        reach = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "OUTPOST_DNS_SERVERS")
        return {"StackName": STACK_NAME,
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in sorted(outputs.items())],
                "Environment": {k: self.env[k] for k in reach if k in self.env}}

    def publish(self, path: Path) -> Path:
        """Write describe() to `path` (removed when the stack stops)."""
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        tmp.replace(path)
        self._published = path
        return path

    # ---- pieces -------------------------------------------------------------------------------
    def _publish_sender_dns(self, host: str) -> None:
        d = self.dns
        d.add(EHLO_HOSTNAME, "A", host)
        rev = ".".join(reversed(host.split("."))) + ".in-addr.arpa"
        d.add(rev, "PTR", EHLO_HOSTNAME)
        d.add(SENDING_DOMAIN, "TXT", f"v=spf1 ip4:{host} -all")
        d.add(f"_dmarc.{SENDING_DOMAIN}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{SENDING_DOMAIN}")

    def _setup_domain(self) -> None:
        """A verified sending domain: DKIM keys (RSA + Ed25519) in Secrets Manager and in DNS."""
        from outpost.bootstrap import dkim_secret_id, domains_table, secrets
        from outpost.clock import iso
        from outpost.records import Domain
        from outpost.signing import dns_name, dns_txt_value, generate_key, secret_from_keys

        selector = time.strftime("s%Y%m%d")
        keys = [generate_key(SENDING_DOMAIN, selector, "rsa-sha256"),
                generate_key(SENDING_DOMAIN, selector + "e", "ed25519-sha256")]
        secrets().put_json(dkim_secret_id(SENDING_DOMAIN), secret_from_keys(SENDING_DOMAIN, keys))
        for k in keys:
            self.dns.add(dns_name(k), "TXT", dns_txt_value(k))
        domains_table().put_domain(Domain(domain=SENDING_DOMAIN, verified=True, created_at=iso(time.time()),
                                          selectors=tuple(k.selector for k in keys)))
        self.dkim_keys = keys

    def _start_functions(self) -> None:
        from .runtime import LocalFunction

        self.functions = {k: LocalFunction(f) for k, f in self.stack.functions.items()}

    def _add_mx(self, domain: str, n: int, kind: str, behaviour: Any) -> None:
        from .mx import MxServer

        ip = self.config.ip(n)
        name = f"mx.{domain}"
        self.dns.add(domain, "MX", (10, name))
        self.dns.add(name, "A", ip)
        server = MxServer(ip, self.smtp_port, behaviour, self.pki.server_context(name), hostname=name)
        server.start()
        self.components.append(server)
        self.mx[domain] = MxSpec(domain, ip, kind, server)

    def _start_mx_hosts(self, root: bool) -> None:
        from .mx import Accept, AcceptThenBounce, Greylist, RejectUnknown, resolve_via_dns

        self._add_mx("accept.test", 2, "accepts everything", Accept())
        self._add_mx("reject.test", 3, "rejects unknown users (550 5.1.1); knows alice",
                     RejectUnknown({"alice"}))
        self._add_mx("greylist.test", 4, "greylists the first attempt (451 4.7.1)", Greylist())
        resolve = resolve_via_dns(self.dns.resolver(), self.smtp_port)
        self._add_mx("bounce-later.test", 5, "accepts, then sends a DSN (5.1.1) to the return path",
                     AcceptThenBounce(resolve=resolve, reporting_mta="mx.bounce-later.test",
                                      status="5.1.1",
                                      diagnostic="smtp; 550 5.1.1 <addr>: mailbox unavailable",
                                      tls_context=self.pki.client_context()))
        want_postfix = self.config.postfix
        from .postfix import postfix_available

        if want_postfix is None:
            want_postfix = root and postfix_available() is None
        if want_postfix:
            self._start_postfix()
        if self.config.providers:
            from .providers_rig import add_to_stack

            add_to_stack(self)

    def _start_postfix(self) -> None:
        from .postfix import PostfixInstance

        ip = self.config.ip(7)
        domain = "postfix.test"
        name = f"mx.{domain}"
        assert self.config.state_dir is not None  # set in __init__
        pf = PostfixInstance(self.config.state_dir / "postfix", ip, self.smtp_port, domain, {"alice", "bob"},
                             self.pki.cert_files(name), hostname=name)
        pf.start()
        self.components.append(pf)
        self.dns.add(domain, "MX", (10, name))
        self.dns.add(name, "A", ip)
        self.mx[domain] = MxSpec(domain, ip, "Postfix from Debian: knows alice and bob", pf)

    def _start_inbound(self) -> None:
        from .inbound import InboundListener

        ip = self.config.ip(6)
        name = f"inbound.{BOUNCE_DOMAIN}"
        self.dns.add(BOUNCE_DOMAIN, "MX", (10, name))
        self.dns.add(name, "A", ip)
        self.inbound = InboundListener(
            host=ip, port=self.smtp_port, domain=BOUNCE_DOMAIN, s3=_client("s3"),
            bucket=self.env["OUTPOST_BUCKET"], prefix=os.environ.get("OUTPOST_INBOUND_SES_PREFIX", "inbound/ses/"),
            function=self.functions["BounceProcessorFunction"], tls_context=self.pki.server_context(name))
        self.inbound.start()
        self.components.append(self.inbound)

    def _start_s3_notifications(self) -> None:
        """The template's `Type: S3` events (s3events.py): each function's prefix, watched."""
        from .s3events import S3NotificationPoller

        self.s3_pollers: dict[str, S3NotificationPoller] = {}
        if not self.config.s3_notifications:
            return
        for logical, fn in self.stack.functions.items():
            for name, ev in fn.events.items():
                if ev.get("Type") != "S3":
                    continue
                rules = ev["Properties"].get("Filter", {}).get("S3Key", {}).get("Rules", [])
                prefix = next((r["Value"] for r in rules if r["Name"].lower() == "prefix"), "")
                poller = S3NotificationPoller(_client("s3"), self.env["OUTPOST_BUCKET"], prefix,
                                              self.functions[logical], name=f"{logical}.{name}")
                poller.start()
                self.components.append(poller)
                self.s3_pollers[f"{logical}.{name}"] = poller

    def _start_api_and_poller(self, host: str) -> None:
        from .apigw import ApiServer
        from .poller import SqsPoller

        self.api = ApiServer(self.functions["SendApiFunction"], host, self.config.api_port)
        self.api.start()
        self.components.append(self.api)
        # One poller per SQS event source mapping (the sender has two: SendQueue for new mail,
        # RetryQueue for retries), each with its own batch size and window from the template,
        # so a retry is taken as it falls due, whatever the backlog of new mail.
        self.pollers: dict[str, SqsPoller] = {}
        for logical, fn in self.stack.functions.items():
            for name, ev in fn.events.items():
                if ev.get("Type") != "SQS":
                    continue
                props = ev["Properties"]
                queue = self._queue_with_arn(props["Queue"])
                poller = SqsPoller(_client("sqs"), self.stack.physical[queue], props["Queue"],
                                   self.functions[logical], batch_size=int(props.get("BatchSize", 10)),
                                   window=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                                   name=f"{logical}.{name}")
                poller.start()
                self.components.append(poller)
                self.pollers[f"{logical}.{name}"] = poller
        self.poller = self.pollers["SenderFunction.Send"]  # new mail's mapping
        # Schedule events (the sweeper): run them here too, so `make dev` keeps the invariant
        # "every open recipient has a future job" the way the deployed stack does.
        from .poller import Scheduler

        self.schedulers: dict[str, Scheduler] = {}
        for logical, fn in self.stack.functions.items():
            for name, ev in fn.events.items():
                if ev.get("Type") != "Schedule":
                    continue
                arn = f"arn:aws:events:us-east-1:123456789012:rule/{STACK_NAME}-{logical}{name}"
                # Cold-start it now, with this stack's environment: a first run on the timer
                # could happen while another stack in the same process (tests) has the env.
                self.functions[logical].load()
                sched = Scheduler(self.functions[logical], arn, self.config.schedule_interval)
                sched.start()
                self.components.append(sched)
                self.schedulers[logical] = sched
        self._start_stream_pollers()

    def _start_stream_pollers(self) -> None:
        """The DynamoDB stream event source mappings (issue 12: MessagesTable's stream to the
        events function), with the template's batch size, filters and failure destination."""
        import json

        import boto3

        from .poller import StreamPoller

        self.stream_pollers: dict[str, StreamPoller] = {}
        streams = boto3.client("dynamodbstreams", endpoint_url=self.dynamodb_endpoint)
        for logical, fn in self.stack.functions.items():
            for name, ev in fn.events.items():
                if ev.get("Type") != "DynamoDB":
                    continue
                props = ev["Properties"]
                dest = ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
                self.functions[logical].load()
                poller = StreamPoller(
                    streams, props["Stream"], self.functions[logical], batch_size=int(props.get("BatchSize", 100)),
                    filters=[json.loads(f["Pattern"]) for f in (props.get("FilterCriteria") or {}).get("Filters", [])],
                    max_retries=int(props.get("MaximumRetryAttempts", 20)),
                    on_failure=(_client("sqs"), self.stack.physical[self._queue_with_arn(dest)]) if dest else None,
                    name=f"{logical}.{name}")
                poller.start()
                self.components.append(poller)
                self.stream_pollers[f"{logical}.{name}"] = poller

    def _start_submission(self, host: str) -> None:
        """SMTP submission (issue 13) on host:2587 (STARTTLS) and host:2465 (implicit TLS), as
        the container runs it: the certificate (from the test CA, for the host's IP, localhost
        and smtp.outpost.test) put in Secrets Manager, and read back from there. Its SendService
        and key ring are built here, once, with this stack's clients: it needs no gate while a
        test's own stack holds the environment (tests/integration/test_stack_isolation.py)."""
        from outpost.bootstrap import secrets, submission_server
        from outpost.submission.settings import SubmissionSettings

        cert, key = self.pki.cert_files(host, "localhost", SUBMISSION_HOSTNAME)
        secret = f"{STACK_NAME}/submission-tls"
        secrets().put_json(secret, {"certificate_chain": cert.read_text(), "private_key": key.read_text()})
        cfg = self.config
        fixed = cfg.api_port != 0
        starttls = cfg.submission_port if cfg.submission_port is not None else (2587 if fixed else 0)
        tls = cfg.submission_tls_port if cfg.submission_tls_port is not None else (2465 if fixed else 0)
        self.submission = submission_server(SubmissionSettings(
            host=host, starttls_port=starttls, tls_port=tls, tls_secret=secret, hostname=SUBMISSION_HOSTNAME))
        self.submission.start_in_thread()
        self.components.append(self.submission)
        self.dns.add(SUBMISSION_HOSTNAME, "A", host)

    def _start_webhook_receiver(self) -> None:
        """The local webhook receiver (issue 12) on .20: it verifies with the secrets of the
        endpoints registered with its URL (read from the local webhooks table)."""
        from outpost.bootstrap import webhook_store

        from .webhook_receiver import WebhookReceiver

        store = webhook_store()

        def secrets_for() -> list[str]:
            base = self.webhooks.url.rsplit("/", 1)[0]
            return [s for e in store.endpoints() if e.url.startswith(base) for s in e.signing_secrets(time.time())]

        self.webhooks = WebhookReceiver(self.config.ip(20), self.config.webhook_port, secrets_for=secrets_for,
                                        echo=not self.config.quiet)
        self.webhooks.start()
        self.components.append(self.webhooks)

    def _queue_with_arn(self, arn: str) -> str:
        """The logical id of the template's queue with this ARN."""
        return next(logical for (logical, attr), value in self.stack.attributes.items()
                    if attr == "Arn" and value == arn)


def _client(service: str) -> Any:
    import boto3

    return boto3.client(service)  # type: ignore[call-overload]  # a service name chosen at run time

