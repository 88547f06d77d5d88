"""The broker end to end over HTTP: gateway -> functions (own processes) -> moto and the emulator."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from infra.local import demo
from infra.local.demo import BrokerClient
from infra.local.gateway import CONTROL_TOKEN_HEADER
from infra.local.stack import LocalStack

pytestmark = pytest.mark.e2e

ALAN = "9007199254740993"  # the emulator's user whose id a float cannot hold
GRACE = "6812335718217604"


def _connection(stack: LocalStack, connection_id: str) -> dict[str, Any] | None:
    return stack.aws.dynamodb.get_item(
        TableName=stack.table_name("CONNECTIONS_TABLE_NAME"),
        Key={"connection_id": {"S": connection_id}},
        ConsistentRead=True,
    ).get("Item")


def test_the_demo_story_behaves(local_stack: LocalStack) -> None:
    lines: list[str] = []
    assert demo.run(local_stack, out=lines.append, user_id=GRACE), "\n".join(lines)
    assert sum(line.strip() == "ok" for line in lines) == 8


def test_sign_in_stores_the_connection_under_the_exact_user_id(local_stack: LocalStack, client: BrokerClient) -> None:
    sign_in = client.login()
    client.consent(sign_in, allow=True, user_id=ALAN)
    answer = client.callback(sign_in)

    assert (answer.status_code, answer.headers["Location"]) == (303, "/result")
    assert answer.headers["Cache-Control"] == "no-store"
    [result] = [c for c in answer.raw.headers.getlist("Set-Cookie") if c.startswith("__Host-smartsheet-oauth-result=")]
    page = client.result(result.split(";")[0])  # through the gateway, as the browser follows the 303
    assert page.status_code == 200
    assert "alan@example.com" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" in page.headers
    record = _connection(local_stack, ALAN)
    assert record is not None
    assert record["status"]["S"] == "active"
    secret = local_stack.aws.secretsmanager.get_secret_value(SecretId=record["secret_arn"]["S"])
    tokens = json.loads(secret["SecretString"])
    assert local_stack.emulator.access_token_is_live(tokens["access_token"])
    assert local_stack.emulator.refresh_token_is_live(tokens["refresh_token"])


def test_callback_without_the_nonce_cookie_is_refused_before_smartsheet(
    local_stack: LocalStack, client: BrokerClient
) -> None:
    sign_in = client.login()
    client.consent(sign_in, allow=True)
    calls = client.token_calls()

    answer = client.callback(sign_in, cookie="")

    assert answer.status_code == 400
    assert 'href="/login"' in answer.text
    assert client.token_calls() == calls
    # The state was consumed by that one try: the right cookie now comes too late.
    assert client.callback(sign_in).status_code == 400


def test_smartsheet_outage_at_the_callback_is_a_503_page(local_stack: LocalStack, client: BrokerClient) -> None:
    sign_in = client.login()
    client.consent(sign_in, allow=True)
    local_stack.emulator.set_faults(error_rate=1.0, token_only=True, server_error_codes=(4004,))

    answer = client.callback(sign_in)

    assert answer.status_code == 503
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "Traceback" not in answer.text


def test_unknown_routes_answer_like_api_gateway(local_stack: LocalStack) -> None:
    for method, path in [("GET", "/nope"), ("DELETE", "/login"), ("GET", "/login/"), ("HEAD", "/callback")]:
        answer = requests.request(method, f"{local_stack.url}{path}", timeout=10)
        assert answer.status_code == 404, (method, path)
        if method != "HEAD":
            assert answer.json() == {"message": "Not Found"}
        assert answer.headers["Apigw-Requestid"]


def test_every_template_route_is_served(local_stack: LocalStack) -> None:
    token = {CONTROL_TOKEN_HEADER: local_stack.gateway.control_token}
    health = requests.get(f"{local_stack.url}/_local/health", headers=token, timeout=10).json()
    assert set(health["routes"]) == {
        "GET /login",
        "POST /login",
        "GET /callback",
        "GET /result",
        "GET /connections",
        "GET /connections/{connection_id}",
        "POST /connections/{connection_id}/refresh",
        "DELETE /connections/{connection_id}",
        "PUT /connections/{connection_id}/tags",
        "POST /connect-sessions",
        "POST /connect-sessions/complete",
        "POST /connections/import",
    }
    assert health["schedules"] == ["RefreshFunctionSweep"]


def test_the_schedule_delivers_an_eventbridge_scheduler_event(local_stack: LocalStack) -> None:
    (run,) = local_stack.run_schedule()

    assert run.invocation.ok, run.invocation
    assert run.event["source"] == "aws.scheduler"
    assert run.event["detail-type"] == "Scheduled Event"
    assert run.event["resources"] == ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/RefreshFunctionSweep"]
    assert set(run.invocation.payload) >= {"dispatched", "outcomes"}


def test_function_logs_never_carry_tokens(local_stack: LocalStack, client: BrokerClient) -> None:
    sign_in = client.login()
    callback_url = client.consent(sign_in, allow=True)
    assert client.callback(sign_in).status_code == 303  # to /result
    record = _connection(local_stack, str(local_stack.emulator.users[0].id))
    assert record is not None
    secret = local_stack.aws.secretsmanager.get_secret_value(SecretId=record["secret_arn"]["S"])
    tokens = json.loads(secret["SecretString"])
    local_stack.run_schedule()
    time.sleep(0.2)  # the log pump runs in its own thread
    logs = "\n".join(local_stack.function_logs())
    code = callback_url.split("code=")[1].split("&")[0]
    nonce = sign_in.nonce_cookie.split("=", 1)[1]
    secrets = (code, sign_in.state, nonce, tokens["access_token"], tokens["refresh_token"], "local-client-secret")
    for value in secrets:
        assert value not in logs
