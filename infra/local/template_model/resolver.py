"""Evaluates a template's parameters, conditions and intrinsic functions the way CloudFormation would, locally."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from infra.local.template_model.document import (
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    NO_VALUE,
    NOTHING,
    PhysicalLookup,
    PhysicalResource,
    Template,
    TemplateError,
    is_intrinsic,
    stringify,
    synthesize_physical,
)
from infra.local.template_model.functions import FunctionSpec, HttpRoute, read_functions

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_LOOPBACK_HTTP = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?(/[^\s#]*)?")


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
        loopback_http: bool = False,
    ) -> None:
        self.template = template
        # The local stack's one relaxation (the template's Metadata.LocalStack.LoopbackHttpParameters): those
        # parameters also take http:// on a loopback host, a receiver on this machine. CloudFormation never does.
        self._loopback_http = loopback_http
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
        value = stringify(raw, f"parameter {name}")
        if not (self._loopback_http and self._local_loopback_url(name, value)):
            self._validate_parameter(name, spec, value)
        kind = str(spec.get("Type", "String"))
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            return [item.strip() for item in value.split(",")] if value else []
        return value

    def _local_loopback_url(self, name: str, value: str) -> bool:
        local = self.template.section("Metadata").get("LocalStack") or {}
        return name in (local.get("LoopbackHttpParameters") or []) and bool(_LOOPBACK_HTTP.fullmatch(value))

    @staticmethod
    def _validate_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
        allowed = spec.get("AllowedValues")
        if allowed is not None and value not in [stringify(a, name) for a in allowed]:
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
        if is_intrinsic(value):
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
            return stringify(left, "Fn::Equals") == stringify(right, "Fn::Equals")
        if name == "Fn::Not":
            return not self.resolve(arg[0])
        if name == "Fn::And":
            return all(self.resolve(item) for item in arg)
        if name == "Fn::Or":
            return any(self.resolve(item) for item in arg)
        if name == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(stringify(i, "Fn::Join") for i in self.resolve(items))
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
                return stringify(variables[expression], f"Fn::Sub ${{{expression}}}")
            if "." in expression and expression.split(".", 1)[0] in self.template.resources:
                logical_id, attribute = expression.split(".", 1)
                return self.get_att(logical_id, attribute)
            return stringify(self.ref(expression), f"Fn::Sub ${{{expression}}}")

        return _SUB_VARIABLE.sub(replace, text)

    # ----------------------------------------------------------------------------------- functions
    def functions(self) -> list[FunctionSpec]:
        """Every active AWS::Serverless::Function, Globals merged in, values resolved."""
        return read_functions(self)

    def function(self, logical_id: str) -> FunctionSpec:
        for spec in self.functions():
            if spec.logical_id == logical_id:
                return spec
        raise TemplateError(f"no function named {logical_id}")

    def http_routes(self) -> list[HttpRoute]:
        return [route for spec in self.functions() for route in spec.routes]
