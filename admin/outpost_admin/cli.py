"""`outpost-admin`: API keys and sending domains, with the deployer's AWS credentials.

    outpost-admin --stack-name outpost keys create --name billing --scope send --scope read
    outpost-admin --stack-name outpost keys create --name ci --scope send --scope read --mode test
    outpost-admin --stack-name outpost keys list
    outpost-admin --stack-name outpost keys revoke 3f2a9c0d1b4e
    outpost-admin --stack-name outpost domains add example.com [--mta-sts]
    outpost-admin --stack-name outpost domains verify example.com
    outpost-admin --stack-name outpost domains show example.com
    outpost-admin --stack-name outpost domains rotate example.com

`--stack-name NAME` (or `--stack`) reads the table names, the secret prefix, the bounce domain
and the sender's IP from the deployed CloudFormation stack's Outputs (credentials and region
from the usual AWS chain). `--local` reads the same Outputs from the file the embedded local
stack (`make dev`) publishes while it runs, with its endpoints (`--outputs FILE` for another
file). With neither, the OUTPOST_* environment variables are used as they are.
Keys are printed once, at creation: only their hash is stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .outputs import local_env, stack_env


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outpost-admin", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--stack-name", "--stack", dest="stack_name", help="deployed CloudFormation stack name")
    where.add_argument("--local", action="store_true", help="the local stack (make dev), from its outputs file")
    p.add_argument("--outputs", type=Path, help="with --local: the outputs file (default: the one make dev writes)")
    sub = p.add_subparsers(dest="group", required=True)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="cmd", required=True)
    c = keys.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True)
    c.add_argument("--scope", action="append", choices=["send", "read", "admin"], required=True)
    c.add_argument("--rate", type=float, help="requests per second for this key")
    c.add_argument("--burst", type=int, help="burst size for this key")
    c.add_argument("--domain", action="append", dest="domains",
                   help="bind the key to this sending domain (repeat for more; default: any)")
    c.add_argument("--mode", choices=["live", "test"], default="live",
                   help="test: every message the key sends is simulated, never delivered (the sandbox)")
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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.outputs and not args.local:
        parser.error("--outputs goes with --local")
    if args.stack_name:
        import boto3

        os.environ.update(stack_env(args.stack_name, boto3.client("cloudformation")))
    elif args.local:
        os.environ.update(local_env(args.outputs))

    from outpost import bootstrap
    from outpost.config import settings
    from outpost.errors import ApiError

    settings.cache_clear()
    try:
        if args.group == "keys":
            from outpost.api.auth import KeyRing

            ring = KeyRing(bootstrap.api_keys_table())
            if args.cmd == "create":
                key, item = ring.create(args.name, args.scope, rate=args.rate, burst=args.burst,
                                        domains=args.domains, mode=args.mode)
                _print(out, dict(item, key=key, note="store this key now: it is not shown again"))
            elif args.cmd == "list":
                _print(out, ring.list())
            else:
                _print(out, ring.revoke(args.key_id))
        else:
            svc = bootstrap.domain_service()
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
