"""Chaos harness: many messages through the local stack's real API, misbehaving MX hosts and
DNS, sender invocations killed mid-batch, duplicated and undeleted SQS jobs, failing writes;
then a count of what was lost, what is in a wrong state, and what was delivered twice.

Used by tests/e2e/test_chaos.py (bounded) and bench/chaos.py (larger). The stack is the real
one (`LocalStack`: DynamoDB Local, moto's serialised SQS, DNS server, test CA, the sweeper on its
schedule); only the sender's event source mapping is replaced by `ChaosPoller`s, which run
several sender "containers" at once (Lambda's concurrency) and inject the faults:

  kills      an invocation dies at a chosen point: after a claim, after the remote 250 (before
             its record), after a record, or at a random moment mid-batch. A killed invocation
             writes nothing more (its store and queue raise `Killed`, a BaseException nothing
             in Outpost catches), and its batch stays on the queue, as with a crashed Lambda.
  jobs       some received jobs are sent again (duplicates); some processed jobs are not deleted
             (they come back after the visibility timeout).
  writes     some recipient writes fail once with DynamoDB throttling (after boto3's retries).
  MX hosts   drop after RCPT, after 354 and at end of data; 421 at greeting; 451/452 at RCPT;
             a failed TLS handshake; replies stalled just under the command timeout and (once
             per recipient) past it; 550 for some users; one domain that never accepts.
  DNS        SERVFAIL and timeouts for some domains, for a while, and one domain forever.

Time is compressed so everything ends within minutes: SMTP timeouts of a few seconds, a short
retry schedule and OUTPOST_MAX_LIFETIME, a 50 s "Lambda timeout", LEASE_MARGIN 5 s, and a
crashed batch visible again after a few seconds instead of the queue's 1800 s.

The verdict: "the documented window" is a kill while the invocation held a recipient's lease
(claimed, no outcome recorded yet): the remote 250 may have arrived and its record died with
the invocation, so that recipient may get one more copy per such kill. Any other second copy,
any recipient not final, and any final state that contradicts what its MX did is a failure.
A kill stops the invocation's writes and jobs, not its SMTP sessions already in flight: a
transaction that gets its 250 after the kill counts in the window (a real kill would more often
cut it before the dot), so the in-window figure is an upper bound of what a real crash costs.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from .mx import END_OF_DATA, Behaviour, MxServer, MxSmtp
from .poller import delete_done

log = logging.getLogger("outpost_local.chaos")

FINAL = {"delivered", "bounced", "expired", "suppressed", "complained"}
SENDER = "shop@outpost.test"
CMD_TIMEOUT = 3.0  # the chaos sender's SMTP command timeout (and connect timeout)


class Killed(BaseException):
    """The invocation was killed (Lambda timeout, OOM, a crash of the runtime)."""


# -- misbehaving MX hosts ---------------------------------------------------------------------


class ChaosMx(Behaviour):
    """One misbehaviour for a domain; `fail_times` first attempts per recipient misbehave
    (None: every attempt), later ones are accepted."""

    def __init__(self, mode: str, fail_times: int | None = 1, stall: float = 0.0) -> None:
        self.mode, self.fail_times, self.stall = mode, fail_times, stall
        self.seen: collections.Counter[str] = collections.Counter()
        self.connections = 0
        self.breaks_tls = mode == "tls_fail"
        self.accepted_at: dict[str, float] = {}

    def on_accepted(self, received: Any) -> None:
        self.accepted_at[received.queue_id] = time.time()

    def _failing(self, server: MxSmtp) -> bool:
        return bool(getattr(server, "_chaos_fail", False))

    def greeting(self, server: MxSmtp) -> str | None:
        if self.mode == "greet_421":
            self.connections += 1
            if self.connections % 2 == 1:
                return "421 4.3.2 Service not available, closing transmission channel"
        return None

    async def handle_RCPT(self, server: MxSmtp, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str | None:
        address = address.lower()
        self.seen[address] += 1
        fail = self.fail_times is None or self.seen[address] <= self.fail_times
        server._chaos_fail = fail  # type: ignore[attr-defined]
        if self.mode == "reject_550" and address.startswith("x"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if not fail:
            return None
        if self.mode == "rcpt_451":
            return "451 4.3.0 Temporary lookup failure"
        if self.mode == "rcpt_452":
            return "452 4.2.2 Mailbox full"
        if self.mode == "never":
            return "451 4.7.1 Service unavailable, try again later"
        return None

    async def before_reply(self, stage: str, server: MxSmtp) -> None:
        import asyncio

        if stage == "GREETING" and self.mode == "stall_greeting":
            await asyncio.sleep(self.stall)
        if not self._failing(server):
            return
        if stage == "RCPT":
            if self.mode == "drop_rcpt":
                server.drop()
            elif self.mode == "stall_rcpt":
                await asyncio.sleep(self.stall)
        elif stage == END_OF_DATA and self.mode == "drop_eod":
            server.drop()

    async def after_reply(self, stage: str, reply: str, server: MxSmtp) -> None:
        if stage == "DATA" and reply.startswith("354") and self.mode == "drop_354" and self._failing(server):
            server.drop()


# (domain, behaviour factory, weight, kind): kind says which final states are consistent
#   "eventually" delivered iff the MX kept a copy, else expired (no copy)
#   "rejects"    550 for local parts starting with x: bounced, no copy; others as "eventually"
#   "never"      expired, no copy
DOMAINS: list[tuple[str, Any, int, str]] = [
    ("ok.chaos.test", lambda: ChaosMx("ok"), 6, "eventually"),
    ("droprcpt.chaos.test", lambda: ChaosMx("drop_rcpt"), 2, "eventually"),
    ("drop354.chaos.test", lambda: ChaosMx("drop_354"), 2, "eventually"),
    ("dropeod.chaos.test", lambda: ChaosMx("drop_eod"), 2, "eventually"),
    ("greet421.chaos.test", lambda: ChaosMx("greet_421"), 2, "eventually"),
    ("r451.chaos.test", lambda: ChaosMx("rcpt_451"), 2, "eventually"),
    ("r452.chaos.test", lambda: ChaosMx("rcpt_452", fail_times=2), 2, "eventually"),
    ("tlsfail.chaos.test", lambda: ChaosMx("tls_fail"), 1, "eventually"),
    ("stallnear.chaos.test", lambda: ChaosMx("stall_rcpt", stall=CMD_TIMEOUT * 0.8), 1, "eventually"),
    ("stallover.chaos.test", lambda: ChaosMx("stall_rcpt", stall=CMD_TIMEOUT + 1.5), 1, "eventually"),
    ("slowgreet.chaos.test", lambda: ChaosMx("stall_greeting", stall=CMD_TIMEOUT * 0.8), 1, "eventually"),
    ("reject.chaos.test", lambda: ChaosMx("reject_550", fail_times=0), 2, "rejects"),
    ("never.chaos.test", lambda: ChaosMx("never", fail_times=None), 1, "never"),
    # DNS trouble: the MX itself accepts
    ("servfail.chaos.test", lambda: ChaosMx("ok"), 1, "eventually"),
    ("dnstimeout.chaos.test", lambda: ChaosMx("ok"), 1, "eventually"),
    ("dnsdead.chaos.test", lambda: ChaosMx("ok"), 1, "never"),
]


# -- the killable sender ----------------------------------------------------------------------


@dataclass
class Figures:
    messages: int = 0
    recipients: int = 0
    rejected_by_api: int = 0
    invocations: int = 0
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    duplicate_jobs: int = 0
    undeleted_jobs: int = 0
    write_failures: int = 0
    lost: int = 0
    wrong_state: int = 0
    wrong_state_in_window: int = 0
    duplicates_in_window: int = 0
    duplicates_out_of_window: int = 0
    dlq_depth: int = 0
    states: collections.Counter[str] = field(default_factory=collections.Counter)
    wall: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"messages {self.messages} (rejected by the API {self.rejected_by_api}), recipients {self.recipients}",
            f"sender invocations {self.invocations}, kills {sum(self.kills.values())} {dict(self.kills)}",
            f"duplicated jobs {self.duplicate_jobs}, undeleted jobs {self.undeleted_jobs}, "
            f"failed writes injected {self.write_failures}",
            f"final states {dict(self.states)}",
            f"lost {self.lost}, wrong state {self.wrong_state} (+{self.wrong_state_in_window} in the crash window)",
            f"delivered twice: {self.duplicates_in_window} in the documented crash window, "
            f"{self.duplicates_out_of_window} outside it",
            f"DLQ depth {self.dlq_depth}, wall time {self.wall:.1f} s",
        ]


class Faults:
    """The shared fault plan and its ledger (thread safe)."""

    KINDS = ("after_claim", "after_250", "after_record", "mid_batch")

    def __init__(self, rng: random.Random, *, p_kill: float, kill_until: float, p_dup: float,
                 p_undeleted: float, p_write_fail: float, kill_every: int = 0, kill_first: int = 0) -> None:
        self.rng, self.p_kill, self.kill_until = rng, p_kill, kill_until
        # Deterministic kills as well (so a loaded machine cannot make a run without any):
        # every kill_every-th of the first kill_first invocations dies, the kinds in turn.
        self.kill_every, self.kill_first = kill_every, kill_first
        self.p_dup, self.p_undeleted, self.p_write_fail = p_dup, p_undeleted, p_write_fail
        self.lock = threading.Lock()
        self.window: collections.Counter[tuple[str, int]] = collections.Counter()
        self.kills: collections.Counter[str] = collections.Counter()
        self.duplicate_jobs = self.undeleted_jobs = self.write_failures = self.invocations = 0
        self.chances: collections.Counter[str] = collections.Counter()

    # Each random fault also happens at fixed chances (the 5th, 15th and 25th), so a run always
    # injects at least three of each: a random draw alone left a CI run with two undeleted jobs.
    FLOOR_AT = (5, 15, 25)

    def roll(self, p: float, name: str) -> bool:
        with self.lock:
            self.chances[name] += 1
            return self.chances[name] in self.FLOOR_AT or self.rng.random() < p


class Invocation:
    """One sender invocation's fate: maybe a kill at a point, tracked leases."""

    def __init__(self, faults: Faults, timeout: float) -> None:
        self.faults = faults
        self.dead = False
        self.held: set[tuple[str, int]] = set()
        self.lock = threading.Lock()
        self.kind: str | None = None
        self.countdown = 0
        with faults.lock:
            faults.invocations += 1
            n = faults.invocations
            if faults.kill_every and n <= faults.kill_first and n % faults.kill_every == 0:
                self.kind = faults.KINDS[(n // faults.kill_every) % len(faults.KINDS)]
                self.countdown = 1
            elif time.monotonic() < faults.kill_until and faults.rng.random() < faults.p_kill:
                self.kind = faults.rng.choice(faults.KINDS)
                self.countdown = faults.rng.randint(1, 3)
        self._mid: threading.Timer | None = None
        if self.kind == "mid_batch":
            self._mid = threading.Timer(faults.rng.uniform(0.05, 2.0), self.kill, args=("mid_batch",))
            self._mid.daemon = True
            self._mid.start()
        # Lambda ends an invocation at its timeout, whatever it is doing.
        self._timeout = threading.Timer(timeout, self.kill, args=("lambda_timeout",))
        self._timeout.daemon = True
        self._timeout.start()

    def end(self) -> None:
        self._timeout.cancel()
        if self._mid is not None:
            self._mid.cancel()

    def check(self) -> None:
        if self.dead:
            raise Killed()

    def at(self, point: str) -> None:
        """A kill point was reached: die here if this is the chosen one."""
        if self.kind != point:
            return
        with self.lock:
            self.countdown -= 1
            due = self.countdown == 0
        if due:
            self.kill(point)
            raise Killed()

    def note_claim(self, key: tuple[str, int]) -> None:
        # Atomic with kill(): a claim written while the invocation was being killed is a lease
        # the dead invocation holds (its transaction may still get a 250 it cannot record).
        with self.lock:
            if not self.dead:
                self.held.add(key)
                return
        with self.faults.lock:
            self.faults.window[key] += 1

    def kill(self, kind: str) -> None:
        with self.lock:
            if self.dead:
                return
            self.dead = True
            held = list(self.held)
        with self.faults.lock:
            self.faults.kills[kind] += 1
            for k in held:
                self.faults.window[k] += 1


class ChaosStore:
    """The sender's MessageStore, killable; it also notes which leases the invocation holds."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner, self.faults = inner, faults
        self.inv: Invocation | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            assert self.inv is not None
            self.inv.check()
            return attr(*a, **kw)

        return call

    def claim(self, message_id: str, index: int, *a: Any, **kw: Any) -> bool:
        inv = self.inv
        assert inv is not None
        inv.check()
        ok = bool(self.inner.claim(message_id, index, *a, **kw))
        if ok:
            inv.note_claim((message_id, index))
            inv.at("after_claim")
        return ok

    def release(self, message_id: str, index: int) -> None:
        inv = self.inv
        assert inv is not None
        inv.check()
        self.inner.release(message_id, index)
        with inv.lock:
            inv.held.discard((message_id, index))

    def finish_attempt(self, message_id: str, index: int, state: Any, *a: Any, **kw: Any) -> Any:
        inv = self.inv
        assert inv is not None
        inv.check()
        if str(getattr(state, "value", state)) == "delivered":
            inv.at("after_250")
        if self.faults.roll(self.faults.p_write_fail, "write_fail"):
            from botocore.exceptions import ClientError

            with self.faults.lock:
                self.faults.write_failures += 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "injected by the chaos harness"}}, "UpdateItem")
        out = self.inner.finish_attempt(message_id, index, state, *a, **kw)
        with inv.lock:
            inv.held.discard((message_id, index))
        inv.at("after_record")
        return out


class ChaosQueue:
    """The sender's job queue (or suppression store): dead once its invocation is killed."""

    def __init__(self, inner: Any, store: ChaosStore) -> None:
        self.inner, self.store = inner, store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        def call(*a: Any, **kw: Any) -> Any:
            assert self.store.inv is not None
            self.store.inv.check()
            return attr(*a, **kw)

        return call


class ChaosPoller:
    """A sender 'container' with its event source mapping: receive, maybe duplicate, invoke,
    maybe die, delete (or not)."""

    def __init__(self, n: int, sqs: Any, url: str, arn: str, faults: Faults, *, timeout: float,
                 redeliver_after: int, compress_timeouts: bool = True) -> None:
        from outpost.bootstrap import delivery_service
        from outpost.delivery.transport import SmtpConnector, Timeouts

        self.sqs, self.url, self.arn, self.faults = sqs, url, arn, faults
        self.timeout, self.redeliver_after = timeout, redeliver_after
        # One DeliveryService per 'container' (bootstrap caches one per process: unwrap it).
        self.service = delivery_service.__wrapped__()
        self.store = ChaosStore(self.service.store, faults)
        self.service.store = self.store
        self.service.queue = ChaosQueue(self.service.queue, self.store)
        self.service.suppressions = ChaosQueue(self.service.suppressions, self.store)
        connector: SmtpConnector = self.service.connector
        if compress_timeouts:
            connector.timeouts = Timeouts(connect=CMD_TIMEOUT, command=CMD_TIMEOUT, end_of_data=30.0,
                                          end_of_data_min=5.0, data_transfer=10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"chaos-sender-{n}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 10)

    def _visible_soon(self, messages: list[dict]) -> None:
        for m in messages:
            try:
                self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"],
                                                   VisibilityTimeout=self.redeliver_after)
            except Exception:  # noqa: BLE001 - already gone (deleted by a duplicate's run)
                log.debug("change_message_visibility failed", exc_info=True)

    def poll_once(self) -> int:
        from .poller import sqs_event

        r = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     AttributeNames=["All"], MessageAttributeNames=["All"])
        messages = r.get("Messages", [])
        if not messages:
            return 0
        for m in messages:
            if self.faults.roll(self.faults.p_dup, "duplicate"):
                self.sqs.send_message(QueueUrl=self.url, MessageBody=m["Body"],
                                      DelaySeconds=self.faults.rng.randint(0, 3))
                with self.faults.lock:
                    self.faults.duplicate_jobs += 1
        inv = self.store.inv = Invocation(self.faults, self.timeout)
        started = time.time()
        try:
            result = self.service.handle_sqs_event(
                sqs_event(messages, self.arn),
                lambda: max(0, int((started + self.timeout - time.time()) * 1000))) or {}
        except Killed:
            result = {}
        finally:
            inv.end()
        if inv.dead:
            self._visible_soon(messages)  # the crashed batch: back after the visibility timeout
            return len(messages)
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done, back = [], [m for m in messages if m["MessageId"] in failed]
        for m in messages:
            if m["MessageId"] in failed:
                continue
            if self.faults.roll(self.faults.p_undeleted, "undeleted"):
                with self.faults.lock:
                    self.faults.undeleted_jobs += 1
                back.append(m)
            else:
                done.append(m)
        delete_done(self.sqs, self.url, done)
        self._visible_soon(back)
        return len(messages)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once() == 0:
                    self._stop.wait(0.2)
            except Exception:  # noqa: BLE001 - the mapping keeps polling
                log.exception("chaos poller error")
                self._stop.wait(1.0)


# -- the run ----------------------------------------------------------------------------------


def _http(base: str, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _attempts(rcpt: dict | None) -> list[str]:
    return [f"{a.get('at')} {a.get('code')} {str(a.get('text', ''))[:60]}" for a in (rcpt or {}).get("attempts", [])]


@dataclass
class ChaosConfig:
    messages: int = 300
    senders: int = 4
    seed: int = 8
    ip_prefix: str = "127.0.9"
    p_kill: float = 0.08
    kill_every: int = 0  # also kill every n-th of the first kill_first invocations (0: off)
    kill_first: int = 0
    kill_for: float = 25.0  # seconds after the first send during which kills happen
    p_dup: float = 0.02
    p_undeleted: float = 0.02
    p_write_fail: float = 0.02
    lifetime: int = 90
    retry_schedule: str = "1,2,4,8,15"
    timeout: float = 50.0  # the sender's "Lambda timeout"
    dns_trouble_for: float = 15.0
    wait: float = 240.0  # the longest to wait for every recipient to be final


def run(cfg: ChaosConfig, say: Any = print) -> Figures:
    from . import stack as stack_mod
    from .stack import LocalStack, StackConfig

    rng = random.Random(cfg.seed)  # the messages
    fault_rng = random.Random(cfg.seed + 1)  # the faults (rolled concurrently with the sending)
    saved_env = {k: os.environ.get(k) for k in ("OUTPOST_SWEEP_GRACE", "OUTPOST_API_RATE", "OUTPOST_API_BURST")}
    os.environ.update({"OUTPOST_SWEEP_GRACE": "20", "OUTPOST_API_RATE": "100000", "OUTPOST_API_BURST": "100000"})
    import outpost.delivery.service as service_mod

    saved_margin = service_mod.LEASE_MARGIN
    service_mod.LEASE_MARGIN = 5.0
    st = LocalStack(StackConfig(ip_prefix=cfg.ip_prefix, api_port=0, moto_port=0, dynamodb_port=0, dns_port=0,
                                smtp_port=0, retry_schedule=cfg.retry_schedule, max_lifetime=cfg.lifetime,
                                schedule_interval=5.0, postfix=False))
    pollers: list[ChaosPoller] = []
    try:
        st.start()
        for name in ("outpost", "outpost.sender", "outpost_local"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        say(f"stack up: DynamoDB engine {st.dynamodb_engine}")
        st.poller.stop()  # the chaos pollers are the sender's event source mapping now
        kinds: dict[str, str] = {}
        servers: dict[str, MxServer] = {}
        for n, (domain, make, _w, kind) in enumerate(DOMAINS, start=20):
            st._add_mx(domain, n, kind, make())
            kinds[domain] = kind
            servers[domain] = st.mx[domain].server
        dns = st.dns
        dns.set_servfail("servfail.chaos.test")
        dns.set_timeout("dnstimeout.chaos.test")
        dns.set_servfail("dnsdead.chaos.test")

        def dns_heals() -> None:
            dns.set_servfail("servfail.chaos.test", False)
            dns.set_timeout("dnstimeout.chaos.test", False)

        healer = threading.Timer(cfg.dns_trouble_for, dns_heals)
        healer.daemon = True

        faults = Faults(fault_rng, p_kill=cfg.p_kill, kill_until=time.monotonic() + cfg.kill_for, p_dup=cfg.p_dup,
                        p_undeleted=cfg.p_undeleted, p_write_fail=cfg.p_write_fail,
                        kill_every=cfg.kill_every, kill_first=cfg.kill_first)
        import boto3

        sqs = boto3.client("sqs")
        url, arn = st.stack.physical["SendQueue"], st.stack.attributes[("SendQueue", "Arn")]
        for i in range(cfg.senders):
            pollers.append(ChaosPoller(i, sqs, url, arn, faults, timeout=cfg.timeout, redeliver_after=3))
        for p in pollers:
            p.start()
        healer.start()
        figures = Figures()
        t0 = time.monotonic()

        # -- send through the real API, in batches of 50
        weights = [w for _d, _m, w, _k in DOMAINS]
        names = [d for d, _m, _w, _k in DOMAINS]
        ids: list[str] = []
        addresses: dict[str, list[str]] = {}
        for start in range(0, cfg.messages, 50):
            bodies = []
            for i in range(start, min(cfg.messages, start + 50)):
                to = []
                for j in range(rng.choice([1, 1, 2, 2, 3])):
                    local = ("x" if rng.random() < 0.3 else "u") + f"{i}r{j}"
                    to.append(f"{local}@{rng.choices(names, weights)[0]}")
                bodies.append({"from": f"Shop <{SENDER}>", "to": to, "subject": f"Order {i}",
                               "text": f"Thanks for order {i}.", "html": f"<p>Order <b>{i}</b></p>"})
            status, res = _http(st.api.url, st.api_key, "POST", "/v1/messages/batch", {"messages": bodies})
            if status != 200:
                raise RuntimeError(f"batch send answered {status}: {res}")
            for body, r in zip(bodies, res["results"], strict=True):
                if r["status"] != 202:
                    figures.rejected_by_api += 1
                    figures.problems.append(f"API refused a message: {r}")
                    continue
                ids.append(r["id"])
                addresses[r["id"]] = [a.lower() for a in body["to"]]
        figures.messages = len(ids)
        figures.recipients = sum(len(v) for v in addresses.values())
        say(f"sent {figures.messages} messages ({figures.recipients} recipients) in {time.monotonic() - t0:.1f} s")

        # -- wait until every recipient is final (only GETs, through the API)
        final: dict[str, dict] = {}
        pending = list(ids)
        deadline = time.monotonic() + cfg.wait
        last_say = 0.0
        while pending and time.monotonic() < deadline:
            still = []
            for mid in pending:
                status, body = _http(st.api.url, st.api_key, "GET", f"/v1/messages/{mid}")
                if status == 200 and all(r["state"] in FINAL for r in body["recipients"]):
                    final[mid] = body
                else:
                    still.append(mid)
            pending = still
            if pending:
                if time.monotonic() - last_say > 15:
                    last_say = time.monotonic()
                    say(f"  {time.monotonic() - t0:.0f} s: {len(pending)} messages not final yet")
                time.sleep(1.0)
        figures.wall = time.monotonic() - t0
        for p in pollers:
            p.stop()
        pollers.clear()

        # -- the verdict
        copies: collections.Counter[str] = collections.Counter()
        copy_info: dict[str, list[str]] = collections.defaultdict(list)
        for server in servers.values():
            for rec in server.received:
                for rcpt in rec.rcpt_tos:
                    copies[rcpt.lower()] += 1
                    at = getattr(server.behaviours[0], "accepted_at", {}).get(rec.queue_id, 0.0)
                    copy_info[rcpt.lower()].append(
                        f"{rec.queue_id} at {time.strftime('%H:%M:%S', time.gmtime(at))}{at % 1:.2f} "
                        f"tls={rec.tls} {len(rec.data)} bytes, MAIL FROM lines in data: {rec.data.count(b'MAIL FROM')}")
        for mid in pending:
            status, body = _http(st.api.url, st.api_key, "GET", f"/v1/messages/{mid}")
            final[mid] = body if status == 200 else {"recipients": []}
        figures.kills = faults.kills
        figures.duplicate_jobs, figures.undeleted_jobs = faults.duplicate_jobs, faults.undeleted_jobs
        figures.write_failures, figures.invocations = faults.write_failures, faults.invocations
        for mid in ids:
            rcpts = final[mid].get("recipients", [])
            for index, address in enumerate(addresses[mid]):
                got = next((r for r in rcpts if r["address"].lower() == address), None)
                state = got["state"] if got else "missing"
                figures.states[state] += 1
                if state not in FINAL:
                    figures.lost += 1
                    figures.problems.append(f"not final: {mid}[{index}] {address} is {state}")
                    continue
                n, window = copies[address], faults.window[(mid, rcpts.index(got))]
                domain = address.rpartition("@")[2]
                kind = kinds.get(domain, "eventually")
                if kind == "rejects" and address.startswith("x"):
                    # killed between adding the suppression and recording the bounce: the next
                    # run finds the address suppressed (final, nothing sent)
                    expected = {"bounced", "suppressed"} if window else {"bounced"}
                elif kind == "never":
                    expected = {"expired"}
                else:
                    expected = {"delivered"} if n else {"expired"}
                if n and state != "delivered":
                    expected = {"delivered"}
                if state not in expected:
                    if window and n <= window and state == "expired":
                        figures.wrong_state_in_window += 1  # its 250's record died with a kill
                    else:
                        figures.wrong_state += 1
                        figures.problems.append(f"wrong state: {mid}[{index}] {address} ({kind}) is {state}, "
                                                f"MX kept {n} copies, {window} kills while leased; attempts "
                                                f"{_attempts(got)}")
                if n > 1:
                    extra = n - 1
                    inside = min(extra, window)
                    figures.duplicates_in_window += inside
                    if extra > inside:
                        figures.duplicates_out_of_window += extra - inside
                        figures.problems.append(f"delivered {n} times: {mid}[{index}] {address}, "
                                                f"{window} kills while leased; attempts {_attempts(got)}; "
                                                f"copies {copy_info[address]}")
        attrs = sqs.get_queue_attributes(QueueUrl=st.stack.physical["SendDeadLetterQueue"],
                                         AttributeNames=["ApproximateNumberOfMessages",
                                                         "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        figures.dlq_depth = int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"])
        if figures.dlq_depth:
            got = sqs.receive_message(QueueUrl=st.stack.physical["SendDeadLetterQueue"], MaxNumberOfMessages=10,
                                      AttributeNames=["All"]).get("Messages", [])
            for m in got:
                figures.problems.append(f"in the DLQ: {m['Body']} received "
                                        f"{m['Attributes'].get('ApproximateReceiveCount')} times")
        return figures
    finally:
        for p in pollers:
            p.stop()
        st.stop()
        service_mod.LEASE_MARGIN = saved_margin
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        del stack_mod
