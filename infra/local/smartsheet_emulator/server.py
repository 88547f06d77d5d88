"""The emulator's HTTP layer on loopback: a threaded keep-alive server that routes each request to the authorize page,
the API or the admin routes, and applies latency and faults (errors, 429s, held requests) around the API's work."""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from infra.local import request_guard
from infra.local.smartsheet_emulator.admin import AdminRoutes
from infra.local.smartsheet_emulator.api import SmartsheetApi, auth_method
from infra.local.smartsheet_emulator.authorize import AuthorizePage
from infra.local.smartsheet_emulator.errors import ApiError
from infra.local.smartsheet_emulator.faults import FaultInjector
from infra.local.smartsheet_emulator.ledger import Ledger
from infra.local.smartsheet_emulator.wire import (
    ADMIN_PREFIX,
    AUTHORIZE_PATH,
    FORM,
    TOKEN_PATH,
    USERS_ME_PATH,
    Reply,
    first_values,
    json_reply,
)

_MAX_BODY_BYTES = 1 << 20


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback addresses: the emulator must never listen beyond this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Site:
    """What the server serves: the emulator's parts, and whether to log each request."""

    pages: AuthorizePage
    api: SmartsheetApi
    admin: AdminRoutes
    ledger: Ledger
    injector: FaultInjector
    verbose: Callable[[], bool]


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5 would refuse some.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], site: Site) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.site = site
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def shutdown_promptly(self) -> None:
        """shutdown(), without waiting out the serve loop's poll interval: a connection wakes it."""
        stopper = threading.Thread(target=self.shutdown, daemon=True)
        stopper.start()
        while stopper.is_alive():
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.server_name, self.server_port), timeout=0.5),
            ):
                pass
            stopper.join(0.01)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout it chose, a stop()) is normal here, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Wake keep-alive threads blocked on reads, so no request is served after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive: benchmarks run thousands of refreshes through a few pooled connections.
    protocol_version = "HTTP/1.1"
    server_version = "SmartsheetEmulator/1.0"
    sys_version = ""
    # Idle keep-alive connections give up their thread after this many seconds.
    timeout = 60
    # Headers and body leave in one buffered write (flushed per request by the base class), with Nagle
    # off: separate small writes meet the client's delayed ACK and cost ~40 ms per request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: EmulatorServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line can carry secrets (token parameters as a query string): log the path only.
        self.log_message("%s %s %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.site.verbose():
            sys.stderr.write(f"smartsheet-emulator: {format % args}\n")

    def _dispatch(self) -> None:
        site = self.server.site
        try:
            reply = self._route(site)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        except Exception:
            traceback.print_exc(file=sys.stderr)
            reply = site.api.error_reply(ApiError(4004))
        if reply is None:
            # A timeout fault whose client went away: nothing to answer.
            self.close_connection = True
            return
        self._send(reply)

    def _route(self, site: Site) -> Reply | None:
        parts = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return json_reply(413, {"errorCode": 1008, "message": "Request body too large."})
        # The broker's /login redirects browsers to the authorize page: pages elsewhere link here.
        refused = request_guard.refusal_of(self.headers, port=self.server.server_port, pages_elsewhere_link_here=True)
        if refused is not None:
            return json_reply(403, {"errorCode": 1004, "message": refused})
        if parts.path.startswith(ADMIN_PREFIX + "/"):
            return site.admin.reply(self.command, parts.path, parts.query, body)
        serve = _ROUTES.get((self.command, parts.path))
        if serve is None:
            site.ledger.count("unknown", "1006")
            return site.api.error_reply(ApiError(1006))
        return serve(self, site, parts.query, body)

    def _serve_authorize_get(self, site: Site, query: str, _body: bytes) -> Reply | None:
        site.injector.pause(site.injector.latency_seconds("authorize"))
        return site.pages.get(query)

    def _serve_authorize_post(self, site: Site, _query: str, body: bytes) -> Reply | None:
        site.injector.pause(site.injector.latency_seconds("authorize"))
        form = first_values(body.decode("utf-8", "replace")) if self._mime() == FORM else {}
        return site.pages.post(form)

    def _serve_users_me(self, site: Site, _query: str, _body: bytes) -> Reply | None:
        authorization = self.headers.get("Authorization")
        return self._api(site, "users_me", "users_me", lambda: site.api.users_me(authorization))[0]

    def _serve_revoke(self, site: Site, query: str, _body: bytes) -> Reply | None:
        authorization = self.headers.get("Authorization")
        return self._api(site, "revoke", "revoke", lambda: site.api.revoke(authorization, query))[0]

    def _mime(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > _MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve_token(self, site: Site, query: str, body: bytes) -> Reply | None:
        mime = self._mime()
        from_query = first_values(query)
        # Only a form body counts, as at Smartsheet: a JSON body's fields are simply not seen.
        from_body = first_values(body.decode("utf-8", "replace")) if mime == FORM else {}
        params = {**from_query, **from_body}
        grant_type = params.get("grant_type", "")
        operation = {"authorization_code": "token.code", "refresh_token": "token.refresh"}.get(
            grant_type, "token.other"
        )
        reply, outcome = self._api(site, "token", operation, lambda: site.api.token(params))
        transport = "+".join(name for name, seen in (("form", from_body), ("query", from_query)) if seen) or "none"
        site.ledger.log_token_request(
            {
                "grant_type": grant_type or None,
                "auth_method": auth_method(params),
                "content_type": mime,
                "transport": transport,
                "client_id": params.get("client_id"),
                "redirect_uri_sent": "redirect_uri" in params,
                "redirect_url_sent": "redirect_url" in params,
                "outcome": outcome,
            }
        )
        return reply

    def _api(
        self, site: Site, endpoint: str, operation: str, process: Callable[[], tuple[Reply, str]]
    ) -> tuple[Reply | None, str]:
        """Latency, then the fault draw, then the real work; counts one outcome per request."""
        with site.ledger.in_progress(operation):
            return self._api_in_progress(site, endpoint, operation, process)

    def _api_in_progress(
        self, site: Site, endpoint: str, operation: str, process: Callable[[], tuple[Reply, str]]
    ) -> tuple[Reply | None, str]:
        injector, ledger = site.injector, site.ledger
        injector.pause(injector.latency_seconds(endpoint))
        fault = injector.draw(endpoint)
        if isinstance(fault, int):
            ledger.count(operation, str(fault))
            return site.api.error_reply(ApiError(fault)), str(fault)
        if fault is None:
            reply, outcome = process()
            ledger.count(operation, outcome)
            return reply, outcome
        faults = injector.faults
        processed = process() if faults.timeout_processes else None
        if processed is not None:
            ledger.count(operation, processed[1])
        if not self._hold(injector, faults.timeout_ms):
            # Counted beside the outcome (if processed): the answer never reached the client.
            ledger.count_extra(f"{operation}.timeout")
            if processed is None:
                ledger.count_extra(operation)
            return None, "timeout"
        if processed is None:
            processed = process()
            ledger.count(operation, processed[1])
        return processed

    def _hold(self, injector: FaultInjector, timeout_ms: float | None) -> bool:
        """Hold the request; True if the client is still waiting at the end, False if it gave up."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while not injector.stopping.is_set():
            if self._client_gone():
                return False
            step = 0.02
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                step = min(step, remaining)
            injector.stopping.wait(step)
        return False

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


_Route = Callable[[_Handler, Site, str, bytes], Reply | None]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", AUTHORIZE_PATH): _Handler._serve_authorize_get,
    ("POST", AUTHORIZE_PATH): _Handler._serve_authorize_post,
    ("POST", TOKEN_PATH): _Handler._serve_token,
    ("DELETE", TOKEN_PATH): _Handler._serve_revoke,
    ("GET", USERS_ME_PATH): _Handler._serve_users_me,
}
