"""return_to only ever leads to an allow-listed origin or URL: no open redirect; starting again keeps it."""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
from smartsheet_oauth.domain.errors import BadRequest
from smartsheet_oauth.flows.sign_in import checked_return_to, start_again_url

ALLOWED = ("https://app.example.com", "https://other.example.com/exact/path")


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com",
        "https://app.example.com/",
        "https://app.example.com/settings/smartsheet?tab=1",
        "https://APP.example.com/x",
        "https://other.example.com/exact/path",
    ],
)
def test_allowed(url: str) -> None:
    assert checked_return_to(url, ALLOWED) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/",
        "//evil.example.com",
        "/\\evil.example.com",
        "https:\\\\evil.example.com",
        "javascript:alert(1)",
        "data:text/html,hi",
        "http://app.example.com/",
        "https://app.example.com.evil.com/",
        "https://app.example.com@evil.com/",
        "https://user:pw@app.example.com/",
        "https://app.example.com:8443/",
        "https://other.example.com/exact/path/more",
        "https://other.example.com/",
        "https://app.example.com/\x00",
        "https://app.example.com/\n",
        "https%3A%2F%2Fevil.example.com",
        "relative/path",
        "x" * 3000,
    ],
)
def test_refused(url: str) -> None:
    with pytest.raises(BadRequest):
        checked_return_to(url, ALLOWED)


def test_nothing_is_allowed_by_default() -> None:
    with pytest.raises(BadRequest):
        checked_return_to("https://app.example.com/", ())
    assert checked_return_to(None, ()) is None
    assert checked_return_to("", ()) is None


@pytest.mark.parametrize(
    ("connect_session", "return_to", "anonymous_login", "expected"),
    [
        (False, None, True, "/login"),
        (
            False,
            "https://app.example.com/done?tab=2&x=a b",
            True,
            "/login?return_to=" + quote_plus("https://app.example.com/done?tab=2&x=a b"),
        ),
        (True, None, True, None),  # a connect session: only the app can start a bound sign-in
        (True, "https://app.example.com/connected", True, None),
        (True, "https://app.example.com/connected", False, None),
        (False, "https://app.example.com/done", False, None),  # anonymous sign-in was turned off meanwhile
    ],
)
def test_starting_again_keeps_the_sign_in_what_it_was_and_never_sends_a_connect_session_to_login(
    connect_session: bool, return_to: str | None, anonymous_login: bool, expected: str | None
) -> None:
    found = start_again_url(connect_session=connect_session, return_to=return_to, anonymous_login=anonymous_login)

    assert found == expected
