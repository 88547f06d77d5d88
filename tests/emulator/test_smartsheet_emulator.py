"""The Smartsheet emulator behaves as SMARTSHEET.md describes, over real HTTP (and through the official SDK)."""

from __future__ import annotations

import html
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import requests
import smartsheet

from infra.local.smartsheet_emulator import (
    DEFAULT_APP,
    DEFAULT_USERS,
    AuthorizeError,
    ManualClock,
    SmartsheetEmulator,
    main,
    token_hash,
)
from tests.emulator.conftest import OTHER_APP

CLIENT_ID = DEFAULT_APP.client_id
SECRET = DEFAULT_APP.client_secret
REDIRECT = DEFAULT_APP.redirect_uri
ADA, GRACE, ALAN = (user.id for user in DEFAULT_USERS)
REPO = Path(__file__).resolve().parents[2]
FORM = "application/x-www-form-urlencoded"


# ----- helpers ---------------------------------------------------------------------------------------


def authorize_url(emulator: SmartsheetEmulator, **overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "scope": "READ_SHEETS WRITE_SHEETS",
        "state": "st-1",
    }
    params.update(overrides)
    sent = {key: value for key, value in params.items() if value is not None}
    return emulator.authorize_url + "?" + urlencode(sent, quote_via=quote)


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def new_code(emulator: SmartsheetEmulator, user_id: int | None = None, **overrides: str | None) -> str:
    return query_of(emulator.consent(authorize_url(emulator, **overrides), user_id=user_id))["code"]


def code_form(code: str, **extra: str) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "client_id": CLIENT_ID, "code": code, "hash": token_hash(SECRET, code)}
    form.update(extra)
    return form


def refresh_form(refresh_token: str, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "refresh_token": refresh_token,
        "hash": token_hash(SECRET, refresh_token),
    }
    form.update(extra)
    return form


def post_token(session: requests.Session, emulator: SmartsheetEmulator, form: dict[str, str]) -> requests.Response:
    return session.post(emulator.api_base_url + "/token", data=form, timeout=5)


def users_me(session: requests.Session, emulator: SmartsheetEmulator, access_token: str) -> requests.Response:
    return session.get(
        emulator.api_base_url + "/users/me", headers={"Authorization": f"Bearer {access_token}"}, timeout=5
    )


def revoke(
    session: requests.Session, emulator: SmartsheetEmulator, access_token: str, delete_all: bool = False
) -> requests.Response:
    params = {"deleteAllForApiClient": "true"} if delete_all else None
    return session.delete(
        emulator.api_base_url + "/token",
        headers={"Authorization": f"Bearer {access_token}"},
        params=params,
        timeout=5,
    )


def admin(session: requests.Session, emulator: SmartsheetEmulator, method: str, route: str, **body: Any):
    return session.request(method, f"{emulator.base_url}/_emulator/{route}", json=body or None, timeout=5)


def assert_error(response: requests.Response, status: int, code: int, oauth_error: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == code
    assert body["message"]
    assert body["refId"]
    assert body.get("error") == oauth_error


def hidden_fields(page: str) -> dict[str, str]:
    return {
        name: html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page)
    }


def wait_for(predicate: Any, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# ----- the authorize page ----------------------------------------------------------------------------


def test_authorize_page_shows_the_app_its_scopes_a_user_picker_and_allow_deny(emulator, session) -> None:
    response = session.get(authorize_url(emulator), allow_redirects=False)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-store"
    page = response.text
    assert "Local Smartsheet Integration" in page
    assert "READ_SHEETS" in page
    assert "WRITE_SHEETS" in page
    for user in DEFAULT_USERS:
        assert f'<option value="{user.id}"' in page
        assert user.email in page
    assert f'<option value="{ADA}" selected>' in page
    assert 'value="allow"' in page
    assert 'value="deny"' in page
    assert hidden_fields(page) == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "scope": "READ_SHEETS WRITE_SHEETS",
        "state": "st-1",
    }
    assert emulator.counts["authorize.page"] == 1


def test_allow_redirects_with_a_code_for_the_picked_user(emulator, session) -> None:
    page = session.get(authorize_url(emulator, state="a b/c")).text
    form = {**hidden_fields(page), "user_id": str(GRACE), "decision": "allow"}

    response = session.post(emulator.authorize_url, data=form, allow_redirects=False)

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?code=")
    query = query_of(location)
    assert query["expires_in"] == "599135"  # milliseconds, not seconds
    assert query["state"] == "a b/c"
    tokens = post_token(session, emulator, code_form(query["code"])).json()
    assert users_me(session, emulator, tokens["access_token"]).json()["id"] == GRACE
    assert emulator.counts["authorize.allow"] == 1


