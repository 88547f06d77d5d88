"""OAuth client libraries against the emulator, as integrators run them: a standard library (authlib) through the
whole flow, the official SDKs' scope and redirect spellings. What the emulator accepts, and the evidence for it, is in
infra/local/smartsheet_emulator/authorize.py's docstring."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import smartsheet
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from infra.local.smartsheet_emulator import DEFAULT_APP, DEFAULT_USERS, SmartsheetEmulator, token_hash

CLIENT_ID = DEFAULT_APP.client_id
SECRET = DEFAULT_APP.client_secret
REDIRECT = DEFAULT_APP.redirect_uri
ADA, GRACE, _ALAN = (user.id for user in DEFAULT_USERS)
SCOPES = "READ_SHEETS WRITE_SHEETS"


@pytest.fixture(autouse=True)
def loopback_http(monkeypatch: pytest.MonkeyPatch) -> None:
    # authlib refuses http:// endpoints unless told otherwise; the emulator serves http on loopback only.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


def smartsheet_hash(client: Any, method: str, uri: str, headers: dict[str, str], body: str) -> tuple[str, Any, str]:
    """Smartsheet's `hash` client authentication as an authlib client-auth method: client_id and
    sha256(secret|code or refresh_token) in the form body, so the secret itself never travels."""
    form = {key: values[0] for key, values in parse_qs(body).items()}
    subject = form.get("code") or form["refresh_token"]
    form.update(client_id=client.client_id, hash=token_hash(client.client_secret, subject))
    return uri, headers, urlencode(form)


def authlib_session(emulator: SmartsheetEmulator, auth_method: str) -> OAuth2Session:
    session = OAuth2Session(
        client_id=CLIENT_ID,
        client_secret=SECRET,
        scope=SCOPES,
        redirect_uri=REDIRECT,
        token_endpoint_auth_method=auth_method,
    )
    session.register_client_auth_method(("smartsheet_hash", smartsheet_hash))
    session.metadata["token_endpoint"] = f"{emulator.api_base_url}/token"
    return session


@pytest.fixture
def sessions() -> Iterator[list[OAuth2Session]]:
    opened: list[OAuth2Session] = []
    yield opened
    for session in opened:
        session.close()


@pytest.mark.parametrize("auth_method", ["client_secret_post", "smartsheet_hash"])
def test_authlib_runs_the_whole_flow_with_two_scopes(
    emulator: SmartsheetEmulator, sessions: list[OAuth2Session], auth_method: str
) -> None:
    oauth = authlib_session(emulator, auth_method)
    sessions.append(oauth)
    url, state = oauth.create_authorization_url(emulator.authorize_url)
    # The library form-encodes the space: this request is what the emulator answered invalid_scope before issue 20.
    assert "scope=READ_SHEETS+WRITE_SHEETS" in url

    page = requests.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.headers.get("Location")  # not a redirect with error=invalid_scope
    assert "READ_SHEETS" in page.text
    assert "WRITE_SHEETS" in page.text
    callback = emulator.consent(url, user_id=GRACE)
    token = oauth.fetch_token(authorization_response=callback, state=state)

    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 604799
    exchange = emulator.token_requests[-1]
    assert exchange["outcome"] == "ok"
    assert exchange["auth_method"] == ("client_secret" if auth_method == "client_secret_post" else "hash")
    assert exchange["redirect_uri_sent"] is True  # authlib sends the registered one: it must match
    me = oauth.get(f"{emulator.api_base_url}/users/me", timeout=10)
    assert me.status_code == 200
    assert me.json()["email"] == "grace@example.com"

    rotated = oauth.refresh_token(refresh_token=token["refresh_token"])

    assert rotated["refresh_token"] != token["refresh_token"]
    assert not emulator.refresh_token_is_live(token["refresh_token"])
    assert not emulator.access_token_is_live(token["access_token"])
    assert emulator.access_token_is_live(rotated["access_token"])
    assert emulator.counts["token.refresh.ok"] == 1


def test_authlib_reads_a_revoked_refresh_as_invalid_grant(
    emulator: SmartsheetEmulator, sessions: list[OAuth2Session]
) -> None:
    oauth = authlib_session(emulator, "smartsheet_hash")
    sessions.append(oauth)
    url, state = oauth.create_authorization_url(emulator.authorize_url)
    token = oauth.fetch_token(authorization_response=emulator.consent(url, user_id=ADA), state=state)
    assert emulator.enforce_token_lifetime(0, user_id=ADA) == 1

    with pytest.raises(OAuthError) as refused:
        oauth.refresh_token(refresh_token=token["refresh_token"])

    assert refused.value.error == "invalid_grant"


# ----- scope separators --------------------------------------------------------------------------------


def authorize(emulator: SmartsheetEmulator, raw_scope: str) -> requests.Response:
    query = f"response_type=code&client_id={CLIENT_ID}&scope={raw_scope}&state=st-1"
    return requests.get(f"{emulator.authorize_url}?{query}", allow_redirects=False, timeout=10)


@pytest.mark.parametrize(
    "raw_scope",
    [
        "READ_SHEETS%20WRITE_SHEETS",
        "READ_SHEETS+WRITE_SHEETS",
        "READ_SHEETS%2CWRITE_SHEETS",
        "READ_SHEETS,WRITE_SHEETS",
    ],
    ids=["documented-%20", "form-encoded-plus", "java-sdk-%2C", "bare-comma"],
)
def test_every_separator_a_real_client_sends_is_read_as_the_same_two_scopes(
    emulator: SmartsheetEmulator, raw_scope: str
) -> None:
    page = authorize(emulator, raw_scope)

    assert page.status_code == 200, page.headers.get("Location")
    assert 'name="scope" value="READ_SHEETS WRITE_SHEETS"' in page.text


def test_with_commas_turned_off_a_comma_list_is_invalid_scope_and_a_space_still_works(
    emulator: SmartsheetEmulator,
) -> None:
    emulator.update_settings(comma_separated_scopes=False)

    comma = authorize(emulator, "READ_SHEETS%2CWRITE_SHEETS")
    plus = authorize(emulator, "READ_SHEETS+WRITE_SHEETS")

    assert comma.status_code == 302
    assert comma.headers["Location"] == f"{REDIRECT}?error=invalid_scope&state=st-1"
    assert plus.status_code == 200


def test_the_java_sdks_authorize_url_is_accepted(emulator: SmartsheetEmulator) -> None:
    # OAuthFlowImpl.newAuthorizationURL: scopes joined with commas, redirect_uri always sent, every value encoded.
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "state": "java",
        "scope": "READ_SHEETS,WRITE_SHEETS,SHARE_SHEETS",
    }
    url = f"{emulator.authorize_url}?{urlencode(params)}"
    assert "scope=READ_SHEETS%2CWRITE_SHEETS%2CSHARE_SHEETS" in url

    callback = query_of(emulator.consent(url, user_id=ADA))

    assert callback["state"] == "java"
    assert "code" in callback


# ----- the token endpoint's redirect spellings ---------------------------------------------------------


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def new_code(emulator: SmartsheetEmulator) -> str:
    url = f"{emulator.authorize_url}?response_type=code&client_id={CLIENT_ID}&scope=READ_SHEETS&state=s"
    return query_of(emulator.consent(url, user_id=ADA))["code"]


def exchange(emulator: SmartsheetEmulator, code: str, **redirects: str) -> requests.Response:
    form = {"grant_type": "authorization_code", "client_id": CLIENT_ID, "code": code, "hash": token_hash(SECRET, code)}
    return requests.post(f"{emulator.api_base_url}/token", data={**form, **redirects}, timeout=10)


@pytest.mark.parametrize(
    ("redirects", "status"),
    [
        ({"redirect_url": REDIRECT}, 200),
        ({"redirect_url": "http://127.0.0.1:3000/other"}, 400),
        ({"redirect_uri": REDIRECT}, 200),
        ({"redirect_uri": "http://127.0.0.1:3000/other"}, 400),
        ({"redirect_uri": REDIRECT, "redirect_url": REDIRECT}, 200),
        ({"redirect_uri": REDIRECT, "redirect_url": "http://127.0.0.1:3000/other"}, 400),
        ({"redirect_uri": "http://127.0.0.1:3000/other", "redirect_url": REDIRECT}, 400),
    ],
    ids=["url", "url-wrong", "uri", "uri-wrong", "both", "url-wrong-of-two", "uri-wrong-of-two"],
)
def test_the_token_endpoint_checks_whichever_redirect_spelling_is_sent(
    emulator: SmartsheetEmulator, redirects: dict[str, str], status: int
) -> None:
    answer = exchange(emulator, new_code(emulator), **redirects)

    assert answer.status_code == status, answer.text
    if status == 400:
        assert (answer.json()["errorCode"], answer.json()["error"]) == (1073, "invalid_request")
    logged = emulator.token_requests[-1]
    assert logged["redirect_url_sent"] is ("redirect_url" in redirects)
    assert logged["redirect_uri_sent"] is ("redirect_uri" in redirects)


@pytest.mark.filterwarnings("ignore:ssl.OP_NO_SSL:DeprecationWarning")
def test_the_official_python_sdk_sends_redirect_uri_and_a_wrong_one_is_1073(emulator: SmartsheetEmulator) -> None:
    client = smartsheet.Smartsheet(
        access_token="unused-for-token-calls", api_base=emulator.api_base_url, user_agent="emulator-test"
    )
    code = new_code(emulator)

    token = client.Token.get_access_token(CLIENT_ID, code, token_hash(SECRET, code), redirect_uri=REDIRECT)

    assert isinstance(token, smartsheet.models.AccessToken), token
    assert (emulator.token_requests[-1]["redirect_uri_sent"], emulator.token_requests[-1]["redirect_url_sent"]) == (
        True,
        False,
    )
    other = new_code(emulator)
    refused = client.Token.get_access_token(
        CLIENT_ID, other, token_hash(SECRET, other), redirect_uri="http://127.0.0.1:1/x"
    )
    assert isinstance(refused, smartsheet.models.Error)
    assert refused.result.code == 1073
