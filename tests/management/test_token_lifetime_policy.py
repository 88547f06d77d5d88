"""An organisation's token-lifetime policy revokes a connection's tokens days before their expires_in, over the
local stack: the emulator revokes on demand (its admin route), the integrator's call gets 401, the token client has
the broker refresh, Smartsheet refuses (1132), the connection is needs_reauth and the client says so."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
import requests
from smartsheet_oauth_client import ConnectionUnavailable, TokenProvider

from infra.local.aws import LOCAL_CREDENTIALS
from infra.local.demo import BrokerClient
from infra.local.stack import LocalStack
from tests.management.test_over_http import sign_in, signed, unbind

pytestmark = pytest.mark.e2e

ALAN = "9007199254740993"  # the emulator's user in an organisation of its own (Bletchley Park)


def token_client(stack: LocalStack) -> TokenProvider:
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=stack.region,
    )
    return TokenProvider(
        api_url=stack.url,
        secret_prefix=stack.token_secret_prefix,
        session=session,
        secrets_client=session.client("secretsmanager", endpoint_url=stack.aws.endpoint_url),
    )


def users_me(stack: LocalStack, access_token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(f"{stack.emulator.api_base_url}/users/me", headers=headers, timeout=10)


def test_tokens_revoked_by_a_lifetime_policy_make_the_connection_needs_reauth_and_the_client_says_so(
    local_stack: LocalStack, client: BrokerClient
) -> None:
    unbind(local_stack, ALAN)
    sign_in(client, ALAN)
    tokens = token_client(local_stack)
    token = tokens.token(ALAN)
    assert users_me(local_stack, token.access_token).status_code == 200
    account_id = users_me(local_stack, token.access_token).json()["account"]["id"]

    policy: dict[str, Any] = {"account_id": account_id, "max_age_seconds": 0}
    applied = requests.post(f"{local_stack.emulator.base_url}/_emulator/token-lifetime-policy", json=policy, timeout=10)

    assert applied.json() == {"revoked": 1}
    refused = users_me(local_stack, token.access_token)
    assert (refused.status_code, refused.json()["errorCode"]) == (401, 1002)  # days before its expires_at
    assert token.expires_at > time.time() + 86400  # still "valid" by its own clock

    tokens.invalidate(ALAN)  # what the integrator does after a 401
    with pytest.raises(ConnectionUnavailable) as unavailable:
        tokens.token(ALAN)

    assert unavailable.value.status == "needs_reauth"
    assert "sign in again" in str(unavailable.value)
    record = signed("GET", f"{local_stack.url}/connections/{ALAN}").json()
    assert (record["status"], record["last_error"]) == ("needs_reauth", "invalid_grant:1132")
    again = signed("POST", f"{local_stack.url}/connections/{ALAN}/refresh", {"min_valid_seconds": 604800})
    assert (again.status_code, again.json()["error"]) == (409, "needs_reauth")

    sign_in(client, ALAN)  # the user signs in again: the connection comes back
    assert signed("GET", f"{local_stack.url}/connections/{ALAN}").json()["status"] == "active"
    assert users_me(local_stack, tokens.token(ALAN).access_token).status_code == 200
    unbind(local_stack, ALAN)