def test_deny_redirects_with_access_denied_and_the_state(emulator, session) -> None:
    page = session.get(authorize_url(emulator)).text
    form = {**hidden_fields(page), "user_id": str(ADA), "decision": "deny"}

    response = session.post(emulator.authorize_url, data=form, allow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"] == f"{REDIRECT}?error=access_denied&state=st-1"
    assert emulator.counts["authorize.deny"] == 1


@pytest.mark.parametrize("client_id", ["nobody", None], ids=["unknown", "missing"])
def test_an_unknown_client_gets_an_error_page_not_a_redirect(emulator, session, client_id) -> None:
    response = session.get(authorize_url(emulator, client_id=client_id), allow_redirects=False)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Location" not in response.headers


def test_a_redirect_uri_other_than_the_registered_one_gets_error_page_1073(emulator, session) -> None:
    response = session.get(authorize_url(emulator, redirect_uri="https://evil.example/callback"), allow_redirects=False)

    assert response.status_code == 400
    assert "1073" in response.text
    assert "Location" not in response.headers
    assert emulator.counts["authorize.1073"] == 1


def test_the_registered_redirect_uri_may_be_sent_and_travels_with_the_form(emulator, session) -> None:
    page = session.get(authorize_url(emulator, redirect_uri=REDIRECT)).text
    fields = hidden_fields(page)
    assert fields["redirect_uri"] == REDIRECT

    response = session.post(emulator.authorize_url, data={**fields, "decision": "allow"}, allow_redirects=False)

    code = query_of(response.headers["Location"])["code"]
    assert post_token(session, emulator, code_form(code, redirect_uri=REDIRECT)).status_code == 200


@pytest.mark.parametrize(
    "raw_scope",
    ["READ_SHEETS%20NOT_A_SCOPE", "", "%2C", "READ_SHEETS+read_sheets"],
    ids=["unknown-name", "empty", "separators-only", "lower-case-name"],
)
def test_a_bad_scope_redirects_with_invalid_scope(emulator, session, raw_scope) -> None:
    url = f"{emulator.authorize_url}?response_type=code&client_id={CLIENT_ID}&scope={raw_scope}&state=st-1"

    response = session.get(url, allow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"] == f"{REDIRECT}?error=invalid_scope&state=st-1"
    assert emulator.counts["authorize.invalid_scope"] == 1


def test_a_response_type_other_than_code_is_unsupported(emulator, session) -> None:
    response = session.get(authorize_url(emulator, response_type="token"), allow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"] == f"{REDIRECT}?error=unsupported_response_type&state=st-1"


def test_auto_consent_answers_the_authorize_page_at_once(emulator, session) -> None:
    emulator.update_settings(auto_consent="allow", auto_consent_user_id=ALAN)

    response = session.get(authorize_url(emulator), allow_redirects=False)

    assert response.status_code == 302
    tokens = post_token(session, emulator, code_form(query_of(response.headers["Location"])["code"])).json()
    assert users_me(session, emulator, tokens["access_token"]).json()["id"] == ALAN

    emulator.update_settings(auto_consent="deny")
    denied = session.get(authorize_url(emulator), allow_redirects=False)
    assert query_of(denied.headers["Location"]) == {"error": "access_denied", "state": "st-1"}


def test_consent_in_python_returns_the_callback_url_or_raises_for_error_pages(emulator) -> None:
    allowed = emulator.consent(authorize_url(emulator))
    assert allowed.startswith(REDIRECT + "?code=")
    assert query_of(allowed)["state"] == "st-1"

    denied = emulator.consent(authorize_url(emulator), allow=False)
    assert denied == f"{REDIRECT}?error=access_denied&state=st-1"

    bad_scope = emulator.consent(authorize_url(emulator, scope="READ_EVERYTHING"))
    assert bad_scope == f"{REDIRECT}?error=invalid_scope&state=st-1"

    with pytest.raises(AuthorizeError) as unknown:
        emulator.consent(authorize_url(emulator, client_id="nobody"))
    assert unknown.value.error_code == 1067
    with pytest.raises(AuthorizeError) as mismatch:
        emulator.consent(authorize_url(emulator, redirect_uri="http://127.0.0.1:9/elsewhere"))
    assert mismatch.value.error_code == 1073
    with pytest.raises(AuthorizeError):
        emulator.consent(authorize_url(emulator), user_id=12345)


def test_consent_over_http(emulator, session) -> None:
    response = admin(session, emulator, "POST", "consent", authorize_url=authorize_url(emulator), user_id=str(ALAN))
    assert response.status_code == 200
    code = query_of(response.json()["location"])["code"]
    tokens = post_token(session, emulator, code_form(code)).json()
    assert users_me(session, emulator, tokens["access_token"]).json()["id"] == ALAN

    refused = admin(session, emulator, "POST", "consent", authorize_url=authorize_url(emulator, client_id="nobody"))
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == 1067


# ----- the token endpoint: code exchange -------------------------------------------------------------


def test_code_exchange_with_hash_in_a_form_body(emulator, session) -> None:
    code = new_code(emulator)

    response = post_token(session, emulator, code_form(code))

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "refresh_token", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 604799
    assert emulator.access_token_is_live(body["access_token"])
    assert emulator.refresh_token_is_live(body["refresh_token"])
    [seen] = emulator.token_requests
    assert seen["grant_type"] == "authorization_code"
    assert seen["auth_method"] == "hash"
    assert seen["content_type"] == FORM
    assert seen["transport"] == "form"
    assert seen["outcome"] == "ok"
    assert emulator.counts["token.code.ok"] == 1


def test_no_secret_value_is_kept_in_the_request_log_or_stats(emulator, session) -> None:
    code_a, code_b = new_code(emulator), new_code(emulator)
    first = post_token(session, emulator, code_form(code_a)).json()
    post_token(session, emulator, code_form(code_b, client_secret=SECRET, hash=""))
    post_token(session, emulator, refresh_form(first["refresh_token"]))

    logged = json.dumps(emulator.token_requests) + admin(session, emulator, "GET", "stats").text

    for value in (SECRET, code_a, code_b, first["refresh_token"], token_hash(SECRET, code_a)):
        assert value not in logged
    assert [entry["auth_method"] for entry in emulator.token_requests] == ["hash", "client_secret", "hash"]


def test_code_exchange_with_query_parameters_as_the_js_and_java_sdks_send(emulator, session) -> None:
    code = new_code(emulator)

    response = session.post(emulator.api_base_url + "/token", params=code_form(code), timeout=5)

    assert response.status_code == 200
    assert emulator.token_requests[-1]["transport"] == "query"


def test_a_json_body_is_not_read(emulator, session) -> None:
    code = new_code(emulator)

    response = session.post(emulator.api_base_url + "/token", json=code_form(code), timeout=5)

    assert_error(response, 400, 1070, "invalid_request")
    assert emulator.token_requests[-1]["content_type"] == "application/json"
    assert emulator.token_requests[-1]["transport"] == "none"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"hash": None}, (400, 1236, "invalid_client")),
        ({"client_secret": SECRET}, (400, 1237, "invalid_client")),
        ({"hash": None, "client_secret": "wrong-secret"}, (400, 1238, "invalid_client")),
        ({"hash": token_hash("wrong-secret", "x")}, (400, 1072, "invalid_grant")),
        ({"client_id": "nobody"}, (401, 1067, "invalid_client")),
        ({"grant_type": None}, (400, 1070, "invalid_request")),
        ({"grant_type": "password"}, (400, 1068, "unsupported_grant_type")),
        ({"code": None}, (400, 1070, "invalid_request")),
        ({"client_id": None}, (400, 1070, "invalid_request")),
        ({"redirect_uri": "http://127.0.0.1:3000/other"}, (400, 1073, "invalid_request")),
    ],
    ids=[
        "neither-hash-nor-secret",
        "both",
        "wrong-secret",
        "wrong-hash",
        "unknown-client",
        "missing-grant-type",
        "unsupported-grant",
        "missing-code",
        "missing-client-id",
        "redirect-mismatch",
    ],
)
def test_code_exchange_errors(emulator, session, change, expected) -> None:
    status, code, oauth_error = expected
    form: dict[str, Any] = code_form(new_code(emulator))
    form.update(change)

    response = post_token(session, emulator, {key: value for key, value in form.items() if value is not None})

    assert_error(response, status, code, oauth_error)
    operation = "token.other" if "grant_type" in change else "token.code"
    assert emulator.counts[f"{operation}.{code}"] == 1


