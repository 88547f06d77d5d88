"""The SAM template as the local stack reads it: CFN-aware YAML, intrinsics, functions, routes, schedules."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
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


# --------------------------------------------------------------------------------------------- YAML
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


# ------------------------------------------------------------------------------------------ model
@dataclass(frozen=True)
class HttpRoute:
    """One HttpApi event of a function: `GET /login`, `ANY /items/{id}` or the `$default` catch-all."""

    method: str  # upper case; "ANY" matches every method
    path: str  # "/login", "/items/{id}", "/files/{proxy+}" or "$default"
    function: str  # logical id of the function
    event: str  # the event's name under Events
    api: str  # logical id of the HttpApi
    payload_format_version: str = "2.0"
    timeout_ms: int = 30_000  # HTTP API's integration timeout (its maximum, too)
    authorizer: str = NO_AUTHORIZER  # "NONE" or "AWS_IAM" (SigV4): the local gateway enforces both

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


@dataclass(frozen=True)
class ScheduleSpec:
    """A Schedule / ScheduleV2 event of a function."""

    function: str
    event: str
    kind: str  # "ScheduleV2" (EventBridge Scheduler) or "Schedule" (EventBridge rule)
    name: str  # the schedule's (or rule's) name as SAM creates it
    expression: str
    input: str | None  # the Input property: the exact payload, when set
    enabled: bool = True


@dataclass(frozen=True)
class FunctionSpec:
    """An AWS::Serverless::Function with Globals applied and every value resolved."""

    logical_id: str
    name: str  # the physical function name used locally
    handler: str  # "authorize.app.lambda_handler"
    code_dir: Path
    runtime: str
    timeout: int  # seconds
    memory_size: int
    architectures: tuple[str, ...]
    environment: Mapping[str, str]
    routes: tuple[HttpRoute, ...] = ()
    schedules: tuple[ScheduleSpec, ...] = ()
    description: str = ""

    @property
    def module(self) -> str:
        return self.handler.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        return self.handler.rpartition(".")[2]


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


# --------------------------------------------------------------------------------------- resolver
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in {"Ref", "Condition"} or str(key).startswith("Fn::")


def _stringify(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


class Resolver:
    """Evaluates parameters, conditions and intrinsic functions the way CloudFormation would locally.

    `physical` answers Ref/GetAtt for a logical id (the embedded AWS provisions on demand); resources
    it does not know get a deterministic local identity from `synthesize_physical`.
    """

    def __init__(
        self,
        template: Template,
        *,
        stack_name: str,
        parameters: Mapping[str, str] | None = None,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
        physical: PhysicalLookup | None = None,
    ) -> None:
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self._overrides = dict(parameters or {})
        self._physical = physical
        self._conditions: dict[str, bool] = {}
        unknown = sorted(set(self._overrides) - set(template.parameters))
        if unknown:
            raise TemplateError(f"unknown template parameter(s): {', '.join(unknown)}")

    # ----------------------------------------------------------------- parameters and pseudo params
    def pseudo_parameters(self) -> dict[str, Any]:
        return {
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local"),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            NO_VALUE: NOTHING,
        }

    def parameter(self, name: str) -> Any:
        spec = self.template.parameters.get(name)
        if spec is None:
            raise TemplateError(f"no parameter named {name}")
        if name in self._overrides:
            raw: Any = self._overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default: give it a value")
        value = _stringify(raw, f"parameter {name}")
        self._validate_parameter(name, spec, value)
        kind = str(spec.get("Type", "String"))
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            return [item.strip() for item in value.split(",")] if value else []
        return value

    @staticmethod
    def _validate_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
        allowed = spec.get("AllowedValues")
        if allowed is not None and value not in [_stringify(a, name) for a in allowed]:
            raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(str(pattern), value):
            raise TemplateError(f"parameter {name}={value!r} does not match {pattern}")
        if "MinLength" in spec and len(value) < int(spec["MinLength"]):
            raise TemplateError(f"parameter {name} is shorter than {spec['MinLength']}")
        if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
            raise TemplateError(f"parameter {name} is longer than {spec['MaxLength']}")
        if spec.get("Type") == "Number":
            try:
                number = float(value)
            except ValueError:
                raise TemplateError(f"parameter {name}={value!r} is not a number") from None
            if "MinValue" in spec and number < float(spec["MinValue"]):
                raise TemplateError(f"parameter {name}={value} is below {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                raise TemplateError(f"parameter {name}={value} is above {spec['MaxValue']}")

    # ----------------------------------------------------------------------------------- conditions
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.section("Conditions")
            if name not in conditions:
                raise TemplateError(f"no condition named {name}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def is_active(self, logical_id: str) -> bool:
        """False for a resource whose Condition is false (CloudFormation would not create it)."""
        condition = self.template.resources[logical_id].get("Condition")
        return condition is None or self.condition(str(condition))

    # -------------------------------------------------------------------------------------- physical
    def physical(self, logical_id: str) -> PhysicalResource:
        if self._physical is not None:
            return self._physical(logical_id)
        return synthesize_physical(self.template, logical_id, self.stack_name, self.region, self.account_id)

    def ref(self, name: str) -> Any:
        pseudo = self.pseudo_parameters()
        if name in pseudo:
            return pseudo[name]
        if name in self.template.parameters:
            return self.parameter(name)
        return self.physical(name).ref

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource = self.physical(logical_id)
        if attribute not in resource.attributes:
            raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} is not available locally")
        return resource.attributes[attribute]

    # ---------------------------------------------------------------------------------- intrinsics
    def resolve(self, value: Any) -> Any:
        """Evaluate every intrinsic in `value`; AWS::NoValue removes keys and list items."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NOTHING]
        if not isinstance(value, dict):
            return value
        if _is_intrinsic(value):
            (name, argument), *_ = value.items()
            return self._intrinsic(name, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NOTHING}

    def _intrinsic(self, name: str, arg: Any) -> Any:  # noqa: PLR0912 - one branch per function
        if name == "Ref":
            return self.ref(str(self.resolve(arg)))
        if name == "Condition":
            return self.condition(str(arg))
        if name == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else self.resolve(arg)
            if len(parts) != 2:
                raise TemplateError(f"Fn::GetAtt needs [LogicalId, Attribute], got {arg!r}")
            return self.get_att(str(parts[0]), str(parts[1]))
        if name == "Fn::Sub":
            return self._sub(arg)
        if name == "Fn::If":
            condition, when_true, when_false = arg
            return self.resolve(when_true if self.condition(str(condition)) else when_false)
        if name == "Fn::Equals":
            left, right = (self.resolve(item) for item in arg)
            return _stringify(left, "Fn::Equals") == _stringify(right, "Fn::Equals")
        if name == "Fn::Not":
            return not self.resolve(arg[0])
        if name == "Fn::And":
            return all(self.resolve(item) for item in arg)
        if name == "Fn::Or":
            return any(self.resolve(item) for item in arg)
        if name == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(_stringify(i, "Fn::Join") for i in self.resolve(items))
        if name == "Fn::Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if name == "Fn::Split":
            delimiter, source = self.resolve(arg)
            return str(source).split(str(delimiter))
        if name == "Fn::FindInMap":
            mapping, top, second = (str(item) for item in self.resolve(arg)[:3])
            try:
                return self.template.section("Mappings")[mapping][top][second]
            except KeyError:
                raise TemplateError(f"Fn::FindInMap {mapping}.{top}.{second} not found") from None
        if name == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if name == "Fn::GetAZs":
            return [f"{self.region}{zone}" for zone in "abc"]
        if name == "Fn::ToJsonString":
            return json.dumps(self.resolve(arg), separators=(",", ":"))
        raise TemplateError(f"{name} is not supported by the local stack")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = str(arg[0]), {k: self.resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = str(arg), {}

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"
            if expression in variables:
                return _stringify(variables[expression], f"Fn::Sub ${{{expression}}}")
            if "." in expression and expression.split(".", 1)[0] in self.template.resources:
                logical_id, attribute = expression.split(".", 1)
                return self.get_att(logical_id, attribute)
            return _stringify(self.ref(expression), f"Fn::Sub ${{{expression}}}")

        return _SUB_VARIABLE.sub(replace, text)

    # ----------------------------------------------------------------------------------- functions
    def functions(self) -> list[FunctionSpec]:
        """Every active AWS::Serverless::Function, Globals merged in, values resolved."""
        specs = []
        for logical_id, resource in self.template.resources_of_type(SERVERLESS_FUNCTION).items():
            if self.is_active(logical_id):
                specs.append(self._function(logical_id, resource))
        return specs

    def function(self, logical_id: str) -> FunctionSpec:
        for spec in self.functions():
            if spec.logical_id == logical_id:
                return spec
        raise TemplateError(f"no function named {logical_id}")

    def _function(self, logical_id: str, resource: Mapping[str, Any]) -> FunctionSpec:
        merged = merge_globals(self.template.function_globals(), resource.get("Properties") or {})
        props = self.resolve({k: v for k, v in merged.items() if k != "Events"})
        handler = props.get("Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"{logical_id}: Handler must look like 'module.function'")
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: only a local CodeUri folder is supported locally")
        variables = (props.get("Environment") or {}).get("Variables") or {}
        environment = {key: _stringify(value, f"{logical_id} environment {key}") for key, value in variables.items()}
        events = merged.get("Events") or {}
        return FunctionSpec(
            logical_id=logical_id,
            name=str(props.get("FunctionName") or self.physical(logical_id).ref),
            handler=handler,
            code_dir=(self.template.directory / code_uri).resolve(),
            runtime=str(props.get("Runtime", "")),
            timeout=int(props.get("Timeout", 3)),
            memory_size=int(props.get("MemorySize", 128)),
            architectures=tuple(str(a) for a in props.get("Architectures") or ["x86_64"]),
            environment=environment,
            routes=tuple(self._routes(logical_id, events)),
            schedules=tuple(self._schedules(logical_id, events)),
            description=str(props.get("Description", "")),
        )

    def _routes(self, logical_id: str, events: Mapping[str, Any]) -> Iterator[HttpRoute]:
        for event_name, event in events.items():
            if event.get("Type") != "HttpApi":
                continue
            props = self.resolve(event.get("Properties") or {})
            api = event.get("Properties", {}).get("ApiId") or {"Ref": IMPLICIT_HTTP_API}
            api_id = api.get("Ref") if isinstance(api, dict) else None
            if not isinstance(api_id, str):
                raise TemplateError(f"{logical_id}.{event_name}: ApiId must be a !Ref to an HttpApi")
            path, method = props.get("Path"), props.get("Method")
            if path is None and method is None:
                path, method = "$default", "ANY"
            method = str(method or "ANY").upper()
            if method == "X-AMAZON-APIGATEWAY-ANY-METHOD":
                method = "ANY"
            version = str(props.get("PayloadFormatVersion", "2.0"))
            if version != "2.0":
                raise TemplateError(f"{logical_id}.{event_name}: only PayloadFormatVersion 2.0 is supported")
            authorizer = self._route_authorizer(f"{logical_id}.{event_name}", api_id, props.get("Auth") or {})
            yield HttpRoute(
                method=method,
                path=str(path),
                function=logical_id,
                event=event_name,
                api=api_id,
                payload_format_version=version,
                timeout_ms=int(props.get("TimeoutInMillis", 30_000)),
                authorizer=authorizer,
            )

    def _route_authorizer(self, where: str, api_id: str, auth: Mapping[str, Any]) -> str:
        """SAM's rule: the event's Auth.Authorizer, else the API's Auth.DefaultAuthorizer, else none. AWS_IAM needs
        the API's EnableIamAuthorizer; other authorizers (JWT, Lambda) cannot be emulated locally."""
        api = self.template.resources.get(api_id)
        if api is not None:
            api_auth = self.resolve((api.get("Properties") or {}).get("Auth") or {})
        else:  # the implicit API takes its settings from Globals.HttpApi
            api_auth = self.resolve((self.template.section("Globals").get("HttpApi") or {}).get("Auth") or {})
        name = str(auth.get("Authorizer") or api_auth.get("DefaultAuthorizer") or NO_AUTHORIZER)
        if name == IAM_AUTHORIZER and api_auth.get("EnableIamAuthorizer") not in (True, "true", "True"):
            raise TemplateError(f"{where}: Authorizer AWS_IAM needs Auth.EnableIamAuthorizer: true on {api_id}")
        if name not in (NO_AUTHORIZER, IAM_AUTHORIZER):
            raise TemplateError(f"{where}: authorizer {name!r} is not supported locally (only NONE and AWS_IAM)")
        return name

    def _schedules(self, logical_id: str, events: Mapping[str, Any]) -> Iterator[ScheduleSpec]:
        for event_name, event in events.items():
            kind = event.get("Type")
            if kind not in {"Schedule", "ScheduleV2"}:
                continue
            props = self.resolve(event.get("Properties") or {})
            enabled = props.get("State", "ENABLED") == "ENABLED" and props.get("Enabled", True) is not False
            yield ScheduleSpec(
                function=logical_id,
                event=event_name,
                kind=str(kind),
                name=str(props.get("Name") or f"{logical_id}{event_name}"),
                expression=str(props.get("ScheduleExpression") or props.get("Schedule") or ""),
                input=None if props.get("Input") is None else str(props["Input"]),
                enabled=enabled,
            )

    def http_routes(self) -> list[HttpRoute]:
        return [route for spec in self.functions() for route in spec.routes]


def merge_globals(global_props: Mapping[str, Any], local_props: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: maps merge key by key, lists append, scalars (and intrinsics) are overridden."""
    merged: dict[str, Any] = dict(global_props)
    for key, value in local_props.items():
        current = merged.get(key)
        if (
            isinstance(current, dict)
            and isinstance(value, dict)
            and not (_is_intrinsic(current) or _is_intrinsic(value))
        ):
            merged[key] = merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = [*current, *value]
        else:
            merged[key] = value
    return merged


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
    service = kind.split("::")[1].lower() if kind.count("::") == 2 else "unknown"
    return PhysicalResource(
        ref=name, attributes={"Arn": f"arn:aws:{service}:{region}:{account_id}:{logical_id.lower()}/{name}"}
    )
