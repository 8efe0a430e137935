"""ApiType (issue 15 item 4): the send API as a REST API (default, with the WAF) or an HTTP API.

The template is transformed offline with the SAM translator (as `sam deploy` would), and its
Conditions evaluated for each value (test_nat.py's evaluator), so each test states what a stack
of either type holds: its one API, that API's stage, permission and route to the function's
alias, and nothing else different. cfn-lint then proves the template lints with either value
as the default, which is what `sam validate --lint` in .ci/sam_check.sh sees.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse
from test_nat import cfn_lint_with_default, conditions_for
from test_smtp_submission import _references
from test_template_snapstart import _ManagedPolicies

ROOT = Path(__file__).resolve().parents[2]
TYPES = ("REST", "HTTP")
ALIAS_URI = "/functions/${SendApiFunctionAliaslive}/invocations"
# What only a stack of each type holds (the REST API's deployment's id is a hash of its body).
REST_ONLY = {"OutpostApi": "AWS::ApiGateway::RestApi", "OutpostApiprodStage": "AWS::ApiGateway::Stage",
             "OutpostApiDeployment*": "AWS::ApiGateway::Deployment", "SendApiRestPermission": "AWS::Lambda::Permission",
             "ApiWebAcl": "AWS::WAFv2::WebACL", "ApiWebAclAssociation": "AWS::WAFv2::WebACLAssociation"}
HTTP_ONLY = {"OutpostHttpApi": "AWS::ApiGatewayV2::Api",
             "OutpostHttpApiApiGatewayDefaultStage": "AWS::ApiGatewayV2::Stage",
             "SendApiHttpPermission": "AWS::Lambda::Permission"}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return yaml_parse((ROOT / "template.yaml").read_text())


@pytest.fixture(scope="module")
def deployed() -> dict[str, Any]:
    """The template as CloudFormation receives it (code URIs as `sam package` leaves them)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        template = yaml_parse((ROOT / "template.yaml").read_text())
        for logical_id, resource in template["Resources"].items():
            for uri in ("CodeUri", "ContentUri"):
                if uri in resource.get("Properties", {}):
                    resource["Properties"][uri] = f"s3://artifacts/{logical_id}.zip"
        return transform(template, {}, _ManagedPolicies())


def stack_of(deployed: dict[str, Any], sam: dict[str, Any], api_type: str, **given: Any) -> tuple[dict, dict, dict]:
    """(resources, outputs, conditions) of a stack deployed with ApiType=api_type."""
    cond = conditions_for(sam, ApiType=api_type, **given)
    resources = {k: r for k, r in deployed["Resources"].items() if cond.get(r.get("Condition", ""), True)}
    outputs = {k: o for k, o in deployed["Outputs"].items() if cond.get(o.get("Condition", ""), True)}
    return resources, outputs, cond


def _kinds(resources: dict[str, Any], table: dict[str, str]) -> dict[str, str]:
    """The type of the one resource each name (or pattern) of `table` matches: 'absent' if none."""
    def kind(pattern: str) -> str:
        names = [k for k in resources if re.fullmatch(pattern.replace("*", "[0-9a-f]{10}"), k)]
        return "absent" if not names else resources[names[0]]["Type"] if len(names) == 1 else "several"
    return {pattern: kind(pattern) for pattern in table}


def test_api_type_defaults_to_rest(sam: dict[str, Any]) -> None:
    p = sam["Parameters"]["ApiType"]
    assert p["Default"] == "REST" and p["AllowedValues"] == ["REST", "HTTP"]


def test_each_type_creates_its_own_api_and_nothing_else_differs(deployed: dict[str, Any], sam: dict[str, Any]) -> None:
    rest, rest_out, _ = stack_of(deployed, sam, "REST")
    http, http_out, _ = stack_of(deployed, sam, "HTTP")
    assert _kinds(rest, REST_ONLY) == REST_ONLY  # the WAF too: ApiRateLimitPerIp defaults to 6000
    assert _kinds(http, HTTP_ONLY) == HTTP_ONLY
    assert set(_kinds(rest, HTTP_ONLY).values()) == {"absent"}
    assert set(_kinds(http, REST_ONLY).values()) == {"absent"}
    # No REST API piece, WAF or usage plan in an HTTP stack; no HTTP API piece in a REST one.
    assert not {r["Type"] for r in http.values() if r["Type"].startswith(("AWS::ApiGateway::", "AWS::WAFv2::"))}
    assert not {r["Type"] for r in rest.values() if r["Type"].startswith("AWS::ApiGatewayV2::")}
    assert "AWS::ApiGateway::UsagePlan" not in {r["Type"] for r in deployed["Resources"].values()}
    # Everything else is the same stack, and both answer on the same output.
    assert set(rest) - set(http) == {k for k in rest if k.startswith(("OutpostApi", "SendApiRest", "ApiWebAcl"))}
    assert set(http) - set(rest) == {k for k in http if k.startswith(("OutpostHttpApi", "SendApiHttp"))}
    assert set(rest_out) == set(http_out) and "ApiUrl" in rest_out
    # ApiRateLimitPerIp set or not, an HTTP stack has no WAF (HTTP APIs cannot have one).
    waf, _, _ = stack_of(deployed, sam, "HTTP", ApiRateLimitPerIp="100")
    assert not {k for k in waf if k.startswith("ApiWebAcl")}