def test_an_unknown_code_is_invalid_grant(emulator, session) -> None:
    assert_error(post_token(session, emulator, code_form("0123456789abcdef")), 400, 1071, "invalid_grant")


def test_a_code_works_once(emulator, session) -> None:
    code = new_code(emulator)
    assert post_token(session, emulator, code_form(code)).status_code == 200

    assert_error(post_token(session, emulator, code_form(code)), 400, 1071, "invalid_grant")


def test_a_code_expires_after_ten_minutes(emulator, session, clock: ManualClock) -> None:
    fresh, stale = new_code(emulator), new_code(emulator)
    clock.advance(599)
    assert post_token(session, emulator, code_form(fresh)).status_code == 200
    clock.advance(1)

    assert_error(post_token(session, emulator, code_form(stale)), 400, 1069, "invalid_grant")
    # An expired code is gone, too.
    assert_error(post_token(session, emulator, code_form(stale)), 400, 1071, "invalid_grant")


def test_code_lifetime_is_configurable(emulator, session, clock: ManualClock) -> None:
    emulator.update_settings(code_lifetime=30)
    assert query_of(emulator.consent(authorize_url(emulator)))["expires_in"] == str(30_000 - 865)
    code = new_code(emulator)
    clock.advance(31)

    assert_error(post_token(session, emulator, code_form(code)), 400, 1069, "invalid_grant")


def test_a_code_of_another_app_is_invalid_grant(emulator, session) -> None:
    other_code = emulator.issue_code(OTHER_APP.client_id)

    assert_error(post_token(session, emulator, code_form(other_code)), 400, 1071, "invalid_grant")


def test_error_description_instead_of_message(emulator, session) -> None:
    emulator.update_settings(error_message_field="error_description")

    body = post_token(session, emulator, code_form("unknown")).json()

    assert body["errorCode"] == 1071
    assert body["error_description"]
    assert "message" not in body


def test_the_old_wrapped_token_shape_on_request(emulator, session) -> None:
    emulator.update_settings(wrapped_token_response=True)

    body = post_token(session, emulator, code_form(new_code(emulator))).json()

    assert set(body) == {"token"}
    assert body["token"]["token_type"] == "bearer"


def test_a_hash_mismatch_can_answer_1071(emulator, session) -> None:
    emulator.update_settings(hash_mismatch_error_code=1071)
    form = code_form(new_code(emulator), hash=token_hash("wrong", "x"))

    assert_error(post_token(session, emulator, form), 400, 1071, "invalid_grant")


def test_access_lifetime_is_configurable() -> None:
    emulator = SmartsheetEmulator(access_lifetime=3600)

    assert emulator.issue_grant()["expires_in"] == 3600


# ----- the token endpoint: refresh -------------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_is_dead(emulator, session) -> None:
    first = emulator.issue_grant(user_id=ADA)

    response = post_token(session, emulator, refresh_form(first["refresh_token"]))

    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 604799
    assert not emulator.refresh_token_is_live(first["refresh_token"])
    assert_error(post_token(session, emulator, refresh_form(first["refresh_token"])), 400, 1071, "invalid_grant")
    assert_error(users_me(session, emulator, first["access_token"]), 401, 1002)
    assert users_me(session, emulator, second["access_token"]).json()["id"] == ADA
    assert post_token(session, emulator, refresh_form(second["refresh_token"])).status_code == 200
    assert emulator.counts["token.refresh.ok"] == 2
    assert emulator.counts["token.refresh.1071"] == 1


def test_the_old_access_token_may_survive_a_refresh(emulator, session) -> None:
    emulator.update_settings(revoke_old_access_on_refresh=False)
    first = emulator.issue_grant()
    post_token(session, emulator, refresh_form(first["refresh_token"]))

    assert users_me(session, emulator, first["access_token"]).status_code == 200


