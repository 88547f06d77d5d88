"""How the Smartsheet client reaches Smartsheet, as botocore reaches AWS: through the proxy the function's
environment names (HTTPS_PROXY / HTTP_PROXY, less NO_PROXY), so a deployment whose egress must pass a proxy keeps
working; and over TLS it checks: a certificate no trusted CA signed is refused (nothing is sent over it), a CA the
deployment names in AWS_CA_BUNDLE is trusted."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from smartsheet_oauth.domain.errors import TransientSmartsheetError
from smartsheet_oauth.smartsheet.client import SmartsheetClient, Timeouts

GRANT = {"access_token": "a" * 26, "refresh_token": "r" * 26, "token_type": "bearer", "expires_in": 604799}


class Recorder(ThreadingHTTPServer):
    """Answers every POST with a token grant and keeps the request line and body it got."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.scheme = "http"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"


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


def serving(server: Recorder) -> Iterator[Recorder]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield from serving(Recorder())


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that signs itself (no CA anyone trusts), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    return self_signed(tmp_path)[0]


@pytest.fixture
def tls_recorder(certificate: Path) -> Iterator[Recorder]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, certificate.with_name("key.pem"))
    yield from serving(Recorder(tls=context))


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def nothing_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "AWS_CA_BUNDLE"):
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


def test_a_certificate_no_trusted_ca_signed_is_refused(tls_recorder: Recorder) -> None:
    with pytest.raises(TransientSmartsheetError, match="Smartsheet unreachable: SSLError"):
        client(f"{tls_recorder.url}/2.0").exchange_code("the-code")
    assert tls_recorder.seen == []


def test_the_ca_bundle_named_by_aws_ca_bundle_is_trusted(
    tls_recorder: Recorder, certificate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate))

    grant = client(f"{tls_recorder.url}/2.0").exchange_code("the-code")

    assert grant.access_token == GRANT["access_token"]
    assert [line for line, _body in tls_recorder.seen] == ["POST /2.0/token HTTP/1.1"]
