"""A template file as data: CloudFormation's YAML (short tags included) parsed, its sections, the values that say what
the local stack runs in, and the identity a resource has where the embedded AWS does not create it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

DEFAULT_TEMPLATE: Final = Path(__file__).resolve().parents[3] / "template.yaml"
LOCAL_ACCOUNT_ID: Final = "123456789012"  # moto's default account
LOCAL_REGION: Final = "us-east-1"

SERVERLESS_FUNCTION: Final = "AWS::Serverless::Function"
IMPLICIT_HTTP_API: Final = "ServerlessHttpApi"  # the API SAM creates for HttpApi events without ApiId
NO_VALUE: Final = "AWS::NoValue"
NO_AUTHORIZER: Final = "NONE"
IAM_AUTHORIZER: Final = "AWS_IAM"


class TemplateError(ValueError):
    """The template (or a parameter value) cannot be understood locally; the message names the culprit."""


class _NoValue:
    """Marker for AWS::NoValue: the surrounding key or list item disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NOTHING: Final = _NoValue()


class CfnYamlLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags (!Ref, !Sub, ...) into their long JSON forms.

    CloudFormation keeps unquoted dates as strings, so the timestamp resolver is dropped too.
    """


CfnYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_short_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"unsupported YAML node for !{tag_suffix}")
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        logical_id, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [logical_id, attribute]}
    return {f"Fn::{tag_suffix}": value}


CfnYamlLoader.add_multi_constructor("!", _construct_short_tag)


def load_yaml(text: str) -> Any:
    """Parse CloudFormation YAML (short tags included) into plain JSON-like data."""
    return yaml.load(text, Loader=CfnYamlLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class PhysicalResource:
    """What a deployed resource answers to `Ref` and `Fn::GetAtt`."""

    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)


PhysicalLookup = Callable[[str], PhysicalResource]


@dataclass(frozen=True)
class Template:
    """A parsed template file. Values are unresolved: use a Resolver to evaluate them."""

    path: Path
    document: Mapping[str, Any]

    @classmethod
    def load(cls, path: Path | str = DEFAULT_TEMPLATE) -> Template:
        path = Path(path).resolve()
        try:
            document = load_yaml(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TemplateError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
            raise TemplateError(f"{path}: a template needs a Resources mapping")
        return cls(path=path, document=document)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.document.get(name) or {}
        if not isinstance(value, dict):
            raise TemplateError(f"{name} must be a mapping")
        return value

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        return self.section("Resources")

    @property
    def parameters(self) -> Mapping[str, Mapping[str, Any]]:
        return self.section("Parameters")

    def resources_of_type(self, *types: str) -> dict[str, Mapping[str, Any]]:
        return {lid: res for lid, res in self.resources.items() if res.get("Type") in types}

    def function_globals(self) -> Mapping[str, Any]:
        value = self.section("Globals").get("Function") or {}
        if not isinstance(value, dict):
            raise TemplateError("Globals.Function must be a mapping")
        return value


def is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in {"Ref", "Condition"} or str(key).startswith("Fn::")


def stringify(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


def _short_hash(*parts: str, length: int = 12) -> str:
    """A deterministic stand-in for CloudFormation's random name suffixes."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def synthesize_physical(
    template: Template, logical_id: str, stack_name: str, region: str, account_id: str
) -> PhysicalResource:
    """A plausible local identity for a resource the embedded AWS does not create (APIs, functions...)."""
    resource = template.resources.get(logical_id)
    kind = resource.get("Type") if resource else None
    if kind is None and logical_id == IMPLICIT_HTTP_API:
        kind = "AWS::Serverless::HttpApi"
    if kind is None and logical_id.endswith("Role"):
        kind = "AWS::IAM::Role"
    if kind is None:
        raise TemplateError(f"!Ref/!GetAtt to {logical_id}, which the template does not define")
    suffix = _short_hash(stack_name, logical_id)
    if kind in {"AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api"}:
        api_id = suffix[:10].lower()
        return PhysicalResource(ref=api_id, attributes={"ApiId": api_id, "ApiEndpoint": "http://127.0.0.1"})
    if kind in {SERVERLESS_FUNCTION, "AWS::Lambda::Function"}:
        name = f"{stack_name}-{logical_id}-{suffix}"[:64]
        arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
        return PhysicalResource(ref=name, attributes={"Arn": arn})
    if kind == "AWS::IAM::Role":
        name = f"{stack_name}-{logical_id}-{suffix}"[:64]
        return PhysicalResource(ref=name, attributes={"Arn": f"arn:aws:iam::{account_id}:role/{name}"})
    name = f"{stack_name}-{logical_id}-{suffix}"
    if kind == "AWS::SQS::Queue":
        name = name[:80]
        url = f"https://sqs.{region}.amazonaws.com/{account_id}/{name}"
        arn = f"arn:aws:sqs:{region}:{account_id}:{name}"
        return PhysicalResource(ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url})
    if kind == "AWS::SecretsManager::Secret":  # its Ref is its ARN, with Secrets Manager's 6-character suffix
        arn = f"arn:aws:secretsmanager:{region}:{account_id}:secret:{logical_id}-{suffix[:6]}"
        return PhysicalResource(ref=arn, attributes={"Id": arn})
    if kind == "AWS::Events::Rule":
        name = name[:64]
        return PhysicalResource(ref=name, attributes={"Arn": f"arn:aws:events:{region}:{account_id}:rule/{name}"})
    service = kind.split("::")[1].lower() if kind.count("::") == 2 else "unknown"
    return PhysicalResource(
        ref=name, attributes={"Arn": f"arn:aws:{service}:{region}:{account_id}:{logical_id.lower()}/{name}"}
    )
