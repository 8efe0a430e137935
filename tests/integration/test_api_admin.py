"""`outpost-admin` against the local stack (env vars, as `--local` sets them) and `--stack`
against a CloudFormation stack in moto whose outputs name the tables."""

from __future__ import annotations

import io
import json

import pytest
from api_rig import call, start_stack, stop_stack


@pytest.fixture(scope="module")
def stack():
    st = start_stack("127.0.10")
    yield st
    stop_stack(st)


def admin(*argv):
    from outpost.admin import main

    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, (json.loads(out.getvalue()) if out.getvalue() else None)


def test_keys_create_list_revoke(stack):
    code, created = admin("keys", "create", "--name", "billing", "--scope", "send", "--scope", "read")
    assert code == 0 and created["key"].startswith("op_") and created["scopes"] == ["read", "send"]
    assert call(stack, "GET", "/v1/suppressions", key=created["key"])[0] == 200
    code, keys = admin("keys", "list")
    mine = next(k for k in keys if k["key_id"] == created["key_id"])
    assert "key" not in mine and "key_hash" not in mine and mine["last_used_at"]
    code, revoked = admin("keys", "revoke", created["key_id"])
    assert code == 0 and revoked["revoked_at"]
    assert admin("keys", "revoke", "000000000000")[0] == 1
    # A key revoked before it was ever used is refused at once (a used key: within 30 s).
    _, fresh = admin("keys", "create", "--name", "x", "--scope", "read")
    admin("keys", "revoke", fresh["key_id"])
    assert call(stack, "GET", "/v1/suppressions", key=fresh["key"])[0] == 401


def test_domains_add_show_verify(stack):
    code, d = admin("domains", "add", "cli.example.test")
    assert code == 0 and not d["verified"]
    for r in d["records"]:
        if r["purpose"] == "dkim":
            stack.dns.add(r["name"], "TXT", r["value"])
    code, d = admin("domains", "verify", "cli.example.test")
    assert code == 0 and d["verified"]
    assert admin("domains", "add", "cli.example.test")[0] == 1  # exists
    status, _, _ = call(stack, "POST", "/v1/messages", {
        "from": "a@cli.example.test", "to": "alice@accept.test", "subject": "s", "text": "t"})
    assert status == 202


def test_a_key_bound_to_sending_domains_sends_only_from_them(stack):
    """Issue 8, item 26 (optional part): keys bound to sending domains, as an SES IAM policy's
    ses:FromAddress condition: another verified domain is a 403 naming `from`."""
    msg = {"from": "Shop <hello@outpost.test>", "to": "alice@accept.test", "subject": "s", "text": "t"}
    code, bound = admin("keys", "create", "--name", "shop", "--scope", "send", "--domain", "OUTPOST.test")
    assert code == 0 and bound["domains"] == ["outpost.test"]
    assert call(stack, "POST", "/v1/messages", msg, key=bound["key"])[0] == 202
    code, other = admin("keys", "create", "--name", "blog", "--scope", "send",
                        "--domain", "blog.example.test", "--domain", "news.example.test")
    status, _, err = call(stack, "POST", "/v1/messages", msg, key=other["key"])
    assert status == 403 and err["error"]["field"] == "from", err
    assert "blog.example.test, news.example.test" in err["error"]["message"]
    status, _, out = call(stack, "POST", "/v1/messages/batch", {"messages": [msg]}, key=other["key"])
    assert status == 200 and out["results"][0]["status"] == 403, out
    # An unbound key (the stack's admin key) still sends from any verified domain.
    assert call(stack, "POST", "/v1/messages", msg)[0] == 202
    assert admin("keys", "create", "--name", "x", "--scope", "send", "--domain", "not a domain")[0] == 1


def test_stack_option_reads_the_tables_from_cloudformation_outputs(stack, monkeypatch):
    import boto3

    from outpost.admin import stack_env

    env = stack.env
    outputs = {"ApiKeysTableName": env["OUTPOST_API_KEYS_TABLE"],
               "DomainsTableName": env["OUTPOST_DOMAINS_TABLE"],
               "MessagesTableName": env["OUTPOST_MESSAGES_TABLE"],
               "SecretPrefix": env["OUTPOST_SECRET_PREFIX"], "SenderPublicIp": "192.0.2.9"}
    template = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()}}
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName="outpost-prod", TemplateBody=json.dumps(template))
    got = stack_env("outpost-prod", cfn)
    assert got["OUTPOST_API_KEYS_TABLE"] == env["OUTPOST_API_KEYS_TABLE"]
    assert got["OUTPOST_SENDER_IP"] == "192.0.2.9"
    for k in list(got):
        monkeypatch.delenv(k, raising=False)
    code, created = admin("--stack", "outpost-prod", "keys", "create", "--name", "deployer", "--scope", "admin")
    assert code == 0
    assert call(stack, "GET", "/v1/suppressions", key=created["key"])[0] == 200
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        stack_env("no-such-stack", cfn)
