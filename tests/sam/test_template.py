"""Invariants of template.yaml that cfn-lint cannot know: they tie the template to the code.

`.ci/sam_check.sh` proves the template lints, builds and runs; these tests pin the numbers and
prefixes that must agree between the template and the library, so that changing one side
alone fails here rather than in a deployed stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from outpost.config import SQS_MAX_RETENTION, Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml_parse((ROOT / "template.yaml").read_text())


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return template["Resources"][logical_id]["Properties"]


def test_queue_visibility_covers_six_sender_timeouts(template: dict[str, Any]) -> None:
    # AWS's rule for SQS event sources: visibility >= 6 x function timeout, otherwise a batch
    # still being delivered becomes visible again and is delivered twice.
    sender_timeout = props(template, "SenderFunction")["Timeout"]
    assert props(template, "SendQueue")["VisibilityTimeout"] >= 6 * sender_timeout


def test_queue_outlives_the_longest_retry_window(template: dict[str, Any]) -> None:
    # A job may wait up to the longest allowed `expires_in` (SQS_MAX_RETENTION); SQS must not
    # discard it first.
    for queue in ("SendQueue", "SendDeadLetterQueue"):
        assert props(template, queue)["MessageRetentionPeriod"] >= SQS_MAX_RETENTION
    redrive = props(template, "SendQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["SendDeadLetterQueue", "Arn"]}


def test_sender_reports_partial_batch_failures(template: dict[str, Any]) -> None:
    event = props(template, "SenderFunction")["Events"]["Send"]
    assert event["Type"] == "SQS"
    # Without this the handler's batchItemFailures answer is ignored and one failed message
    # makes the whole batch redeliver.
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def _s3_event_prefixes(template: dict[str, Any]) -> list[str]:
    out = []
    for event in props(template, "BounceProcessorFunction")["Events"].values():
        if event["Type"] == "S3":
            rules = event["Properties"]["Filter"]["S3Key"]["Rules"]
            out += [r["Value"] for r in rules if r["Name"] == "prefix"]
    return out


def test_ses_stored_mail_is_not_also_an_s3_event(template: dict[str, Any]) -> None:
    # The SES rule stores the DSN and then invokes the function itself; an S3 notification on
    # the same prefix would process every DSN twice.
    rule = props(template, "BounceReceiptRule")["Rule"]
    s3_action = next(a["S3Action"] for a in rule["Actions"] if "S3Action" in a)
    ses_prefix = s3_action["ObjectKeyPrefix"]
    assert ses_prefix == Settings().inbound_ses_prefix  # where the handler looks for it
    prefixes = _s3_event_prefixes(template)
    assert prefixes, "the bounce processor has no S3 event"
    for prefix in prefixes:
        assert not prefix.startswith(ses_prefix) and not ses_prefix.startswith(prefix)
    # And the S3 action runs before the Lambda action, so the object exists when it is read.
    kinds = [next(iter(a)) for a in rule["Actions"]]
    assert kinds.index("S3Action") < kinds.index("LambdaAction")


def test_bounce_processor_bucket_name_matches_the_bucket(template: dict[str, Any]) -> None:
    # The bounce processor spells the bucket name out (a !Ref would be a dependency cycle);
    # both copies must stay the same expression.
    bucket_name = props(template, "MailBucket")["BucketName"]
    override = props(template, "BounceProcessorFunction")["Environment"]["Variables"][
        "OUTPOST_BUCKET"
    ]
    assert override == bucket_name
    policy_arns = [
        s["Resource"]
        for p in props(template, "BounceProcessorFunction")["Policies"]
        if isinstance(p, dict) and "Statement" in p
        for s in p["Statement"]
        if s["Sid"] == "ReadInbound"
    ]
    assert policy_arns and policy_arns[0]["Fn::Sub"][1] == bucket_name["Fn::Sub"][1]
    assert policy_arns[0]["Fn::Sub"][0].endswith(bucket_name["Fn::Sub"][0] + "/inbound/*")


def test_functions_get_the_settings_they_read(template: dict[str, Any]) -> None:
    # Every deployment-specific setting (resource names, identity) comes from the template;
    # the rest (DNS servers, SMTP port, CA bundle, schedules) have production defaults.
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    required = {
        "OUTPOST_MESSAGES_TABLE",
        "OUTPOST_SUPPRESSIONS_TABLE",
        "OUTPOST_API_KEYS_TABLE",
        "OUTPOST_DOMAINS_TABLE",
        "OUTPOST_BUCKET",
        "OUTPOST_SEND_QUEUE_URL",
        "OUTPOST_EHLO_HOSTNAME",
        "OUTPOST_BOUNCE_DOMAIN",
        "OUTPOST_SECRET_PREFIX",
        "OUTPOST_VERP_SECRET_ID",
        "OUTPOST_RETENTION_DAYS",
    }
    assert required <= set(env)
    for name in required:  # and each of them is one Settings.from_env actually reads
        assert Settings.from_env({name: "7"}) != Settings.from_env({}), name
