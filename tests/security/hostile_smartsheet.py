"""A loopback stand-in for Smartsheet's API that answers whatever a test scripts: HTML instead of JSON, huge or
endless bodies, lying Content-Length, broken gzip, wrong types. The emulator is faithful; this one is hostile."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

TOKEN_PATH = "/2.0/token"
USERS_ME_PATH = "/2.0/users/me"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json;charset=UTF-8"),)
    # A Content-Length to announce whatever is sent (None: the real length; chunked bodies announce none).
    content_length: int | None = None
    chunked: bool = False


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload).encode())


def html_reply(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), (("Content-Type", "text/html"),))


def repeated(chunk: bytes, times: int) -> Iterator[bytes]:
    for _ in range(times):
        yield chunk


def gzip_bomb(megabytes: int) -> Reply:
    body = gzip.compress(b"{" + b" " * (megabytes * 1024 * 1024) + b"}", compresslevel=9)
    return Reply(200, body, (("Content-Type", "application/json"), ("Content-Encoding", "gzip")))


VALID_GRANT: dict[str, object] = {
    "access_token": "hostile-access-" + "a" * 20,
    "refresh_token": "hostile-refresh-" + "r" * 20,
    "token_type": "bearer",
    "expires_in": 604799,
}


@dataclass
class HostileSmartsheet:
    """Serves the scripted replies on 127.0.0.1; unscripted paths get a valid answer (grant, user)."""

    replies: dict[str, Reply] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                with owner._lock:
                    owner.seen.append(f"{self.command} {path}")
                    reply = owner.replies.get(path) or owner.default(path)
                # The broker may stop reading: that is the point of a huge body.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(reply)
                self.close_connection = True

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                body = reply.body
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in [body] if isinstance(body, bytes) else body:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if isinstance(body, bytes):
                    length = len(body) if reply.content_length is None else reply.content_length
                    self.send_header("Content-Length", str(length))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Connection", "close")
                if reply.content_length is not None:
                    self.send_header("Content-Length", str(reply.content_length))
                self.end_headers()
                for chunk in body:
                    self.wfile.write(chunk)

            do_GET = do_POST = do_DELETE = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/2.0"

    def script(self, *, token: Reply | None = None, users_me: Reply | None = None) -> None:
        with self._lock:
            self.replies = {}
            if token is not None:
                self.replies[TOKEN_PATH] = token
            if users_me is not None:
                self.replies[USERS_ME_PATH] = users_me
            self.seen.clear()

    @staticmethod
    def default(path: str) -> Reply:
        if path == TOKEN_PATH:
            return json_reply(VALID_GRANT)
        if path == USERS_ME_PATH:
            return json_reply({"id": 1234567890123456, "email": "hostile@example.com"})
        return json_reply({"errorCode": 1006, "message": "Not Found"}, 404)
