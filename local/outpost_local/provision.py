"""Create the template's queues, tables, buckets and secrets in a local AWS endpoint (moto).

The resources come from template.yaml itself, not from a second list: this module reads the
template, resolves the intrinsic functions it uses (Ref, GetAtt, Sub, Select, Split, Join, If,
conditions, pseudo parameters), creates every AWS::SQS::Queue, AWS::DynamoDB::Table (with its
stream), AWS::S3::Bucket, AWS::SecretsManager::Secret and AWS::Events::EventBus with its properties, and computes each
function's environment exactly as CloudFormation would hand it to Lambda, and the stack's
Outputs as `describe-stacks` would list them.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
ACCOUNT = "123456789012"
REGION = "us-east-1"
PROVISIONED = ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SecretsManager::Secret",
               "AWS::Events::EventBus")


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass


@dataclass
class Function:
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    environment: dict[str, str]
    events: dict[str, dict]


@dataclass
class Stack:
    name: str
    physical: dict[str, str] = field(default_factory=dict)  # logical id -> Ref value
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    queue_attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # the template's Outputs, resolved

    def env(self) -> dict[str, str]:
        """The union of the functions' environments (they share Globals)."""
        out: dict[str, str] = {}
        for f in self.functions.values():
            out.update(f.environment)
        return out


class _Resolver:
    def __init__(self, template: dict, stack: Stack, parameters: dict[str, str]) -> None:
        self.t, self.stack = template, stack
        self.params: dict[str, Any] = {}
        for name, spec in (template.get("Parameters") or {}).items():
            value = parameters.get(name, spec.get("Default", ""))
            if spec.get("Type") == "CommaDelimitedList":
                value = [v for v in str(value).split(",") if v] if isinstance(value, str) else value
            self.params[name] = value
        self.pseudo = {
            "AWS::StackName": stack.name, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": None,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{stack.name}/local0000",
        }
        self.conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.t["Conditions"][name]))
        return self.conditions[name]

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        return self.stack.physical.get(name, f"local-{name}")

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (k, v), = node.items()
            if k == "Ref":
                return self.ref(v)
            if k == "Fn::GetAtt":
                logical, attr = v
                return self.stack.attributes.get((logical, attr), f"local-{logical}-{attr}")
            if k == "Fn::Sub":
                text, extra = (v, {}) if isinstance(v, str) else (v[0], self.resolve(v[1]))
                return self._sub(text, extra)
            if k == "Fn::Join":
                sep, items = v
                return sep.join(str(x) for x in self.resolve(items))
            if k == "Fn::Select":
                return self.resolve(v[1])[int(self.resolve(v[0]))]
            if k == "Fn::Split":
                return str(self.resolve(v[1])).split(v[0])
            if k == "Fn::If":
                return self.resolve(v[1] if self.condition(v[0]) else v[2])
            if k == "Fn::Equals":
                a, b = (self.resolve(x) for x in v)
                return str(a) == str(b) if not isinstance(a, list) else a == b
            if k == "Fn::Not":
                return not self.resolve(v[0])
            if k == "Fn::And":
                return all(self.resolve(x) for x in v)
            if k == "Fn::Or":
                return any(self.resolve(x) for x in v)
            if k == "Condition":
                return self.condition(v)
            if k == "Fn::GetAZs":
                return [f"{REGION}a", f"{REGION}b"]
        return {k: self.resolve(v) for k, v in node.items()}

    def _sub(self, text: str, extra: dict) -> str:
        import re

        def one(m: re.Match) -> str:
            name = m.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                return str(self.stack.attributes.get((logical, attr), f"local-{logical}-{attr}"))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)


def _secret_string(spec: dict) -> str:
    gen = spec.get("GenerateSecretString")
    if not gen:
        return spec.get("SecretString", "")
    alphabet = string.ascii_letters + string.digits
    if not gen.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    value = "".join(secrets.choice(alphabet) for _ in range(int(gen.get("PasswordLength", 32))))
    if gen.get("SecretStringTemplate") and gen.get("GenerateStringKey"):
        doc = json.loads(gen["SecretStringTemplate"])
        doc[gen["GenerateStringKey"]] = value
        return json.dumps(doc)
    return value


