"""Least privilege for SMTP submission (issue 13): every AWS call the submission server makes
(the certificate at start, then AUTH, a message to a verified domain, its idempotent retry, a
large message whose body goes to S3, one to 30 recipients, the refusals: a wrong key, an
unverified From, a suppressed recipient; a queue that fails, after which the message is accepted
all the same and marked overdue for the sweeper, s17f; and a commit that fails, after which the
create and its idempotency record are taken back) is granted by SmtpSubmissionTaskRole in
template.yaml, and the role grants nothing else but the grants listed in KEPT, each with the
reason it stays.

The calls are recorded from botocore (every client, every service) on the threads that make
them for the server: this one while it is built (bootstrap), its pool's while it serves.
"""

from __future__ import annotations

import fnmatch
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from outpost.api.auth import KeyRing
from outpost.bootstrap import api_keys_table, submission_server, suppression_store
from outpost.records import Suppression
from outpost.submission.settings import SubmissionSettings
from outpost_local.stack import SENDING_DOMAIN, SUBMISSION_HOSTNAME

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
TLS_SECRET = "outpost/submission-tls"  # the local stack's; in AWS the SmtpSubmissionTlsSecretArn parameter
Grant = tuple[str, str, str]  # (action, logical resource, sub-resource pattern: "" for the resource itself)

# Granted, not used on the paths recorded here, kept on purpose.
KEPT: dict[Grant, str] = {
    ("dynamodb:GetItem", "IdempotencyTable", ""):
        "Powertools' idempotency reads the record when a conditional put fails without returning "
        "it (its fallback; DynamoDB returns it, so a retry here uses none)",
    ("dynamodb:Query", "MessagesTable", ""):
        "the message an earlier create with the same Message-ID committed, loaded for the answer "
        "(SendService._earlier): only a retry after a task died past the commit, its in-progress "
        "record expired, reads it",
}


def _resource(r: Any) -> tuple[str, str] | None:
    if isinstance(r, dict) and "Fn::GetAtt" in r and r["Fn::GetAtt"][1] == "Arn":
        return r["Fn::GetAtt"][0], ""
    if isinstance(r, dict) and "Ref" in r:
        return r["Ref"], ""
    if isinstance(r, dict) and isinstance(r.get("Fn::Sub"), str):
        m = re.fullmatch(r"\$\{(\w+)\.Arn\}/(.+)", r["Fn::Sub"])
        if m:
            return m.group(1), m.group(2)
    return None


def task_grants() -> set[Grant]:
    t = yaml_parse((ROOT / "template.yaml").read_text())
    out: set[Grant] = set()
    for policy in t["Resources"]["SmtpSubmissionTaskRole"]["Properties"]["Policies"]:
        for s in policy["PolicyDocument"]["Statement"]:
            assert s["Effect"] == "Allow"
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            for r in s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]:
                res = _resource(r)
                assert res is not None, r  # every resource is one of the stack's, no "*"
                out |= {(a, *res) for a in actions}
    return out


def _allowed(call: Grant, grants: set[Grant]) -> Grant | None:
    """The grant that allows `call` (its sub-resource matched as IAM matches ARNs), if any."""
    action, logical, sub = call
    for g in grants:
        if g[0] == action and g[1] == logical and (g[2] == sub or (sub and g[2] and fnmatch.fnmatchcase(sub, g[2]))):
            return g
    return None


class Recorder:
    """(action, logical resource, sub-resource) of every AWS call made on the recorded threads."""

    def __init__(self, physical: dict[str, str]) -> None:
        self.names = {v: k for k, v in physical.items()}
        self.calls: set[Grant] = set()
        self.threads: set[int] = {threading.get_ident()}
        self.fail_next_send = False  # the next sqs:SendMessage raises, as a failing queue would
        self.fail_next_commit = False  # the next create's META put raises, as a throttled table would

    def wanted(self) -> bool:
        return threading.get_ident() in self.threads or threading.current_thread().name.startswith("submission")

    def record(self, service: str, op: str, params: dict) -> None:
        if service == "dynamodb":
            self._dynamodb(op, params)
        elif service == "s3":
            self.calls.add((f"s3:{op}", self.names[params["Bucket"]], params.get("Key", "")))
        elif service == "sqs":
            self.calls.add((f"sqs:{op}", self.names[params["QueueUrl"]], ""))
        elif service == "secretsmanager":
            assert params["SecretId"] == TLS_SECRET, params
            self.calls.add((f"secretsmanager:{op}", "SmtpSubmissionTlsSecretArn", ""))
        else:
            self.calls.add((f"{service}:{op}", "?", ""))

    def _dynamodb(self, op: str, params: dict) -> None:
        if op == "TransactWriteItems":  # authorised per contained write
            kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem"}
            for item in params["TransactItems"]:
                ((kind, body),) = item.items()
                self.calls.add((f"dynamodb:{kinds[kind]}", self.names[body["TableName"]], ""))
        elif "RequestItems" in params:
            self.calls |= {(f"dynamodb:{op}", self.names[t], "") for t in params["RequestItems"]}
        else:
            index = params.get("IndexName")
            self.calls.add((f"dynamodb:{op}", self.names[params["TableName"]], f"index/{index}" if index else ""))


