"""The local API Gateway (HTTP API, payload 2.0) and EventBridge Scheduler in front of the template's functions."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.local import request_guard, sigv4
from infra.local.lambda_runtime import Invocation
from infra.local.template_model import IAM_AUTHORIZER, FunctionSpec, HttpRoute, ScheduleSpec

log = logging.getLogger("infra.local.gateway")

MAX_BODY_BYTES: Final = 10 * 1024 * 1024  # HTTP API's payload quota
ADMIN_PREFIX: Final = "/_local/"  # loopback-only controls of the local stack; never a template route
# /_local/ invokes any function with any event (an IAM caller included): only with this run's random token, which
# `make dev` keeps in .local/dev.json (readable by its user only) for make refresh and the admin CLI.
CONTROL_TOKEN_HEADER: Final = "X-Local-Token"  # noqa: S105 - a header name
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "te", "upgrade"})
_TEXT_TYPES: Final = ("application/json", "application/javascript", "application/xml", "application/graphql")


class Invoker(Protocol):
    """What the gateway needs from a function: its spec and a synchronous invoke (LocalFunction)."""

    @property
    def spec(self) -> FunctionSpec: ...

    def invoke(self, event: Any, *, timeout: float | None = None) -> Invocation: ...


class MalformedResponseError(ValueError):
    """A handler answer API Gateway could not turn into an HTTP response (it answers 500)."""


# ------------------------------------------------------------------------------------ routes
@dataclass(frozen=True)
class _CompiledRoute:
    route: HttpRoute
    pattern: re.Pattern[str] | None  # None for $default
    specificity: tuple[int, int, int]


def _compile(route: HttpRoute) -> _CompiledRoute:
    if route.path == "$default":
        return _CompiledRoute(route, None, (-1, 0, 0))
    parts, literals, greedy = [], 0, 0
    for segment in route.path.strip("/").split("/") if route.path != "/" else []:
        if match := re.fullmatch(r"\{([A-Za-z0-9_.-]+)\+\}", segment):
            parts.append(f"(?P<{_group(match.group(1))}>.+)")
            greedy = 1
        elif match := re.fullmatch(r"\{([A-Za-z0-9_.-]+)\}", segment):
            parts.append(f"(?P<{_group(match.group(1))}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literals += 1
    pattern = re.compile("/" + "/".join(parts))
    return _CompiledRoute(route, pattern, (literals, -greedy, int(route.method != "ANY")))


def _group(name: str) -> str:
    return "p_" + name.replace("-", "_2d").replace(".", "_2e")


def _ungroup(group: str) -> str:
    return group[2:].replace("_2d", "-").replace("_2e", ".")


class RouteTable:
    """HTTP API route selection: the most specific matching route wins; `$default` catches the rest."""

    def __init__(self, routes: Iterable[HttpRoute]) -> None:
        self.routes = [_compile(route) for route in routes]
        keys = [compiled.route.route_key for compiled in self.routes]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"routes defined twice: {', '.join(duplicates)}")
        for compiled in self.routes:
            if compiled.route.path.startswith(ADMIN_PREFIX):
                raise ValueError(f"{compiled.route.route_key}: {ADMIN_PREFIX} is reserved locally")

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        best: tuple[tuple[int, int, int], HttpRoute, dict[str, str]] | None = None
        for compiled in self.routes:
            route = compiled.route
            if route.method not in {"ANY", method}:
                continue
            if compiled.pattern is None:
                params: dict[str, str] = {}
            elif found := compiled.pattern.fullmatch(path):
                params = {_ungroup(k): unquote(v) for k, v in found.groupdict().items()}
            else:
                continue
            if best is None or compiled.specificity > best[0]:
                best = (compiled.specificity, route, params)
        return None if best is None else (best[1], best[2])


# ----------------------------------------------------------------------------- events in, answers out
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


# ------------------------------------------------------------------------------------------ server
@dataclass(frozen=True)
class ScheduleRun:
    """One on-demand firing of a schedule."""

    schedule: ScheduleSpec
    event: dict[str, Any]
    invocation: Invocation


class Gateway:
    """Serves the template's HttpApi routes on loopback and fires its schedules on demand.

    The socket is bound at construction (so the port is known before the functions start);
    `start()` begins serving with the functions given by then.
    """

    def __init__(
        self,
        routes: Iterable[HttpRoute],
        *,
        schedules: Iterable[ScheduleSpec] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        api_id: str = "local",
        account_id: str = "123456789012",
        region: str = "us-east-1",
        credentials: Mapping[str, str] | None = None,
        control_token: str | None = None,
    ) -> None:
        self.routes = RouteTable(routes)
        self.control_token = control_token or secrets.token_urlsafe(32)
        # access key id -> secret access key: who may call routes with AWS_IAM authorization (SigV4).
        self.credentials = dict(credentials or {})
        self.schedules = list(schedules)
        self.functions: dict[str, Invoker] = {}
        self.api_id = api_id
        self.account_id = account_id
        self.region = region
        self._server = _Server((host, port), _RequestHandler)
        self._server.gateway = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, functions: Mapping[str, Invoker] | None = None) -> Gateway:
        if functions is not None:
            self.functions = dict(functions)
        missing = sorted({c.route.function for c in self.routes.routes} - set(self.functions))
        if missing:
            raise ValueError(f"no function to serve route(s) of {', '.join(missing)}")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="gateway", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------------- schedules
    def schedule_event(self, schedule: ScheduleSpec, now: float | None = None) -> dict[str, Any]:
        """The payload the schedule delivers: its Input when set, else the service's default event."""
        if schedule.input is not None:
            parsed: dict[str, Any] = json.loads(schedule.input)
            return parsed
        if schedule.kind == "ScheduleV2":
            arn = f"arn:aws:scheduler:{self.region}:{self.account_id}:schedule/default/{schedule.name}"
            return scheduler_event(schedule_arn=arn, account_id=self.account_id, region=self.region, now=now)
        arn = f"arn:aws:events:{self.region}:{self.account_id}:rule/{schedule.name}"
        return rule_event(rule_arn=arn, account_id=self.account_id, region=self.region, now=now)

    def run_schedules(self, function: str | None = None, event_name: str | None = None) -> list[ScheduleRun]:
        """Fire the matching schedules now (all of them by default), one after another."""
        chosen = [
            s
            for s in self.schedules
            if (function is None or s.function == function) and (event_name is None or s.event == event_name)
        ]
        if not chosen:
            raise LookupError(f"no schedule for function={function} event={event_name}")
        runs = []
        for schedule in chosen:
            event = self.schedule_event(schedule)
            invocation = self.functions[schedule.function].invoke(event)
            log.info(
                "schedule %s -> %s: %s",
                schedule.name,
                schedule.function,
                "ok" if invocation.ok else f"{invocation.error_type}: {invocation.error_message}",
            )
            runs.append(ScheduleRun(schedule, event, invocation))
        return runs


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    gateway: Gateway


