"""What API Gateway and EventBridge hand a function and take back: the HTTP API's payload 2.0 event and its answer's
translation into an HTTP response, and the scheduled events of EventBridge Scheduler and of an EventBridge rule."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from infra.local.template_model import HttpRoute

_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "te", "upgrade"})
_TEXT_TYPES: Final = ("application/json", "application/javascript", "application/xml", "application/graphql")


class MalformedResponseError(ValueError):
    """A handler answer API Gateway could not turn into an HTTP response (it answers 500)."""


def api_request_id() -> str:
    """An API Gateway style request id."""
    return base64.b64encode(secrets.token_bytes(12)).decode()[:15] + "="


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def http_api_event(
    *,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    source_ip: str,
    route: HttpRoute | None,
    path_parameters: Mapping[str, str] | None = None,
    api_id: str = "local",
    account_id: str = "123456789012",
    protocol: str = "HTTP/1.1",
    scheme: str = "http",
    port: int = 80,
    request_id: str | None = None,
    now: float | None = None,
    authorizer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The event API Gateway HTTP API (payload format 2.0) gives a Lambda integration for one request."""
    split = urlsplit(target)
    raw_path = split.path or "/"
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        if key in _HOP_BY_HOP:
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    forwarded = merged.get("x-forwarded-for")
    merged["x-forwarded-for"] = f"{forwarded}, {source_ip}" if forwarded else source_ip
    merged["x-forwarded-port"] = str(port)
    merged["x-forwarded-proto"] = scheme
    merged["x-amzn-trace-id"] = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    query: dict[str, str] = {}
    for key, value in parse_qsl(split.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    moment = time.time() if now is None else now
    request_id = request_id or api_request_id()
    route_key = route.route_key if route else "$default"
    host = merged.get("host", "")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": split.query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        **({"authorizer": dict(authorizer)} if authorizer else {}),
        "domainName": host,
        "domainPrefix": host.split(".", 1)[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(moment)),
        "timeEpoch": int(moment * 1000),
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        text = None
        if _is_text(merged.get("content-type")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        event["body"] = text if text is not None else base64.b64encode(body).decode()
        event["isBase64Encoded"] = text is None
    else:
        event["isBase64Encoded"] = False
    return event


def _response_headers(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, dict):
        raise MalformedResponseError("headers must be an object")
    headers: list[tuple[str, str]] = []
    for name, value in raw.items():
        if str(name).lower() in {"content-length", "transfer-encoding", "connection"}:
            continue
        if isinstance(value, bool):
            headers.append((str(name), "true" if value else "false"))
        elif isinstance(value, str | int | float):
            headers.append((str(name), str(value)))
        else:
            raise MalformedResponseError(f"header {name} must be a string")
    return headers


def http_api_response(payload: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Turn a handler's answer into (status, headers, body) as API Gateway (payload 2.0) does."""
    if not isinstance(payload, dict) or "statusCode" not in payload:
        # Format 2.0 infers a 200 JSON answer from anything without a statusCode.
        return 200, [("content-type", "application/json")], json.dumps(payload).encode()
    status = payload["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise MalformedResponseError(f"statusCode {status!r} is not an HTTP status")
    headers = _response_headers(payload.get("headers") or {})
    cookies = payload.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise MalformedResponseError("cookies must be a list of strings")
    headers.extend(("Set-Cookie", cookie) for cookie in cookies)
    body = payload.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise MalformedResponseError("body must be a string")
    elif payload.get("isBase64Encoded") is True:
        try:
            data = base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise MalformedResponseError("body is not valid base64") from exc
    else:
        data = body.encode("utf-8")
    return status, headers, data


def scheduler_event(*, schedule_arn: str, account_id: str, region: str, now: float | None = None) -> dict[str, Any]:
    """EventBridge Scheduler's default notification to a Lambda target (a schedule without Input).

    Scheduler sends `detail` as the string "{}", unlike an EventBridge rule's `{}`.
    """
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": account_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now)),
        "region": region,
        "resources": [schedule_arn],
        "detail": "{}",
    }


def rule_event(*, rule_arn: str, account_id: str, region: str, now: float | None = None) -> dict[str, Any]:
    """An EventBridge rule's "Scheduled Event" (SAM's `Schedule` event type)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now)),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }
