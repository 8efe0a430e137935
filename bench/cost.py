"""Benchmark: what 1,000 emails cost on AWS, counted request by request (issue 15 item 4).

N messages (default 1,000; --quick 200) go through the embedded local stack's real API (one
POST /v1/messages per message, as a signup form sends; --batch N: one POST /v1/messages/batch
per N) and its real sender (the template's SQS event source mappings, batch 10, window 1 s) to
loopback MX hosts over STARTTLS:
  ~93% to eight accepting domains;
   3% to unknown users at reject.test (550 5.1.1 at RCPT: a hard bounce the sender records);
   2% to bounce-later.test, which accepts and then mails an RFC 3464 DSN to the VERP return
      path: the local SES receiving (outpost_local/inbound.py) stores it in S3 and invokes the
      bounce processor, as in AWS;
   1% to greylist.test (451 4.7.1 once: a retry through the RetryQueue);
   1% carry a 300 KB attachment inline (the body goes to S3: over the inline limit) and
   0.5% a 1 MB upload (POST /v1/uploads, a presigned S3 PUT, then the send with upload_id).

What is counted, and how:
  AWS requests   botocore event hooks on the clients bootstrap.py builds (and on the local
                 event source mappings' SQS client and SES receiving's S3 client), attributed
                 to the function whose invocation made them.
  DynamoDB       read and write request units as DynamoDB Local reports them: the hooks add
                 ReturnConsumedCapacity=INDEXES (TOTAL, split by table and index) to every
                 item call; its transactional writes halved to AWS's 2 units per KB
                 (cost_model.aws_units: Local reports 4); a conditional write that fails is
                 charged 1 write unit (AWS charges its item size: a floor).
  SQS            one request per 64 KB chunk of each call's payload (bodies and attributes);
                 empty receives of the event source mappings are not mail-driven: they are in
                 the fixed costs (AWS's 5 pollers per queue, 20 s long polls).
  Lambda         the wall time of each handler call in this process, rounded up to 1 ms, times
                 the template's MemorySize (arm64 price); cold starts excluded (functions are
                 loaded first). Loopback MX hosts answer at once: at internet latency the
                 sender waits longer (issue 15 item 3), so its GB-s here are a floor.
  Logs           bytes the functions write to stdout/stderr at the template's LOG_LEVEL (INFO)
                 with metrics on, plus 260 bytes of START/END/REPORT lines per invocation.
  NAT bytes      the sender's SMTP connections, from the kernel (TCP_INFO at close: payload
                 bytes both ways, TLS included) plus 52 bytes of IP/TCP header per segment at
                 an internet MSS of 1448; plus the HTTP bytes of the sender's calls to SQS and
                 Secrets Manager (S3 and DynamoDB use the free gateway endpoints).
Prices: bench/cost_model.py (dated, with sources). SES's price is printed beside each total.

Measured (1,000 messages, DynamoDB Local, 2 cores at load average 7-17, 2026-11-30, RetentionDays
45), before and after the event log's new layout (an item and one index entry per event, issue
15 item 4's fourth cut): all 974 deliverable recipients at their MX and 21 DSNs processed in
135-145 s; DynamoDB write units per email 24.75 -> 20.68 (the event log 8.13 -> 4.06; unchanged:
the create 5.00, the finish 4.13, the claim 3.03, reputation counts 2.00, shaping slots 2.05),
$0.0155 -> $0.0129; DynamoDB kept 7.95 -> 5.90 MB; 1,003 API requests ($0.0035 REST + $0.0006
WAF), 165 Lambda GB-s ($0.0022, this loaded machine's wall time), 1,898 SQS requests, 21 DSNs
received by SES ($0.0040), 14.5 MB out / 17.3 MB through the NAT, S3 8.7 MB kept. Variable
$0.0331 -> $0.0300 per 1,000 with the NAT gateway ($0.0323 -> $0.0292 with the NAT instance),
against SES's $0.1015 in each run (29.6%): the goal ($0.005) is not met; without any DynamoDB
write the rest is $0.0171 (README, "What it costs"). Fixed: $48.65 a month (gateway) or $19.70
(instance); cheaper than SES from 680,458 (gateway) or 272,683 (instance) emails a month; than
SES with a dedicated IP from 331,456 (gateway) or at any volume (instance).
With --batch 50 (20 POST /v1/messages/batch requests + 3 uploads instead of 1,003 requests):
18.61 write units per email (reputation counts once per batch and pair: 2.00 -> 0.04), API
Gateway + WAF $0.0001, $0.0229 per 1,000 (gateway) / $0.0221 (instance), SES $0.1015 (22.5%);
cheaper than SES from 611,023 / 240,598 emails a month.
The earlier pass (the create as plain PutItems, bodies deflated and in S3 above the break-even,
a claim that leaves the due index alone; RetentionDays 30): 33.6 -> 24.6 write units per email,
$0.0382 -> $0.0318 per 1,000.
With a 20 KB HTML template (--quick --html-bytes 20000): 73.9 -> 24.8 write units per email,
$0.0702 -> $0.0333 per 1,000 (the padding deflates better than a real template would).

ApiType (issue 15 item 4): the API's requests are priced both ways, REST API + WAF (the default,
in every total above) and HTTP API (per 512 KB of request, no WAF), with the totals and the
break-even an HTTP API gives. --quick, 2026-11-30, load 3-6, --ip-prefix 127.0.147: single sends
(1,000 requests per 1,000 emails) $0.00410 REST + WAF vs $0.00100 HTTP; variable $0.02921 ->
$0.02611 per 1,000 (gateway; SES $0.1006), fixed $48.37 -> $42.37 a month (no web ACL), cheaper
than SES from 677,741 -> 568,955 emails a month (instance: 270,685 -> 179,326). --batch 50 (20
requests per 1,000): $0.00008 vs $0.00002; $0.02186 -> $0.02180; from 614,157 -> 537,511
(instance 245,224 -> 169,250): the fixed WAF, not the requests, is then the difference.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/cost.py [--quick] [--messages N]
     [--batch 50]       (POST /v1/messages/batch, 50 messages a request; default one POST each)
     [--html-bytes B]   (each message is a 0.8 KB text + 0.7 KB HTML receipt; B pads the HTML)
     [--inline-limit L] (what if bodies deflating to over L bytes went to S3; the library: 6,300)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import concurrent.futures
import contextvars
import io
import json
import math
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cost_model as cm

ROOT = Path(__file__).resolve().parents[1]
ACCEPTING = [f"a{i}.cost.test" for i in range(8)]
CAPACITY_OPS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
                "BatchWriteItem", "TransactGetItems", "TransactWriteItems"}
READ_OPS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
S3_PUT_CLASS = {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                "ListObjects", "ListObjectsV2", "ListObjectVersions", "PutObjectTagging"}
S3_FREE = {"DeleteObject", "DeleteObjects", "AbortMultipartUpload"}
STORE_FILE = os.path.join("outpost", "store.py")
PLATFORM_LOG_BYTES = 260  # START, END and REPORT lines of one invocation
HEADER_BYTES, INTERNET_MSS = 52, 1448  # IPv4 20 + TCP 20 + timestamps 12; 1500 MTU
# The function whose invocation is running: a context variable, so the worker threads the sender
# starts with asyncio.to_thread (store calls, MIME building) are attributed to it too.
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("cost_function", default=None)
UNATTRIBUTED = "unattributed"  # a bootstrap client's call outside any invocation's context


@dataclass
class Meter:
    """Everything counted while `on`, by function (or by the AWS service acting for us)."""

    on: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: collections.Counter = field(default_factory=collections.Counter)  # (who, service, op)
    usage: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    durations: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    metrics: set = field(default_factory=set)
    idle_receives: int = 0
    missing_capacity: int = 0
    smtp_connections: int = 0
    units: collections.Counter = field(default_factory=collections.Counter)  # (who, call, op, table or index)

    def add(self, who: str, kind: str, n: float) -> None:
        with self.lock:
            self.usage[who][kind] += n  # type: ignore[assignment]  # Counter of floats

    def totals(self) -> collections.Counter:
        out: collections.Counter = collections.Counter()
        for c in self.usage.values():
            out.update(c)
        return out


METER = Meter()


# ---- AWS requests ----------------------------------------------------------------------------
def _who(client_tag: str | None) -> str:
    return client_tag or _current.get() or UNATTRIBUTED


def _sqs_payload(params: dict) -> int:
    entries = params.get("Entries") or [params]
    size = 0
    for e in entries:
        size += len(str(e.get("MessageBody", "")).encode())
        for k, v in (e.get("MessageAttributes") or {}).items():
            size += len(k) + len(v.get("DataType", "")) + len(str(v.get("StringValue") or v.get("BinaryValue") or ""))
    return size


def _store_caller() -> str:
    """The outermost store.py method on the stack (MessageStore.claim, not its _update): the
    call a DynamoDB request's units are attributed to in the breakdown by call."""
    name, f = "?", sys._getframe(2)
    while f is not None:
        if f.f_code.co_filename.endswith(STORE_FILE):
            name = f.f_code.co_qualname
        f = f.f_back  # type: ignore[assignment]
    return name


