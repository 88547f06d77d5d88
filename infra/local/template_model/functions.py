"""The template's functions as the local stack runs them: each AWS::Serverless::Function with SAM's Globals merged in
and its values resolved, its HttpApi routes (with their authorizer) and its schedules."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local.template_model.document import (
    IAM_AUTHORIZER,
    IMPLICIT_HTTP_API,
    NO_AUTHORIZER,
    SERVERLESS_FUNCTION,
    TemplateError,
    is_intrinsic,
    stringify,
)

if TYPE_CHECKING:
    from infra.local.template_model.resolver import Resolver


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


def merge_globals(global_props: Mapping[str, Any], local_props: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: maps merge key by key, lists append, scalars (and intrinsics) are overridden."""
    merged: dict[str, Any] = dict(global_props)
    for key, value in local_props.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and not (is_intrinsic(current) or is_intrinsic(value)):
            merged[key] = merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = [*current, *value]
        else:
            merged[key] = value
    return merged


def read_functions(resolver: Resolver) -> list[FunctionSpec]:
    """Every active AWS::Serverless::Function, Globals merged in, values resolved."""
    specs = []
    for logical_id, resource in resolver.template.resources_of_type(SERVERLESS_FUNCTION).items():
        if resolver.is_active(logical_id):
            specs.append(_function(resolver, logical_id, resource))
    return specs


def _function(resolver: Resolver, logical_id: str, resource: Mapping[str, Any]) -> FunctionSpec:
    merged = merge_globals(resolver.template.function_globals(), resource.get("Properties") or {})
    props = resolver.resolve({k: v for k, v in merged.items() if k != "Events"})
    handler = props.get("Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{logical_id}: Handler must look like 'module.function'")
    code_uri = props.get("CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: only a local CodeUri folder is supported locally")
    variables = (props.get("Environment") or {}).get("Variables") or {}
    environment = {key: stringify(value, f"{logical_id} environment {key}") for key, value in variables.items()}
    events = merged.get("Events") or {}
    return FunctionSpec(
        logical_id=logical_id,
        name=str(props.get("FunctionName") or resolver.physical(logical_id).ref),
        handler=handler,
        code_dir=(resolver.template.directory / code_uri).resolve(),
        runtime=str(props.get("Runtime", "")),
        timeout=int(props.get("Timeout", 3)),
        memory_size=int(props.get("MemorySize", 128)),
        architectures=tuple(str(a) for a in props.get("Architectures") or ["x86_64"]),
        environment=environment,
        routes=tuple(_routes(resolver, logical_id, events)),
        schedules=tuple(_schedules(resolver, logical_id, events)),
        description=str(props.get("Description", "")),
    )


def _routes(resolver: Resolver, logical_id: str, events: Mapping[str, Any]) -> Iterator[HttpRoute]:
    for event_name, event in events.items():
        if event.get("Type") != "HttpApi":
            continue
        props = resolver.resolve(event.get("Properties") or {})
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
        authorizer = _route_authorizer(resolver, f"{logical_id}.{event_name}", api_id, props.get("Auth") or {})
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


def _route_authorizer(resolver: Resolver, where: str, api_id: str, auth: Mapping[str, Any]) -> str:
    """SAM's rule: the event's Auth.Authorizer, else the API's Auth.DefaultAuthorizer, else none. AWS_IAM needs
    the API's EnableIamAuthorizer; other authorizers (JWT, Lambda) cannot be emulated locally."""
    api = resolver.template.resources.get(api_id)
    if api is not None:
        api_auth = resolver.resolve((api.get("Properties") or {}).get("Auth") or {})
    else:  # the implicit API takes its settings from Globals.HttpApi
        api_auth = resolver.resolve((resolver.template.section("Globals").get("HttpApi") or {}).get("Auth") or {})
    name = str(auth.get("Authorizer") or api_auth.get("DefaultAuthorizer") or NO_AUTHORIZER)
    if name == IAM_AUTHORIZER and api_auth.get("EnableIamAuthorizer") not in (True, "true", "True"):
        raise TemplateError(f"{where}: Authorizer AWS_IAM needs Auth.EnableIamAuthorizer: true on {api_id}")
    if name not in (NO_AUTHORIZER, IAM_AUTHORIZER):
        raise TemplateError(f"{where}: authorizer {name!r} is not supported locally (only NONE and AWS_IAM)")
    return name


def _schedules(resolver: Resolver, logical_id: str, events: Mapping[str, Any]) -> Iterator[ScheduleSpec]:
    for event_name, event in events.items():
        kind = event.get("Type")
        if kind not in {"Schedule", "ScheduleV2"}:
            continue
        props = resolver.resolve(event.get("Properties") or {})
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