def test_refresh_with_the_client_secret(emulator, session) -> None:
    grant = emulator.issue_grant()
    form = refresh_form(grant["refresh_token"], client_secret=SECRET)
    del form["hash"]

    assert post_token(session, emulator, form).status_code == 200
    assert emulator.token_requests[-1]["auth_method"] == "client_secret"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"hash": None}, (400, 1236, "invalid_client")),
        ({"client_secret": SECRET}, (400, 1237, "invalid_client")),
        ({"hash": None, "client_secret": "nope"}, (400, 1238, "invalid_client")),
        ({"hash": token_hash(SECRET, "another-token")}, (400, 1072, "invalid_grant")),
        ({"client_id": "nobody"}, (401, 1067, "invalid_client")),
        ({"refresh_token": None}, (400, 1070, "invalid_request")),
        ({"redirect_uri": "http://127.0.0.1:1/x"}, (400, 1073, "invalid_request")),
    ],
    ids=["neither", "both", "wrong-secret", "wrong-hash", "unknown-client", "missing-token", "redirect-mismatch"],
)
def test_refresh_errors_leave_the_refresh_token_alive(emulator, session, change, expected) -> None:
    status, code, oauth_error = expected
    grant = emulator.issue_grant()
    form: dict[str, Any] = refresh_form(grant["refresh_token"])
    form.update(change)

    response = post_token(session, emulator, {key: value for key, value in form.items() if value is not None})

    assert_error(response, status, code, oauth_error)
    assert emulator.refresh_token_is_live(grant["refresh_token"])


def test_a_refresh_token_of_another_app_is_invalid_grant(emulator, session) -> None:
    other = emulator.issue_grant(OTHER_APP.client_id)

    assert_error(post_token(session, emulator, refresh_form(other["refresh_token"])), 400, 1071, "invalid_grant")
    assert emulator.refresh_token_is_live(other["refresh_token"])


def test_a_revoked_grant_cannot_be_refreshed(emulator, session) -> None:
    grant = emulator.issue_grant()
    assert revoke(session, emulator, grant["access_token"]).status_code == 200

    assert_error(post_token(session, emulator, refresh_form(grant["refresh_token"])), 400, 1132, "invalid_grant")


def test_revoke_user_kills_every_grant_of_that_user_only(emulator, session) -> None:
    ada_1, ada_2 = emulator.issue_grant(user_id=ADA), emulator.issue_grant(OTHER_APP.client_id, ADA)
    grace = emulator.issue_grant(user_id=GRACE)

    assert emulator.revoke_user(str(ADA)) == 2

    assert_error(post_token(session, emulator, refresh_form(ada_1["refresh_token"])), 400, 1132, "invalid_grant")
    assert_error(users_me(session, emulator, ada_1["access_token"]), 401, 1002)
    assert not emulator.refresh_token_is_live(ada_2["refresh_token"])
    assert post_token(session, emulator, refresh_form(grace["refresh_token"])).status_code == 200


def test_a_token_lifetime_policy_revokes_old_pairs_before_expires_in(emulator, session, clock: ManualClock) -> None:
    old = emulator.issue_grant(user_id=ADA)
    clock.advance(3600)
    young = emulator.issue_grant(user_id=GRACE)
    clock.advance(60)

    answer = admin(session, emulator, "POST", "token-lifetime-policy", max_age_seconds=3600)

    assert answer.json() == {"revoked": 1}
    assert_error(post_token(session, emulator, refresh_form(old["refresh_token"])), 400, 1132, "invalid_grant")
    assert_error(users_me(session, emulator, old["access_token"]), 401, 1002)  # well before its 7 days
    assert users_me(session, emulator, young["access_token"]).status_code == 200
    assert post_token(session, emulator, refresh_form(young["refresh_token"])).status_code == 200


def test_a_rotation_restarts_the_policys_clock(emulator, session, clock: ManualClock) -> None:
    grant = emulator.issue_grant(user_id=ADA)
    clock.advance(3000)
    rotated = post_token(session, emulator, refresh_form(grant["refresh_token"])).json()
    clock.advance(1000)

    assert emulator.enforce_token_lifetime(3600) == 0
    assert emulator.refresh_token_is_live(rotated["refresh_token"])


def test_a_token_lifetime_policy_applies_to_its_own_organisation_only(emulator, session) -> None:
    ada, alan = emulator.issue_grant(user_id=ADA), emulator.issue_grant(user_id=ALAN)
    alan_account = next(user.account_id for user in DEFAULT_USERS if user.id == ALAN)
    assert alan_account != next(user.account_id for user in DEFAULT_USERS if user.id == ADA)

    answer = admin(session, emulator, "POST", "token-lifetime-policy", account_id=alan_account)

    assert answer.json() == {"revoked": 1}
    assert not emulator.refresh_token_is_live(alan["refresh_token"])
    assert emulator.refresh_token_is_live(ada["refresh_token"])
    assert admin(session, emulator, "POST", "token-lifetime-policy", user_id=ADA).json() == {"revoked": 1}
    assert not emulator.refresh_token_is_live(ada["refresh_token"])


@pytest.mark.parametrize(
    "body",
    [{"max_age_seconds": -1}, {"max_age_seconds": "1h"}, {"account_id": "x"}, {"user_id": 1}, {"max_age": 5}],
    ids=["negative-age", "text-age", "text-account", "unknown-user", "unknown-field"],
)
def test_a_bad_token_lifetime_policy_is_400_and_revokes_nothing(emulator, session, body) -> None:
    grant = emulator.issue_grant(user_id=ADA)

    answer = admin(session, emulator, "POST", "token-lifetime-policy", **body)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad_request"
    assert emulator.refresh_token_is_live(grant["refresh_token"])


def test_refresh_tokens_can_be_given_a_lifetime(emulator, session, clock: ManualClock) -> None:
    emulator.update_settings(refresh_lifetime=3600)
    grant = emulator.issue_grant()
    clock.advance(3600)

    assert_error(post_token(session, emulator, refresh_form(grant["refresh_token"])), 400, 1071, "invalid_grant")


