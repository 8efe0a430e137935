"""`python -m outpost_local` / `outpost-local`: demo | dev | provision."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="outpost-local", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="run Outpost end to end and check the outcomes")
    dev = sub.add_parser("dev", help="keep the local stack running for curl")
    dev.add_argument("--verbose", action="store_true", help="handler logs and metrics on stdout")
    dev.add_argument("--providers", action="store_true",
                     help="also gmail.test, outlook.test, yahoo.test: MX hosts that throttle like those providers")
    prov = sub.add_parser("provision", help="create the template's resources in an AWS endpoint")
    prov.add_argument("--endpoint", required=True)
    prov.add_argument("--dynamodb-endpoint", help="DynamoDB only (e.g. DynamoDB Local); default --endpoint")
    prov.add_argument("--env-out", help="write the functions' environment as KEY=VALUE lines")
    prov.add_argument("--sam-env-json", help="write {Function: {KEY: VALUE}} for `sam local --env-vars`")
    prov.add_argument("--parameter", action="append", default=[], help="Name=Value")
    args = p.parse_args(argv)
    if args.cmd == "demo":
        from .demo import main as demo

        return demo()
    if args.cmd == "dev":
        from .dev import main as dev_main

        return dev_main(verbose=args.verbose, providers=args.providers)
    import os

    import boto3

    from .provision import provision

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    if args.dynamodb_endpoint:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = args.dynamodb_endpoint
    params = dict(x.split("=", 1) for x in args.parameter)
    params.setdefault("SendingHostname", "mta.outpost.test")
    params.setdefault("BounceDomain", "bounces.outpost.test")
    stack = provision(boto3.Session(), parameters=params)
    lines = [f"{k}={v}" for k, v in sorted(stack.env().items())]
    if args.sam_env_json:
        import json

        with open(args.sam_env_json, "w") as f:
            json.dump({k: fn.environment for k, fn in stack.functions.items()}, f, indent=2)
    if args.env_out:
        with open(args.env_out, "w") as f:
            f.write("\n".join(lines) + "\n")
    elif not args.sam_env_json:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
