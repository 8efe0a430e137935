"""`outpost-admin` against the local stack: from the OUTPOST_* environment, from the outputs file
the local stack publishes (`--local`), and `--stack-name` against a CloudFormation stack in moto
whose Outputs are the template's own, resolved by the local stack."""

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
    from outpost_admin import main

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


def _forget(monkeypatch, names):
    """Unset what the admin must find in the Outputs itself. (Only those: the stack's handlers
    run in this process and read the rest of the environment.)"""
    for k in names:
        monkeypatch.delenv(k, raising=False)


def test_stack_option_reads_the_tables_from_cloudformation_outputs(stack, monkeypatch):
    import boto3

    from outpost_admin.outputs import OUTPUTS, stack_env

    # The template's own Outputs (resolved against this stack), as CloudFormation would list them.
    described = stack.describe()
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    assert set(OUTPUTS) <= set(outputs), set(OUTPUTS) - set(outputs)
    outputs["SenderPublicIp"] = "192.0.2.9"
    template = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()}}
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName="outpost-prod", TemplateBody=json.dumps(template))
    got = stack_env("outpost-prod", cfn)
    env = stack.env
    for var in ("OUTPOST_API_KEYS_TABLE", "OUTPOST_DOMAINS_TABLE", "OUTPOST_MESSAGES_TABLE", "OUTPOST_BUCKET",
                "OUTPOST_SECRET_PREFIX", "OUTPOST_BOUNCE_DOMAIN", "OUTPOST_SEND_QUEUE_URL"):
        assert got[var] == env[var], var
    assert got["OUTPOST_SENDER_IP"] == "192.0.2.9"
    _forget(monkeypatch, got)
    code, created = admin("--stack-name", "outpost-prod", "keys", "create", "--name", "deployer", "--scope", "admin")
    assert code == 0
    assert call(stack, "GET", "/v1/suppressions", key=created["key"])[0] == 200
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        stack_env("no-such-stack", cfn)
    # A stack that is not Outpost's is refused by name, not half-used.
    cfn.create_stack(StackName="other", TemplateBody=json.dumps(
        {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"X": {"Value": "y"}}}))
    with pytest.raises(SystemExit, match="no output ApiKeysTableName"):
        stack_env("other", cfn)


def test_local_option_reads_the_outputs_the_local_stack_publishes(stack, monkeypatch, tmp_path):
    path = stack.publish(tmp_path / "outputs.json")
    published = json.loads(path.read_text())
    assert published["Environment"]["AWS_ENDPOINT_URL"] == stack.env["AWS_ENDPOINT_URL"]
    from outpost_admin.outputs import local_env

    from_file = local_env(path)
    for var in ("OUTPOST_API_KEYS_TABLE", "OUTPOST_DOMAINS_TABLE", "OUTPOST_SECRET_PREFIX", "OUTPOST_SENDER_IP",
                "OUTPOST_BOUNCE_DOMAIN", "OUTPOST_DNS_SERVERS", "AWS_ENDPOINT_URL"):
        assert from_file[var] == stack.env[var], var
    _forget(monkeypatch, from_file)
    code, created = admin("--local", "--outputs", str(path), "keys", "create", "--name", "dev", "--scope", "read")
    assert code == 0
    assert call(stack, "GET", "/v1/suppressions", key=created["key"])[0] == 200
    # Domains too: the DNS checks go to the local stack's DNS server named in the file.
    code, d = admin("--local", "--outputs", str(path), "domains", "add", "local.example.test")
    assert code == 0 and not d["verified"]
    spf = next(r for r in d["records"] if r["purpose"] == "spf")
    assert f"ip4:{stack.env['OUTPOST_SENDER_IP']}" in spf["value"]
    for r in d["records"]:
        if r["purpose"] == "dkim":
            stack.dns.add(r["name"], "TXT", r["value"])
    code, d = admin("--local", "--outputs", str(path), "domains", "verify", "local.example.test")
    assert code == 0 and d["verified"]
    with pytest.raises(SystemExit, match="make dev"):
        admin("--local", "--outputs", str(tmp_path / "none.json"), "keys", "list")
