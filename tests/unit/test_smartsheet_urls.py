"""The authorize URL and the `hash` parameter are exactly what Smartsheet documents."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth.domain.errors import MalformedResponse
from smartsheet_oauth.domain.tokens import TokenGrant
from smartsheet_oauth.smartsheet.client import Reply, SmartsheetClient, authorize_url, request_hash


def test_scopes_are_joined_with_percent_20_not_plus() -> None:
    url = authorize_url(
        "https://app.smartsheet.com/b/authorize",
        client_id="abc",
        scopes=("READ_SHEETS", "WRITE_SHEETS"),
        state="s-1_x",
        redirect_uri=None,
    )
    assert url.startswith("https://app.smartsheet.com/b/authorize?")
    assert "scope=READ_SHEETS%20WRITE_SHEETS" in url
    assert "+" not in url
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "response_type": ["code"],
        "client_id": ["abc"],
        "scope": ["READ_SHEETS WRITE_SHEETS"],
        "state": ["s-1_x"],
    }


def test_redirect_uri_is_sent_only_when_configured() -> None:
    url = authorize_url(
        "https://a/b", client_id="c", scopes=("READ_SHEETS",), state="s", redirect_uri="https://x.example/callback"
    )
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["https://x.example/callback"]


def test_hash_is_the_lowercase_hex_sha256_of_secret_pipe_value_in_utf8() -> None:
    answer = request_hash("my-secret", "the-code")
    assert answer == hashlib.sha256(b"my-secret|the-code").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", answer), answer
    assert request_hash("sécret", "côde") == hashlib.sha256("sécret|côde".encode()).hexdigest()


def test_token_grant_repr_hides_tokens() -> None:
    grant = TokenGrant(access_token="ACCESS-123", refresh_token="REFRESH-456", token_type="bearer", expires_in=10)
    assert "ACCESS-123" not in repr(grant)
    assert "REFRESH-456" not in repr(grant)


def test_a_reply_repr_leaves_its_body_out() -> None:
    reply = Reply(200, b'{"access_token": "ACCESS-123", "refresh_token": "REFRESH-456"}', "")
    assert "ACCESS-123" not in repr(reply)
    assert "REFRESH-456" not in repr(reply)
    assert repr(reply) == "Reply(status=200, content=<62 bytes>, retry_after='')"


def test_each_call_goes_to_the_api_of_the_region_it_names() -> None:
    client = SmartsheetClient(
        api_base_url="https://api.smartsheet.com/2.0",
        client_id="c",
        client_secret="s",
        region_bases={"us": "https://api.smartsheet.com/2.0", "eu": "https://api.smartsheet.eu/2.0/"},
    )

    assert client.base_url() == "https://api.smartsheet.com/2.0"
    assert client.base_url("eu") == "https://api.smartsheet.eu/2.0"
    with pytest.raises(MalformedResponse, match="mars"):  # never another region's API
        client.base_url("mars")
    single = SmartsheetClient(api_base_url="http://127.0.0.1:9/2.0", client_id="c", client_secret="s")
    assert single.base_url("eu") == "http://127.0.0.1:9/2.0"  # a one-region client (tools, tests): its only API