@pytest.mark.parametrize("api_type", TYPES)
def test_every_route_reaches_the_functions_alias_with_the_rest_event(
        deployed: dict[str, Any], sam: dict[str, Any], api_type: str) -> None:
    resources, _, _ = stack_of(deployed, sam, api_type)
    api = "OutpostApi" if api_type == "REST" else "OutpostHttpApi"
    paths = resources[api]["Properties"]["Body"]["paths"]
    assert list(paths) == ["/{proxy+}"] and list(paths["/{proxy+}"]) == ["x-amazon-apigateway-any-method"]
    integration = paths["/{proxy+}"]["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy" and integration["httpMethod"] == "POST"
    assert integration["uri"]["Fn::Sub"].endswith(ALIAS_URI)  # SnapStart: the alias, never $LATEST
    # The HTTP API sends payload format 1.0: the REST proxy event the handler parses (a REST
    # API has only that format, and no such setting).
    assert integration.get("payloadFormatVersion") == ("1.0" if api_type == "HTTP" else None)
    (permission,) = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"
                     and r["Properties"]["FunctionName"] == {"Ref": "SendApiFunctionAliaslive"}]
    assert permission["Properties"]["Principal"] == "apigateway.amazonaws.com"
    assert f":${{{api}}}/*" in permission["Properties"]["SourceArn"]["Fn::Sub"]
    # Every route the app serves is under ANY /{proxy+} (one or more path segments).
    for method, path in app_routes():
        assert re.fullmatch(r"/[^/].*", path), (method, path)


def app_routes() -> list[tuple[str, str]]:
    from outpost.api.auth import KeyRing
    from outpost.api.events import EventsApi
    from outpost.api.routes import build_app, routes_of
    from tests.fakes.events import FakeEventLog
    from tests.fakes.store import FakeApiKeys

    app = build_app(keys=KeyRing(FakeApiKeys()), sender=None, queries=None,  # type: ignore[arg-type]
                    domains=None, events=EventsApi(FakeEventLog()))  # type: ignore[arg-type]
    routes = [(r.method, r.path) for r in routes_of(app)]
    assert len(routes) >= 10 and ("POST", "/v1/messages") in routes and ("GET", "/openapi.json") in routes
    return routes


@pytest.mark.parametrize("api_type", TYPES)
def test_the_url_and_throttle_are_the_types_and_nothing_refers_to_an_absent_resource(
        deployed: dict[str, Any], sam: dict[str, Any], api_type: str) -> None:
    resources, outputs, cond = stack_of(deployed, sam, api_type)
    url = outputs["ApiUrl"]["Value"]["Fn::If"]
    assert url[0] == "UseHttpApi"
    taken = url[1] if cond["UseHttpApi"] else url[2]
    assert taken == {"Fn::Sub": {
        "REST": "https://${OutpostApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/prod",
        "HTTP": "https://${OutpostHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}[api_type]}
    # The same throttle: the REST stage's method settings, the HTTP stage's default route settings.
    if api_type == "REST":
        (throttle,) = resources["OutpostApiprodStage"]["Properties"]["MethodSettings"]
    else:
        throttle = resources["OutpostHttpApiApiGatewayDefaultStage"]["Properties"]["DefaultRouteSettings"]
    assert (throttle["ThrottlingBurstLimit"], throttle["ThrottlingRateLimit"]) == (100, 50)
    # No resource or output of this stack names one that it does not have.
    known = set(resources) | set(sam["Parameters"])
    dangling = {f"{k} -> {r}" for kind, items in (("Properties", resources), ("Value", outputs))
                for k, item in items.items() for r in _references(item.get(kind, {}), cond)
                if not r.startswith("AWS::") and r not in known}
    assert not dangling


@pytest.mark.parametrize("api_type", TYPES)
def test_cfn_lint_is_clean_with_either_type_as_the_default(api_type: str, tmp_path: Path) -> None:
    out = cfn_lint_with_default(tmp_path, "ApiType", "REST", api_type)
    assert out.returncode == 0, out.stdout + out.stderr
