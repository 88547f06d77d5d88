"""The token client's one connect call: TokenProvider.complete_connect_session redeems a completion code (signed),
returns the bound connection's id, and turns every refusal into an exception naming the API's error code."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from smartsheet_oauth_client import BrokerUnavailable, ConnectionUnavailable, ConnectRefused, TokenError, TokenProvider

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
ADA = "4583173393803140"
CODE = "c" * 43


class Broker:
    """Answers every signed request with the next queued (status, body); records the requests."""

    def __init__(self, *answers: tuple[int, dict[str, Any]]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
        self.calls.append((method, url, headers, body))
        status, payload = self.answers.pop(0)
        return status, json.dumps(payload).encode()


def provider(broker: Broker) -> TokenProvider:
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    return TokenProvider(api_url=API, secret_prefix="stack/connections/", session=session, send=broker.send)


def test_a_redeemed_code_answers_the_connection_and_its_end_user_is_looked_up_afresh() -> None:
    bound = {"outcome": "created", "connection": {"connection_id": ADA, "end_user_id": "user-42"}}
    listed = {"connections": [{"connection_id": ADA}], "next": None}
    broker = Broker((200, {"connections": [], "next": None}), (200, bound), (200, listed))
    tokens = provider(broker)
    with pytest.raises(ConnectionUnavailable):
        tokens.connection_of("user-42")  # none yet

    assert tokens.complete_connect_session(CODE, end_user_id="user-42") == ADA
    # Asked again, not taken from the code's answer: with AccountsPerEndUser=many the bound connection may be one of
    # several, and token(end_user_id=...) must then refuse to pick one.
    assert tokens.connection_of("user-42") == ADA

    lookup, (method, url, headers, body), again = broker.calls
    assert lookup[1] == again[1]
    assert (method, url) == ("POST", f"{API}/connect-sessions/complete")
    assert json.loads(body) == {"completion_code": CODE, "end_user_id": "user-42"}
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (409, "end_user_mismatch"),
        (409, "completion_code_used"),
        (409, "completion_code_expired"),
        (409, "binding_conflict"),
        (404, "unknown_completion_code"),
        (400, "invalid_request"),
    ],
)
def test_a_refused_code_raises_with_the_apis_error_code(status: int, error: str) -> None:
    tokens = provider(Broker((status, {"error": error, "message": "refused because"})))

    with pytest.raises(ConnectRefused) as refused:
        tokens.complete_connect_session(CODE, end_user_id="user-42")

    assert refused.value.error == error
    assert "refused because" in str(refused.value)


def test_a_code_being_redeemed_elsewhere_or_a_busy_broker_is_worth_asking_again() -> None:
    in_progress = {"error": "completion_in_progress", "message": "being redeemed", "retry_after": 7}
    busy = {"error": "storage_unavailable", "message": "AWS storage is unavailable", "retry_after": 5}
    tokens = provider(Broker((409, in_progress), (503, busy), (403, {"message": "Forbidden"})))

    with pytest.raises(BrokerUnavailable) as first:
        tokens.complete_connect_session(CODE, end_user_id="user-42")
    with pytest.raises(BrokerUnavailable) as second:
        tokens.complete_connect_session(CODE, end_user_id="user-42")
    with pytest.raises(TokenError, match="execute-api:Invoke"):
        tokens.complete_connect_session(CODE, end_user_id="user-42")

    assert (first.value.retry_after, second.value.retry_after) == (7, 5)
