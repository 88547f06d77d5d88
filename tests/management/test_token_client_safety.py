"""The token client's own defences (issue 16, item 8): it never follows a redirect (the SigV4 signature and session
token would travel with it), and it uses a connection id, which names a secret and a URL path, only when it is one:
the broker's rule (digits, at most 20), shared with the management API."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from smartsheet_oauth.domain.errors import BadRequest
from smartsheet_oauth.flows.management import checked_connection_id
from smartsheet_oauth_client import TokenError, TokenProvider, is_connection_id

from tests.management.test_token_client import ADA, NOW, PREFIX, Clock, FakeBroker, FakeSecrets

SESSION_TOKEN = "session-token-of-the-integrators-role"


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request as its server is told, and keeps what each request carried."""

    server: _RecordingServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        status, headers = self.server.answer
        payload = b'{"outcome": "refreshed", "connections": []}'
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[dict[str, Any]] = []
        self.answer: tuple[int, dict[str, str]] = (200, {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def servers() -> Iterator[tuple[_RecordingServer, _RecordingServer]]:
    """A broker that redirects, and the place it redirects to."""
    broker, elsewhere = _RecordingServer(), _RecordingServer()
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in (broker, elsewhere)]
    for thread in threads:
        thread.start()
    yield broker, elsewhere
    for server in (broker, elsewhere):
        server.shutdown()
        server.server_close()


def provider_for(api_url: str, secrets: Any, clock: Clock, **kwargs: Any) -> TokenProvider:
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", aws_session_token=SESSION_TOKEN
    )
    return TokenProvider(
        api_url=api_url,
        secret_prefix=PREFIX,
        region="eu-west-1",
        session=session,
        secrets_client=secrets,
        clock=clock,
        **kwargs,
    )


ASKS: dict[str, Callable[[TokenProvider], object]] = {
    "refresh": lambda provider: provider.token(ADA),  # POST /connections/{id}/refresh
    "end_user": lambda provider: provider.token(end_user_id="user-42"),  # GET /connections?end_user_id=
}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("route", sorted(ASKS))
def test_a_redirect_from_the_broker_is_not_followed_and_the_signature_stays_home(
    servers: tuple[_RecordingServer, _RecordingServer], status: int, route: str
) -> None:
    broker, elsewhere = servers
    broker.answer = (status, {"Location": f"{elsewhere.url}/collect"})
    clock, secrets = Clock(), FakeSecrets()
    secrets.put(ADA, "expiring", NOW + 60)  # under the 300 s minimum: the client asks the broker
    provider = provider_for(broker.url, secrets, clock)

    with pytest.raises(TokenError) as refused:
        ASKS[route](provider)

    assert elsewhere.seen == [], f"the signed request went on to {elsewhere.url}: {elsewhere.seen}"
    [asked] = broker.seen
    assert "Authorization" in asked["headers"]
    assert f"redirect ({status}), not followed" in str(refused.value)
    assert SESSION_TOKEN not in str(refused.value)


@pytest.mark.parametrize(
    "connection_id",
    [
        "",
        "../../prod/app-credentials",
        f"{ADA}/../other",
        "4583173393803140?x=1",
        " 4583173393803140",
        "²",  # str.isdigit() says yes
        "٤٥٨٣",  # Arabic-Indic digits: isdigit() says yes too
        "1" * 21,
    ],
)
def test_a_malformed_connection_id_is_refused_before_any_read_or_request(connection_id: str) -> None:
    clock, secrets = Clock(), FakeSecrets()
    broker = FakeBroker(secrets, clock)
    provider = provider_for("https://abc123.execute-api.eu-west-1.amazonaws.com", secrets, clock, send=broker.send)

    with pytest.raises(ValueError, match="1 to 20 digits"):
        provider.token(connection_id)

    assert secrets.reads == 0
    assert broker.calls == []


def test_a_malformed_connection_id_from_the_broker_is_refused() -> None:
    clock, secrets = Clock(), FakeSecrets()
    broker = FakeBroker(secrets, clock)

    def lookup(method: str, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
        broker.calls.append((method, url, headers, body))
        return 200, json.dumps({"connections": [{"connection_id": "../../prod/app-credentials"}]}).encode()

    provider = provider_for("https://abc123.execute-api.eu-west-1.amazonaws.com", secrets, clock, send=lookup)

    with pytest.raises(TokenError, match="malformed connection id"):
        provider.token(end_user_id="user-42")
    assert secrets.reads == 0


@pytest.mark.parametrize(
    ("connection_id", "valid"),
    [("4583173393803140", True), ("1" * 20, True), ("1" * 21, False), ("²", False), ("", False), ("-1", False)],
)
def test_the_client_and_the_management_api_hold_one_rule(connection_id: str, valid: bool) -> None:
    assert is_connection_id(connection_id) is valid
    if valid:
        assert checked_connection_id(connection_id) == connection_id
    else:
        with pytest.raises(BadRequest):
            checked_connection_id(connection_id)
