"""Every way a connect session's sign-in can end returns its user to the integrator's return_to, saying what happened
(issue 22 items 2 and 3): outcome=connected with a completion code, outcome=declined, or outcome=failed with an error
code. Never a broker page that leads to a plain /login, which would connect the user unbound (or, with anonymous
sign-in off, be a dead end)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.errors import (
    AccessDenied,
    BadRequest,
    BindingConflict,
    CodeRefused,
    InvalidClient,
    SignInRejected,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.flows.connect_return import FAILURE_CODES, ConnectSignInFailed, failure_params

from tests.management.conftest import RETURN_TO, EventSink, new_session
from tests.support.broker import NONCE_COOKIE, Broker

ADA = "4583173393803140"


def started(broker: Broker, end_user_id: str = "user-1", return_to: str = RETURN_TO) -> tuple[str, str]:
    """A connect link opened and its Connect button pressed: (Smartsheet's authorize URL, the nonce cookie)."""
    login = broker.press_connect(broker.login({"session": new_session(end_user_id, return_to=return_to)}))
    assert login.status == 303, login.body
    nonce = login.cookie(NONCE_COOKIE)
    assert nonce
    return login.location, nonce


def returned(answer_location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(answer_location).query).items()}


@pytest.mark.parametrize("anonymous_login", ["enabled", "disabled"])
def test_a_declined_connect_sign_in_returns_to_the_app_with_access_denied_and_binds_nothing(
    broker: Broker, event_sink: EventSink, monkeypatch: pytest.MonkeyPatch, anonymous_login: str
) -> None:
    monkeypatch.setenv("ANONYMOUS_LOGIN", anonymous_login)
    get_config.cache_clear()
    services.reset()
    location, nonce = started(broker, return_to=f"{RETURN_TO}?tab=sheets")

    answer = broker.callback(broker.consent(location, user_id=int(ADA), allow=False), nonce)

    assert answer.status == 303
    assert answer.location == f"{RETURN_TO}?tab=sheets&outcome=declined&error=access_denied"
    assert "/login" not in answer.body
    assert answer.cookie(NONCE_COOKIE) == ""  # the nonce is spent in the browser too
    assert broker.connection(ADA) is None
    assert event_sink.drain() == []


def test_smartsheet_not_answering_returns_temporarily_unavailable(broker: Broker) -> None:
    location, nonce = started(broker)
    query = broker.consent(location, user_id=int(ADA))
    broker.emulator.set_faults(next_outcomes=[4004, 4004, 4004, 4004])

    answer = broker.callback(query, nonce)

    assert (answer.status, returned(answer.location)) == (
        303,
        {"outcome": "failed", "error": "temporarily_unavailable"},
    )
    assert broker.connection(ADA) is None


def test_a_callback_in_another_browser_returns_browser_mismatch(broker: Broker) -> None:
    location, _ = started(broker)
    query = broker.consent(location, user_id=int(ADA))

    answer = broker.callback(query, "another-browsers-nonce")

    assert answer.location == f"{RETURN_TO}?outcome=failed&error=browser_mismatch"
    assert broker.connection(ADA) is None


def test_a_failure_the_broker_did_not_foresee_still_returns_to_the_app(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, nonce = started(broker)
    query = broker.consent(location, user_id=int(ADA))

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("smartsheet_oauth.flows.connect.check_binding", broken)

    answer = broker.callback(query, nonce)

    assert answer.location == f"{RETURN_TO}?outcome=failed&error=server_error"


def test_an_allowed_connect_sign_in_returns_outcome_connected_with_the_code(broker: Broker) -> None:
    location, nonce = started(broker)

    answer = broker.callback(broker.consent(location, user_id=int(ADA)), nonce)

    assert answer.status == 303
    query = returned(answer.location)
    assert set(query) == {"outcome", "completion_code"}
    assert query["outcome"] == "connected"


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (AccessDenied("access_denied"), {"outcome": "declined", "error": "access_denied"}),
        (AccessDenied("invalid_scope"), {"outcome": "failed", "error": "authorization_failed"}),
        (CodeRefused("invalid_grant:1071", start_again=None), {"outcome": "failed", "error": "code_refused"}),
        (SignInRejected("nonce_mismatch"), {"outcome": "failed", "error": "browser_mismatch"}),
        (
            BindingConflict("x_reason", end_user_id="u", smartsheet_user_id="1", existing_connection_id="2"),
            {"outcome": "failed", "error": "binding_conflict", "error_detail": "x_reason"},
        ),
        (TransientSmartsheetError("busy"), {"outcome": "failed", "error": "temporarily_unavailable"}),
        (StorageError("op", "Throttled", transient=True), {"outcome": "failed", "error": "temporarily_unavailable"}),
        (InvalidClient("wrong secret"), {"outcome": "failed", "error": "smartsheet_error"}),
        (BadRequest("no code"), {"outcome": "failed", "error": "invalid_request"}),
        (RuntimeError("bug"), {"outcome": "failed", "error": "server_error"}),
    ],
)
def test_each_failure_has_its_documented_code(failure: Exception, expected: dict[str, str]) -> None:
    assert failure_params(failure) == expected
    assert expected["error"] in FAILURE_CODES
    assert ConnectSignInFailed(failure, return_to="https://app.example.com/c?a=1#top").location.startswith(
        "https://app.example.com/c?a=1&outcome="
    )