def test_concurrent_refreshes_of_one_token_let_exactly_one_through(emulator) -> None:
    grant = emulator.issue_grant()
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def refresh() -> None:
        with requests.Session() as own:
            barrier.wait()
            statuses.append(post_token(own, emulator, refresh_form(grant["refresh_token"])).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [400] * 7


def test_many_concurrent_refreshers_keep_consistent_counts(emulator) -> None:
    def refresher() -> None:
        token = emulator.issue_grant()["refresh_token"]
        with requests.Session() as own:
            for _ in range(40):
                token = post_token(own, emulator, refresh_form(token)).json()["refresh_token"]
        assert emulator.refresh_token_is_live(token)

    threads = [threading.Thread(target=refresher) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert emulator.counts["token.refresh.ok"] == 320
    assert emulator.counts["token.refresh"] == 320
    assert emulator.stats()["live_grants"] == 8


# ----- /users/me -------------------------------------------------------------------------------------


def test_users_me_returns_the_user_with_ids_above_2_to_the_53(emulator, session) -> None:
    grant = emulator.issue_grant(user_id=ALAN)

    response = users_me(session, emulator, grant["access_token"])

    assert response.status_code == 200
    assert '"id":9007199254740993' in response.text  # every digit, as a JSON number
    body = response.json()
    assert body["id"] == ALAN
    assert body["email"] == "alan@example.com"
    assert body["firstName"] == "Alan"
    assert body["lastName"] == "Turing"
    assert body["account"] == {"id": 9223372036854775, "name": "Bletchley Park"}
    assert body["locale"] == "en_GB"
    assert body["timeZone"] == "Europe/London"
    assert body["admin"] is False


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 1001), ({"Authorization": "Basic abc"}, 1001), ({"Authorization": "Bearer "}, 1001)],
    ids=["missing", "not-bearer", "empty"],
)
def test_users_me_without_a_bearer_token_is_1001(emulator, session, headers, code) -> None:
    response = session.get(emulator.api_base_url + "/users/me", headers=headers, timeout=5)

    assert_error(response, 401, code)


def test_users_me_with_an_unknown_token_is_1002(emulator, session) -> None:
    assert_error(users_me(session, emulator, "not-a-token"), 401, 1002)


def test_an_access_token_expires_after_its_lifetime(emulator, session, clock: ManualClock) -> None:
    grant = emulator.issue_grant()
    clock.advance(604798)
    assert users_me(session, emulator, grant["access_token"]).status_code == 200
    clock.advance(1)

    assert_error(users_me(session, emulator, grant["access_token"]), 401, 1003)
    assert emulator.counts["users_me.1003"] == 1


def test_expire_now_for_one_user_then_refresh_still_works(emulator, session) -> None:
    ada, grace = emulator.issue_grant(user_id=ADA), emulator.issue_grant(user_id=GRACE)

    assert emulator.expire_tokens(ADA) == 1

    assert_error(users_me(session, emulator, ada["access_token"]), 401, 1003)
    assert users_me(session, emulator, grace["access_token"]).status_code == 200
    renewed = post_token(session, emulator, refresh_form(ada["refresh_token"])).json()
    assert users_me(session, emulator, renewed["access_token"]).status_code == 200


def test_expire_over_http_including_refresh_tokens(emulator, session) -> None:
    grant = emulator.issue_grant(user_id=GRACE)

    response = admin(session, emulator, "POST", "expire", user_id=str(GRACE), refresh=True)

    assert response.json() == {"expired": 1}
    assert_error(users_me(session, emulator, grant["access_token"]), 401, 1003)
    assert_error(post_token(session, emulator, refresh_form(grant["refresh_token"])), 400, 1071, "invalid_grant")


# ----- revoke ----------------------------------------------------------------------------------------


def test_revoke_kills_this_grant_only(emulator, session) -> None:
    first, second = emulator.issue_grant(user_id=ADA), emulator.issue_grant(user_id=ADA)

    response = revoke(session, emulator, first["access_token"])

    assert response.status_code == 200
    assert response.json() == {"message": "SUCCESS", "resultCode": 0}
    assert_error(users_me(session, emulator, first["access_token"]), 401, 1002)
    assert not emulator.refresh_token_is_live(first["refresh_token"])
    assert emulator.access_token_is_live(second["access_token"])
    assert emulator.refresh_token_is_live(second["refresh_token"])


def test_revoke_delete_all_for_api_client(emulator, session) -> None:
    first, second = emulator.issue_grant(user_id=ADA), emulator.issue_grant(user_id=ADA)
    other_app = emulator.issue_grant(OTHER_APP.client_id, ADA)
    other_user = emulator.issue_grant(user_id=GRACE)

    assert revoke(session, emulator, first["access_token"], delete_all=True).status_code == 200

    for dead in (first, second):
        assert not emulator.access_token_is_live(dead["access_token"])
        assert not emulator.refresh_token_is_live(dead["refresh_token"])
    for alive in (other_app, other_user):
        assert emulator.access_token_is_live(alive["access_token"])
        assert emulator.refresh_token_is_live(alive["refresh_token"])


def test_revoke_needs_a_valid_bearer_token(emulator, session) -> None:
    assert_error(session.delete(emulator.api_base_url + "/token", timeout=5), 401, 1001)
    assert_error(revoke(session, emulator, "nope"), 401, 1002)


# ----- rate limits -----------------------------------------------------------------------------------


def test_the_per_access_token_budget_answers_429_4003(emulator, session, clock: ManualClock) -> None:
    emulator.update_settings(rate_limit_per_minute=3, retry_after=7)
    busy, quiet = emulator.issue_grant(), emulator.issue_grant()
    for _ in range(3):
        assert users_me(session, emulator, busy["access_token"]).status_code == 200

    limited = users_me(session, emulator, busy["access_token"])

    assert_error(limited, 429, 4003)
    assert limited.headers["Retry-After"] == "7"
    assert users_me(session, emulator, quiet["access_token"]).status_code == 200
    clock.advance(60)
    assert users_me(session, emulator, busy["access_token"]).status_code == 200


