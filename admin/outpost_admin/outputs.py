"""Where a stack's resources are: its Outputs, turned into the OUTPOST_* settings the library reads.

A deployed stack's Outputs come from CloudFormation (`describe-stacks`); the embedded local
stack publishes the same Outputs, resolved from the same template, in a JSON file while it runs
(`make dev`), with the endpoints a client needs to reach it. No resource name is guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Stack output -> the environment variable Settings reads (template.yaml's Outputs).
OUTPUTS = {
    "MessagesTableName": "OUTPOST_MESSAGES_TABLE",
    "SuppressionsTableName": "OUTPOST_SUPPRESSIONS_TABLE",
    "ApiKeysTableName": "OUTPOST_API_KEYS_TABLE",
    "DomainsTableName": "OUTPOST_DOMAINS_TABLE",
    "IdempotencyTableName": "OUTPOST_IDEMPOTENCY_TABLE",
    "MailBucketName": "OUTPOST_BUCKET",
    "SendQueueUrl": "OUTPOST_SEND_QUEUE_URL",
    "SecretPrefix": "OUTPOST_SECRET_PREFIX",
    "SenderPublicIp": "OUTPOST_SENDER_IP",
    "BounceDomain": "OUTPOST_BOUNCE_DOMAIN",
}
REQUIRED = ("ApiKeysTableName", "DomainsTableName", "SecretPrefix")
# What the local stack's file may add: how to reach its endpoints (never a resource name).
LOCAL_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_DEFAULT_REGION", "AWS_REGION", "OUTPOST_DNS_SERVERS")


def outputs_env(description: dict[str, Any]) -> dict[str, str]:
    """The OUTPOST_* settings in a stack description (describe-stacks' shape: StackName, Outputs)."""
    name = description.get("StackName", "?")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
    missing = [k for k in REQUIRED if k not in outputs]
    if missing:
        raise SystemExit(f"stack {name!r} has no output {', '.join(missing)}: is it an Outpost stack?")
    return {var: outputs[key] for key, var in OUTPUTS.items() if key in outputs}


def stack_env(stack: str, cloudformation: Any) -> dict[str, str]:
    """The OUTPOST_* settings of a deployed stack, from its Outputs."""
    return outputs_env(cloudformation.describe_stacks(StackName=stack)["Stacks"][0])


def local_env(path: Path | None = None) -> dict[str, str]:
    """The settings and endpoints of the running local stack, from the file it publishes."""
    if path is None:
        from outpost_local.stack import OUTPUTS_FILE

        path = OUTPUTS_FILE
    try:
        description = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"no local stack outputs at {path}: start the local stack with `make dev`") from None
    env = outputs_env(description)
    local = description.get("Environment") or {}
    env.update({k: str(local[k]) for k in LOCAL_ENVIRONMENT if k in local})
    return env
