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


SENDER_QUEUES = {"Send": ("SendQueue", "SendDeadLetterQueue"), "Retry": ("RetryQueue", "RetryDeadLetterQueue")}


def test_queue_visibility_covers_six_sender_timeouts(template: dict[str, Any]) -> None:
    # AWS's rule for SQS event sources: visibility >= 6 x function timeout, otherwise a batch
    # still being delivered becomes visible again and is delivered twice.
    sender_timeout = props(template, "SenderFunction")["Timeout"]
    for queue, _ in SENDER_QUEUES.values():
        assert props(template, queue)["VisibilityTimeout"] >= 6 * sender_timeout


def test_queue_outlives_the_longest_retry_window(template: dict[str, Any]) -> None:
    # A job may wait up to the longest allowed `expires_in` (SQS_MAX_RETENTION); SQS must not
    # discard it first.
    for queue, dlq in SENDER_QUEUES.values():
        assert props(template, queue)["MessageRetentionPeriod"] >= SQS_MAX_RETENTION
        assert props(template, dlq)["MessageRetentionPeriod"] >= SQS_MAX_RETENTION
        redrive = props(template, queue)["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}
        assert redrive["maxReceiveCount"] == 5


def test_sender_reports_partial_batch_failures(template: dict[str, Any]) -> None:
    for name in SENDER_QUEUES:
        event = props(template, "SenderFunction")["Events"][name]
        assert event["Type"] == "SQS"
        # Without this the handler's batchItemFailures answer is ignored and one failed message
        # makes the whole batch redeliver.
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def _queues_sent_to(template: dict[str, Any], function: str) -> set[str]:
    """The queues a function's SQSSendMessagePolicy templates grant SendMessage on."""
    return {p["SQSSendMessagePolicy"]["QueueName"]["Fn::GetAtt"][0]
            for p in props(template, function)["Policies"]
            if isinstance(p, dict) and "SQSSendMessagePolicy" in p}


def test_retries_have_their_own_queue_poller_and_concurrency(template: dict[str, Any]) -> None:
    # New mail (the API's jobs) on SendQueue, every retry (the sender's re-queues, the
    # sweeper's rescues) on RetryQueue, each with its own event source, so a backlog of new
    # mail never holds up a retry that is due.
    events = {name: e["Properties"] for name, e in props(template, "SenderFunction")["Events"].items()
              if e["Type"] == "SQS"}
    assert set(events) == set(SENDER_QUEUES)
    for name, (queue, _) in SENDER_QUEUES.items():
        assert events[name]["Queue"] == {"Fn::GetAtt": [queue, "Arn"]}
    # Each source has its own cap: a flood of new mail takes at most SenderMaxConcurrency
    # senders, and retries always have RetryMaxConcurrency of their own.
    assert events["Send"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "SenderMaxConcurrency"}
    assert events["Retry"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "RetryMaxConcurrency"}
    assert _param(template, "RetryMaxConcurrency")["MinValue"] >= 2  # Lambda's minimum
    # (and POST /v1/webhooks/{id}/replay queues webhook jobs, never mail)
    assert _queues_sent_to(template, "SendApiFunction") == {"SendQueue", "WebhookQueue"}
    assert _queues_sent_to(template, "SenderFunction") == {"RetryQueue"}
    assert _queues_sent_to(template, "SweeperFunction") == {"RetryQueue"}
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["OUTPOST_RETRY_QUEUE_URL"] == {"Ref": "RetryQueue"}
    assert Settings.from_env({"OUTPOST_RETRY_QUEUE_URL": "q"}).retry_queue_url == "q"


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


# ---- issue 8: the template's own hardening ------------------------------------------------

def _param(template: dict[str, Any], name: str) -> dict[str, Any]:
    return template["Parameters"][name]


def _statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return [s for p in props(template, function)["Policies"] if isinstance(p, dict) and "Statement" in p
            for s in p["Statement"]]


def _sam_policies(template: dict[str, Any], function: str) -> list[str]:
    return [next(iter(p)) for p in props(template, function)["Policies"]
            if isinstance(p, dict) and "Statement" not in p] + [
        p for p in props(template, function)["Policies"] if isinstance(p, str)]


def _granted(template: dict[str, Any], function: str, resource: Any) -> set[str]:
    return {a for s in _statements(template, function) if s["Resource"] == resource
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def test_vpc_cidr_accepts_exactly_the_prefixes_its_subnets_fit_in() -> None:
    # `!Cidr [VpcCidr, count, bits]` carves `count` subnets of 2**bits addresses; the VPC must
    # hold them all (prefix <= 32 - bits - log2(count)), and AWS allows VPCs from /16 to /28.
    import ipaddress
    import math
    import re

    t = yaml_parse((ROOT / "template.yaml").read_text())
    pattern = re.compile(_param(t, "VpcCidr")["AllowedPattern"])
    selects = [r["Properties"]["CidrBlock"]["Fn::Select"] for r in t["Resources"].values()
               if r["Type"] == "AWS::EC2::Subnet"]
    cidrs = [sel[1]["Fn::Cidr"] for sel in selects]
    assert cidrs and all(c[0] == {"Ref": "VpcCidr"} and c[1:] == cidrs[0][1:] for c in cidrs)
    count, bits = int(cidrs[0][1]), int(cidrs[0][2])
    assert max(int(sel[0]) for sel in selects) < count
    widest_allowed = 32 - bits - math.ceil(math.log2(count))
    for prefix in range(0, 33):
        cidr = f"10.42.0.0/{prefix}"
        fits = 16 <= prefix <= widest_allowed and len(list(
            ipaddress.ip_network(cidr).subnets(new_prefix=32 - bits))) >= count
        assert bool(pattern.fullmatch(cidr)) == fits, cidr
    assert widest_allowed == 22 and pattern.fullmatch("10.42.0.0/22") and not pattern.fullmatch("10.42.0.0/23")
    for bad in ("300.1.1.0/16", "10.42.0/16", "10.42.0.0.0/16", "10.42.0.0/16 ", "a.b.c.d/16"):
        assert not pattern.fullmatch(bad), bad
    assert pattern.fullmatch(_param(t, "VpcCidr")["Default"])


def test_bounce_processor_has_reserved_concurrency_by_default(template: dict[str, Any]) -> None:
    p = _param(template, "BounceProcessorConcurrency")
    assert p["Default"] == 5 and p["MinValue"] == 0
    reserved = props(template, "BounceProcessorFunction")["ReservedConcurrentExecutions"]
    assert reserved == {"Fn::If": ["ReserveBounceConcurrency", {"Ref": "BounceProcessorConcurrency"},
                                   {"Ref": "AWS::NoValue"}]}
    cond = template["Conditions"]["ReserveBounceConcurrency"]
    assert cond == {"Fn::Not": [{"Fn::Equals": [{"Ref": "BounceProcessorConcurrency"}, "0"]}]}


def test_retention_outlives_the_longest_message_lifetime(template: dict[str, Any]) -> None:
    from outpost.store import TTL_MARGIN

    p = _param(template, "RetentionDays")
    # A message may be retried for SQS_MAX_RETENTION (expires_in's maximum); its records, body
    # and uploads must outlive that (the store adds TTL_MARGIN past the deadline).
    assert p["MinValue"] * 86400 >= SQS_MAX_RETENTION + TTL_MARGIN
    assert p["Default"] >= p["MinValue"]
    rules = {r["Id"]: r for r in props(template, "MailBucket")["LifecycleConfiguration"]["Rules"]}
    for rule in ("ExpireBodies", "ExpireUploads"):
        assert rules[rule]["ExpirationInDays"] == {"Ref": "RetentionDays"}


def test_a_per_ip_waf_rate_limit_guards_the_api_stage(template: dict[str, Any]) -> None:
    p = _param(template, "ApiRateLimitPerIp")
    assert p["Default"] >= 10 and p["MinValue"] == 0
    acl = template["Resources"]["ApiWebAcl"]
    assert acl["Condition"] == "EnableWaf"
    # ... in front of the REST API only (ApiType=HTTP has no WAF: tests/sam/test_api_type.py).
    assert template["Conditions"]["EnableWaf"] == {"Fn::And": [
        {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiRateLimitPerIp"}, "0"]}]}, {"Condition": "UseRestApi"}]}
    (rule,) = acl["Properties"]["Rules"]
    rate = rule["Statement"]["RateBasedStatement"]
    assert rate["AggregateKeyType"] == "IP" and rate["Limit"] == {"Ref": "ApiRateLimitPerIp"}
    block = rule["Action"]["Block"]["CustomResponse"]
    assert block["ResponseCode"] == 429
    import json

    body = acl["Properties"]["CustomResponseBodies"][block["CustomResponseBodyKey"]]
    assert set(json.loads(body["Content"])["error"]) == {"code", "message", "field"}  # the API's shape
    assoc = template["Resources"]["ApiWebAclAssociation"]
    assert assoc["Condition"] == "EnableWaf"
    assert assoc["Properties"]["WebACLArn"] == {"Fn::GetAtt": ["ApiWebAcl", "Arn"]}
    arn = assoc["Properties"]["ResourceArn"]["Fn::Sub"]
    assert "/restapis/${OutpostApi}/stages/${OutpostApi.Stage}" in arn
    # WAF refuses limits below 10: the template refuses them first.
    rule_assert = template["Rules"]["ApiRateLimitIsAWafLimit"]["Assertions"][0]["Assert"]
    assert rule_assert["Fn::Not"][0]["Fn::Contains"][0] == [str(n) for n in range(1, 10)]


def test_api_reads_and_stamps_keys_only(template: dict[str, Any]) -> None:
    # auth.KeyRing.authenticate/identify: GetItem, and UpdateItem for last_used_at. Creating
    # and revoking keys is the admin CLI's (operator credentials), never the API's.
    # GET /v1/reputation as an admin lists the keys (a Scan of the small table; issue 11 item 6).
    arn = {"Fn::GetAtt": ["ApiKeysTable", "Arn"]}
    assert _granted(template, "SendApiFunction", arn) == {"dynamodb:GetItem", "dynamodb:UpdateItem",
                                                          "dynamodb:Scan"}
    for p in props(template, "SendApiFunction")["Policies"]:
        if isinstance(p, dict) and "Statement" not in p:
            assert next(iter(p.values())) != {"TableName": {"Ref": "ApiKeysTable"}}, p


def test_api_lists_only_the_uploads_prefix(template: dict[str, Any]) -> None:
    lists = [s for s in _statements(template, "SendApiFunction")
             if "s3:ListBucket" in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert lists and all(s["Condition"] == {"StringLike": {"s3:prefix": "uploads/*"}} for s in lists)


def test_bounce_processor_writes_messages_narrowly(template: dict[str, Any]) -> None:
    # bounces/service.py: store.load (Query), put_bounce / put_orphan (conditional PutItem),
    # mark_bounced (UpdateItem). No SAM CRUD template (that adds DeleteItem, Scan, BatchWrite).
    # The reputation breaker (issue 11 item 6) reads a scope's state (BatchGetItem).
    assert "DynamoDBCrudPolicy" not in _sam_policies(template, "BounceProcessorFunction")
    arn = {"Fn::GetAtt": ["MessagesTable", "Arn"]}
    assert _granted(template, "BounceProcessorFunction", arn) == {
        "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem"}
    # An API key's hourly counts are filed under it by gsi1 (one item per domain and key).
    assert _granted(template, "BounceProcessorFunction", {"Fn::Sub": "${MessagesTable.Arn}/index/gsi1"}) == {
        "dynamodb:Query"}


def test_sweeper_runs_on_a_schedule_over_the_due_index(template: dict[str, Any]) -> None:
    fn = props(template, "SweeperFunction")
    (event,) = fn["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == "rate(5 minutes)"
    # The index the store's overdue() queries, with the key names the store writes.
    table = props(template, "MessagesTable")
    gsi = next(g for g in table["GlobalSecondaryIndexes"] if g["IndexName"] == "gsi5")
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["due_shard", "due_at"]
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert types["due_shard"] == "S" and types["due_at"] == "N"
    assert _granted(template, "SweeperFunction", {"Fn::Sub": "${MessagesTable.Arn}/index/gsi5"}) == {
        "dynamodb:Query"}
    # postpone_due (UpdateItem); the reputation breaker's periodic evaluation: the active
    # scopes and their hours (Query, a key's through gsi1), states (BatchGetItem, PutItem).
    assert _granted(template, "SweeperFunction", {"Fn::GetAtt": ["MessagesTable", "Arn"]}) == {
        "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:PutItem"}
    assert _granted(template, "SweeperFunction", {"Fn::Sub": "${MessagesTable.Arn}/index/gsi1"}) == {
        "dynamodb:Query"}
    assert fn["Timeout"] * 2 < 300  # a sweep ends well before the next one starts
    from outpost.sweeper import SWEEP_GRACE

    assert SWEEP_GRACE >= 300  # longer than the schedule: a job queued by a sweep gets a chance


def test_failure_queues_raise_alarms(template: dict[str, Any]) -> None:
    alarms = {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in alarms.values()
               if a.get("Namespace") == "AWS/SQS"}
    assert watched == {"SendDeadLetterQueue", "RetryDeadLetterQueue", "BounceFailureQueue", "EventsFailureQueue",
                       "WebhookDeadLetterQueue"}
    for a in alarms.values():
        if a.get("Namespace") == "AWS/SQS":
            assert a["MetricName"] == "ApproximateNumberOfMessagesVisible"
            assert a["Threshold"] == 0 and a["ComparisonOperator"] == "GreaterThanThreshold"
        # Every alarm tells the topic; the NAT instance's (test_nat.py) also act on the instance
        others = [x for x in a["AlarmActions"] if x != {"Ref": "AlarmTopic"}]
        assert len(others) == len(a["AlarmActions"]) - 1
        assert all(":automate:${AWS::Region}:ec2:" in x["Fn::Sub"] for x in others)
    sub = template["Resources"]["AlarmEmailSubscription"]
    assert sub["Condition"] == "HasAlarmEmail" and sub["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_the_outputs_outpost_admin_reads_are_there_whatever_the_network(template: dict[str, Any]) -> None:
    """Issue 9, item 8: the admin CLI finds the stack's resources in its Outputs only."""
    from outpost_admin.outputs import OUTPUTS, REQUIRED

    outputs = template["Outputs"]
    assert set(OUTPUTS) <= set(outputs), set(OUTPUTS) - set(outputs)
    # The tables and the secret prefix are there on every stack; the sender's IP whenever the
    # stack knows it (its own NAT, or the SenderPublicIp of an existing network).
    assert all("Condition" not in outputs[k] for k in REQUIRED)
    assert outputs["SenderPublicIp"]["Condition"] == "KnowsSenderIp"
    assert outputs["SenderPublicIp"]["Value"] == {"Fn::If": ["CreateNetwork", {"Ref": "NatEip"},
                                                             {"Ref": "SenderPublicIp"}]}
    assert template["Conditions"]["KnowsSenderIp"] == {"Fn::Or": [
        {"Condition": "CreateNetwork"}, {"Fn::Not": [{"Fn::Equals": [{"Ref": "SenderPublicIp"}, ""]}]}]}


def test_the_admin_cli_is_not_in_the_lambda_layer() -> None:
    layer = ROOT / "layers" / "outpost"
    assert not list(layer.rglob("admin.py")) and not list(layer.rglob("outpost_admin"))
    assert not [p for p in layer.rglob("*.py") if "outpost_admin" in p.read_text()]


def test_reputation_alarms_cover_every_domain_and_key_by_the_dimensions_the_code_publishes(
        template: dict[str, Any]) -> None:
    """Issue 11 review: one alarm per rate and scope kind, a Metrics Insights query over the
    metric with the Domain (ApiKey) dimension, so every domain (key) is covered without listing
    them; the names and dimensions are the ones reputation.evaluate and telemetry.gauge emit."""
    from outpost.reputation import Reputation, Thresholds
    from tests.fakes.store import FakeClock, FakeReputations

    published: set[tuple[str, tuple[str, ...]]] = set()
    rep = Reputation(FakeReputations(), thresholds=Thresholds(min_volume=1), clock=FakeClock(),
                     gauge=lambda n, v, dims: published.add((n, (*dims, "service"))))
    rep.count_sent([("shop.test", "k1", 10)])
    rep.count_bounce("shop.test", "k1")
    assert published == {(m, d) for m in ("BounceRate", "ComplaintRate")
                         for d in (("Domain", "service"), ("ApiKey", "service"))}
    want = {f'SELECT MAX({m}) FROM SCHEMA("Outpost", {", ".join(d)})': m for m, d in published}
    alarms = {k: v["Properties"] for k, v in template["Resources"].items()
              if v["Type"] == "AWS::CloudWatch::Alarm" and "Metrics" in v["Properties"]}
    queries = {}
    for name, a in alarms.items():
        (q,) = a["Metrics"]
        assert q["ReturnData"] is True and q["Period"] <= 3600 and "MetricStat" not in q
        queries[q["Expression"]] = name
        rate = want[q["Expression"]]
        param = "ReputationWarnBounceRate" if rate == "BounceRate" else "ReputationWarnComplaintRate"
        assert a["Threshold"] == {"Ref": param} and a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert a["TreatMissingData"] == "notBreaching" and a["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert set(queries) == set(want)  # four alarms: two rates, by domain and by key
    assert "ReputationBounceRateAlarm" in alarms and "ReputationKeyComplaintRateAlarm" in alarms
def test_events_come_from_the_recipients_stream_filtered_with_partial_failures(template: dict[str, Any]) -> None:
    # Issue 12: every recipient write is a stream record with both images (a state change is
    # read from old and new); only recipient items reach the function (the sort key's prefix
    # store.rcpt_sk writes); a failed record is retried from itself, a poisonous batch is
    # bisected, and what still fails is kept in a queue that raises an alarm.
    import json

    from outpost.store import rcpt_sk

    assert props(template, "MessagesTable")["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    ev = props(template, "EventsFunction")["Events"]["RecipientChanges"]
    assert ev["Type"] == "DynamoDB"
    p = ev["Properties"]
    assert p["Stream"] == {"Fn::GetAtt": ["MessagesTable", "StreamArn"]}
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and p["BisectBatchOnFunctionError"] is True
    assert p["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["EventsFailureQueue", "Arn"]}
    (f,) = p["FilterCriteria"]["Filters"]
    prefix = json.loads(f["Pattern"])["dynamodb"]["Keys"]["sk"]["S"][0]["prefix"]
    assert rcpt_sk(7).startswith(prefix) and not "META".startswith(prefix)
    env = props(template, "EventsFunction")["Environment"]["Variables"]
    assert env["OUTPOST_EVENT_BUS"] == {"Fn::If": ["EnableEventBridge", {"Ref": "EventBus"}, ""]}
    assert Settings.from_env({"OUTPOST_EVENT_BUS": "b"}).event_bus == "b"
    assert template["Resources"]["EventBus"]["Condition"] == "EnableEventBridge"
    assert _param(template, "EnableEventBridge")["Default"] == "false"


def test_a_disabled_webhook_endpoint_raises_an_alarm_on_the_metric_the_dispatcher_counts(
        template: dict[str, Any]) -> None:
    """Issue 12: an endpoint failing for 5 days is disabled "with an event and a metric": the
    dispatcher counts WebhookEndpointDisabled (Powertools: namespace Outpost, dimension
    service=outpost, flushed by the handler's log_metrics) and this alarm tells the topic."""
    from outpost.webhooks import dispatch

    assert 'self.count("WebhookEndpointDisabled", 1)' in Path(dispatch.__file__).read_text()
    handler = (ROOT / "functions" / "webhooks" / "app.py").read_text()
    assert "log_metrics" in handler
    a = template["Resources"]["WebhookEndpointDisabledAlarm"]["Properties"]
    assert (a["Namespace"], a["MetricName"]) == ("Outpost", "WebhookEndpointDisabled")
    assert a["Dimensions"] == [{"Name": "service", "Value": "outpost"}]
    assert a["Threshold"] == 0 and a["ComparisonOperator"] == "GreaterThanThreshold"
    assert a["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    glob = template["Globals"]["Function"]["Environment"]["Variables"]
    assert (glob["POWERTOOLS_METRICS_NAMESPACE"], glob["POWERTOOLS_SERVICE_NAME"]) == ("Outpost", "outpost")