def provision(session: Any, *, stack_name: str = "outpost", parameters: dict[str, str] | None = None,
              template_path: Path = TEMPLATE) -> Stack:
    """Create the template's data-plane resources through `session` (a boto3 Session whose
    clients reach the local endpoint) and return the resolved stack."""
    t = load_template(template_path)
    stack = Stack(stack_name)
    r = _Resolver(t, stack, parameters or {})
    resources: dict[str, dict] = t["Resources"]

    def wanted(spec: dict) -> bool:
        return spec.get("Condition") is None or r.condition(spec["Condition"])

    sqs, ddb = session.client("sqs"), session.client("dynamodb")
    s3, sm = session.client("s3"), session.client("secretsmanager")
    # Queues without a redrive target first, so that dead-letter ARNs resolve.
    queues = [(k, v) for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue" and wanted(v)]
    queues.sort(key=lambda kv: "RedrivePolicy" in (kv[1].get("Properties") or {}))
    for logical, spec in queues:
        props = r.resolve(spec.get("Properties") or {})
        name = props.get("QueueName") or f"{stack_name}-{logical}"
        attrs = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in props.items()
                 if k in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                          "ReceiveMessageWaitTimeSeconds", "RedrivePolicy", "MaximumMessageSize")}
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        stack.physical[logical] = url
        stack.attributes[(logical, "Arn")] = arn
        stack.attributes[(logical, "QueueName")] = name
        stack.attributes[(logical, "QueueUrl")] = url
        stack.queue_attributes[logical] = attrs

    for logical, spec in resources.items():
        if not wanted(spec):
            continue
        kind = spec["Type"]
        if kind == "AWS::DynamoDB::Table":
            props = r.resolve(spec["Properties"])
            name = props.get("TableName") or f"{stack_name}-{logical}"
            kwargs: dict[str, Any] = {
                "TableName": name, "AttributeDefinitions": props["AttributeDefinitions"],
                "KeySchema": props["KeySchema"], "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST")}
            if props.get("GlobalSecondaryIndexes"):
                kwargs["GlobalSecondaryIndexes"] = [
                    {k: v for k, v in g.items() if k in ("IndexName", "KeySchema", "Projection")}
                    for g in props["GlobalSecondaryIndexes"]]
            stream = props.get("StreamSpecification")
            if stream:  # the events function's source (issue 12), as the template asks
                kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
            created = ddb.create_table(**kwargs)["TableDescription"]
            if created.get("LatestStreamArn"):
                stack.attributes[(logical, "StreamArn")] = created["LatestStreamArn"]
            ttl = props.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"], "Enabled": True})
            stack.physical[logical] = name
            stack.attributes[(logical, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        elif kind == "AWS::S3::Bucket":
            props = r.resolve(spec.get("Properties") or {})
            name = (props.get("BucketName") or f"{stack_name}-{logical}").lower()
            s3.create_bucket(Bucket=name)
            stack.physical[logical] = name
            stack.attributes[(logical, "Arn")] = f"arn:aws:s3:::{name}"
        elif kind == "AWS::Events::EventBus":  # EnableEventBridge=true (issue 12)
            props = r.resolve(spec.get("Properties") or {})
            arn = session.client("events").create_event_bus(Name=props["Name"])["EventBusArn"]
            stack.physical[logical] = props["Name"]
            stack.attributes[(logical, "Arn")] = arn
            stack.attributes[(logical, "Name")] = props["Name"]
        elif kind == "AWS::SecretsManager::Secret":
            props = r.resolve(spec.get("Properties") or {})
            name = props.get("Name") or f"{stack_name}-{logical}"
            arn = sm.create_secret(Name=name, SecretString=_secret_string(props))["ARN"]
            stack.physical[logical] = arn

    globals_fn = (t.get("Globals") or {}).get("Function") or {}
    for logical, spec in resources.items():
        if spec["Type"] != "AWS::Serverless::Function" or not wanted(spec):
            continue
        props = spec["Properties"]
        env = dict((globals_fn.get("Environment") or {}).get("Variables") or {})
        env.update(((props.get("Environment") or {}).get("Variables")) or {})
        stack.functions[logical] = Function(
            logical_id=logical,
            code_uri=ROOT / r.resolve(props["CodeUri"]),
            handler=props.get("Handler") or globals_fn.get("Handler", "app.lambda_handler"),
            timeout=int(r.resolve(props.get("Timeout") or globals_fn.get("Timeout", 3))),
            environment={k: str(v) for k, v in r.resolve(env).items() if v is not None},
            events=r.resolve(props.get("Events") or {}),
        )
    # Outputs as describe-stacks would list them (those whose condition holds); a resource the
    # local stack does not create (the API, the NAT) resolves to a placeholder its caller replaces.
    for key, spec in (t.get("Outputs") or {}).items():
        if wanted(spec):
            value = r.resolve(spec["Value"])
            if value is not None:
                stack.outputs[key] = str(value)
    return stack
