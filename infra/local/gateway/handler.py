"""The local gateway's request handling: HTTP framing (body limits, chunked bodies, keep-alive), route selection, IAM
authorization (SigV4) where the template asks for it, the invocation, and the function's answer back as HTTP."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

from infra.local import request_guard, sigv4
from infra.local.gateway.controls import ADMIN_PREFIX, CONTROL_TOKEN_HEADER, answer_control
from infra.local.gateway.events import MalformedResponseError, api_request_id, http_api_event, http_api_response
from infra.local.template_model import IAM_AUTHORIZER

if TYPE_CHECKING:
    from infra.local.gateway.server import Gateway

log = logging.getLogger("infra.local.gateway")

MAX_BODY_BYTES: Final = 10 * 1024 * 1024  # HTTP API's payload quota


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    gateway: Gateway


def _json(message: str) -> bytes:
    return json.dumps({"message": message}, separators=(",", ":")).encode()


class RequestHandler(BaseHTTPRequestHandler):
    server: GatewayServer
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
            return self._control(path, body, request_id)
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
    def _control(self, path: str, body: bytes, request_id: str) -> int:
        status, answer = answer_control(
            self.server.gateway,
            method=self.command,
            path=path,
            query=dict(parse_qsl(urlsplit(self.path).query)),
            token=self.headers.get(CONTROL_TOKEN_HEADER, ""),
            client_ip=self.client_address[0],
            body=body,
        )
        if status != 200:
            self._error(status, answer, request_id)
            return status
        self._send(200, [("Content-Type", "application/json")], json.dumps(answer).encode(), request_id)
        return 200
