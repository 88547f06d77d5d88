"""The Smartsheet client goes through the proxy the function's environment names (HTTPS_PROXY / HTTP_PROXY, less
NO_PROXY), as botocore does for AWS: a deployment whose egress must pass a proxy keeps working."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from smartsheet_oauth.errors import TransientSmartsheetError
from smartsheet_oauth.smartsheet import SmartsheetClient, Timeouts

GRANT = {"access_token": "a" * 26, "refresh_token": "r" * 26, "token_type": "bearer", "expires_in": 604799}


class Recorder(ThreadingHTTPServer):
    """Answers every POST with a token grant and keeps the request line and body it got."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append((self.requestline, body))
        answer = json.dumps(GRANT).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def no_proxy_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def client(base: str) -> SmartsheetClient:
    return SmartsheetClient(api_base_url=base, client_id="app", client_secret="s3cret", timeouts=Timeouts(1, 2))


def test_the_token_call_goes_through_the_configured_proxy(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", recorder.url)

    grant = client("http://api.smartsheet.invalid/2.0").exchange_code("the-code")

    assert grant.access_token == GRANT["access_token"]
    [(request_line, body)] = recorder.seen
    # A proxy is asked for the absolute URL; the form (with its hash, never the secret) is what reaches it.
    assert request_line == "POST http://api.smartsheet.invalid/2.0/token HTTP/1.1"
    assert b"grant_type=authorization_code" in body
    assert b"s3cret" not in body


def test_no_proxy_sends_the_call_direct(recorder: Recorder, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    grant = client(f"{recorder.url}/2.0").refresh("the-refresh-token")

    assert grant.refresh_token == GRANT["refresh_token"]
    [(request_line, _body)] = recorder.seen
    assert request_line == "POST /2.0/token HTTP/1.1"


def test_a_proxy_that_is_down_is_a_transient_error(
    recorder: Recorder, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port}")

    # Smartsheet itself (the recorder) would answer: the call failing shows it went to the proxy.
    with pytest.raises(TransientSmartsheetError, match="Smartsheet unreachable"):
        client(f"{recorder.url}/2.0").exchange_code("the-code")
    assert recorder.seen == []
