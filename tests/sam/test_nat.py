"""NatMode (issue 15 item 5): the NAT gateway or one NAT instance, the same Elastic IP either way.

The template's Conditions are evaluated here for each mode (a small evaluator for the
intrinsics they use), so each test states which resources and route targets exist in which
mode; cfn-lint then proves the template lints with either mode as the default, which is what
`sam validate --lint` in .ci/sam_check.sh sees.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
MODES = ("gateway", "instance")
GATEWAY_ONLY = {"NatGateway"}
INSTANCE_ONLY = {"NatInstance", "NatInstanceSecurityGroup", "NatInstanceEipAssociation",
                 "NatInstanceRecoverAlarm", "NatInstanceRebootAlarm"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml_parse((ROOT / "template.yaml").read_text())


def _params(template: dict[str, Any], **given: Any) -> dict[str, Any]:
    out = {k: v.get("Default", "") for k, v in template["Parameters"].items()}
    out["SenderSubnetIds"] = []  # CommaDelimitedList default "": the stack builds the network
    out.update(given)
    return out


def _value(node: Any, params: dict[str, Any], conditions: dict[str, Any]) -> Any:
    """The intrinsics the Conditions section uses: Ref, Fn::Join, Fn::Equals/And/Or/Not, Condition."""
    if not isinstance(node, dict):
        return node
    (fn, arg), = node.items()
    v = lambda x: _value(x, params, conditions)  # noqa: E731 - a local shorthand
    if fn == "Ref":
        return params[arg]
    if fn == "Fn::Join":
        return arg[0].join(v(arg[1]) if not isinstance(arg[1], list) else [v(x) for x in arg[1]])
    if fn == "Fn::Equals":
        return str(v(arg[0])) == str(v(arg[1]))
    if fn == "Fn::And":
        return all(v(x) for x in arg)
    if fn == "Fn::Or":
        return any(v(x) for x in arg)
    if fn == "Fn::Not":
        return not v(arg[0])
    if fn == "Condition":
        return _value(conditions[arg], params, conditions)
    raise AssertionError(f"no evaluator for {fn}")


def conditions_for(template: dict[str, Any], **given: Any) -> dict[str, bool]:
    params = _params(template, **given)
    raw = template["Conditions"]
    return {name: bool(_value(expr, params, raw)) for name, expr in raw.items()}


def resources_for(template: dict[str, Any], **given: Any) -> set[str]:
    cond = conditions_for(template, **given)
    return {k for k, r in template["Resources"].items() if "Condition" not in r or cond[r["Condition"]]}


def resolved_if(node: Any, cond: dict[str, bool]) -> Any:
    """A property with its Fn::If picked for these conditions (None for AWS::NoValue)."""
    if isinstance(node, dict) and "Fn::If" in node:
        name, yes, no = node["Fn::If"]
        picked = yes if cond[name] else no
        return None if picked == {"Ref": "AWS::NoValue"} else picked
    return node


def test_nat_mode_defaults_to_the_gateway(template: dict[str, Any]) -> None:
    p = template["Parameters"]["NatMode"]
    assert p["Default"] == "gateway" and p["AllowedValues"] == ["gateway", "instance"]
    assert template["Parameters"]["NatInstanceType"]["Default"] == "t4g.nano"


def test_the_gateway_exists_only_in_gateway_mode_and_the_instance_only_in_instance_mode(
        template: dict[str, Any]) -> None:
    gateway = resources_for(template, NatMode="gateway")
    instance = resources_for(template, NatMode="instance")
    assert GATEWAY_ONLY <= gateway and not (INSTANCE_ONLY & gateway)
    assert INSTANCE_ONLY <= instance and not (GATEWAY_ONLY & instance)
    # Everything else of the network is the same in both modes (subnets, EIP, endpoints)
    assert gateway - GATEWAY_ONLY == instance - INSTANCE_ONLY
    # With the caller's own subnets (SenderSubnetIds), neither NAT is built
    own = resources_for(template, NatMode="instance", SenderSubnetIds=["subnet-1"])
    assert not ((GATEWAY_ONLY | INSTANCE_ONLY | {"NatEip", "PrivateDefaultRoute"}) & own)


def test_the_private_default_route_targets_the_gateway_or_the_instance(template: dict[str, Any]) -> None:
    route = template["Resources"]["PrivateDefaultRoute"]
    assert route["Condition"] == "CreateNetwork"  # one route, updated in place on a switch
    for mode, target, ref in (("gateway", "NatGatewayId", "NatGateway"), ("instance", "InstanceId", "NatInstance")):
        cond = conditions_for(template, NatMode=mode)
        props = {k: resolved_if(v, cond) for k, v in route["Properties"].items()}
        targets = {k: v for k, v in props.items() if k.endswith("Id") and k != "RouteTableId" and v is not None}
        assert targets == {target: {"Ref": ref}}, mode
        assert props["DestinationCidrBlock"] == "0.0.0.0/0"


def test_the_elastic_ip_is_the_same_resource_in_both_modes(template: dict[str, Any]) -> None:
    res = template["Resources"]
    eip = {"Fn::GetAtt": ["NatEip", "AllocationId"]}
    assert res["NatGateway"]["Properties"]["AllocationId"] == eip
    assert res["NatInstanceEipAssociation"]["Properties"]["AllocationId"] == eip
    assert res["NatInstanceEipAssociation"]["Properties"]["InstanceId"] == {"Ref": "NatInstance"}
    # Created whatever the mode, and retained: a mode switch never releases the lifted IP
    assert res["NatEip"]["Condition"] == "CreateNetwork"
    assert res["NatEip"]["DeletionPolicy"] == "Retain" == res["NatEip"]["UpdateReplacePolicy"]
    # ... and it is what SPF, the Outputs and the API's domain records name in both modes
    assert template["Outputs"]["SenderPublicIp"]["Value"]["Fn::If"][1] == {"Ref": "NatEip"}


def test_the_instance_forwards_and_is_recovered(template: dict[str, Any]) -> None:
    res = template["Resources"]
    inst = res["NatInstance"]["Properties"]
    assert inst["SourceDestCheck"] is False
    assert inst["ImageId"] == "{{resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64}}"
    assert inst["InstanceType"] == {"Ref": "NatInstanceType"}
    nic, = inst["NetworkInterfaces"]
    assert nic["SubnetId"] == {"Ref": "PublicSubnet"} and nic["GroupSet"] == [{"Ref": "NatInstanceSecurityGroup"}]
    for alarm, metric, action in (("NatInstanceRecoverAlarm", "StatusCheckFailed_System", "recover"),
                                  ("NatInstanceRebootAlarm", "StatusCheckFailed_Instance", "reboot")):
        a = res[alarm]["Properties"]
        assert a["Namespace"] == "AWS/EC2" and a["MetricName"] == metric
        assert a["Dimensions"] == [{"Name": "InstanceId", "Value": {"Ref": "NatInstance"}}]
        assert {"Fn::Sub": f"arn:${{AWS::Partition}}:automate:${{AWS::Region}}:ec2:{action}"} in a["AlarmActions"]
        assert {"Ref": "AlarmTopic"} in a["AlarmActions"]


def test_the_instance_accepts_traffic_from_the_private_subnets_only(template: dict[str, Any]) -> None:
    res = template["Resources"]
    private = [res[s]["Properties"]["CidrBlock"] for s in ("PrivateSubnetA", "PrivateSubnetB")]
    rules = res["NatInstanceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert rules and {"CidrIp", "IpProtocol", "FromPort", "ToPort", "Description"} >= {k for r in rules for k in r}
    assert all(r["CidrIp"] in private for r in rules)
    assert {(r["IpProtocol"], r["FromPort"]) for r in rules} == {("tcp", 25), ("tcp", 443), ("udp", 53), ("tcp", 53)}


def test_the_user_data_forwards_masquerades_and_is_valid_bash(template: dict[str, Any], tmp_path: Path) -> None:
    script = template["Resources"]["NatInstance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert "${" not in script.replace("${VpcCidr}", "")  # Fn::Sub would try to resolve any other ${...}
    script = script.replace("${VpcCidr}", "10.0.0.0/22")
    for needed in ("net.ipv4.ip_forward = 1", "-j MASQUERADE", "service iptables save", "iptables -P FORWARD DROP"):
        assert needed in script
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    bash = shutil.which("bash")
    assert bash is not None
    out = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def cfn_lint_with_default(tmp_path: Path, parameter: str, default: str, value: str) -> subprocess.CompletedProcess:
    """cfn-lint on template.yaml with `parameter`'s Default `value` instead of `default`."""
    text = (ROOT / "template.yaml").read_text()
    marker = f"  {parameter}:\n    Type: String\n    Default: {default}\n"
    assert text.count(marker) == 1
    path = tmp_path / "template.yaml"
    path.write_text(text.replace(marker, marker.replace(f"Default: {default}", f"Default: {value}")))
    return subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("mode", MODES)
def test_cfn_lint_is_clean_with_either_mode_as_the_default(mode: str, tmp_path: Path) -> None:
    out = cfn_lint_with_default(tmp_path, "NatMode", "gateway", mode)
    assert out.returncode == 0, out.stdout + out.stderr
