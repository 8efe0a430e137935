"""SnapStart in template.yaml (issue 15 item 2), checked on the template SAM deploys.

SnapStart applies to published versions only: an invoker that names the function itself (its
unqualified ARN, i.e. $LATEST) runs without it. So the template is transformed offline with
the SAM translator (as `sam deploy` would, code URIs replaced as `sam package` would), and
every reference to a SnapStart function is walked: anything that can invoke it (API Gateway
integrations, event source mappings, permissions, rules, receipt rules, IAM statements, ...)
must name the alias; only its own versions and alias, its log group and alarms may name the
function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
# The user-facing cold starts: the API a signup form waits on, and the sender whose scale-out
# under a burst of mail is all cold starts. The others are schedules and async event
# consumers where a cold start delays no one (README, "SnapStart").
SNAPSTART = {"SendApiFunction", "SenderFunction"}
ALIAS = "live"
# Resource types that may name a SnapStart function without invoking it.
NAMES_ONLY = {"AWS::Lambda::Version", "AWS::Lambda::Alias", "AWS::Logs::LogGroup", "AWS::CloudWatch::Alarm"}


class _ManagedPolicies:
    """The translator's map of AWS managed policy names (a deploy reads it from IAM)."""

    def load(self) -> dict[str, str]:
        return {name: f"arn:aws:iam::aws:policy/service-role/{name}"
                for name in ("AWSLambdaVPCAccessExecutionRole", "AWSXrayWriteOnlyAccess",
                             "AWSXRayDaemonWriteAccess")}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return yaml_parse((ROOT / "template.yaml").read_text())


@pytest.fixture(scope="module")
def deployed(sam: dict[str, Any], monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch_module.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the translator's pseudo-parameters
    template = json.loads(json.dumps(sam))
    for logical_id, resource in template["Resources"].items():
        for uri in ("CodeUri", "ContentUri"):
            if uri in resource.get("Properties", {}):
                resource["Properties"][uri] = f"s3://artifacts/{logical_id}.zip"
    return transform(template, {}, _ManagedPolicies())["Resources"]


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _references(node: Any, name: str) -> Iterator[str]:
    """Every way `node` names resource `name`: 'Ref', 'GetAtt.<attr>', 'Sub' (${name...})."""
    if isinstance(node, dict):
        if node.get("Ref") == name:
            yield "Ref"
        getatt = node.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt and getatt[0] == name:
            yield f"GetAtt.{getatt[1]}"
        sub = node.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) else sub
        if isinstance(text, str) and re.search(r"\$\{" + re.escape(name) + r"[.}]", text):
            yield "Sub"
        for value in node.values():
            yield from _references(value, name)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value, name)


def test_snapstart_is_on_the_api_and_the_sender_only(sam: dict[str, Any], deployed: dict[str, Any]) -> None:
    functions = {k: v for k, v in deployed.items() if v["Type"] == "AWS::Lambda::Function"}
    on = {k for k, v in functions.items() if v["Properties"].get("SnapStart") == {"ApplyOn": "PublishedVersions"}}
    assert on == SNAPSTART
    runtime = sam["Globals"]["Function"]["Runtime"]
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12  # SnapStart for Python: 3.12+
    for name in SNAPSTART:
        assert sam["Resources"][name]["Properties"]["AutoPublishAlias"] == ALIAS
        props = functions[name]["Properties"]
        # What SnapStart does not support: EFS, more than 512 MB of /tmp.
        assert "FileSystemConfigs" not in props
        assert props.get("EphemeralStorage", {"Size": 512})["Size"] <= 512
        alias = deployed[f"{name}Alias{ALIAS}"]
        assert alias["Type"] == "AWS::Lambda::Alias" and alias["Properties"]["Name"] == ALIAS
        version = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
        assert deployed[version]["Type"] == "AWS::Lambda::Version"
        assert deployed[version]["Properties"]["FunctionName"] == {"Ref": name}


def test_every_invoker_of_a_snapstart_function_uses_the_alias(deployed: dict[str, Any]) -> None:
    for name in SNAPSTART:
        alias = f"{name}Alias{ALIAS}"
        invokers = {k for k, v in deployed.items() if list(_references(v, alias))}
        unqualified = {k: sorted(set(_references(v, name))) for k, v in deployed.items()
                       if v["Type"] not in NAMES_ONLY and list(_references(v, name))}
        assert unqualified == {}, f"these name {name} itself (so $LATEST, without SnapStart), not its alias"
        kinds = {deployed[k]["Type"] for k in invokers}
        if name == "SendApiFunction":
            # The REST API's integration and API Gateway's invoke permission.
            assert {"AWS::Serverless::Api", "AWS::ApiGateway::RestApi", "AWS::Lambda::Permission"} & kinds
            body = json.dumps(deployed["OutpostApi"]["Properties"]["Body"])
            assert "${SendApiFunctionAliaslive}/invocations" in body
            assert "AWS::Lambda::Permission" in kinds
        else:
            mappings = {k for k in invokers if deployed[k]["Type"] == "AWS::Lambda::EventSourceMapping"}
            assert mappings == {"SenderFunctionSend", "SenderFunctionRetry"}  # both queues' pollers


def test_the_walk_sees_an_unqualified_invoker(deployed: dict[str, Any]) -> None:
    # The check above could pass by seeing nothing: a permission naming the function itself,
    # as a hand-written AWS::Lambda::Permission with !GetAtt SenderFunction.Arn would, is caught.
    rogue = {"Type": "AWS::Lambda::Permission",
             "Properties": {"FunctionName": {"Fn::GetAtt": ["SenderFunction", "Arn"]},
                            "Action": "lambda:InvokeFunction", "Principal": "events.amazonaws.com"}}
    assert list(_references(rogue, "SenderFunction")) == ["GetAtt.Arn"]
    assert list(_references({"Fn::Sub": "arn:${SendApiFunction.Arn}:x"}, "SendApiFunction")) == ["Sub"]
    assert list(_references({"Fn::Sub": "${SendApiFunctionAliaslive}"}, "SendApiFunction")) == []
