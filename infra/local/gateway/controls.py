"""The local stack's `/_local/` controls on the gateway (health, fire a schedule, invoke a function with any event):
never a template route, loopback only, and only with this run's random token."""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from infra.local.gateway.server import Gateway, ScheduleRun
    from infra.local.lambda_runtime import Invocation

ADMIN_PREFIX: Final = "/_local/"  # loopback-only controls of the local stack; never a template route
# /_local/ invokes any function with any event (an IAM caller included): only with this run's random token, which
# `make dev` keeps in .local/dev.json (readable by its user only) for make refresh and the admin CLI.
CONTROL_TOKEN_HEADER: Final = "X-Local-Token"  # noqa: S105 - a header name


def answer_control(
    gateway: Gateway, *, method: str, path: str, query: Mapping[str, str], token: str, client_ip: str, body: bytes
) -> tuple[int, Any]:
    """(200, the JSON answer) or (an error status, its message)."""
    if not ipaddress.ip_address(client_ip).is_loopback:
        return 403, "Forbidden"
    if not secrets.compare_digest(token.encode(), gateway.control_token.encode()):
        return 403, f"{ADMIN_PREFIX} needs this run's token in {CONTROL_TOKEN_HEADER} (.local/dev.json holds it)"
    if path == f"{ADMIN_PREFIX}health" and method == "GET":
        return 200, {
            "status": "ok",
            "routes": [c.route.route_key for c in gateway.routes.routes],
            "schedules": [s.name for s in gateway.schedules],
            "functions": sorted(gateway.functions),
        }
    if path == f"{ADMIN_PREFIX}schedule" and method == "POST":
        try:
            runs = gateway.run_schedules(query.get("function"), query.get("event"))
        except LookupError as exc:
            return 404, str(exc)
        return 200, {"runs": [_run_summary(run) for run in runs]}
    if path.startswith(f"{ADMIN_PREFIX}invoke/") and method == "POST":
        name = path.removeprefix(f"{ADMIN_PREFIX}invoke/")
        if name not in gateway.functions:
            return 404, f"no function {name}"
        event = json.loads(body) if body else {}
        return 200, _invocation_summary(gateway.functions[name].invoke(event))
    return 404, "Not Found"


def _invocation_summary(invocation: Invocation) -> dict[str, Any]:
    return {
        "requestId": invocation.request_id,
        "ok": invocation.ok,
        "payload": invocation.payload,
        "errorType": invocation.error_type,
        "errorMessage": invocation.error_message,
        "durationMs": round(invocation.duration_ms, 1),
        "coldStart": invocation.cold_start,
    }


def _run_summary(run: ScheduleRun) -> dict[str, Any]:
    return {
        "schedule": run.schedule.name,
        "function": run.schedule.function,
        "event": run.event,
        **_invocation_summary(run.invocation),
    }
