"""The local stack serves this machine only (issue 16, item 6): a web page the developer visits reaches neither the
embedded AWS (moto checks no signature: it would hand over every secret), nor the emulator, nor the gateway's
/_local/ controls (which invoke any function with any event, a forged IAM caller included). Forged Origin and Host
headers over HTTP against each server, then the same attacks from pages in a real browser."""

from __future__ import annotations

import dataclasses
import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from infra.local import dev
from infra.local.demo import BrokerClient
from infra.local.stack import LocalStack
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.support.events import http_event

pytestmark = pytest.mark.e2e

ADA = "4583173393803140"
ELSEWHERE = "http://evil.example"
REBOUND = "rebind.test"  # an attacker's host name whose DNS answer turned into 127.0.0.1
# moto picks the service from the credential scope and checks no signature: any such header is accepted.
FORGED_SIGNATURE = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def read_app_secret(stack: LocalStack, headers: dict[str, str]) -> requests.Response:
    """GetSecretValue of the app credentials (the client secret) straight from the embedded AWS."""
    body = json.dumps({"SecretId": stack.secret_arn("APP_CREDENTIALS_SECRET_ARN")})
    wire = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "secretsmanager.GetSecretValue",
        "Authorization": FORGED_SIGNATURE,
        **headers,
    }
    return requests.post(stack.aws.endpoint_url, data=body, headers=wire, timeout=10)


def forged_disconnect(connection_id: str) -> str:
    """A management event a page would post to /_local/invoke: DELETE /connections/{id} by a made-up admin."""
    event = http_event(f"/connections/{connection_id}", method="DELETE")
    event["routeKey"] = event["requestContext"]["routeKey"] = "DELETE /connections/{connection_id}"
    event["pathParameters"] = {"connection_id": connection_id}
    event["requestContext"]["authorizer"] = {"iam": {"userArn": "arn:aws:iam::123456789012:user/admin"}}
    return json.dumps(event)


def status_of(stack: LocalStack, connection_id: str) -> str:
    item = stack.aws.dynamodb.get_item(
        TableName=stack.table_name("CONNECTIONS_TABLE_NAME"),
        Key={"connection_id": {"S": connection_id}},
        ConsistentRead=True,
    )["Item"]
    return str(item["status"]["S"])


def connect(client: BrokerClient, user_id: str) -> None:
    sign_in = client.login()
    client.consent(sign_in, allow=True, user_id=user_id)
    assert client.callback(sign_in).status_code == 303  # to /result


# ------------------------------------------------------------------------------------ the embedded AWS
def test_the_embedded_aws_refuses_a_page_of_another_origin(local_stack: LocalStack) -> None:
    answer = read_app_secret(local_stack, {"Origin": ELSEWHERE, "Sec-Fetch-Site": "cross-site"})

    assert answer.status_code == 403, answer.text
    assert "client_secret" not in answer.text
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_the_embedded_aws_refuses_a_rebound_host_name(local_stack: LocalStack) -> None:
    answer = read_app_secret(local_stack, {"Host": f"{REBOUND}:{port_of(local_stack.aws.endpoint_url)}"})

    assert answer.status_code == 403, answer.text
    assert "client_secret" not in answer.text


def test_the_embedded_aws_refuses_what_a_page_elsewhere_started_even_without_an_origin(
    local_stack: LocalStack,
) -> None:
    # An <img> or a link on another loopback port: no Origin, but the browser says who started it.
    answer = read_app_secret(local_stack, {"Sec-Fetch-Site": "same-site"})
    assert answer.status_code == 403, answer.text


def test_the_embedded_aws_serves_this_machines_programs_and_answers_no_cors(local_stack: LocalStack) -> None:
    program = read_app_secret(local_stack, {})
    own_origin = read_app_secret(local_stack, {"Origin": local_stack.aws.endpoint_url})

    assert program.status_code == 200
    assert "client_secret" in program.json()["SecretString"]
    assert own_origin.status_code == 200
    assert not [name for name in own_origin.headers if name.lower().startswith("access-control-")]


