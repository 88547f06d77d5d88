"""smartsheet_oauth_client against TokenStore=dynamodb, unchanged for integrators: it reads and opens the sealed pair
from the token table (the format is a copy in that one file: held here to the broker's), asks the broker when the token
is about to expire, reads a pair still in its secret during a migration, and tells a disconnected connection apart."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import boto3
import pytest
import smartsheet_oauth_client as client_module
from smartsheet_oauth import services
from smartsheet_oauth.stores import token_table
from smartsheet_oauth.stores.token_table import pair_binding
from smartsheet_oauth_client import ConnectionUnavailable, TokenError, TokenProvider

from tests.management.conftest import call_management
from tests.support.broker import Broker

ADA = 4583173393803140
pytestmark = pytest.mark.parametrize("broker", ["dynamodb"], indirect=True)


def provider(broker: Broker, **kwargs: object) -> TokenProvider:
    def send(method: str, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
        parts = urlsplit(url)
        answer = call_management(method, parts.path, query=parts.query, raw_body=body.decode() or None)
        return answer.status, json.dumps(answer.body).encode()

    session = boto3.session.Session(region_name="us-east-1")
    return TokenProvider(
        api_url="https://broker.example.com",
        secret_prefix=broker.env["TOKEN_SECRET_PREFIX"],
        token_table=broker.env["TOKEN_TABLE_NAME"],
        session=session,
        secrets_client=broker.secrets,
        dynamodb_client=broker.dynamodb,
        kms_client=session.client("kms"),
        send=send,
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_client_holds_the_same_pair_format_as_the_broker(broker: Broker) -> None:
    assert client_module.PAIR_FORMAT == token_table.PAIR_FORMAT
    assert client_module.TOKEN_PAIR_CONTEXT == token_table.TOKEN_PAIR_CONTEXT
    item = {"pair_generation": {"N": "3"}, "pair_version": {"S": "v"}}
    assert pair_binding("42", 3, "v") == (
        f"token-pair/v{client_module.PAIR_FORMAT}/42/{item['pair_generation']['N']}/{item['pair_version']['S']}"
    )


def test_the_client_reads_the_sealed_pair_and_asks_the_broker_when_it_is_about_to_expire(broker: Broker) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    stored = broker.tokens(ADA)
    tokens = provider(broker)

    assert tokens.access_token(str(ADA)) == stored["access_token"]

    # A token valid for less than the client wants: the broker refreshes (in the table), the client reads again.
    wants_more = provider(broker, min_valid_seconds=client_module.MAX_MIN_VALID_SECONDS)
    fresh = wants_more.token(str(ADA))
    assert fresh.access_token == broker.tokens(ADA)["access_token"]
    assert broker.tokens(ADA)["refresh_token"] != stored["refresh_token"]


def test_a_pair_still_in_its_secret_is_read_there(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_STORE", "secretsmanager")
    services.reset()
    assert broker.sign_in(user_id=ADA).status == 200

    assert provider(broker).access_token(str(ADA)) == broker.tokens(ADA)["access_token"]


def test_an_altered_pair_is_refused_with_a_clear_error(broker: Broker) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    broker.dynamodb.update_item(
        TableName=broker.env["TOKEN_TABLE_NAME"],
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="SET pair_version = :v",
        ExpressionAttributeValues={":v": {"S": "not-its-version"}},
    )

    with pytest.raises(TokenError, match="did not open"):
        provider(broker).token(str(ADA))


def test_a_disconnected_connection_is_revoked(broker: Broker) -> None:
    assert broker.sign_in(user_id=ADA).status == 200
    assert call_management("DELETE", f"/connections/{ADA}").status == 200

    with pytest.raises(ConnectionUnavailable) as raised:
        provider(broker).token(str(ADA))
    assert raised.value.status == "revoked"
