"""`outpost-admin`: API keys and sending domains, with the deployer's AWS credentials.

    outpost-admin --stack outpost keys create --name billing --scope send --scope read
    outpost-admin --stack outpost keys list
    outpost-admin --stack outpost keys revoke 3f2a9c0d1b4e
    outpost-admin --stack outpost domains add example.com [--mta-sts]
    outpost-admin --stack outpost domains verify example.com
    outpost-admin --stack outpost domains show example.com
    outpost-admin --stack outpost domains rotate example.com

`--stack NAME` reads the table names, the secret prefix and the sender's IP from the deployed
CloudFormation stack's outputs (credentials and region from the usual AWS chain). `--local`
talks to the embedded local stack (`make dev`): moto on 127.0.0.1:4566 unless AWS_ENDPOINT_URL
says otherwise, and DynamoDB Local on 127.0.0.1:4567 when it runs there (AWS_ENDPOINT_URL_DYNAMODB
overrides). With neither, the OUTPOST_* environment variables are used as they are.
Keys are printed once, at creation: only their hash is stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

# Stack output -> the environment variable Settings reads.
_OUTPUTS = {
    "MessagesTableName": "OUTPOST_MESSAGES_TABLE",
    "SuppressionsTableName": "OUTPOST_SUPPRESSIONS_TABLE",
    "ApiKeysTableName": "OUTPOST_API_KEYS_TABLE",
    "DomainsTableName": "OUTPOST_DOMAINS_TABLE",
    "IdempotencyTableName": "OUTPOST_IDEMPOTENCY_TABLE",
    "MailBucketName": "OUTPOST_BUCKET",
    "SendQueueUrl": "OUTPOST_SEND_QUEUE_URL",
    "SecretPrefix": "OUTPOST_SECRET_PREFIX",
    "SenderPublicIp": "OUTPOST_SENDER_IP",
}
# Logical ids the local provisioner names `<stack>-<LogicalId>`.
_LOCAL_TABLES = {
    "OUTPOST_MESSAGES_TABLE": "MessagesTable", "OUTPOST_SUPPRESSIONS_TABLE": "SuppressionsTable",
    "OUTPOST_API_KEYS_TABLE": "ApiKeysTable", "OUTPOST_DOMAINS_TABLE": "DomainsTable",
    "OUTPOST_IDEMPOTENCY_TABLE": "IdempotencyTable",
}


def stack_env(stack: str, cloudformation: Any) -> dict[str, str]:
    """The OUTPOST_* settings of a deployed stack, from its outputs."""
    desc = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    env = {var: outputs[key] for key, var in _OUTPUTS.items() if key in outputs}
    missing = [k for k in ("ApiKeysTableName", "DomainsTableName") if k not in outputs]
    if missing:
        raise SystemExit(f"stack {stack!r} has no output {', '.join(missing)}: is it an Outpost stack?")
    for o in desc.get("Parameters", []):
        if o["ParameterKey"] == "BounceDomain":
            env["OUTPOST_BOUNCE_DOMAIN"] = o["ParameterValue"]
    return env


def local_env(stack: str = "outpost") -> dict[str, str]:
    env = {"AWS_ENDPOINT_URL": os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
           "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
           "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
           "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
           "OUTPOST_SECRET_PREFIX": os.environ.get("OUTPOST_SECRET_PREFIX", f"{stack}/")}
    for var, logical in _LOCAL_TABLES.items():
        env[var] = os.environ.get(var, f"{stack}-{logical}")
    ddb = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or _local_dynamodb()
    if ddb:
        env["AWS_ENDPOINT_URL_DYNAMODB"] = ddb
    return env


def _local_dynamodb(host: str = "127.0.0.1", port: int = 4567) -> str | None:
    """`make dev` runs DynamoDB Local on 127.0.0.1:4567 (moto's DynamoDB when Java is missing)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return f"http://{host}:{port}"
    except OSError:
        return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outpost-admin", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--stack", help="deployed CloudFormation stack name")
    where.add_argument("--local", action="store_true", help="the embedded local stack (make dev)")
    sub = p.add_subparsers(dest="group", required=True)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="cmd", required=True)
    c = keys.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True)
    c.add_argument("--scope", action="append", choices=["send", "read", "admin"], required=True)
    c.add_argument("--rate", type=float, help="requests per second for this key")
    c.add_argument("--burst", type=int, help="burst size for this key")
    c.add_argument("--domain", action="append", dest="domains",
                   help="bind the key to this sending domain (repeat for more; default: any)")
    keys.add_parser("list", help="list keys (never the keys themselves)")
    r = keys.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id")

    doms = sub.add_parser("domains", help="sending domains").add_subparsers(dest="cmd", required=True)
    a = doms.add_parser("add", help="generate DKIM keys and print the DNS records to publish")
    a.add_argument("domain")
    a.add_argument("--mta-sts", action="store_true")
    for name, text in (("verify", "check the records in DNS; enable sending once DKIM verifies, "
                        "start signing with verified new keys"),
                       ("show", "check the records in DNS; change nothing"), ("rotate", "start a DKIM key rotation")):
        doms.add_parser(name, help=text).add_argument("domain")
    return p


def main(argv: list[str] | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    if args.stack:
        import boto3

        os.environ.update(stack_env(args.stack, boto3.client("cloudformation")))
    elif args.local:
        os.environ.update(local_env())

    from . import bootstrap
    from .config import settings
    from .errors import ApiError

    settings.cache_clear()
    try:
        if args.group == "keys":
            from .api.auth import KeyRing

            ring = KeyRing(bootstrap.api_keys_table())
            if args.cmd == "create":
                key, item = ring.create(args.name, args.scope, rate=args.rate, burst=args.burst,
                                        domains=args.domains)
                _print(out, dict(item, key=key, note="store this key now: it is not shown again"))
            elif args.cmd == "list":
                _print(out, ring.list())
            else:
                _print(out, ring.revoke(args.key_id))
        else:
            from .bootstrap import domain_service

            svc = domain_service()
            if args.cmd == "add":
                _print(out, svc.create(args.domain, mta_sts=args.mta_sts))
            elif args.cmd == "rotate":
                _print(out, svc.rotate(args.domain))
            elif args.cmd == "verify":
                _print(out, svc.verify(args.domain))
            else:
                _print(out, svc.check(args.domain))
    except ApiError as exc:
        print(f"outpost-admin: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"outpost-admin: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(out: Any, value: Any) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