# ----------------------------------------------------------------------------------------- the emulator
def test_the_emulator_refuses_pages_of_other_origins_and_rebound_hosts(local_stack: LocalStack) -> None:
    emulator = local_stack.emulator
    faults = f"{emulator.base_url}/_emulator/faults"
    before = dataclasses.asdict(emulator.faults)  # a copy: the emulator changes its Faults in place

    cross_site = requests.post(faults, json={"error_rate": 1.0}, headers={"Origin": ELSEWHERE}, timeout=10)
    rebound = requests.post(
        faults, json={"error_rate": 1.0}, headers={"Host": f"{REBOUND}:{port_of(faults)}"}, timeout=10
    )

    assert (cross_site.status_code, rebound.status_code) == (403, 403)
    assert dataclasses.asdict(emulator.faults) == before


def test_the_emulators_consent_form_may_post_to_its_own_page_only(local_stack: LocalStack) -> None:
    # The authorize page sends no referrer, so the browser posts its Allow/Deny form with Origin: null; only the
    # browser's own Sec-Fetch-Site tells that post from a sandboxed page elsewhere doing the same.
    authorize = local_stack.emulator.authorize_url
    own = requests.post(authorize, data={}, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"}, timeout=10)
    other = requests.post(authorize, data={}, headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"}, timeout=10)

    assert own.status_code != 403, own.text
    assert other.status_code == 403


# ------------------------------------------------------------------------------------------ the gateway
def test_a_cross_site_text_plain_post_cannot_invoke_a_function_with_a_forged_iam_caller(
    local_stack: LocalStack, client: BrokerClient
) -> None:
    connect(client, ADA)

    answer = requests.post(
        f"{local_stack.url}/_local/invoke/ManagementFunction",
        data=forged_disconnect(ADA),
        headers={"Content-Type": "text/plain", "Origin": ELSEWHERE, "Sec-Fetch-Site": "cross-site"},
        timeout=60,
    )

    assert answer.status_code == 403, answer.text
    assert status_of(local_stack, ADA) == "active"


def test_the_local_controls_need_the_runs_token(local_stack: LocalStack, client: BrokerClient) -> None:
    connect(client, ADA)
    invoke = f"{local_stack.url}/_local/invoke/ManagementFunction"

    missing = requests.post(invoke, data=forged_disconnect(ADA), timeout=60)
    wrong = requests.post(invoke, data=forged_disconnect(ADA), headers={"X-Local-Token": "guess"}, timeout=60)
    health = requests.get(
        f"{local_stack.url}/_local/health", headers={"X-Local-Token": local_stack.gateway.control_token}, timeout=10
    )

    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert "X-Local-Token" in missing.json()["message"]
    assert status_of(local_stack, ADA) == "active"
    assert health.status_code == 200


def test_the_gateway_refuses_a_rebound_host_name(local_stack: LocalStack) -> None:
    answer = requests.get(
        local_stack.login_url,
        headers={"Host": f"{REBOUND}:{local_stack.gateway.port}"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 403
    assert "Location" not in answer.headers


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_the_gateway_serves_every_loopback_name_and_its_own_pages(local_stack: LocalStack, host: str) -> None:
    authority = f"{host}:{local_stack.gateway.port}"
    plain = requests.get(local_stack.login_url, headers={"Host": authority}, allow_redirects=False, timeout=10)
    own_page = requests.get(
        local_stack.login_url,
        headers={"Host": authority, "Origin": f"http://{authority}", "Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
        timeout=10,
    )
    assert (plain.status_code, own_page.status_code) == (302, 302)


# ---------------------------------------------------------------------------- the token's state file
def test_the_state_file_holding_the_token_is_readable_by_its_user_only(
    local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_file = tmp_path / ".local" / "dev.json"
    state_file.parent.mkdir()
    state_file.write_text("{}", encoding="utf-8")
    state_file.chmod(0o644)  # an older make dev's, or a umask's
    monkeypatch.setattr(dev, "STATE_FILE", state_file)

    dev._write_state(local_stack)

    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert json.loads(state_file.read_text(encoding="utf-8"))["local_token"] == local_stack.gateway.control_token
    assert [path.name for path in state_file.parent.iterdir()] == ["dev.json"]


def test_make_refresh_takes_the_token_from_the_state_file(
    local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dev, "STATE_FILE", tmp_path / "dev.json")
    assert dev.main(["refresh"]) == 1
    assert "start one with `make dev`" in capsys.readouterr().err

    dev._write_state(local_stack)
    assert dev.main(["refresh"]) == 0
    assert "RefreshFunctionSweep -> RefreshFunction" in capsys.readouterr().out
    assert dev.main(["refresh", "--url", "http://rebind.example:3000"]) == 2  # the token goes to loopback only


# ----------------------------------------------------------------------------------- from a real browser
ATTACK = """
async ({moto, secretId, gateway, forged, emulator}) => {
  const outcome = async (request) => {
    try { const answer = await request; return `read ${answer.status}: ${await answer.text()}`; }
    catch (error) { return `blocked: ${error}`; }
  };
  return {
    secret: await outcome(fetch(moto, {method: "POST", body: JSON.stringify({SecretId: secretId}), headers: {
      "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.GetSecretValue",
      "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, " +
                       "SignedHeaders=host, Signature=0"}})),
    // A "simple" request: no preflight, the answer opaque, but the effect would be real.
    invoke: await outcome(fetch(gateway, {method: "POST", mode: "no-cors", body: forged,
                                          headers: {"Content-Type": "text/plain"}})),
    faults: await outcome(fetch(emulator, {method: "POST", mode: "no-cors", body: '{"error_rate": 1.0}',
                                           headers: {"Content-Type": "text/plain"}})),
  };
}
"""


class _AttackerPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>a page the developer visits</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def attacker_site() -> Iterator[str]:
    """A web page on another loopback port: what a page from anywhere can do, without DNS tricks."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # The attacker's host name resolves to 127.0.0.1, as after a DNS rebinding; plain http, no upgrade attempt.
    args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1", "--disable-features=HttpsUpgrades"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.mark.browser
def test_a_page_on_another_port_can_neither_read_nor_change_the_local_stack(
    local_stack: LocalStack, client: BrokerClient, attacker_site: str, page: Any
) -> None:
    connect(client, ADA)
    faults_before = dataclasses.asdict(local_stack.emulator.faults)
    page.goto(attacker_site)

    outcome = page.evaluate(
        ATTACK,
        {
            "moto": local_stack.aws.endpoint_url,
            "secretId": local_stack.secret_arn("APP_CREDENTIALS_SECRET_ARN"),
            "gateway": f"{local_stack.url}/_local/invoke/ManagementFunction",
            "forged": forged_disconnect(ADA),
            "emulator": f"{local_stack.emulator.base_url}/_emulator/faults",
        },
    )

    assert outcome["secret"].startswith("blocked"), outcome["secret"]
    assert status_of(local_stack, ADA) == "active", outcome["invoke"]
    assert dataclasses.asdict(local_stack.emulator.faults) == faults_before, outcome["faults"]


@pytest.mark.browser
def test_a_rebound_host_name_cannot_read_the_embedded_aws(local_stack: LocalStack, page: Any) -> None:
    # After the rebinding the attacker's page and the embedded AWS share an origin: the browser lets it read all.
    rebound = f"http://{REBOUND}:{port_of(local_stack.aws.endpoint_url)}"
    landing = page.goto(f"{rebound}/")

    outcome = page.evaluate(
        """async (secretId) => {
          const answer = await fetch("/", {method: "POST", body: JSON.stringify({SecretId: secretId}), headers: {
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.GetSecretValue",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, " +
                             "SignedHeaders=host, Signature=0"}});
          return `${answer.status}: ${await answer.text()}`;
        }""",
        local_stack.secret_arn("APP_CREDENTIALS_SECRET_ARN"),
    )

    assert outcome.startswith("403"), outcome
    assert "client_secret" not in outcome
    assert landing.status == 403
