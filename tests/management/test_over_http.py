"""Connections for your code over the local stack: the gateway's IAM check in front of the management function,
a disconnect that really revokes in the emulator, events from the functions' own processes on EventBridge."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from smartsheet_oauth_client import TokenProvider

from infra.local.aws import LOCAL_CREDENTIALS
from infra.local.demo import BrokerClient
from infra.local.stack import LocalStack
from infra.local.template_model import IAM_AUTHORIZER
from tests.management.conftest import make_sink
from tests.management.test_gateway_iam import signed_headers
from tests.support.fixtures import INTEGRATOR_APP

pytestmark = pytest.mark.e2e

ADA, GRACE = "4583173393803140", "6812335718217604"
RETURN_TO = f"{INTEGRATOR_APP}/connected"


def signed(method: str, url: str, body: Any = None) -> requests.Response:
    data = json.dumps(body).encode() if body is not None else b""
    headers = signed_headers(
        method,
        url,
        data,
        key=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    return requests.request(method, url, data=data, headers=headers, timeout=60)


def unbind(stack: LocalStack, connection_id: str) -> None:
    """Disconnect a connection, if there is one: the session's stack is shared, and a bound account refuses the plain
    sign-ins of the tests that come after."""
    assert signed("DELETE", f"{stack.url}/connections/{connection_id}").status_code in (200, 404)


def sign_in(client: BrokerClient, user_id: str) -> None:
    sign_in = client.login()
    client.consent(sign_in, allow=True, user_id=user_id)
    answer = client.callback(sign_in)
    assert (answer.status_code, answer.headers["Location"]) == (303, "/result"), answer.text


def test_every_iam_route_of_the_template_refuses_unsigned_requests_and_serves_signed_ones(
    local_stack: LocalStack,
) -> None:
    iam_routes = [c.route for c in local_stack.gateway.routes.routes if c.route.authorizer == IAM_AUTHORIZER]
    assert {r.route_key for r in iam_routes} >= {
        "GET /connections",
        "GET /connections/{connection_id}",
        "POST /connections/{connection_id}/refresh",
        "DELETE /connections/{connection_id}",
        "PUT /connections/{connection_id}/tags",
        "POST /connect-sessions",
        "POST /connect-sessions/complete",
    }
    for route in iam_routes:
        path = route.path.replace("{connection_id}", ADA)
        answer = requests.request(route.method, f"{local_stack.url}{path}", json={}, timeout=30)
        assert answer.status_code == 403, route.route_key
        assert answer.json() == {"message": "Forbidden"}, route.route_key

    listed = signed("GET", f"{local_stack.url}/connections?limit=5")
    session = signed("POST", f"{local_stack.url}/connect-sessions", {"end_user_id": "e2e-user", "return_to": RETURN_TO})
    login = requests.get(f"{local_stack.url}/login", allow_redirects=False, timeout=30)

    assert listed.status_code == 200
    assert isinstance(listed.json()["connections"], list)
    assert session.status_code == 201
    assert session.json()["login_url"].startswith(f"{local_stack.url}/login?session=")
    assert login.status_code == 302  # the public routes stay public


def test_disconnect_over_http_really_revokes_and_the_user_can_connect_again(
    local_stack: LocalStack, client: BrokerClient
) -> None:
    sign_in(client, ADA)
    record = signed("GET", f"{local_stack.url}/connections/{ADA}").json()
    tokens = json.loads(local_stack.aws.secretsmanager.get_secret_value(SecretId=record["secret_arn"])["SecretString"])
    assert local_stack.emulator.access_token_is_live(tokens["access_token"])

    answer = signed("DELETE", f"{local_stack.url}/connections/{ADA}")

    assert answer.status_code == 200, answer.text
    assert answer.json()["smartsheet"] == "revoked"
    assert answer.json()["connection"]["status"] == "revoked"
    assert not local_stack.emulator.access_token_is_live(tokens["access_token"])
    assert not local_stack.emulator.refresh_token_is_live(tokens["refresh_token"])

    sign_in(client, ADA)
    again = signed("GET", f"{local_stack.url}/connections/{ADA}").json()
    assert again["status"] == "active"
    fresh = json.loads(local_stack.aws.secretsmanager.get_secret_value(SecretId=again["secret_arn"])["SecretString"])
    assert local_stack.emulator.access_token_is_live(fresh["access_token"])


def test_the_functions_publish_connection_events_without_tokens(local_stack: LocalStack, client: BrokerClient) -> None:
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=local_stack.region,
    )
    sink = make_sink(session, endpoint_url=local_stack.aws.endpoint_url, name="e2e-connection-events")

    sign_in(client, ADA)
    refreshed = signed("POST", f"{local_stack.url}/connections/{ADA}/refresh", {"min_valid_seconds": 604800})

    assert refreshed.status_code == 200
    events = [e for e in sink.drain() if e["detail"]["connection_id"] == ADA]
    [event] = events  # the sign-in's; a refresh that succeeds first time is no news
    assert event["detail-type"] in ("Connection Created", "Connection Reconnected")
    assert event["detail"]["email"] is None  # EventsIncludeEmail: disabled by default
    record = signed("GET", f"{local_stack.url}/connections/{ADA}").json()
    secret = local_stack.aws.secretsmanager.get_secret_value(SecretId=record["secret_arn"])
    tokens = json.loads(secret["SecretString"])
    assert tokens["access_token"] not in json.dumps(events)
    assert tokens["refresh_token"] not in json.dumps(events)


def connect_through_link(client: BrokerClient, login_url: str, user_id: str) -> str:
    """A connect link in a browser-less client: its page, its button, Allow; the code return_to receives."""
    sign_in = client.connect(login_url)
    client.consent(sign_in, allow=True, user_id=user_id)
    answer = client.callback(sign_in)
    assert answer.status_code == 303, answer.text
    assert answer.headers["Location"].startswith(f"{RETURN_TO}?outcome=connected&completion_code=")
    return parse_qs(urlsplit(answer.headers["Location"]).query)["completion_code"][0]


def test_the_token_helper_reads_the_secret_and_has_the_broker_rotate_it_through_the_gateway(
    local_stack: LocalStack, client: BrokerClient
) -> None:
    unbind(local_stack, GRACE)
    body = {"end_user_id": "helper-user", "return_to": RETURN_TO}
    link = signed("POST", f"{local_stack.url}/connect-sessions", body).json()["login_url"]
    code = connect_through_link(client, link, GRACE)
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=local_stack.region,
    )
    options: dict[str, Any] = {
        "api_url": local_stack.url,
        "secret_prefix": local_stack.token_secret_prefix,
        "session": session,
        "secrets_client": session.client("secretsmanager", endpoint_url=local_stack.aws.endpoint_url),
    }
    # The integrator's return_to page, in its own session for helper-user, redeems the code.
    assert TokenProvider(**options).complete_connect_session(code, end_user_id="helper-user") == GRACE
    generation = signed("GET", f"{local_stack.url}/connections/{GRACE}").json()["generation"]

    first = TokenProvider(**options).token(end_user_id="helper-user")
    # A caller that wants a full week left, more than the token has: the broker refreshes, the helper re-reads.
    rotated = TokenProvider(**options, min_valid_seconds=7 * 86400).token(GRACE)

    assert first.connection_id == GRACE
    assert local_stack.emulator.access_token_is_live(rotated.access_token)
    assert rotated.access_token != first.access_token
    assert signed("GET", f"{local_stack.url}/connections/{GRACE}").json()["generation"] == generation + 1
    unbind(local_stack, GRACE)
