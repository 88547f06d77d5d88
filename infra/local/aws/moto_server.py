"""moto's server app on a loopback port, answering as AWS does where the broker depends on it: one request at a time
(DynamoDB's conditional writes are atomic), over kept-alive connections, for this machine's programs only."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, Final, cast

from moto.moto_server import werkzeug_app
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wsgi import LimitedStream

from infra.local.request_guard import LoopbackOnlyApplication

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("infra.local.aws")

# Services whose requests may run concurrently: SQS has no conditional writes, and its ReceiveMessage long-polls
# (waits for a message that another request sends), which one request at a time would deadlock.
CONCURRENT_SERVICES: Final = frozenset({"sqs"})


def _service(environ: WSGIEnvironment) -> str:
    """The service a SigV4-signed request is for (its credential scope: key/date/region/SERVICE/aws4_request)."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    _, found, rest = authorization.partition("Credential=")
    scope = rest.split(",", 1)[0].split("/") if found else []
    return scope[3] if len(scope) == 5 else ""


class OneRequestAtATime:
    """Answers one request at a time (except CONCURRENT_SERVICES'). DynamoDB applies a conditional write atomically;
    moto checks the condition, then writes, so under its threaded server two lease takeovers racing on one item
    could both succeed (seen in the reliability suite: a connection refreshed twice). The broker relies on the real
    guarantee, so the embedded AWS gives it (Secrets Manager's idempotent version writes too)."""

    def __init__(self, app: WSGIApplication) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _service(environ) in CONCURRENT_SERVICES:
            return self._app(environ, start_response)
        with self._lock:
            answer = self._app(environ, start_response)
            try:
                return list(answer)  # the whole body is made under the lock
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()


class _KeepAliveRequestHandler(MotoRequestHandler):
    """moto's handler, answering as AWS does: over a kept-alive connection, each answer in one send.

    werkzeug's dev server closes every connection after its answer (http.server cannot skip a request body the
    application left unread), so each AWS call cost a TCP connection and a server thread. Here a request whose
    body has a declared length is answered on its connection: the body is read through a limited stream, what
    the application left of it is drained, and the answer goes out with its length. A chunked body, an HTTP/1.0
    client or one asking to close takes werkzeug's own path, which closes. Writes are buffered: the status line,
    headers and body leave in one send (unbuffered, each is a system call, CPU work for both ends on loopback)."""

    wbufsize = io.DEFAULT_BUFFER_SIZE

    def setup(self) -> None:
        super().setup()
        _live_connections(self.server).add(self.connection)

    def finish(self) -> None:
        _live_connections(self.server).discard(self.connection)
        super().finish()

    def handle_expect_100(self) -> bool:
        # A client that sent "Expect: 100-continue" waits for this interim answer before sending its body: it
        # must leave at once, not with the final answer.
        answered = super().handle_expect_100()
        self.wfile.flush()
        return answered

    def run_wsgi(self) -> None:
        # http.server answered the Expect header above; werkzeug would write a second "100 Continue".
        del self.headers["Expect"]
        length = self.headers.get("Content-Length", "0").strip()
        if self.close_connection or "Transfer-Encoding" in self.headers or not (length.isascii() and length.isdigit()):
            super().run_wsgi()
            return
        body = LimitedStream(cast("IO[bytes]", self.rfile), int(length))
        try:
            self._answer(body)
            body.exhaust()  # the next request line starts after this body
        except (OSError, ClientDisconnected):
            self.close_connection = True

    def _answer(self, body: LimitedStream) -> None:
        self.environ = environ = self.make_environ()
        environ["wsgi.input"] = body
        started: list[Any] = []
        written: list[bytes] = []  # WSGI's write(), then the iterable: the answer's body in order

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            started[:] = [status, headers]
            return written.append

        try:
            chunks = self.server.app(environ, start_response)
            try:
                written.extend(chunks)
                payload = b"".join(written)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        except (OSError, ClientDisconnected):
            raise
        except Exception:
            log.exception("moto failed to answer %s %s", self.command, self.path)
            started[:] = ["500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain; charset=utf-8")]]
            payload = b"the embedded AWS failed to answer: see its log"
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in _FRAMING_HEADERS:
                self.send_header(name, value)
        bodiless = self.command == "HEAD" or code in ("204", "304")
        if not bodiless:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not bodiless:
            self.wfile.write(payload)
        self.wfile.flush()


_FRAMING_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "keep-alive"})


def _live_connections(server: object) -> set[socket.socket]:
    """The open connections of a server (closed by MotoServer.stop: a kept-alive one would hold its thread)."""
    live: set[socket.socket] = vars(server).setdefault("_live_connections", set())
    return live


class MotoServer:
    """moto's server app on a loopback port, in a thread, one request at a time (see OneRequestAtATime), for this
    machine's programs only: moto checks no signature, so any request it serves can read every secret."""

    def __init__(self, host: str, port: int) -> None:
        # moto answers CORS for every origin (flask_cors on each service's app, made on its first request): a page
        # anywhere could then read its answers. No page has any business here (LoopbackOnlyApplication).
        werkzeug_app.DISABLE_GLOBAL_CORS = True  # type: ignore[attr-defined]
        app = LoopbackOnlyApplication(
            OneRequestAtATime(DomainDispatcherApplication(create_backend_app)), pages_elsewhere_link_here=False
        )
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_KeepAliveRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        # Kept-alive connections wait in their threads for a next request: end them (the clients reconnect).
        for connection in list(_live_connections(self._server)):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
