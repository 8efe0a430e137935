"""Issue 13 item 4: SMTP submission in AWS (ECS Fargate behind an NLB) in template.yaml, and its
image (functions/smtp_submission/Dockerfile).

cfn-lint proves the resources are well-formed; these tests pin what it cannot know: the
resources exist only when EnableSmtpSubmission is on and reference nothing that is absent
either way, the listeners pass TCP 587/465 to the ports the container listens on, the
security group admits exactly the client CIDR and the NLB's health checks, the task role holds
exactly the send API's sending permissions plus the one certificate secret, and the image
copies files that exist and installs the hash-locked requirements.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from samtranslator.policy_template_processor.processor import PolicyTemplatesProcessor
from samtranslator.yaml_helper import yaml_parse

from tests.sam.check_image import ignore_patterns, ignored, image_env, instructions
from tests.sam.test_locks import DEV_LOCK, LAYER_LOCK, _requirements

ROOT = Path(__file__).resolve().parents[2]
IMAGE_LOCK = ROOT / "functions/smtp_submission/requirements.txt"
CONDITION = "EnableSmtpSubmission"
ON = {
    "EnableSmtpSubmission": "true",
    "SmtpSubmissionImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/outpost-submission:v1",
    "SmtpSubmissionTlsSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:outpost/smtp-tls-AbC123",
}
REQUIRED = {"SendingHostname": "mta1.example.com", "BounceDomain": "bounces.example.com"}
# The send API's statements that are not about sending a message, with why the server lacks them.
NOT_SENDING = {
    "ManageDkimKeys": "domains and their DKIM keys are managed through the HTTP API",
    "ReputationListsKeys": "listing every key is GET /v1/reputation for an admin",
    "PresignAndCheckUploads": "uploads/ is the JSON API's attachments; raw MIME carries its own",
    "TellMissingUploads": "the same",
}
# IAM's expansion of the SQSSendMessagePolicy template's sqs:SendMessage*.
SQS_SEND = {"sqs:SendMessage", "sqs:SendMessageBatch"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml_parse((ROOT / "template.yaml").read_text())


def res(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return template["Resources"][logical_id]


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return res(template, logical_id)["Properties"]


# ---- a small renderer: conditions evaluated for a parameter set, references followed --------

def _conditions(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, bool]:
    params: dict[str, Any] = {}
    for name, p in template["Parameters"].items():
        value = str(overrides.get(name, p.get("Default", "")))
        params[name] = value.split(",") if p["Type"] == "CommaDelimitedList" else value
    done: dict[str, bool] = {}

    def ev(x: Any) -> Any:
        if not isinstance(x, dict):
            return x
        ((fn, arg),) = x.items()
        if fn == "Ref":
            return params[arg]
        if fn == "Condition":
            return cond(arg)
        if fn == "Fn::Join":
            return arg[0].join(ev(arg[1]))
        if fn == "Fn::Equals":
            return str(ev(arg[0])) == str(ev(arg[1]))
        if fn == "Fn::Not":
            return not ev(arg[0])
        if fn == "Fn::And":
            return all(ev(a) for a in arg)
        if fn == "Fn::Or":
            return any(ev(a) for a in arg)
        raise AssertionError(f"condition function the renderer does not know: {fn}")

    def cond(name: str) -> bool:
        if name not in done:
            done[name] = bool(ev(template["Conditions"][name]))
        return done[name]

    return {name: cond(name) for name in template["Conditions"]}


def _references(x: Any, conds: dict[str, bool]) -> set[str]:
    """Logical ids x refers to (Ref, GetAtt, Sub), following only the taken side of each Fn::If."""
    if isinstance(x, list):
        return set().union(*(_references(v, conds) for v in x)) if x else set()
    if not isinstance(x, dict):
        return set()
    if len(x) == 1:
        ((fn, arg),) = x.items()
        if fn == "Fn::If":
            return _references(arg[1] if conds[arg[0]] else arg[2], conds)
        if fn == "Ref":
            return {arg.split(".")[0]}  # SAM's `Function.Alias` is the function's alias
        if fn == "Fn::GetAtt":
            return {arg[0] if isinstance(arg, list) else arg.split(".")[0]}
        if fn == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            names = {m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)} - set(local)
            return names | _references(local, conds)
    return set().union(*(_references(v, conds) for v in x.values()))


def _render(template: dict[str, Any], overrides: dict[str, str]) -> tuple[set[str], set[str], set[str]]:
    """(resources present, outputs present, dangling references) for one parameter set."""
    conds = _conditions(template, {**REQUIRED, **overrides})
    present = {k for k, r in template["Resources"].items() if conds.get(r.get("Condition", ""), True)}
    outputs = {k for k, o in template["Outputs"].items() if conds.get(o.get("Condition", ""), True)}
    known = present | set(template["Parameters"])
    # What SAM generates that the template names directly: a function's AutoPublishAlias.
    known |= {f"{k}Alias{template['Resources'][k]['Properties']['AutoPublishAlias']}" for k in present
              if "AutoPublishAlias" in template["Resources"][k].get("Properties", {})}
    dangling = set()
    for kind, ids in (("Resources", present), ("Outputs", outputs)):
        for k in ids:
            item = template[kind][k]
            refs = _references(item.get("Properties", item.get("Value")), conds)
            refs |= set(item.get("DependsOn", []) if isinstance(item.get("DependsOn"), list)
                        else [item["DependsOn"]] if "DependsOn" in item else [])
            dangling |= {f"{k} -> {r}" for r in refs if not r.startswith("AWS::") and r not in known}
    return present, outputs, dangling


def _submission_ids(template: dict[str, Any], kind: str) -> set[str]:
    return {k for k, r in template[kind].items() if r.get("Condition") == CONDITION}


def test_the_submission_exists_only_when_enabled_and_refers_to_nothing_absent(template: dict[str, Any]) -> None:
    resources, outputs = _submission_ids(template, "Resources"), _submission_ids(template, "Outputs")
    assert {r["Type"] for k, r in template["Resources"].items() if k in resources} >= {
        "AWS::ECS::Cluster", "AWS::ECS::TaskDefinition", "AWS::ECS::Service", "AWS::IAM::Role",
        "AWS::Logs::LogGroup", "AWS::EC2::SecurityGroup", "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::TargetGroup",
        "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy"}
    assert outputs == {"SmtpSubmissionHost", "SmtpSubmissionPorts"}
    # Everything the submission added is under the condition (a stack without it is unchanged).
    named = {k for k in template["Resources"] if k.startswith(("SmtpSubmission", "SmtpPublic"))}
    assert named == resources

    off_res, off_out, off_dangling = _render(template, {})
    assert not off_res & resources and not off_out & outputs and not off_dangling
    on_res, on_out, on_dangling = _render(template, ON)
    assert resources <= on_res and outputs <= on_out and not on_dangling, on_dangling
    assert on_res - off_res == resources  # and turning it on changes nothing else

    # In someone else's subnets (SenderSubnetIds set) it stays off, and the Rule says why.
    with_subnets = {**ON, "SenderSubnetIds": "subnet-1", "SenderSecurityGroupIds": "sg-1"}
    assert not _render(template, with_subnets)[0] & resources
    asserts = template["Rules"]["SmtpSubmissionNeedsItsInputs"]["Assertions"]
    assert template["Rules"]["SmtpSubmissionNeedsItsInputs"]["RuleCondition"] == {
        "Fn::Equals": [{"Ref": "EnableSmtpSubmission"}, "true"]}
    assert {"Fn::Equals": [{"Fn::Join": ["", {"Ref": "SenderSubnetIds"}]}, ""]} in [a["Assert"] for a in asserts]
    assert template["Parameters"]["EnableSmtpSubmission"]["Default"] == "false"


@pytest.mark.parametrize("overrides", [{}, ON], ids=["off", "on"])
def test_cfn_lint_is_clean_with_the_submission_off_and_on(overrides: dict[str, str]) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    params = [f"{k}={v}" for k, v in {**REQUIRED, **overrides}.items()]
    run = subprocess.run([str(cfn_lint), "template.yaml", "--parameters", *params], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


# ---- the network path: NLB 587/465 -> target groups -> the container's ports ---------------

def _container(template: dict[str, Any]) -> dict[str, Any]:
    (container,) = props(template, "SmtpSubmissionTaskDefinition")["ContainerDefinitions"]
    return container


def _env(template: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in _container(template)["Environment"]}


def _listeners(template: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["Port"]: p for k in _submission_ids(template, "Resources")
            if res(template, k)["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
            for p in [props(template, k)]}


def test_the_nlb_passes_tcp_587_and_465_through_to_the_containers_ports(template: dict[str, Any]) -> None:
    lb = props(template, "SmtpSubmissionLoadBalancer")
    assert (lb["Type"], lb["Scheme"]) == ("network", "internet-facing")
    listeners = _listeners(template)
    assert set(listeners) == {587, 465}
    service = props(template, "SmtpSubmissionService")
    to_container = {b["TargetGroupArn"]["Ref"]: b["ContainerPort"] for b in service["LoadBalancers"]}
    env = _env(template)
    wanted = {587: env["OUTPOST_SUBMISSION_STARTTLS_PORT"], 465: env["OUTPOST_SUBMISSION_TLS_PORT"]}
    for port, listener in listeners.items():
        # TCP, not TLS: STARTTLS on 587 upgrades a plaintext SMTP session, which only the
        # server can do, so TLS ends in the container on both ports.
        assert listener["Protocol"] == "TCP" and listener["LoadBalancerArn"] == {"Ref": "SmtpSubmissionLoadBalancer"}
        ((action,),) = [listener["DefaultActions"]]
        group = action["TargetGroupArn"]["Ref"]
        tg = props(template, group)
        assert (tg["Protocol"], tg["TargetType"], tg["HealthCheckProtocol"]) == ("TCP", "ip", "TCP")
        assert str(tg["Port"]) == str(to_container[group]) == wanted[port]
        attrs = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
        # The server sees the client's address (per-client AUTH lockout, the CIDR rule).
        assert attrs["preserve_client_ip.enabled"] == "true"
        assert attrs["deregistration_delay.connection_termination.enabled"] == "false"
    assert {m["ContainerPort"] for m in _container(template)["PortMappings"]} == {int(p) for p in wanted.values()}
    assert env["OUTPOST_SUBMISSION_HOST"] == "0.0.0.0"
    # The NLB in the public subnets (routed to the internet gateway), the tasks in the private
    # ones (out through the NAT), without public addresses.
    public = {r["Properties"]["SubnetId"]["Ref"] for r in template["Resources"].values()
              if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"
              and r["Properties"]["RouteTableId"] == {"Ref": "PublicRouteTable"}}
    assert {s["Ref"] for s in lb["Subnets"]} == public == {"PublicSubnet", "SmtpPublicSubnetB"}
    net = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net["AssignPublicIp"] == "DISABLED"
    assert net["Subnets"] == props(template, "SenderFunction")["VpcConfig"]["SubnetIds"]["Fn::If"][1]
    assert [s["Ref"] for s in net["Subnets"]] == ["PrivateSubnetA", "PrivateSubnetB"]
    outputs = template["Outputs"]
    assert outputs["SmtpSubmissionHost"]["Value"] == {"Fn::GetAtt": ["SmtpSubmissionLoadBalancer", "DNSName"]}
    assert "587" in outputs["SmtpSubmissionPorts"]["Value"] and "465" in outputs["SmtpSubmissionPorts"]["Value"]


def test_the_security_group_admits_the_client_cidr_and_the_nlbs_health_checks_only(template: dict[str, Any]) -> None:
    sg = props(template, "SmtpSubmissionSecurityGroup")
    ports = {m["ContainerPort"] for m in _container(template)["PortMappings"]}
    lb_subnets = props(template, "SmtpSubmissionLoadBalancer")["Subnets"]
    lb_subnet_cidrs = [props(template, s["Ref"])["CidrBlock"] for s in lb_subnets]
    wanted = {(p, str(c)) for p in ports for c in [{"Ref": "SmtpSubmissionAllowedCidr"}, *lb_subnet_cidrs]}
    got = set()
    for rule in sg["SecurityGroupIngress"]:
        assert rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"]
        assert set(rule) <= {"IpProtocol", "FromPort", "ToPort", "CidrIp", "Description"}
        got.add((rule["FromPort"], str(rule["CidrIp"])))
    assert got == wanted and len(sg["SecurityGroupIngress"]) == len(wanted)
    assert sg["SecurityGroupEgress"] == [
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0", "Description": "AWS APIs"}]
    net = props(template, "SmtpSubmissionService")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net["SecurityGroups"] == [{"Ref": "SmtpSubmissionSecurityGroup"}]
    # The second public subnet takes VpcCidr's spare fourth /24, not one already in use.
    used = [props(template, k)["CidrBlock"]["Fn::Select"][0] for k, r in template["Resources"].items()
            if r["Type"] == "AWS::EC2::Subnet"]
    assert sorted(used) == [0, 1, 2, 3]
    cidr = template["Parameters"]["SmtpSubmissionAllowedCidr"]
    assert cidr["Default"] == "0.0.0.0/0"
    pattern = re.compile(cidr["AllowedPattern"])
    assert all(pattern.fullmatch(c) for c in ("0.0.0.0/0", "203.0.113.0/24", "198.51.100.7/32"))
    assert not any(pattern.fullmatch(c) for c in ("203.0.113.0/33", "203.0.113.0", "::/0", "300.0.0.0/8"))


# ---- the roles -------------------------------------------------------------------------------

def _canon(resource: Any) -> str:
    """One spelling per ARN: SAM's policy templates and the template's own !GetAtt / !Sub."""
    if isinstance(resource, str):
        return resource
    if "Fn::GetAtt" in resource:
        return ".".join(resource["Fn::GetAtt"])
    if "Ref" in resource:
        return "Ref:" + resource["Ref"]
    arg = resource["Fn::Sub"]
    text, local = (arg, {}) if isinstance(arg, str) else arg
    for name, value in local.items():
        text = text.replace("${" + name + "}", _canon(value))
    text = re.sub(r"\$\{(\w+\.Arn)\}", r"\1", text)
    def arn(service: str) -> str:
        return re.escape(f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:")

    text = re.sub(arn("dynamodb") + r"table/Ref:(\w+)", r"\1.Arn", text)
    return re.sub(arn("sqs") + r"(\w+)\.QueueName", r"\1.Arn", text)


def _grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    out = set()
    for s in statements:
        assert s["Effect"] == "Allow" and "Condition" not in s, s
        actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        out |= {(a, _canon(r)) for a in actions for r in resources}
    return out


def _send_api_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    processor = PolicyTemplatesProcessor(PolicyTemplatesProcessor.get_default_policy_templates_json())
    out = []
    for policy in props(template, "SendApiFunction")["Policies"]:
        assert isinstance(policy, dict), f"a managed policy on the send API: {policy}"
        if "Statement" in policy:
            out += policy["Statement"]
        else:
            ((name, params),) = policy.items()
            out += processor.convert(name, params)["Statement"]
    return out


def _task_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in props(template, "SmtpSubmissionTaskRole")["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_the_task_role_has_only_send_api_sending_permissions(template: dict[str, Any]) -> None:
    """Within the send API's sending permissions; which of them, exactly, is decided by the calls
    an SMTP session makes (tests/integration/test_submission_iam.py)."""
    api = _send_api_statements(template)
    assert set(NOT_SENDING) <= {s.get("Sid") for s in api}  # the exclusions still name real statements
    sending = _grants([s for s in api if s.get("Sid") not in NOT_SENDING])
    # sqs:SendMessage* is IAM's wildcard for the two SendMessage actions; the task spells them.
    expected = {(a, r) for a, r in sending if a != "sqs:SendMessage*"}
    expected |= {(a, r) for w, r in sending if w == "sqs:SendMessage*" for a in SQS_SEND}
    task = [s for s in _task_statements(template) if s["Sid"] != "ReadTlsCertificate"]
    granted = _grants(task)
    assert granted <= expected, granted - expected
    assert not [a for a, _ in granted if "*" in a or "?" in a]
    # The sending core is really in there (the comparison above is not between two empty sets).
    assert {("dynamodb:GetItem", "ApiKeysTable.Arn"), ("sqs:SendMessage", "SendQueue.Arn"),
            ("dynamodb:PutItem", "MessagesTable.Arn"), ("s3:PutObject", "${MailBucket.Arn}/bodies/*".replace(
                "${MailBucket.Arn}", "MailBucket.Arn"))} <= granted
    assert all(fnmatch.fnmatchcase(a, "sqs:SendMessage*") for a in SQS_SEND)


def test_the_certificate_permission_is_the_one_secret(template: dict[str, Any]) -> None:
    secrets = [s for s in _task_statements(template) if any(
        a.startswith("secretsmanager:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    assert secrets == [{"Sid": "ReadTlsCertificate", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                        "Resource": {"Ref": "SmtpSubmissionTlsSecretArn"}}]
    assert _env(template)["OUTPOST_SUBMISSION_TLS_SECRET"] == {"Ref": "SmtpSubmissionTlsSecretArn"}
    # The parameter is one full secret ARN (name plus Secrets Manager's 6-character suffix):
    # no wildcard can widen the grant to other secrets.
    pattern = re.compile(template["Parameters"]["SmtpSubmissionTlsSecretArn"]["AllowedPattern"])
    assert pattern.fullmatch(ON["SmtpSubmissionTlsSecretArn"]) and pattern.fullmatch("")
    for bad in ("arn:aws:secretsmanager:eu-west-1:123456789012:secret:*",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:outpost/*-AbC123",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:outpost/smtp-tls-??????",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:outpost/smtp-tls",
                "outpost/smtp-tls"):
        assert not pattern.fullmatch(bad), bad


def test_the_roles_belong_to_ecs_tasks_and_the_execution_role_only_pulls_and_logs(template: dict[str, Any]) -> None:
    for role in ("SmtpSubmissionTaskRole", "SmtpSubmissionExecutionRole"):
        (trust,) = props(template, role)["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
        assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        assert "ManagedPolicyArns" not in props(template, role)
    execution = _grants([s for p in props(template, "SmtpSubmissionExecutionRole")["Policies"]
                         for s in p["PolicyDocument"]["Statement"]])
    assert {a for a, _ in execution} == {"ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
                                         "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage",
                                         "logs:CreateLogStream", "logs:PutLogEvents"}
    assert {r for a, r in execution if a.startswith("logs:")} == {"SmtpSubmissionLogGroup.Arn"}
    task = props(template, "SmtpSubmissionTaskDefinition")
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["SmtpSubmissionTaskRole", "Arn"]}
    assert task["ExecutionRoleArn"] == {"Fn::GetAtt": ["SmtpSubmissionExecutionRole", "Arn"]}


# ---- the task and its scaling ----------------------------------------------------------------

def test_the_task_gets_the_functions_settings_plus_the_servers_own(template: dict[str, Any]) -> None:
    env, globals_ = _env(template), template["Globals"]["Function"]["Environment"]["Variables"]
    own = {"OUTPOST_SUBMISSION_HOST", "OUTPOST_SUBMISSION_STARTTLS_PORT", "OUTPOST_SUBMISSION_TLS_PORT",
           "OUTPOST_SUBMISSION_TLS_SECRET", "OUTPOST_SUBMISSION_HOSTNAME", "AWS_DEFAULT_REGION",
           "OUTPOST_SUBMISSION_MEMORY_MB"}
    # A setting added to the functions' Globals must be added to the task too (or here, with why).
    assert set(env) - own == set(globals_), (set(globals_) - set(env), set(env) - own - set(globals_))
    for name, value in globals_.items():
        if isinstance(value, dict) and "Fn::If" in value:  # the stack's own network is a given here
            assert value["Fn::If"][0] == "CreateNetwork"
            value = value["Fn::If"][1]
        assert env[name] == value, name
    # The greeting names the host clients connect to (the certificate's), else the sender's.
    assert env["OUTPOST_SUBMISSION_HOSTNAME"] == {"Fn::If": [
        "SmtpSubmissionNamed", {"Ref": "SmtpSubmissionHostname"}, {"Ref": "SendingHostname"}]}
    container = _container(template)
    assert container["Image"] == {"Ref": "SmtpSubmissionImage"} and container["Essential"] is True
    # A stopping task: the NLB drains it (deregistration delay), then SIGTERM reaches the
    # server (an init process is PID 1), which has StopTimeout (Fargate's most, 120 s) to end.
    assert container["StopTimeout"] == 120 and container["LinuxParameters"] == {"InitProcessEnabled": True}
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "SmtpSubmissionLogGroup"}
    task = props(template, "SmtpSubmissionTaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"
    assert task["RuntimePlatform"]["CpuArchitecture"] == {"Fn::If": ["SmtpSubmissionOnX86", "X86_64", "ARM64"]}
    assert template["Parameters"]["Architecture"]["Default"] == "arm64"
    assert (task["Cpu"], task["Memory"]) == ("256", "2048")  # a valid Fargate pair


def test_the_servers_memory_budget_and_drain_fit_the_task(template: dict[str, Any]) -> None:
    """The message bytes the server lets in (its budget, held about HOLD_FACTOR times, plus the
    reserve) fit the task's memory, which the server is told; its drain ends before ECS's
    SIGKILL (StopTimeout), goodbyes included."""
    from outpost.submission.drain import Sessions
    from outpost.submission.settings import HOLD_FACTOR, MEMORY_RESERVE_MB, SubmissionSettings

    task = props(template, "SmtpSubmissionTaskDefinition")
    env = _env(template)
    assert env["OUTPOST_SUBMISSION_MEMORY_MB"] == task["Memory"]
    settings = SubmissionSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    mib = 1024 * 1024
    assert settings.data_budget * HOLD_FACTOR + MEMORY_RESERVE_MB * mib <= int(task["Memory"]) * mib
    assert settings.data_budget >= 6 * settings.max_message_bytes * 17 // 16  # six 40 MB messages at once
    assert settings.drain_seconds + Sessions().grace + 10 <= _container(template)["StopTimeout"]


def test_autoscaling_tracks_open_connections_per_healthy_task(template: dict[str, Any]) -> None:
    target = props(template, "SmtpSubmissionScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == ({"Ref": "SmtpSubmissionMinTasks"},
                                                              {"Ref": "SmtpSubmissionMaxTasks"})
    assert target["ResourceId"] == {"Fn::Sub": "service/${SmtpSubmissionCluster}/${SmtpSubmissionService.Name}"}
    assert props(template, "SmtpSubmissionService")["DesiredCount"] == {"Ref": "SmtpSubmissionMinTasks"}
    assert template["Parameters"]["SmtpSubmissionMinTasks"]["MinValue"] >= 1
    policy = props(template, "SmtpSubmissionScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == {"Ref": "SmtpSubmissionScalableTarget"}
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == {"Ref": "SmtpSubmissionConnectionsPerTask"}
    queries = {q["Id"]: q for q in tracking["CustomizedMetricSpecification"]["Metrics"]}
    metrics = {q["MetricStat"]["Metric"]["MetricName"]: q for q in queries.values() if "MetricStat" in q}
    lb = {"Name": "LoadBalancer", "Value": {"Fn::GetAtt": ["SmtpSubmissionLoadBalancer", "LoadBalancerFullName"]}}
    assert metrics["ActiveFlowCount"]["MetricStat"]["Metric"]["Dimensions"] == [lb]
    assert lb in metrics["HealthyHostCount"]["MetricStat"]["Metric"]["Dimensions"]
    (result,) = [q for q in queries.values() if q.get("ReturnData", True)]
    flows, tasks = metrics["ActiveFlowCount"]["Id"], metrics["HealthyHostCount"]["Id"]
    # flows / tasks, and no flows at all (the NLB then publishes nothing) reads as 0.
    assert f"FILL({flows}, 0) / {tasks}" in result["Expression"]


# ---- the image ---------------------------------------------------------------------------------

def test_the_image_copies_sources_that_exist_and_the_build_context_keeps(template: dict[str, Any]) -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.12-slim")
    ignore = ignore_patterns()
    copies = [shlex.split(arg) for kind, arg in steps if kind == "COPY"]
    assert copies
    for *sources, _dest in copies:
        for src in sources:
            files = [f for f in (ROOT / src).rglob("*") if f.is_file()] if (ROOT / src).is_dir() else [ROOT / src]
            assert files and all(f.exists() for f in files), src
            kept = [f for f in files if "__pycache__" not in f.parts]
            lost = [str(f.relative_to(ROOT)) for f in kept if ignored(str(f.relative_to(ROOT)), ignore)]
            assert not lost, f".dockerignore drops what the image copies: {lost[:3]}"
    assert ignored(".venv/bin/python", ignore) and ignored(".local-aws/x.jar", ignore)
    # The library lands on PYTHONPATH as the `outpost` package, and runs as the issue says.
    (layer_copy,) = [c for c in copies if c[0] == "layers/outpost/outpost"]
    env = image_env(steps)
    assert layer_copy[1] == env["PYTHONPATH"] + "/outpost"
    assert ("CMD", '["python", "-m", "outpost.submission"]') in steps
    # Non-root, on the ports the task definition maps and the NLB targets.
    (user,) = [arg for kind, arg in steps if kind == "USER"]
    assert int(user.split(":")[0]) != 0
    (expose,) = [arg for kind, arg in steps if kind == "EXPOSE"]
    mapped = {str(m["ContainerPort"]) for m in _container(template)["PortMappings"]}
    assert set(expose.split()) == mapped
    assert {env["OUTPOST_SUBMISSION_STARTTLS_PORT"], env["OUTPOST_SUBMISSION_TLS_PORT"]} == mapped


def test_the_image_installs_the_hash_locked_requirements() -> None:
    steps = instructions()
    (copy,) = [shlex.split(arg) for kind, arg in steps if kind == "COPY" and "requirements.txt" in arg]
    assert ROOT / copy[0] == IMAGE_LOCK
    (install,) = [arg for kind, arg in steps if kind == "RUN" and "pip install" in arg]
    assert "--require-hashes" in install and f"-r {copy[1]}" in install
    image, layer, dev = _requirements(IMAGE_LOCK), _requirements(LAYER_LOCK), _requirements(DEV_LOCK)
    assert all(hashes for _, hashes in image.values())
    # The container runs what the layer ships: every layer package, at the layer's version...
    assert {n: v for n, (v, _) in layer.items()} == {n: image[n][0] for n in layer if n in image}
    assert set(layer) <= set(image)
    # ...plus boto3 (the Lambda runtime's, so not in the layer) and the SMTP server, at the
    # versions the tests run.
    for extra in ("boto3", "botocore", "aiosmtpd"):
        assert image[extra][0] == dev[extra][0], extra
    assert set(image) - set(layer) <= {"boto3", "botocore", "aiosmtpd", "atpublic", "attrs", "jmespath",
                                       "s3transfer", "python-dateutil", "six", "urllib3"}