def test_the_default_budget_is_300_a_minute_without_retry_after(emulator, session) -> None:
    assert emulator.settings.rate_limit_per_minute == 300
    emulator.set_faults(next_outcomes=[4003])

    limited = users_me(session, emulator, emulator.issue_grant()["access_token"])

    assert_error(limited, 429, 4003)
    assert "Retry-After" not in limited.headers


def test_a_per_client_budget_on_the_token_endpoint(emulator, session) -> None:
    emulator.update_settings(token_rate_limit_per_minute=2)
    token = emulator.issue_grant()["refresh_token"]
    for _ in range(2):
        token = post_token(session, emulator, refresh_form(token)).json()["refresh_token"]

    assert_error(post_token(session, emulator, refresh_form(token)), 429, 4003)
    assert emulator.refresh_token_is_live(token)
    assert emulator.counts["token.refresh.4003"] == 1


# ----- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status"), [(4004, 500), (4001, 503), (4002, 503)])
def test_server_errors(emulator, session, code, status) -> None:
    grant = emulator.issue_grant()
    emulator.set_faults(error_rate=1.0, server_error_codes=[code])

    assert_error(post_token(session, emulator, refresh_form(grant["refresh_token"])), status, code)
    # The request never reached the token logic: the refresh token was not spent.
    assert emulator.refresh_token_is_live(grant["refresh_token"])
    assert emulator.counts[f"token.refresh.{code}"] == 1
    assert emulator.token_requests[-1]["outcome"] == str(code)


def test_a_forced_429_share(emulator, session) -> None:
    emulator.faults.rate_limit_rate = 1.0

    assert_error(users_me(session, emulator, emulator.issue_grant()["access_token"]), 429, 4003)


def fault_sequence(emulator: SmartsheetEmulator, session: requests.Session, count: int = 40) -> list[int]:
    access = emulator.issue_grant()["access_token"]
    return [users_me(session, emulator, access).status_code for _ in range(count)]


def test_faults_are_deterministic_with_a_seed(emulator, session, clock: ManualClock) -> None:
    emulator.set_faults(error_rate=0.3, rate_limit_rate=0.2)
    first = fault_sequence(emulator, session)

    emulator.reset_faults()
    emulator.set_faults(error_rate=0.3, rate_limit_rate=0.2)
    again = fault_sequence(emulator, session)

    with SmartsheetEmulator(clock=clock, seed=1234) as twin:
        twin.set_faults(error_rate=0.3, rate_limit_rate=0.2)
        twin_sequence = fault_sequence(twin, session)

    assert first == again == twin_sequence
    assert {200, 429} <= set(first)
    assert set(first) & {500, 503}


def test_scripted_outcomes_come_first(emulator, session) -> None:
    access = emulator.issue_grant()["access_token"]
    emulator.set_faults(next_outcomes=[4003, 4004, "ok", 4001])

    statuses = [users_me(session, emulator, access).status_code for _ in range(5)]

    assert statuses == [429, 500, 200, 503, 200]


def test_token_only_faults_spare_the_other_endpoints(emulator, session) -> None:
    grant = emulator.issue_grant()
    emulator.set_faults(error_rate=1.0, token_only=True)

    assert users_me(session, emulator, grant["access_token"]).status_code == 200
    assert post_token(session, emulator, refresh_form(grant["refresh_token"])).status_code >= 500


def elapsed(call: Any) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_latency_everywhere_or_on_the_token_endpoint_only(emulator, session) -> None:
    grant = emulator.issue_grant()
    emulator.set_faults(latency_ms=150)
    assert elapsed(lambda: users_me(session, emulator, grant["access_token"])) >= 0.15

    emulator.set_faults(latency_token_only=True)
    assert elapsed(lambda: users_me(session, emulator, grant["access_token"])) < 0.15
    assert elapsed(lambda: post_token(session, emulator, refresh_form(grant["refresh_token"]))) >= 0.15


def test_a_timeout_holds_until_the_client_gives_up_and_changes_nothing(emulator, session) -> None:
    grant = emulator.issue_grant()
    emulator.set_faults(next_outcomes=["timeout"])

    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(emulator.api_base_url + "/token", data=refresh_form(grant["refresh_token"]), timeout=0.3)

    assert wait_for(lambda: emulator.counts["token.refresh.timeout"] == 1)
    assert emulator.refresh_token_is_live(grant["refresh_token"])
    assert emulator.token_requests[-1]["outcome"] == "timeout"


def test_a_timeout_that_processes_loses_the_rotated_tokens(emulator, session) -> None:
    grant = emulator.issue_grant()
    emulator.set_faults(timeout_rate=1.0, timeout_processes=True)

    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(emulator.api_base_url + "/token", data=refresh_form(grant["refresh_token"]), timeout=0.3)

    assert wait_for(lambda: emulator.counts["token.refresh.timeout"] == 1)
    assert emulator.counts["token.refresh.ok"] == 1
    assert not emulator.refresh_token_is_live(grant["refresh_token"])


def test_a_refresh_waiting_out_its_latency_is_in_progress_and_is_carried_out_after_its_client_left(
    emulator, session
) -> None:
    """What a worker killed mid-request leaves behind: Smartsheet carries the refresh out anyway."""
    grant = emulator.issue_grant()
    emulator.set_faults(latency_ms=400, latency_token_only=True)

    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(emulator.api_base_url + "/token", data=refresh_form(grant["refresh_token"]), timeout=0.1)
    during = emulator.in_progress["token.refresh"]

    assert during == 1
    assert wait_for(lambda: emulator.in_progress["token.refresh"] == 0)
    assert emulator.counts["token.refresh.ok"] == 1
    assert not emulator.refresh_token_is_live(grant["refresh_token"])
    assert "token.refresh" not in emulator.in_progress