def _on_params(params: dict, model: Any, context: dict, **_: Any) -> None:
    service = model.service_model.service_name
    if service == "dynamodb" and model.name in CAPACITY_OPS:
        params.setdefault("ReturnConsumedCapacity", "INDEXES")  # TOTAL, split by table and index
        context["cost_caller"] = _store_caller()
    elif service == "sqs" and model.name.startswith("SendMessage"):
        context["cost_payload"] = _sqs_payload(params)
    elif service == "s3" and model.name == "PutObject":
        body = params.get("Body", b"")
        context["cost_body"] = len(body) if isinstance(body, (bytes, str)) else 0


def _ddb_units(who: str, op: str, parsed: dict, call: str = "?") -> None:
    cc = parsed.get("ConsumedCapacity")
    if "Error" in parsed:
        if op not in READ_OPS and parsed["Error"].get("Code") in ("ConditionalCheckFailedException",
                                                                  "TransactionCanceledException"):
            METER.add(who, "ddb_write_unit", 1)
            with METER.lock:
                METER.units[(who, call, op, "(condition failed)")] += 1
        return
    if cc is None:
        METER.missing_capacity += 1
        return
    for c in cc if isinstance(cc, list) else [cc]:
        read, write = c.get("ReadCapacityUnits"), c.get("WriteCapacityUnits")
        if read is None and write is None:
            read, write = (c.get("CapacityUnits", 0), 0) if op in READ_OPS else (0, c.get("CapacityUnits", 0))
        METER.add(who, "ddb_read_unit", read or 0)
        METER.add(who, "ddb_write_unit", cm.aws_units(op, write or 0))
        if op not in READ_OPS:
            _split_units(who, call, op, c)


