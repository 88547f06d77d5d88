"""The integrators' client (smartsheet_oauth_client) against the local stack: the gateway's IAM check, the real
management function, moto's Secrets Manager, the Smartsheet emulator. A token Smartsheet refuses because the user
revoked the app is never handed out again once the caller reports the 401 (issue 22 item 1); the management API's
calls answer typed values and raise the API's errors (item 5); a connect session's return is learnt and bound in one
call (item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from smartsheet_oauth_client import (
    BrokerApiError,
    ConnectionUnavailable,
    ManagementClient,
    TokenError,
    TokenProvider,
)

from infra.local.aws import LOCAL_CREDENTIALS
from infra.local.demo import BrokerClient
from infra.local.stack import LocalStack
from tests.management.test_over_http import RETURN_TO, sign_in, unbind

pytestmark = pytest.mark.e2e

ADA = "4583173393803140"


def aws_session(stack: LocalStack, secret: str | None = None) -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=stack.region,
    )


@pytest.fixture
def management(local_stack: LocalStack) -> ManagementClient:
    return ManagementClient(api_url=local_stack.url, session=aws_session(local_stack))


@pytest.fixture
def tokens(local_stack: LocalStack) -> TokenProvider:
    session = aws_session(local_stack)
    return TokenProvider(
        api_url=local_stack.url,
        secret_prefix=local_stack.token_secret_prefix,
        session=session,
        secrets_client=session.client("secretsmanager", endpoint_url=local_stack.aws.endpoint_url),
        api_base_url=local_stack.emulator.api_base_url,  # the override: the emulator, never the real host
    )


@pytest.fixture(autouse=True)
def ada_unbound(local_stack: LocalStack) -> Iterator[None]:
    unbind(local_stack, ADA)
    yield
    unbind(local_stack, ADA)


def me(token_base: str, access_token: str) -> int:
    return requests.get(
        f"{token_base}/users/me", headers={"Authorization": f"Bearer {access_token}"}, timeout=30
    ).status_code


def test_a_user_who_revoked_the_app_at_smartsheet_is_unavailable_after_the_callers_401(
    local_stack: LocalStack, client: BrokerClient, tokens: TokenProvider, management: ManagementClient
) -> None:
    sign_in(client, ADA)
    token = tokens.token(ADA)
    assert token.api_base_url == local_stack.emulator.api_base_url
    assert me(token.api_base_url, token.access_token) == 200

    client.emulator_admin("revoke-user", {"user_id": ADA})  # the user removes the app in Smartsheet
    assert me(token.api_base_url, token.access_token) == 401
    tokens.invalidate(ADA)  # the caller reports the 401

    with pytest.raises(ConnectionUnavailable) as gone:
        tokens.token(ADA)
    with pytest.raises(ConnectionUnavailable) as still_gone:  # and never the dead token again
        tokens.token(ADA)

    assert (gone.value.status, still_gone.value.status) == ("needs_reauth", "needs_reauth")
    assert str(gone.value).startswith(f"connection {ADA}: ")
    assert management.get_connection(ADA).status == "needs_reauth"


def test_after_a_401_that_was_not_a_revocation_the_broker_refreshes_and_the_new_token_works(
    local_stack: LocalStack, client: BrokerClient, tokens: TokenProvider
) -> None:
    sign_in(client, ADA)
    first = tokens.token(ADA)
    client.emulator_admin("expire", {"user_id": ADA})  # Smartsheet answers 401 to it (expired early), grant alive
    assert me(first.api_base_url, first.access_token) == 401

    tokens.invalidate(ADA)
    second = tokens.token(ADA)

    assert second.access_token != first.access_token
    assert me(second.api_base_url, second.access_token) == 200


def test_the_management_client_connects_finds_refreshes_and_disconnects(
    local_stack: LocalStack, client: BrokerClient, management: ManagementClient
) -> None:
    session = management.create_connect_session("client-user", return_to=RETURN_TO)
    assert session.login_url.startswith(f"{local_stack.url}/login?session=")
    assert session.login_url not in repr(session)  # a bearer link

    started = client.connect(session.login_url)
    client.consent(started, allow=True, user_id=ADA)
    back = client.callback(started)
    assert back.status_code == 303
    assert back.headers["Location"].startswith(f"{RETURN_TO}?outcome=connected&completion_code=")
    query = urlsplit(back.headers["Location"]).query

    connected = management.finish_connect(query, end_user_id="client-user")  # the return page, one call
    reloaded = management.finish_connect(query, end_user_id="client-user")  # the page reloaded

    assert connected.outcome == "connected"
    assert connected.connection is not None
    assert (connected.connection.connection_id, connected.connection.end_user_id) == (ADA, "client-user")
    assert connected.connection.status == "active"
    assert (reloaded.outcome, reloaded.error, reloaded.connection) == ("failed", "completion_code_used", None)
    assert management.get_connection(ADA).end_user_id == "client-user"
    assert [c.connection_id for c in management.list_connections(end_user_id="client-user")] == [ADA]
    assert ADA in [c.connection_id for c in management.list_connections(page_size=1)]  # page after page
    found = management.connection_of("client-user")
    assert found is not None
    assert found.connection_id == ADA
    assert management.refresh(ADA, min_valid_seconds=0).outcome == "fresh"

    disconnected = management.disconnect(ADA)

    assert (disconnected.smartsheet, disconnected.connection.status) == ("revoked", "revoked")
    assert disconnected.connection.end_user_id is None
    assert management.connection_of("client-user") is None


def test_a_declined_connect_session_is_learnt_in_the_same_call(
    local_stack: LocalStack, client: BrokerClient, management: ManagementClient
) -> None:
    session = management.create_connect_session("declining-user", return_to=RETURN_TO)
    started = client.connect(session.login_url)
    client.consent(started, allow=False, user_id=ADA)
    back = client.callback(started)

    assert back.headers["Location"] == f"{RETURN_TO}?outcome=declined&error=access_denied"
    result = management.finish_connect(urlsplit(back.headers["Location"]).query, end_user_id="declining-user")
    assert (result.outcome, result.error, result.connection) == ("declined", "access_denied", None)


def test_the_apis_errors_are_exceptions_that_name_them(local_stack: LocalStack, management: ManagementClient) -> None:
    with pytest.raises(BrokerApiError) as missing:
        management.get_connection("1")
    with pytest.raises(BrokerApiError) as refused:
        management.create_connect_session("u", return_to="https://elsewhere.example/")
    with pytest.raises(BrokerApiError) as bad_key:
        ManagementClient(api_url=local_stack.url, session=aws_session(local_stack, secret="wrong")).get_connection(ADA)
    with pytest.raises(ValueError, match="1 to 20 digits"):
        management.get_connection("../admin")

    assert (missing.value.status, missing.value.error) == (404, "not_found")
    assert missing.value.reference
    assert (refused.value.status, refused.value.error) == (400, "invalid_request")
    assert bad_key.value.status == 403
    assert "credentials are not valid" in str(bad_key.value)
    assert "execute-api:Invoke" not in str(bad_key.value)  # not a permission problem: the key is wrong
    assert isinstance(bad_key.value, TokenError)