def test_a_bounded_hold_answers_a_patient_client(emulator, session) -> None:
    grant = emulator.issue_grant()
    emulator.set_faults(timeout_rate=1.0, timeout_ms=150)
    response: list[requests.Response] = []

    took = elapsed(lambda: response.append(post_token(session, emulator, refresh_form(grant["refresh_token"]))))

    assert took >= 0.15
    assert response[0].status_code == 200


def test_stop_releases_held_requests(clock: ManualClock) -> None:
    emulator = SmartsheetEmulator(clock=clock).start()
    grant = emulator.issue_grant()
    emulator.set_faults(timeout_rate=1.0)
    failures: list[BaseException] = []

    def held() -> None:
        try:
            requests.post(emulator.api_base_url + "/token", data=refresh_form(grant["refresh_token"]), timeout=10)
        except requests.RequestException as exc:
            failures.append(exc)

    client = threading.Thread(target=held)
    client.start()
    time.sleep(0.1)
    took = elapsed(emulator.stop)
    client.join(timeout=5)

    assert not client.is_alive()
    assert failures
    assert took < 2


# ----- admin endpoints -------------------------------------------------------------------------------


def test_faults_over_http(emulator, session) -> None:
    access = emulator.issue_grant()["access_token"]

    changed = admin(session, emulator, "POST", "faults", error_rate=1.0, server_error_codes=[4001])

    assert changed.status_code == 200
    assert changed.json()["error_rate"] == 1.0
    assert emulator.faults.server_error_codes == (4001,)
    assert users_me(session, emulator, access).status_code == 503
    assert admin(session, emulator, "GET", "faults").json()["server_error_codes"] == [4001]

    assert admin(session, emulator, "DELETE", "faults").status_code == 200
    assert users_me(session, emulator, access).status_code == 200


def test_bad_fault_changes_are_refused_and_change_nothing(emulator, session) -> None:
    emulator.set_faults(latency_ms=5)

    unknown = admin(session, emulator, "POST", "faults", error_rat=1.0)
    out_of_range = admin(session, emulator, "POST", "faults", error_rate=2, latency_ms=0)

    assert unknown.status_code == 400
    assert "error_rat" in unknown.json()["message"]
    assert out_of_range.status_code == 400
    assert emulator.faults.error_rate == 0
    assert emulator.faults.latency_ms == 5
    with pytest.raises(ValueError, match="timeout_rate"):
        emulator.set_faults(timeout_rate=-1)


def test_settings_seed_and_health_over_http(emulator, session) -> None:
    assert admin(session, emulator, "GET", "health").json() == {"ok": True}
    assert admin(session, emulator, "POST", "settings", retry_after=3).json()["retry_after"] == 3
    assert emulator.settings.retry_after == 3
    assert admin(session, emulator, "POST", "settings", auto_consent="maybe").status_code == 400
    assert admin(session, emulator, "POST", "seed", seed=99).json() == {"seed": 99}


def test_stats_over_http(emulator, session) -> None:
    grant = emulator.issue_grant()
    post_token(session, emulator, refresh_form(grant["refresh_token"]))
    session.get(emulator.base_url + "/2.0/nothing-here", timeout=5)

    stats = admin(session, emulator, "GET", "stats").json()

    assert stats["counts"]["token.refresh.ok"] == 1
    assert stats["counts"]["unknown.1006"] == 1
    assert stats["token_requests"][0]["grant_type"] == "refresh_token"
    assert stats["live_grants"] == 1


def test_grants_codes_and_token_status_over_http(emulator, session) -> None:
    grant = admin(session, emulator, "POST", "grants", user_id=str(ALAN), scopes="READ_SHEETS WRITE_SHEETS").json()
    assert grant["user_id"] == str(ALAN)
    assert users_me(session, emulator, grant["access_token"]).json()["id"] == ALAN

    code = admin(session, emulator, "POST", "codes", client_id=CLIENT_ID).json()["code"]
    assert post_token(session, emulator, code_form(code)).status_code == 200

    status = admin(
        session, emulator, "POST", "token-status", access_token=grant["access_token"], refresh_token="gone"
    ).json()
    assert status == {"access_token_live": True, "refresh_token_live": False}
    assert admin(session, emulator, "POST", "grants", scopes=["READ_EVERYTHING"]).status_code == 400
    assert admin(session, emulator, "POST", "revoke-user", user_id=ALAN).json() == {"revoked": 1}


def test_users_are_added_in_bulk_over_http_and_each_can_sign_in(emulator, session) -> None:
    added = admin(session, emulator, "POST", "users", count=3).json()

    ids = [user["id"] for user in added]
    assert ids == [ALAN + 1, ALAN + 2, ALAN + 3]  # after the highest id so far (ALAN, above 2^53)
    assert [user["email"] for user in added] == [f"user{n}@example.com" for n in ids]
    assert [user["id"] for user in admin(session, emulator, "GET", "users").json()][-3:] == ids
    page = session.get(authorize_url(emulator), timeout=5).text
    assert f'<option value="{ids[2]}">' in page  # on the consent page, to be chosen as a browser would
    code = query_of(emulator.consent(authorize_url(emulator), user_id=ids[2]))["code"]
    access_token = post_token(session, emulator, code_form(code)).json()["access_token"]
    assert users_me(session, emulator, access_token).json()["id"] == ids[2]

    chosen = admin(session, emulator, "POST", "users", count=2, first_id=10**18).json()
    assert [user["id"] for user in chosen] == [10**18, 10**18 + 1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "count must be an integer >= 1"),
        ({"count": 0}, "count must be an integer >= 1"),
        ({"count": "5"}, "count must be an integer >= 1"),
        ({"count": True}, "count must be an integer >= 1"),
        ({"count": 10_001}, "count must be at most 10000"),
        ({"count": 1, "first_id": -4}, "first_id must be an integer >= 1"),
        ({"count": 2, "first_id": ALAN - 1}, "overlap existing users"),
    ],
)
def test_adding_users_refuses_bad_counts_and_taken_ids(emulator, session, body: dict[str, Any], message: str) -> None:
    before = len(emulator.users)

    answer = admin(session, emulator, "POST", "users", **body)

    assert answer.status_code == 400
    assert message in answer.json()["message"]
    assert len(emulator.users) == before


