"""HTTP plumbing of the management API: a JSON resolver, the IAM caller, request bodies, domain errors as JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from smartsheet_oauth.config import is_loopback
from smartsheet_oauth.domain.errors import API, BadRequest, BrokerError, answer_for
from smartsheet_oauth.edge.router import Response, Router
from smartsheet_oauth.platform.observability import log_failure, metrics

JSON = "application/json"
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
MAX_BODY_BYTES = 16 * 1024


def answer(status: int, payload: Any, *, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=JSON,
        body=json.dumps(payload, separators=(",", ":")),
        headers={**HEADERS, **(headers or {})},
    )


def caller_arn(event: dict[str, Any]) -> str | None:
    """The IAM principal API Gateway authenticated (AWS_IAM authorization), or None when there is none."""
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, dict) else None
    iam = authorizer.get("iam") if isinstance(authorizer, dict) else None
    arn = iam.get("userArn") if isinstance(iam, dict) else None
    return arn if isinstance(arn, str) and arn else None


# API Gateway refuses a SigV4 request dated more than 5 minutes off, so no event it sends the function is older.
EVENT_MAX_AGE_SECONDS = 300


def not_from_api_gateway(event: dict[str, Any], *, function_arn: str, now: float) -> str | None:
    """Why `event` cannot be a request API Gateway (HTTP API, payload 2.0) is waiting on, or None.

    Only what every such event carries: the payload version, the account of the API (the function's own: the
    template's API is in the stack's account), and the request's time (now, give or take the signature's 5 minutes).
    A hand-made event, a sample, a stored one replayed, or one from another account's API fails. Whoever may call
    lambda:InvokeFunction on this function can still write all of it (nothing in an event is secret): that
    permission must stay with API Gateway alone (SECURITY.md). The API's own id cannot be checked: the function's
    environment cannot name the API whose routes name the function (a circular dependency in CloudFormation)."""
    context = event.get("requestContext")
    if event.get("version") != "2.0" or not isinstance(context, dict):
        return "not an API Gateway HTTP API event (payload format 2.0)"
    own_account = function_arn.split(":")[4] if function_arn.count(":") >= 5 else ""
    if not own_account or context.get("accountId") != own_account:
        return "requestContext.accountId is not the function's account"
    epoch = context.get("timeEpoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or abs(now - epoch / 1000) > EVENT_MAX_AGE_SECONDS:
        return f"requestContext.timeEpoch is not within {EVENT_MAX_AGE_SECONDS} s of now"
    return None


def json_body(app: Router, *, required: bool) -> dict[str, Any]:
    """The request's JSON object; an empty body is {} unless one is required."""
    event = app.current_event
    raw = event.body or ""
    if event.is_base64_encoded and raw:
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise BadRequest("the body is not valid base64") from None
    else:
        data = raw.encode()
    if len(data) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if not data.strip():
        if required:
            raise BadRequest("a JSON object body is required")
        return {}
    try:
        body = json.loads(data)
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def broker_url(app: Router, public_base_url: str | None = None) -> str:
    """The broker's public base URL: the configured one (the stack's custom domain) when set, else as the caller
    reached it (the HTTP API's $default stage has no path prefix). http only for a loopback host: the local gateway."""
    if public_base_url:
        return public_base_url
    event = app.current_event
    host = event.request_context.domain_name or event.headers.get("host", "")
    proto = event.headers.get("x-forwarded-proto", "https")
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    scheme = "http" if proto == "http" and is_loopback(hostname) else "https"
    return f"{scheme}://{host}"


def count(outcome: str) -> None:
    metrics.add_metric(name=f"management_{outcome}", unit="Count", value=1)


def failure(app: Router, exc: Exception) -> Response:
    """JSON {error, message, reference} for exc, with its status and Retry-After, logged and counted as its row in
    domain/errors.ANSWERS says."""
    rendered = answer_for(exc, API)
    row = rendered.row
    log_failure(row.level, row.log, rendered.code, exc, exc.log_fields() if isinstance(exc, BrokerError) else {})
    if row.counted:
        count(rendered.code)
    message = row.message.format(reason=getattr(exc, "reason", "")) if row.message else str(exc)
    payload: dict[str, Any] = {"error": rendered.code, "message": message, "reference": app.current_event.reference}
    headers = None
    if rendered.retry_after:
        headers = {"Retry-After": str(rendered.retry_after)}
        payload["retry_after"] = rendered.retry_after
    return answer(rendered.status, payload, headers=headers)


def resolver() -> Router:
    """A router whose failures are JSON {error, message, reference}: each error gets its status (ANSWERS)."""
    app = Router()

    @app.exception_handler(Exception)
    def _failed(exc: Exception) -> Response:
        return failure(app, exc)

    return app