def _json(message: str) -> bytes:
    return json.dumps({"message": message}, separators=(",", ":")).encode()


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # ------------------------------------------------------------------------------------- answer
    def _send(self, status: int, headers: Sequence[tuple[str, str]], body: bytes, request_id: str) -> None:
        self.send_response_only(status)
        self.send_header("Date", formatdate(usegmt=True))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close" if self.close_connection else "keep-alive")
        self.send_header("Apigw-Requestid", request_id)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, request_id: str) -> None:
        self._send(status, [("Content-Type", "application/json")], _json(message), request_id)

    def _read_body(self) -> bytes | None:
        """The request body, or None when it exceeds the quota (the answer is then already sent)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            size = 0
            while True:
                length = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline() not in {b"\r\n", b"\n", b""}:
                        pass
                    return b"".join(chunks)
                size += length
                if size > MAX_BODY_BYTES:
                    self.close_connection = True
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        started = time.monotonic()
        request_id = api_request_id()
        try:
            status = self._dispatch(request_id)
        except ValueError:  # an unreadable body framing (Content-Length, chunk sizes)
            self.close_connection = True
            self._error(400, "Bad Request", request_id)
            status = 400
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:
            log.exception("the local gateway failed on %s %s", self.command, self.path)
            self.close_connection = True
            self._error(500, "Internal Server Error", request_id)
            status = 500
        log.info(
            '%s "%s %s" %s %.0fms',
            self.client_address[0],
            self.command,
            urlsplit(self.path).path,
            status,
            (time.monotonic() - started) * 1000,
        )

    def _dispatch(self, request_id: str) -> int:
        gateway = self.server.gateway
        body = self._read_body()
        if body is None:
            self._error(413, "Request Entity Too Large", request_id)
            return 413
        # /login and /callback are reached from other sites' links and redirects: pages elsewhere link here.
        refused = request_guard.refusal_of(self.headers, port=gateway.port, pages_elsewhere_link_here=True)
        if refused is not None:
            self._error(403, refused, request_id)
            return 403
        path = urlsplit(self.path).path or "/"
        if path.startswith(ADMIN_PREFIX):
            return self._admin(path, body, request_id)
        found = gateway.routes.match(self.command, path)
        if found is None:
            self._error(404, "Not Found", request_id)
            return 404
        route, params = found
        caller: sigv4.Caller | None = None
        if route.authorizer == IAM_AUTHORIZER:
            split = urlsplit(self.path)
            try:
                caller = sigv4.verify(
                    method=self.command,
                    raw_path=split.path or "/",
                    raw_query=split.query,
                    headers=list(self.headers.items()),
                    body=body,
                    credentials=gateway.credentials,
                    region=gateway.region,
                    account_id=gateway.account_id,
                    now=time.time(),
                )
            except sigv4.SignatureRejected as exc:
                # API Gateway refuses before the integration runs: the function never sees the request.
                self._error(403, exc.message, request_id)
                return 403
        event = http_api_event(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
            route=route,
            path_parameters=params,
            api_id=gateway.api_id,
            account_id=gateway.account_id,
            protocol=self.request_version,
            port=gateway.port,
            request_id=request_id,
            authorizer=caller.as_authorizer() if caller else None,
        )
        function = gateway.functions[route.function]
        invocation = function.invoke(event, timeout=route.timeout_ms / 1000)
        if not invocation.ok:
            log.error(
                "%s %s failed (RequestId %s): %s: %s",
                route.route_key,
                route.function,
                invocation.request_id,
                invocation.error_type,
                invocation.error_message,
            )
            integration_timed_out = (
                invocation.error_type == "Sandbox.Timedout" and function.spec.timeout * 1000 > route.timeout_ms
            )
            if integration_timed_out:
                self._error(503, "Service Unavailable", request_id)
                return 503
            self._error(500, "Internal Server Error", request_id)
            return 500
        try:
            status, headers, data = http_api_response(invocation.payload)
        except MalformedResponseError as exc:
            log.error("%s %s gave a malformed response: %s", route.route_key, route.function, exc)
            self._error(500, "Internal Server Error", request_id)
            return 500
        self._send(status, headers, data, request_id)
        return status

    # -------------------------------------------------------------------------------------- admin
    def _admin(self, path: str, body: bytes, request_id: str) -> int:
        gateway = self.server.gateway
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            self._error(403, "Forbidden", request_id)
            return 403
        if not secrets.compare_digest(
            self.headers.get(CONTROL_TOKEN_HEADER, "").encode(), gateway.control_token.encode()
        ):
            message = f"{ADMIN_PREFIX} needs this run's token in {CONTROL_TOKEN_HEADER} (.local/dev.json holds it)"
            self._error(403, message, request_id)
            return 403
        query = dict(parse_qsl(urlsplit(self.path).query))
        answer: Any
        if path == f"{ADMIN_PREFIX}health" and self.command == "GET":
            answer = {
                "status": "ok",
                "routes": [c.route.route_key for c in gateway.routes.routes],
                "schedules": [s.name for s in gateway.schedules],
                "functions": sorted(gateway.functions),
            }
        elif path == f"{ADMIN_PREFIX}schedule" and self.command == "POST":
            try:
                runs = gateway.run_schedules(query.get("function"), query.get("event"))
            except LookupError as exc:
                self._error(404, str(exc), request_id)
                return 404
            answer = {"runs": [_run_summary(run) for run in runs]}
        elif path.startswith(f"{ADMIN_PREFIX}invoke/") and self.command == "POST":
            name = path.removeprefix(f"{ADMIN_PREFIX}invoke/")
            if name not in gateway.functions:
                self._error(404, f"no function {name}", request_id)
                return 404
            event = json.loads(body) if body else {}
            invocation = gateway.functions[name].invoke(event)
            answer = _invocation_summary(invocation)
        else:
            self._error(404, "Not Found", request_id)
            return 404
        self._send(200, [("Content-Type", "application/json")], json.dumps(answer).encode(), request_id)
        return 200


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
