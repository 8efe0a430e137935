"""Benchmark: DynamoDB Local vs moto's DynamoDB, the two engines the local stack can run.

Starts both (outpost_local.aws / dynamodb_local) on 127.0.13.1, provisions the template's
tables in each, fills the messages table with --items items, then measures on each engine, in
the same run, the median and p95 latency of: PutItem, GetItem, a conditional UpdateItem (the
store's claim), and a three-item TransactWriteItems; then --races same-instant claim races
(8 threads released by a barrier on one recipient) and counts the races with more than one
winner. Also prints DynamoDB Local's start-up time and resident memory (RSS) before and after.

Run: .venv/bin/python bench/local_dynamodb.py [--ops 300] [--items 9000] [--races 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3

from outpost_local.dynamodb_local import installed, with_moto
from outpost_local.provision import provision

HOST = "127.0.13.1"


class _One:
    """What provision() needs: client(name) on one endpoint."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self, name: str) -> Any:
        return boto3.client(name, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def _rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _time(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.95) - 1]


def bench_engine(name: str, ddb_endpoint: str, moto_endpoint: str, args: argparse.Namespace) -> dict:
    one = _One(moto_endpoint)
    one_ddb = _One(ddb_endpoint)

    class Both:
        def client(self, svc: str) -> Any:
            return (one_ddb if svc == "dynamodb" else one).client(svc)

    stack = provision(Both(), stack_name=f"bench{name.split()[0].lower()}",
                      parameters={"SendingHostname": "mta.bench.test", "BounceDomain": "b.bench.test"})
    table = stack.physical["MessagesTable"]
    ddb = one_ddb.client("dynamodb")

    def key(i: int, sk: str = "R#000") -> dict:
        return {"pk": {"S": f"M#{i:08d}"}, "sk": {"S": sk}}

    t0 = time.perf_counter()
    for start in range(0, args.items, 25):  # fill: messages with one recipient each
        reqs = [{"PutRequest": {"Item": {**key(i), "st": {"S": "queued"}, "body": {"S": "x" * 200}}}}
                for i in range(start, min(start + 25, args.items))]
        while reqs:
            r = ddb.batch_write_item(RequestItems={table: reqs})
            reqs = r.get("UnprocessedItems", {}).get(table, [])
    fill = time.perf_counter() - t0
    res: dict[str, Any] = {"fill_s": fill}
    base = args.items + 1000
    res["put"] = _time(lambda i: ddb.put_item(TableName=table, Item={**key(base + i), "st": {"S": "queued"}}),
                       args.ops)
    res["get"] = _time(lambda i: ddb.get_item(TableName=table, Key=key(i % args.items)), args.ops)
    res["claim"] = _time(lambda i: ddb.update_item(
        TableName=table, Key=key(i % args.items), UpdateExpression="SET lease_until = :l",
        ConditionExpression="#st IN (:q, :d) AND (attribute_not_exists(lease_until) OR lease_until < :now)",
        ExpressionAttributeNames={"#st": "st"},
        ExpressionAttributeValues={":l": {"N": "9"}, ":now": {"N": "10"}, ":q": {"S": "queued"},
                                   ":d": {"S": "deferred"}}), args.ops)
    res["txn3"] = _time(lambda i: ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": table, "Item": {**key(base * 2 + i, sk), "st": {"S": "queued"}}}}
        for sk in ("M", "R#000", "R#001")]), args.ops)

    # Same-instant claim races: 8 threads, one client each, released by a barrier.
    clients = [one_ddb.client("dynamodb") for _ in range(8)]
    doubles = 0
    for r in range(args.races):
        k = key(base * 3 + r)
        ddb.put_item(TableName=table, Item={**k, "st": {"S": "queued"}})
        for c in clients:
            c.get_item(TableName=table, Key=k)
        barrier = threading.Barrier(len(clients))
        wins = [0] * len(clients)

        def claim(n: int, k: dict = k, barrier: threading.Barrier = barrier, wins: list[int] = wins) -> None:
            barrier.wait()
            try:
                clients[n].update_item(TableName=table, Key=k, UpdateExpression="SET lease_until = :l",
                                       ConditionExpression="attribute_not_exists(lease_until)",
                                       ExpressionAttributeValues={":l": {"N": str(n)}})
                wins[n] = 1
            except clients[n].exceptions.ConditionalCheckFailedException:
                pass

        pool = [threading.Thread(target=claim, args=(n,)) for n in range(len(clients))]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        doubles += sum(wins) > 1
    res["double_winner_races"] = doubles
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=300)
    p.add_argument("--items", type=int, default=9000)
    p.add_argument("--races", type=int, default=40)
    args = p.parse_args()
    if not installed():
        print("DynamoDB Local is not installed: make install (needs java and npm)")
        return 1
    with with_moto(HOST) as (db, moto, moto_ep):
        print(f"DynamoDB Local: started (first answer) in {db.started_in:.1f} s, RSS {db.rss_bytes() / 2**20:.0f} MB")
        results = {"DynamoDB Local": bench_engine("Local", db.endpoint, moto_ep, args),
                   "moto": bench_engine("moto", moto_ep, moto_ep, args)}
        print(f"after the runs: DynamoDB Local RSS {db.rss_bytes() / 2**20:.0f} MB, "
              f"moto server RSS {_rss(moto.pid) / 2**20:.0f} MB (S3/SQS/... included)")
        print(f"\n{args.items} items stored, {args.ops} calls each, ms median / p95, one client, loopback")
        print(f"{'':<16}{'fill':>8}{'PutItem':>16}{'GetItem':>16}{'cond. Update':>16}{'Transact x3':>16}"
              f"{'double claims':>16}")
        for name, r in results.items():
            cells = "".join(f"{r[k][0]:>9.1f} /{r[k][1]:>5.1f}" for k in ("put", "get", "claim", "txn3"))
            print(f"{name:<16}{r['fill_s']:>7.1f}s{cells}{r['double_winner_races']:>9} / {args.races}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