def test_reset_over_http_keeps_grants_unless_asked(emulator, session) -> None:
    grant = emulator.issue_grant()
    emulator.set_faults(error_rate=0.5)
    post_token(session, emulator, code_form("unknown"))

    assert admin(session, emulator, "POST", "reset").status_code == 200
    assert emulator.counts == {}
    assert emulator.token_requests == []
    assert emulator.faults.error_rate == 0
    assert emulator.refresh_token_is_live(grant["refresh_token"])

    assert session.post(f"{emulator.base_url}/_emulator/reset?all=true", timeout=5).status_code == 200
    assert not emulator.refresh_token_is_live(grant["refresh_token"])


def test_unknown_routes(emulator, session) -> None:
    assert admin(session, emulator, "GET", "nothing").status_code == 404
    assert_error(session.get(emulator.base_url + "/2.0/sheets", timeout=5), 404, 1006)
    assert_error(session.get(emulator.api_base_url + "/token", timeout=5), 404, 1006)


# ----- the official smartsheet-python-sdk against the emulator ---------------------------------------


# The SDK's own session setup uses deprecated ssl flags; that is the SDK's noise, not ours.
sdk_warnings = pytest.mark.filterwarnings("ignore:ssl.OP_NO_SSL:DeprecationWarning")


def sdk_client(emulator: SmartsheetEmulator, access_token: str | None = None) -> Any:
    # api_base is how the SDK picks a region; pointing it at the emulator is the same switch. The SDK
    # insists on an access token even for the token calls, which do not need one.
    return smartsheet.Smartsheet(
        access_token=access_token or "unused-for-token-calls",
        api_base=emulator.api_base_url,
        user_agent="emulator-test",
        max_retry_time=1,
    )


@sdk_warnings
def test_the_sdk_exchanges_a_code_and_refreshes(emulator) -> None:
    code = new_code(emulator, user_id=GRACE)
    client = sdk_client(emulator)

    first = client.Token.get_access_token(CLIENT_ID, code, token_hash(SECRET, code))

    assert isinstance(first, smartsheet.models.AccessToken), first
    assert first.token_type == "bearer"
    assert first.expires_in == 604799
    assert emulator.access_token_is_live(first.access_token)
    exchange = emulator.token_requests[-1]
    assert (exchange["auth_method"], exchange["transport"], exchange["content_type"]) == ("hash", "form", FORM)
    assert exchange["redirect_uri_sent"] is False

    second = client.Token.refresh_access_token(CLIENT_ID, first.refresh_token, token_hash(SECRET, first.refresh_token))

    assert isinstance(second, smartsheet.models.AccessToken), second
    assert second.refresh_token != first.refresh_token
    assert not emulator.refresh_token_is_live(first.refresh_token)
    assert emulator.refresh_token_is_live(second.refresh_token)
    assert emulator.counts["token.refresh.ok"] == 1


@sdk_warnings
def test_the_sdk_reads_the_user_and_revokes(emulator) -> None:
    grant = emulator.issue_grant(user_id=GRACE)
    client = sdk_client(emulator, grant["access_token"])

    profile = client.Users.get_current_user()
    assert profile.email == "grace@example.com"

    result = client.Token.revoke_access_token()
    assert result.message == "SUCCESS"
    assert not emulator.access_token_is_live(grant["access_token"])


@sdk_warnings
def test_the_sdk_sees_emulator_errors_as_smartsheet_errors(emulator) -> None:
    code = new_code(emulator)

    error = sdk_client(emulator).Token.get_access_token(CLIENT_ID, code, token_hash("wrong", code))

    assert isinstance(error, smartsheet.models.Error)
    assert error.result.code == 1072
    assert error.result.status_code == 400


# ----- lifecycle and command line --------------------------------------------------------------------


def test_only_loopback_hosts_are_served() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SmartsheetEmulator().start(host="0.0.0.0")  # noqa: S104 - the point is that it is refused


def test_urls_need_a_running_emulator() -> None:
    emulator = SmartsheetEmulator()
    with pytest.raises(RuntimeError):
        _ = emulator.base_url
    with emulator:
        assert emulator.authorize_url == emulator.base_url + "/b/authorize"
        assert emulator.api_base_url == emulator.base_url + "/2.0"
    assert not emulator.running


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra.local.smartsheet_emulator", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0
    for option in ("--host", "--port", "--client-id", "--client-secret", "--redirect-uri", "--latency-ms"):
        assert option in result.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])  # noqa: S104 - refused hosts
def test_cli_refuses_non_loopback_hosts(host, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--host", host])

    assert exit_info.value.code == 2
    assert "loopback" in capsys.readouterr().err


def test_cli_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.local.smartsheet_emulator",
            "--port",
            "0",
            "--client-id",
            "cli-client",
            "--client-secret",
            "cli-secret",
            "--redirect-uri",
            "http://127.0.0.1:3999/cb",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        base_url = first_line.strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:")
        assert requests.get(base_url + "/_emulator/health", timeout=5).json() == {"ok": True}
        apps = requests.get(base_url + "/_emulator/apps", timeout=5).json()
        assert apps == [
            {"client_id": "cli-client", "name": DEFAULT_APP.name, "redirect_uri": "http://127.0.0.1:3999/cb"}
        ]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "cli-secret" not in first_line + out
    assert "stopped" in out