@contextmanager
def recording(local_stack: Any) -> Iterator[Recorder]:
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    rec = Recorder(local_stack.stack.physical)
    real = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict) -> Any:
        if rec.wanted():
            rec.record(client.meta.service_model.service_name, operation, params)
            if rec.fail_next_send and operation == "SendMessage":
                rec.fail_next_send = False
                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)
            if rec.fail_next_commit and operation == "PutItem" and params["Item"].get("sk") == {"S": "META"} \
                    and params["Item"]["pk"]["S"].startswith("MSG#"):
                rec.fail_next_commit = False
                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)
        return real(client, operation, params)

    BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]
    try:
        yield rec
    finally:
        BaseClient._make_api_call = real  # type: ignore[method-assign]


def _message(subject: str, to: str, message_id: str, body: bytes = b"hi\r\n") -> bytes:
    return (f"From: Shop <shop@{SENDING_DOMAIN}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{message_id}>\r\n\r\n").encode() + body


def _submit(client: smtplib.SMTP, data: bytes, to: str, *more: str) -> tuple[int, bytes]:
    client.mail("app@example.org")
    for rcpt in (to, *more):
        client.rcpt(rcpt)
    return client.data(data)


def _session_calls(local_stack: Any, server: Any, key: str, rec: Recorder, tag: str) -> None:
    """AUTH (a wrong key, then the right one), a message, its retry, a large one, one to 30
    recipients, the refusals, a failing queue."""
    ctx = ssl.create_default_context(cafile=str(local_stack.pki.ca_bundle))
    host, suppressed = local_stack.config.ip(1), f"iam-{tag}@accept.test"
    with smtplib.SMTP_SSL(host, server.ports["tls"], context=ctx, timeout=120,
                          source_address=("127.0.9.51", 0)) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("outpost", "op_not_a_key")
    with smtplib.SMTP_SSL(host, server.ports["tls"], context=ctx, timeout=120) as c:
        c.login("outpost", key)
        first = _submit(c, _message("iam", "ann@accept.test", f"{tag}@app.example"), "ann@accept.test")
        again = _submit(c, _message("iam", "ann@accept.test", f"{tag}@app.example"), "ann@accept.test")
        assert first[0] == again[0] == 250 and first[1] == again[1], (first, again)  # the same id
        big = _submit(c, _message("iam big", "ann@accept.test", f"big-{tag}@app.example",
                                  b"x" * 998 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 400), "ann@accept.test")
        assert big[0] == 250, big
        refused = _submit(c, _message("iam", "ann@accept.test", f"u-{tag}@app.example").replace(
            f"shop@{SENDING_DOMAIN}".encode(), b"shop@unverified.example"), "ann@accept.test")
        assert refused[0] == 550, refused
        supp = _submit(c, _message("iam", suppressed, f"s-{tag}@app.example"), suppressed)
        assert supp[0] in (250, 550), supp
        many = [f"many{i}-{tag}@accept.test" for i in range(30)]
        assert _submit(c, _message("iam many", many[0], f"m-{tag}@app.example"), *many)[0] == 250
        rec.fail_next_send = True
        failed = _submit(c, _message("iam", "ann@accept.test", f"f-{tag}@app.example"), "ann@accept.test")
        assert failed[0] == 250 and not rec.fail_next_send, failed  # committed: accepted (s17f)
        retried = _submit(c, _message("iam", "ann@accept.test", f"f-{tag}@app.example"), "ann@accept.test")
        assert retried == failed, retried  # its idempotency record: the same answer
        # A commit that fails: the create takes back what it wrote, its idempotency record and its
        # key's claim are dropped, 451; the retry takes the claim over and is accepted.
        rec.fail_next_commit = True
        lost = _submit(c, _message("iam", "ann@accept.test", f"c-{tag}@app.example"), "ann@accept.test")
        assert lost[0] == 451 and not rec.fail_next_commit, lost  # temporary: the client retries
        retried = _submit(c, _message("iam", "ann@accept.test", f"c-{tag}@app.example"), "ann@accept.test")
        assert retried[0] == 250, retried  # the failed create left no record behind


@pytest.fixture(scope="module")
def send_key() -> str:
    return KeyRing(api_keys_table()).create("smtp iam", ["send"], rate=100, burst=200)[0]


def test_the_submission_path_uses_only_its_task_roles_grants(local_stack: Any, send_key: str) -> None:
    settings = SubmissionSettings(host=local_stack.config.ip(1), starttls_port=0, tls_port=0,
                                  tls_secret=TLS_SECRET, hostname=SUBMISSION_HOSTNAME)
    tag = uuid.uuid4().hex[:8]
    suppression_store().add(Suppression.new(f"iam-{tag}@accept.test", time.time(), source="manual",
                                            reason="iam test", kind=None))
    with recording(local_stack) as rec:
        server = submission_server(settings)  # reads the certificate from Secrets Manager
        server.start_in_thread()
        try:
            _session_calls(local_stack, server, send_key, rec, tag)
        finally:
            server.stop()
    grants = task_grants()
    denied = {c for c in rec.calls if _allowed(c, grants) is None}
    assert not denied, f"calls the task role does not grant: {sorted(denied)}"
    used = {_allowed(c, grants) for c in rec.calls}
    unused = grants - used
    print("used:", *sorted(g for g in used if g), sep="\n  ")  # type: ignore[type-var]
    print("unused:", *sorted(unused), sep="\n  ")
    assert unused == set(KEPT), (sorted(unused - set(KEPT)), sorted(set(KEPT) - unused))