def _split_units(who: str, call: str, op: str, c: dict) -> None:
    """Which table or index the units went to (ReturnConsumedCapacity=INDEXES)."""
    table = str(c.get("TableName", "?")).rsplit("-", 1)[-1]
    parts = {table: (c.get("Table") or {}).get("CapacityUnits", c.get("CapacityUnits", 0))}
    for name, g in (c.get("GlobalSecondaryIndexes") or {}).items():
        parts[f"{table}.{name}"] = g.get("CapacityUnits", 0)
    with METER.lock:
        for where, n in parts.items():
            METER.units[(who, call, op, where)] += cm.aws_units(op, n or 0)


def _sqs_requests(who: str, op: str, parsed: dict, context: dict, tag: str | None) -> None:
    if op == "ReceiveMessage":
        got = parsed.get("Messages", [])
        if not got and tag == "EventSourceMapping":
            METER.idle_receives += 1  # a poller waiting for mail: priced as a fixed cost
            return
        size = sum(len(m.get("Body", "").encode()) for m in got)
        METER.add(who, "sqs_request", cm.sqs_requests(size))
    else:
        METER.add(who, "sqs_request", cm.sqs_requests(context.get("cost_payload", 0)))


def _on_after_call(tag: str | None, http_response: Any, parsed: dict, model: Any, context: dict,
                   **_: Any) -> None:
    who = _who(tag)
    if not METER.on:
        return
    service, op = model.service_model.service_name, model.name
    with METER.lock:
        METER.calls[(who, service, op)] += 1
    if service == "dynamodb":
        _ddb_units(who, op, parsed, context.get("cost_caller", "?"))
    elif service == "sqs":
        _sqs_requests(who, op, parsed, context, tag)
    elif service == "s3" and op not in S3_FREE:
        METER.add(who, "s3_put" if op in S3_PUT_CLASS else "s3_get", 1)
        if tag == "SesReceiving" and op == "PutObject":  # SES receiving stored a DSN
            METER.add(who, "ses_inbound_mail", 1)
            METER.add(who, "ses_inbound_chunk", cm.ses_inbound_chunks(context.get("cost_body", 0)))
    elif service == "secretsmanager":
        METER.add(who, "secrets_call", 1)
    if who == "SenderFunction" and service in ("sqs", "secretsmanager") and http_response is not None:
        # No gateway endpoint for these: the sender's calls cross the NAT (HTTP bytes, both ways)
        size = len(http_response.content or b"") + sum(len(k) + len(v) + 4 for k, v in http_response.headers.items())
        METER.add(who, "nat_api_bytes", size + context.get("cost_sent", 0))


def _on_before_send(tag: str | None, request: Any, context: dict | None = None, **_: Any) -> None:
    body = request.body or b""
    sent = (len(body) if isinstance(body, (bytes, str)) else 0) + sum(
        len(k) + len(str(v)) + 4 for k, v in request.headers.items()) + len(request.url) + 16
    if context is not None:
        context["cost_sent"] = context.get("cost_sent", 0) + sent


def instrument(client: Any, tag: str | None = None) -> Any:
    ev = client.meta.events
    ev.register("provide-client-params", _on_params, unique_id=f"cost-params-{id(client)}")
    ev.register("before-send", lambda **kw: _on_before_send(tag, **kw), unique_id=f"cost-send-{id(client)}")
    ev.register("after-call", lambda **kw: _on_after_call(tag, **kw), unique_id=f"cost-after-{id(client)}")
    return client


