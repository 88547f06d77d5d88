"""The local API Gateway (HTTP API, payload 2.0) and EventBridge Scheduler in front of the template's functions, as
the local stack and tests import it."""

from infra.local.gateway.controls import ADMIN_PREFIX, CONTROL_TOKEN_HEADER
from infra.local.gateway.events import (
    MalformedResponseError,
    api_request_id,
    http_api_event,
    http_api_response,
    rule_event,
    scheduler_event,
)
from infra.local.gateway.handler import MAX_BODY_BYTES
from infra.local.gateway.routes import RouteTable
from infra.local.gateway.server import Gateway, Invoker, ScheduleRun

__all__ = [
    "ADMIN_PREFIX",
    "CONTROL_TOKEN_HEADER",
    "MAX_BODY_BYTES",
    "Gateway",
    "Invoker",
    "MalformedResponseError",
    "RouteTable",
    "ScheduleRun",
    "api_request_id",
    "http_api_event",
    "http_api_response",
    "rule_event",
    "scheduler_event",
]
