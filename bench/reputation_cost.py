"""Benchmark: what the reputation breaker's counts cost a send in DynamoDB requests (issue 11
item 6, review gap 3: "a single send costs two ADDs").

SendService.send_one (POST /v1/messages without HTTP) with the breaker on, the real stores on
DynamoDB Local provisioned from template.yaml (moto for S3), N single sends from one domain
and one API key within one hour. A botocore hook (`before-call.dynamodb`) counts every DynamoDB
request per operation. Printed: requests per send, and the breaker's count writes per send.

Run: PYTHONPATH=layers/outpost:local .venv/bin/python bench/reputation_cost.py [--sends 100]
(to measure another version of the library, put its layers/outpost first on PYTHONPATH).

Measured (2026-11-30, DynamoDB Local, 100 sends):
  before (one ADD per scope):   GetItem 1, BatchGetItem 2, TransactWriteItems 1, UpdateItem 2
                                = 6.00 requests per send; count writes 2.00 per send
  after (one item per domain and key pair, filed under the key by gsi1):
                                GetItem 1, BatchGetItem 2, TransactWriteItems 1, UpdateItem 1,
                                PutItem 0.02 (the pair's first count of the hour files its two
                                scopes for the sweeper) = 5.02 requests per send; count writes
                                1.02 per send. Write units: the gsi1 copy of the pair item is
                                billed as one index write, so WCUs stay at 2 per send; requests,
                                latency and the crash window between two ADDs are what go.
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

from outpost.api.auth import Principal
from outpost.api.service import SendService
from outpost.models import SendRequest
from outpost.records import Domain
from outpost.reputation import Reputation, Thresholds
from outpost.store import DomainStore, MessageStore, ReputationStore, SuppressionStore
from outpost_local.aws import LocalAws
from outpost_local.provision import provision


class _Jobs:
    def send(self, job: Any, delay: int = 0) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sends", type=int, default=100)
    n = ap.parse_args().sends
    aws = LocalAws("127.0.77.1")
    aws.start()
    try:
        env = provision(aws, stack_name="repcost", parameters={
            "SendingHostname": "mta.cost.test", "BounceDomain": "bounces.cost.test"}).env()
        ddb = aws.client("dynamodb")
        ops: collections.Counter[str] = collections.Counter()
        ddb.meta.events.register("before-call.dynamodb", lambda model, **kw: ops.update([model.name]))
        domains = DomainStore(ddb, env["OUTPOST_DOMAINS_TABLE"])
        domains.put_domain(Domain(domain="cost.test", verified=True))
        rep = Reputation(ReputationStore(ddb, env["OUTPOST_MESSAGES_TABLE"]), thresholds=Thresholds())
        messages = MessageStore(ddb, env["OUTPOST_MESSAGES_TABLE"], aws.client("s3"), env["OUTPOST_BUCKET"])
        api = SendService(store=messages,
                          suppressions=SuppressionStore(ddb, env["OUTPOST_SUPPRESSIONS_TABLE"]), queue=_Jobs(),
                          domains=domains, reputation=rep)
        key = Principal(key_id="k1", name="bench", scopes=frozenset({"send"}), domains=None)
        ops.clear()
        for i in range(n):
            api.send_one(SendRequest.model_validate({"from": "news@cost.test", "to": f"r{i}@accept.test",
                                                     "subject": "s", "text": "t"}), principal=key)
        total = sum(ops.values())
        print(f"{n} sends: {dict(ops)}")
        print(f"DynamoDB requests per send: {total / n:.2f}; count writes per send: "
              f"{(ops['UpdateItem'] + ops['PutItem']) / n:.2f}")
    finally:
        aws.stop()


if __name__ == "__main__":
    main()