# ---- Lambda time and logs --------------------------------------------------------------------
class CountingStream(io.TextIOBase):
    """stdout/stderr: what a function writes is counted (CloudWatch Logs ingestion) and its EMF
    metric definitions kept; everything else goes to the terminal."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, s: str) -> int:
        fn = _current.get()
        if fn is None or not METER.on:
            return self.real.write(s)
        METER.add(fn, "log_byte", len(s.encode()))
        if '"_aws"' in s:
            _keep_metrics(s)
        return len(s)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return False


def _keep_metrics(text: str) -> None:
    for line in text.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        for d in blob.get("_aws", {}).get("CloudWatchMetrics", []):
            for dims in d.get("Dimensions", [[]]):
                for m in d.get("Metrics", []):
                    METER.metrics.add((d.get("Namespace"), m["Name"], tuple(sorted(dims))))


def metered_invoke(self: Any, event: dict) -> Any:
    """LocalFunction.invoke, timing the handler alone (not the wait for the container's lock)."""
    from outpost_local.runtime import LambdaContext

    with self._lock:
        module = self._load()
        handler = getattr(module, self.fn.handler.split(".", 1)[1])
        ctx = LambdaContext(self.fn.logical_id, self.fn.timeout, time.time(), str(uuid.uuid4()))
        token = _current.set(self.fn.logical_id)
        t0 = time.perf_counter()
        try:
            return handler(event, ctx)
        finally:
            if METER.on:
                with METER.lock:
                    METER.durations[self.fn.logical_id].append(time.perf_counter() - t0)
                METER.add(self.fn.logical_id, "log_byte", PLATFORM_LOG_BYTES)
                if self.fn.logical_id == "SendApiFunction":  # ApiType=HTTP bills per 512 KB
                    METER.add(self.fn.logical_id, "http_api_request", cm.http_api_requests(_request_bytes(event)))
            _current.reset(token)


def _request_bytes(event: dict) -> int:
    body = event.get("body") or ""
    return len(base64.b64decode(body)) if event.get("isBase64Encoded") else len(body.encode())


_real_run_in_executor = asyncio.BaseEventLoop.run_in_executor


def _run_in_context(self: Any, executor: Any, func: Any, *args: Any) -> Any:
    """run_in_executor carrying the caller's context (asyncio.to_thread does; this does not), so
    the sender's MTA-STS lookups on its own pool are attributed to it."""
    return _real_run_in_executor(self, executor, contextvars.copy_context().run, func, *args)


_real_submit = concurrent.futures.ThreadPoolExecutor.submit


def _submit_in_context(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """ThreadPoolExecutor.submit carrying the caller's context, so the batch route's workers
    (api/service.py) are attributed to the API function."""
    return _real_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)


# ---- SMTP bytes through the NAT --------------------------------------------------------------
_SMTP_PEERS: set[tuple[str, int]] = set()
_real_close = socket.socket.close


def tcp_bytes(sock: socket.socket) -> tuple[int, int, int]:
    """(payload sent, payload received, control segments) of a TCP socket, from TCP_INFO."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    acked, received, segs_out, segs_in = struct.unpack_from("<QQII", info, 120)
    data_in, data_out = struct.unpack_from("<II", info, 152)
    sent = struct.unpack_from("<Q", info, 200)[0] if len(info) >= 208 else acked
    return sent, received, max(0, segs_out + segs_in - data_in - data_out)


def _counting_close(self: socket.socket) -> None:
    try:
        if METER.on and self.fileno() >= 0 and self.type == socket.SOCK_STREAM and \
                self.getpeername()[:2] in _SMTP_PEERS:
            sent, received, control = tcp_bytes(self)
            segments = math.ceil(sent / INTERNET_MSS) + math.ceil(received / INTERNET_MSS) + control
            METER.add("SenderFunction", "smtp_out_bytes", sent + HEADER_BYTES * math.ceil(sent / INTERNET_MSS))
            METER.add("SenderFunction", "smtp_wire_bytes", sent + received + HEADER_BYTES * segments)
            with METER.lock:
                METER.smtp_connections += 1
    except OSError:
        pass
    _real_close(self)


# ---- the run ---------------------------------------------------------------------------------
@dataclass
class Plan:
    to: str
    kind: str  # accept, hard, dsn, grey
    attach: str = ""  # "", inline, upload


def plan(n: int, seed: int = 15) -> list[Plan]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random() * 100
        if r < 3:
            p = Plan(f"nobody{i}@reject.test", "hard")
        elif r < 5:
            p = Plan(f"gone{i}@bounce-later.test", "dsn")
        elif r < 6:
            p = Plan(f"user{i}@greylist.test", "grey")
        else:
            p = Plan(f"user{i}@{rng.choice(ACCEPTING)}", "accept")
            a = rng.random() * 100
            p.attach = "inline" if a < 1 else "upload" if a < 1.5 else ""
        out.append(p)
    return out


def _call(st: Any, method: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(st.api.url + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {st.api_key}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def _upload(st: Any, size: int) -> str:
    up = _call(st, "POST", "/v1/uploads", {"filename": "report.pdf", "content_type": "application/pdf", "size": size})
    req = urllib.request.Request(up["url"], data=os.urandom(size), method="PUT", headers=up["headers"])
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
    METER.add("Client", "s3_put", 1)  # the presigned PUT, billed to the bucket's owner
    return str(up["upload_id"])


def _body(i: int, p: Plan, html_bytes: int, st: Any) -> dict[str, Any]:
    """Message i's POST /v1/messages body; `html_bytes` pads the HTML part (0: a 0.7 KB receipt)."""
    from outpost_local.stack import SENDING_DOMAIN

    body: dict[str, Any] = {"from": f"Shop <shop@{SENDING_DOMAIN}>", "to": [p.to],
                            "subject": f"Your receipt #{i}",
                            "text": f"Thanks for order {i}.\n\n" + "A line of receipt detail.\n" * 30,
                            "html": f"<p>Thanks for order <b>{i}</b>.</p>" + "<p>Receipt detail.</p>" * 30
                            + "<p>A line of template markup.</p>" * (html_bytes // 33)}
    if p.attach == "inline":
        body["attachments"] = [{"filename": "invoice.pdf", "content_type": "application/pdf",
                                "content": base64.b64encode(os.urandom(300_000)).decode()}]
    elif p.attach == "upload":
        body["attachments"] = [{"filename": "report.pdf", "content_type": "application/pdf",
                                "upload_id": _upload(st, 1_000_000)}]
    return body


def submit(st: Any, items: list[Plan], html_bytes: int = 0, batch: int = 0) -> int:
    """One POST /v1/messages per message (as a signup form sends), or with `batch` one POST
    /v1/messages/batch per `batch` messages, sending again those answered 503 (a batch that
    ran short of time; README). Returns the batch requests made (0: single sends)."""
    if not batch:
        for i, p in enumerate(items):
            _call(st, "POST", "/v1/messages", _body(i, p, html_bytes, st))
        return 0
    todo, requests = [(i, _body(i, p, html_bytes, st)) for i, p in enumerate(items)], 0
    while todo:
        chunk, todo = todo[:batch], todo[batch:]
        requests += 1
        answers = _call(st, "POST", "/v1/messages/batch", {"messages": [b for _, b in chunk]})
        again = [chunk[a["index"]] for a in answers["results"] if a["status"] == 503]
        if any(a["status"] not in (202, 503) for a in answers["results"]):
            raise RuntimeError(f"batch refused a message: {answers}")
        todo = again + todo
    return requests


def delivered(st: Any, addresses: set[str]) -> int:
    got: set[str] = set()
    for spec in list(st.mx.values()):
        for rec in list(getattr(spec.server, "received", [])):
            got.update(r.lower() for r in rec.rcpt_tos)
    return len(got & addresses)


def queues_empty(st: Any, sqs: Any) -> bool:
    for q in ("SendQueue", "RetryQueue"):
        a = sqs.get_queue_attributes(QueueUrl=st.stack.physical[q], AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        if int(a["ApproximateNumberOfMessages"]) or int(a["ApproximateNumberOfMessagesNotVisible"]):
            return False
    return True


def wait_done(st: Any, items: list[Plan], wait: float) -> tuple[int, int, float]:
    """Until every deliverable recipient is at its MX, every DSN processed and both queues empty."""
    import boto3

    sqs = boto3.client("sqs")  # not instrumented: the bench's own look-ups cost nothing
    want = {p.to.lower() for p in items if p.kind != "hard"}
    dsns = sum(1 for p in items if p.kind == "dsn")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if delivered(st, want) >= len(want) and len(st.inbound.results) >= dsns and queues_empty(st, sqs):
            break
        time.sleep(1.0)
    return delivered(st, want), len(st.inbound.results), deadline - time.monotonic()


def stored_bytes(st: Any) -> tuple[int, int]:
    """(DynamoDB table + index bytes as DescribeTable reports them, S3 object bytes) now."""
    import boto3

    ddb, s3 = boto3.client("dynamodb"), boto3.client("s3")  # not instrumented
    table_bytes = 0
    for name in ddb.list_tables()["TableNames"]:
        t = ddb.describe_table(TableName=name)["Table"]
        table_bytes += t.get("TableSizeBytes", 0) + sum(g.get("IndexSizeBytes", 0)
                                                        for g in t.get("GlobalSecondaryIndexes", []))
    object_bytes = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=st.env["OUTPOST_BUCKET"]):
        object_bytes += sum(o["Size"] for o in page.get("Contents", []))
    return table_bytes, object_bytes


# ---- the money -------------------------------------------------------------------------------
def memory_sizes() -> dict[str, int]:
    from samtranslator.yaml_helper import yaml_parse

    t = yaml_parse((ROOT / "template.yaml").read_text())
    default = t.get("Globals", {}).get("Function", {}).get("MemorySize", 128)
    return {k: int(r["Properties"].get("MemorySize", default)) for k, r in t["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"}


def lambda_usage(memory: dict[str, int], scheduled: set[str]) -> tuple[dict[str, float], dict[str, dict]]:
    """Variable Lambda usage (requests, GB-s) and a per-function breakdown (all functions)."""
    usage = {"lambda_request": 0.0, "lambda_gb_s": 0.0}
    rows = {}
    for fn, ds in METER.durations.items():
        gbs = cm.gb_seconds(ds, memory[fn])
        rows[fn] = {"n": len(ds), "mb": memory[fn], "gb_s": gbs,
                    "mean_ms": sum(cm.billed_ms(d) for d in ds) / len(ds)}
        if fn not in scheduled:
            usage["lambda_request"] += len(ds)
            usage["lambda_gb_s"] += gbs
    return usage, rows


def variable_usage(memory: dict[str, int], scheduled: set[str]) -> tuple[dict[str, float], dict[str, dict]]:
    totals: collections.Counter = collections.Counter()
    for who, c in METER.usage.items():
        if who not in scheduled:
            totals.update(c)
    lam, rows = lambda_usage(memory, scheduled)
    api = len(METER.durations.get("SendApiFunction", []))
    usage = {**lam, "apigw_request": api, "waf_request": api}
    for kind in ("ddb_write_unit", "ddb_read_unit", "sqs_request", "s3_put", "s3_get", "secrets_call",
                 "log_byte", "ses_inbound_mail", "ses_inbound_chunk", "ddb_stored_byte_month",
                 "s3_stored_byte_month"):
        usage[kind] = float(totals[kind])
    nat = totals["smtp_wire_bytes"] + totals["nat_api_bytes"]
    usage["nat_gateway_byte"] = float(nat)
    usage["internet_out_byte"] = float(totals["smtp_out_bytes"])
    return usage, rows


SCHEDULED_RUNS_PER_MONTH = {"SweeperFunction": 12 * cm.HOURS_PER_MONTH, "DomainCheckFunction": cm.HOURS_PER_MONTH}
ESM_IDLE_REQUESTS = 2 * 5 * 3 * 60 * cm.HOURS_PER_MONTH  # 2 mappings x 5 pollers x 20 s long polls


def fixed_monthly(mode: str, memory: dict[str, int], alarms: int) -> dict[str, float]:
    out = dict(cm.network_fixed(mode))
    out["secrets (VERP + 1 domain's DKIM)"] = cm.FIXED["secret_month"].of(2)
    out["WAF web ACL + 1 rule"] = cm.FIXED["waf_acl_month"].of(1) + cm.FIXED["waf_rule_month"].of(1)
    out[f"alarms ({alarms})"] = cm.FIXED["alarm_month"].of(alarms)
    out[f"custom metrics ({len(METER.metrics)} seen)"] = cm.FIXED["metric_month"].of(len(METER.metrics))
    out["SQS event sources' idle polls (est.)"] = cm.VARIABLE["sqs_request"].of(ESM_IDLE_REQUESTS)
    for fn, runs in SCHEDULED_RUNS_PER_MONTH.items():
        ds = METER.durations.get(fn)
        if not ds:
            continue
        one = METER.usage.get(fn, collections.Counter())
        per_run = cm.VARIABLE["lambda_gb_s"].of(cm.gb_seconds(ds, memory[fn]) / len(ds)) + \
            cm.VARIABLE["lambda_request"].of(1) + sum(
                cm.VARIABLE[k].of(v / len(ds)) for k, v in one.items() if k in cm.VARIABLE)
        out[f"{fn} on its schedule ({runs}/month)"] = per_run * runs
    return out


def alarm_count(mode: str) -> int:
    from samtranslator.yaml_helper import yaml_parse

    t = yaml_parse((ROOT / "template.yaml").read_text())
    alarms = [r for r in t["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    return sum(1 for r in alarms if r.get("Condition") in (None, "UseNatInstance" if mode == "instance" else None))


CUTS = {
    "ddb_write_unit": "GSIs projecting only what the lists read (the claim's and the finish's two index "
                      "copies), the reputation counts' index copy, the event log (now an item and one index "
                      "entry per event); see the breakdown by call above",
    "apigw_request": "POST /v1/messages/batch (--batch 50: up to 500 messages a request), or an HTTP API "
                     "($1.00/M) instead of the REST API ($3.50/M)",
    "log_byte": "LOG_LEVEL=WARNING in production (INFO writes a JSON line per step), shorter log keys",
    "ses_inbound_mail": "fewer DSNs: suppress known-bad addresses, validate at signup",
    "ses_inbound_chunk": "as ses_inbound_mail",
    "waf_request": "drop the WAF (ApiRateLimitPerIp=0) when API keys and the stage throttle suffice",
    "lambda_request": "bigger sender batches (BatchSize, window); the batch API for the API function",
    "lambda_gb_s": "less memory where the function waits (the API at 512 MB), pipelined SMTP (item 3)",
    "sqs_request": "SendMessageBatch from the API's batch route; larger event-source batches",
    "nat_gateway_byte": "NatMode=instance (no per-GB processing fee)",
    "ddb_stored_byte_month": "GSIs projecting only what the lists read, not ALL (each recipient is kept 3 times)",
    "s3_put": "none: bodies go to S3 only above the break-even (cost_model.inline_break_even)",
    "ddb_read_unit": "eventually consistent reads, cached suppression and domain look-ups",
}


def report_write_units(emails: int, out: Any) -> None:
    """DynamoDB write units per email by function and store call, each split by table and index
    (as ReturnConsumedCapacity=INDEXES reports them), the biggest first."""
    by_call: dict[tuple[str, str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (who, call, op, where), u in METER.units.items():
        if who not in SCHEDULED_RUNS_PER_MONTH:
            by_call[(who, call, op)][where] += u
    total = sum(sum(c.values()) for c in by_call.values())
    print(f"DynamoDB write units per email: {total / emails:.2f}, by function, store call and "
          "table/index:", file=out)
    for (who, call, op), c in sorted(by_call.items(), key=lambda kv: -sum(kv[1].values())):
        split = ", ".join(f"{w.replace('MessagesTable', 'Msg')} {u / emails:.2f}" for w, u in c.most_common())
        print(f"  {who.removesuffix('Function'):<16} {call:<30} {op:<18} {sum(c.values()) / emails:6.2f}  "
              f"({split})", file=out)


def _row(label: str, value: str, anchor: str = "") -> str:
    return f"  {label:<46} {value:>16}  {anchor}"


def report(usage: dict[str, float], rows: dict[str, dict], emails: int, bytes_per_k: float,
           memory: dict[str, int], out: Any) -> None:
    costs = cm.cost_by_kind(usage)
    ses_k = cm.ses_per_thousand(bytes_per_k)
    anchor = f"SES ${ses_k:.4f} (${cm.SES['email'].of(1000):.2f} + ${cm.SES['byte_out'].of(bytes_per_k):.4f} data)"
    print(f"\nPrices: bench/cost_model.py, us-east-1 list prices as of {cm.PRICES_DATE}.", file=out)
    print(f"\nPer 1,000 emails (measured over {emails}):", file=out)
    print(_row("kind (unit)", "count / 1,000", "cost / 1,000, share"), file=out)
    gateway_total = sum(costs.values())
    for kind in sorted(costs, key=costs.get, reverse=True):  # type: ignore[arg-type]
        p = cm.VARIABLE[kind]
        count = cm.per_thousand(usage[kind], emails)
        shown = f"{count / 2**20:,.3f} MB" if kind.endswith(("_byte", "_byte_month")) else f"{count:,.2f}"
        print(_row(f"{kind} ({p.unit})"[:46], shown,
                   f"${cm.per_thousand(costs[kind], emails):.6f}  {100 * costs[kind] / gateway_total:4.1f}%"), file=out)
    print("\nLambda per function (local wall time, billed ms, template MemorySize):", file=out)
    for fn, r in sorted(rows.items()):
        print(f"  {fn:<24} {r['n']:>6} invocations  mean {r['mean_ms']:8.1f} ms  {r['mb']:>5} MB  "
              f"{r['gb_s']:9.3f} GB-s", file=out)
    for mode in ("gateway", "instance"):
        v = gateway_total - (costs["nat_gateway_byte"] if mode == "instance" else 0)
        print(_row(f"variable cost / 1,000, NatMode={mode}", f"${cm.per_thousand(v, emails):.5f}",
                   f"goal $0.00500 (5% of SES); {anchor}: {100 * cm.per_thousand(v, emails) / ses_k:.1f}%"), file=out)



def report_fixed(usage: dict[str, float], emails: int, bytes_per_k: float, memory: dict[str, int], out: Any) -> None:
    costs = cm.cost_by_kind(usage)
    ses_k = cm.ses_per_thousand(bytes_per_k)
    dedicated = cm.SES["dedicated_ip_month"].of(1)
    for mode in ("gateway", "instance"):
        fixed = fixed_monthly(mode, memory, alarm_count(mode))
        v = cm.per_thousand(sum(costs.values()) - (costs["nat_gateway_byte"] if mode == "instance" else 0), emails)
        print(f"\nFixed monthly cost, NatMode={mode}:", file=out)
        for k, x in fixed.items():
            print(_row(k, f"${x:,.2f}"), file=out)
        total = sum(fixed.values())
        print(_row("total fixed / month", f"${total:,.2f}", "SES: $0.00 (shared IPs), "
                   f"${dedicated:.2f} with a dedicated IP"), file=out)
        for label, a_fixed in (("SES (shared IPs)", 0.0), ("SES + dedicated IP", dedicated)):
            be = cm.break_even(v, total, ses_k, a_fixed)
            text = "never" if be is None else "any volume" if be == 0 else f"{be:,.0f} emails/month"
            why = f"(Outpost ${v:.5f}/1,000 + ${total:.2f}/month vs ${ses_k:.4f}/1,000 + ${a_fixed:.2f})"
            print(_row(f"cheaper than {label} from", text, why), file=out)


def report_cuts(usage: dict[str, float], emails: int, out: Any) -> None:
    costs = cm.cost_by_kind(usage)
    total = cm.per_thousand(sum(costs.values()), emails)
    if total <= 0.005:
        print(f"\nVariable cost ${total:.5f} per 1,000 is within the goal ($0.005).", file=out)
        return
    print(f"\nAbove the goal (${total:.5f} > $0.00500 per 1,000). What dominates, and what would cut it:", file=out)
    for kind in sorted(costs, key=costs.get, reverse=True)[:4]:  # type: ignore[arg-type]
        share = 100 * costs[kind] / sum(costs.values())
        print(f"  {kind} ({share:.0f}%): {CUTS.get(kind, '-')}", file=out)


def report_api_types(usage: dict[str, float], emails: int, bytes_per_k: float, memory: dict[str, int],
                     out: Any) -> None:
    """The send API's requests priced with each ApiType (issue 15 item 4) beside SES, and the
    totals with an HTTP API in place of the REST API and its WAF (variable and fixed)."""
    costs = cm.cost_by_kind(usage)
    ses_k = cm.ses_per_thousand(bytes_per_k)
    units = METER.totals()["http_api_request"]
    api = cm.api_per_thousand(usage["apigw_request"], units, emails)
    rest, waf, http = (cm.VARIABLE[k] for k in ("apigw_request", "waf_request", "http_api_request"))
    print(f"\nThe send API's {cm.per_thousand(usage['apigw_request'], emails):,.1f} requests per 1,000 emails "
          f"({cm.per_thousand(units, emails):,.1f} HTTP API units of 512 KB), priced each way:", file=out)
    for t, label in (("REST", f"REST API ${rest.usd:.2f}/M + WAF ${waf.usd:.2f}/M"),
                     ("HTTP", f"HTTP API ${http.usd:.2f}/M, no WAF")):
        print(_row(f"ApiType={t}: {label}", f"${api[t]:.5f}", f"SES ${ses_k:.4f}: {100 * api[t] / ses_k:.2f}%"),
              file=out)
    for mode in ("gateway", "instance"):
        v = cm.per_thousand(sum(costs.values()) - (costs["nat_gateway_byte"] if mode == "instance" else 0),
                            emails) - api["REST"] + api["HTTP"]
        fixed = fixed_monthly(mode, memory, alarm_count(mode))
        total = sum(fixed.values()) - fixed["WAF web ACL + 1 rule"]
        be = cm.break_even(v, total, ses_k)
        print(_row(f"ApiType=HTTP, NatMode={mode}: / 1,000", f"${v:.5f}",
                   f"SES {100 * v / ses_k:.1f}%; fixed ${total:,.2f}/month (no WAF); cheaper than SES from "
                   + ("never" if be is None else f"{be:,.0f} emails/month")), file=out)


def start_stack(args: argparse.Namespace) -> Any:
    from outpost_local.mx import Accept
    from outpost_local.stack import LocalStack, StackConfig

    st = LocalStack(StackConfig(
        ip_prefix=args.ip_prefix, api_port=0, moto_port=0, dynamodb_port=0, dns_port=0, smtp_port=0,
        postfix=False, schedule_interval=86400.0, quiet=False,
        env={"OUTPOST_API_RATE": "100000", "OUTPOST_API_BURST": "100000",
             "OUTPOST_UPLOADS_PER_KEY_PER_DAY": "100000"}))
    st.start()
    for n, d in enumerate(ACCEPTING, start=20):
        st._add_mx(d, n, "accepts", Accept())
    _SMTP_PEERS.update((spec.ip, st.smtp_port) for d, spec in st.mx.items())
    from outpost.bootstrap import aws

    for service in ("dynamodb", "sqs", "s3", "secretsmanager"):
        instrument(aws(service))
    for p in st.pollers.values():
        instrument(p.sqs, "EventSourceMapping")
    instrument(st.inbound.s3, "SesReceiving")
    for f in st.functions.values():
        f.load()  # cold starts are not what 1,000 warm emails cost
    return st


def what_if_inline_limit(limit: int) -> None:
    """Run with another inline-body limit (Settings.inline_body_limit has no environment
    variable): bootstrap's settings, as the message store is built from them, with the limit."""
    import dataclasses

    from outpost import bootstrap, config

    def settings() -> Any:
        return dataclasses.replace(config.settings(), inline_body_limit=limit)

    bootstrap.settings = settings  # type: ignore[assignment]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="200 messages")
    ap.add_argument("--wait", type=float, default=900.0)
    ap.add_argument("--ip-prefix", default="127.0.15")
    ap.add_argument("--inline-limit", type=int, default=None,
                    help="what if: bodies deflating to over this many bytes go to S3 (the library's: 6,300)")
    ap.add_argument("--html-bytes", type=int, default=0,
                    help="pad each message's HTML part by this many bytes (real templates: 10-30 KB)")
    ap.add_argument("--batch", type=int, default=0,
                    help="send through POST /v1/messages/batch, this many messages a request (0: one POST each)")
    args = ap.parse_args()
    n = 200 if args.quick else args.messages
    out = sys.__stdout__
    sys.stdout, sys.stderr = CountingStream(sys.__stdout__), CountingStream(sys.__stderr__)
    from outpost_local.runtime import LocalFunction

    LocalFunction.invoke = metered_invoke  # type: ignore[method-assign]
    socket.socket.close = _counting_close  # type: ignore[method-assign,assignment]
    asyncio.BaseEventLoop.run_in_executor = _run_in_context  # type: ignore[method-assign,assignment]
    concurrent.futures.ThreadPoolExecutor.submit = _submit_in_context  # type: ignore[method-assign]
    if args.inline_limit is not None:
        what_if_inline_limit(args.inline_limit)
    st = start_stack(args)
    items = plan(n)
    try:
        before = stored_bytes(st)
        METER.on = True
        t0 = time.monotonic()
        batches = submit(st, items, args.html_bytes, args.batch)
        how = f"in {batches} POST /v1/messages/batch requests of up to {args.batch}" if args.batch else \
            "one POST /v1/messages each"
        print(f"submitted {n} messages ({how}) in {time.monotonic() - t0:.0f} s", file=out)
        got, dsns, left = wait_done(st, items, args.wait)
        print(f"delivered {got} of {sum(p.kind != 'hard' for p in items)} deliverable recipients, "
              f"{dsns} DSNs processed, in {time.monotonic() - t0:.0f} s{'' if left > 0 else ' (WAIT EXPIRED)'}",
              file=out)
        mail_bytes = sum(len(r.data) for s in st.mx.values() for r in list(getattr(s.server, "received", [])))
        after = stored_bytes(st)
        days = float(st.stack.functions["SenderFunction"].environment.get("OUTPOST_RETENTION_DAYS", "30"))
        METER.add("Storage", "ddb_stored_byte_month", cm.byte_months(after[0] - before[0], days))
        METER.add("Storage", "s3_stored_byte_month", cm.byte_months(after[1] - before[1], days))
        print(f"stored: DynamoDB +{(after[0] - before[0]) / 2**20:.2f} MB (tables + indexes), S3 "
              f"+{(after[1] - before[1]) / 2**20:.2f} MB, kept {days:.0f} days (RetentionDays)", file=out)
        for fn in SCHEDULED_RUNS_PER_MONTH:
            if fn in st.schedulers:
                st.schedulers[fn].run_once()
    finally:
        st.stop()  # closes the sender's last SMTP connections: still counted
        METER.on = False
    memory = memory_sizes()
    usage, rows = variable_usage(memory, set(SCHEDULED_RUNS_PER_MONTH))
    lost = sum(c for (who, _, _), c in METER.calls.items() if who == UNATTRIBUTED)
    print(f"SMTP connections {METER.smtp_connections}; DynamoDB calls without ConsumedCapacity "
          f"{METER.missing_capacity}; idle event-source receives {METER.idle_receives}; AWS calls outside "
          f"any invocation's context {lost} (counted, as variable cost)", file=out)
    calls: collections.Counter[str] = collections.Counter()
    for (who, service, op), c in METER.calls.items():
        if who not in SCHEDULED_RUNS_PER_MONTH:
            calls[f"{service}.{op}"] += c
    print("AWS calls per 1,000 emails: " + ", ".join(
        f"{k} {cm.per_thousand(v, n):.0f}" for k, v in calls.most_common()), file=out)
    report_write_units(n, out)
    bytes_per_k = cm.per_thousand(mail_bytes, n)
    report(usage, rows, n, bytes_per_k, memory, out)
    report_fixed(usage, n, bytes_per_k, memory, out)
    report_api_types(usage, n, bytes_per_k, memory, out)
    report_cuts(usage, n, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
