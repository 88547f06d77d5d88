"""The errors' one table (domain/errors.ANSWERS): each row is what both resolvers render, status, code, Retry-After,
log level and count alike, for the error it names and its subclasses without a row of their own."""

from __future__ import annotations

import json
from typing import Any

import pytest
from smartsheet_oauth.domain import errors
from smartsheet_oauth.domain.errors import ANSWERS, API, CALLBACK, LOGIN, Answer, answer_for
from smartsheet_oauth.edge import management_api, web
from smartsheet_oauth.edge.router import Router
from smartsheet_oauth.platform import observability

from tests.support.events import http_event

# One instance of each error a row names, built as the code raises it.
SAMPLES: dict[type[Exception], Exception] = {
    errors.NoSuchRoute: errors.NoSuchRoute("GET /nowhere"),
    errors.BadRequest: errors.BadRequest("The address is too long."),
    errors.SignInRejected: errors.SignInRejected("unknown_state"),
    errors.UserDeclined: errors.UserDeclined("access_denied"),
    errors.AccessDenied: errors.AccessDenied("invalid_scope"),
    errors.CodeRefused: errors.CodeRefused("invalid_grant:1069", start_again="https://app.example/connect"),
    errors.BindingConflict: errors.BindingConflict(
        "end_user_has_another_account", end_user_id="u-1", smartsheet_user_id="7", existing_connection_id="8"
    ),
    errors.RegionNotAllowed: errors.RegionNotAllowed("mars", ("us", "eu")),
    errors.RegionConflict: errors.RegionConflict(connection_id="7", region="eu", existing_region="us"),
    errors.TransientSmartsheetError: errors.TransientSmartsheetError("busy", status=503, retry_after=7),
    errors.InvalidClient: errors.InvalidClient("bad secret", status=401, error_code=1072, oauth_error="invalid_client"),
    errors.SmartsheetError: errors.SmartsheetError("no", status=400),
    errors.ConnectLinkRejected: errors.ConnectLinkRejected("expired"),
    errors.ConnectFormRejected: errors.ConnectFormRejected("no_browser_key"),
    errors.AnonymousLoginDisabled: errors.AnonymousLoginDisabled(),
    errors.StorageError: errors.StorageError("states.put", "ThrottlingException", transient=True),
    Exception: RuntimeError("nobody planned this"),
    errors.NotFound: errors.NotFound("There is no connection 8."),
    errors.RefreshFailed: errors.RefreshFailed("refresh_kept", "kept", retry_after=30),
    errors.RefreshLost: errors.RefreshLost("lost"),
    errors.RefreshCooldown: errors.RefreshCooldown("cooling", retry_after=420),
    errors.PaceExhausted: errors.PaceExhausted(6),
    errors.Conflict: errors.Conflict("needs_reauth", "sign in again"),
    errors.CompletionRefused: errors.CompletionRefused("completion_expired", "too late", status=410),
    errors.GrantRefused: errors.GrantRefused("lost_in_flight", "spent"),
}
ROWS = [(row, surface) for row in ANSWERS for surface in row.surfaces]


def row_id(case: tuple[Answer, str]) -> str:
    return f"{case[1]}:{case[0].error.__name__}"


def test_each_error_is_answered_once_per_surface_and_every_surface_answers_anything() -> None:
    keys = [(row.error, surface) for row, surface in ROWS]
    assert len(keys) == len(set(keys))
    assert {surface for _, surface in ROWS} == {LOGIN, CALLBACK, API}
    for surface in (LOGIN, CALLBACK, API):
        assert (Exception, surface) in keys
    assert set(SAMPLES) == {row.error for row in ANSWERS}


def test_a_subclass_without_a_row_is_answered_by_its_nearest_base() -> None:
    invalid_grant = errors.InvalidGrant("gone", status=400, error_code=1069)
    assert answer_for(invalid_grant, CALLBACK).row.error is errors.SmartsheetError
    assert answer_for(errors.ConditionFailed("x", "y", transient=False), API).row.error is errors.StorageError
    # A row's own surfaces only: /login never hears from Smartsheet, so its answer to one is the unexpected one's.
    assert answer_for(errors.TransientSmartsheetError("busy"), LOGIN).code == "internal_error"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"logs": [], "metrics": []}

    def log(level: str | None, message: str, outcome: str, exc: BaseException, fields: dict[str, object]) -> None:
        seen["logs"].append((level, message, outcome, fields))

    monkeypatch.setattr(web, "log_failure", log)
    monkeypatch.setattr(management_api, "log_failure", log)
    monkeypatch.setattr(observability.metrics, "add_metric", lambda **metric: seen["metrics"].append(metric["name"]))
    return seen


def failing_app(resolver: Router, exc: Exception) -> Router:
    @resolver.get("/fail")
    def fail() -> Any:
        raise exc

    return resolver


@pytest.mark.parametrize("case", ROWS, ids=[row_id(case) for case in ROWS])
def test_the_resolver_of_each_surface_renders_its_row(case: tuple[Answer, str], recorded: dict[str, list[Any]]) -> None:
    row, surface = case
    exc = SAMPLES[row.error]
    app = management_api.resolver() if surface == API else web.resolver(operation=surface)
    path = "/nowhere" if row.error is errors.NoSuchRoute else "/fail"
    event = http_event(path)
    event["requestContext"]["requestId"] = "req-1"
    result = failing_app(app, exc).resolve(event, None)  # type: ignore[arg-type]

    status = getattr(exc, "status", None) if row.own and getattr(exc, "status", None) else row.status
    code = getattr(exc, "code", None) if row.own and getattr(exc, "code", None) else row.code
    retry_after = (getattr(exc, "retry_after", None) if row.own else None) or row.retry_after
    assert result["statusCode"] == status
    assert result["headers"].get("Retry-After") == (str(retry_after) if retry_after else None)
    assert recorded["metrics"] == (
        [f"management_{code}" if surface == API else f"{surface}_{code}"] if row.counted else []
    )
    if row.level is None:
        assert recorded["logs"] == [] or recorded["logs"][0][0] is None
    else:
        ((level, message, outcome, fields),) = recorded["logs"]
        assert (level, message, outcome) == (row.level, row.log, code)
        assert fields == (exc.log_fields() if isinstance(exc, errors.BrokerError) else {})
    if surface == API:
        body = json.loads(result["body"])
        assert (body["error"], body["reference"]) == (code, "req-1")
        assert body.get("retry_after") == retry_after
        assert body["message"] == (row.message.format(reason=getattr(exc, "reason", "")) if row.message else str(exc))
    else:
        assert result["headers"]["Content-Type"].startswith("text/html")
        assert "Traceback" not in result["body"]


FINAL = [row for row in ANSWERS if row.final]


def test_the_final_callback_answers_are_the_refusals_a_retry_of_the_same_sign_in_cannot_change() -> None:
    """A final answer ends the sign-in for good (its result cookie keeps it, edge/result.py): never one that says try
    again later (Retry-After), nor the unexpected failure (whether anything was stored is not known), nor a state that
    was not this browser's to spend."""
    assert {row.code for row in FINAL} == {
        "denied",
        "authorize_error",
        "bad_request",
        "invalid_code",
        "binding_conflict",
        "region_conflict",
        "smartsheet_error",
    }
    for row in FINAL:
        assert CALLBACK in row.surfaces
        assert row.retry_after is None
        assert not row.own
        assert row.level != errors.UNEXPECTED
    for row in ANSWERS:
        if CALLBACK in row.surfaces and row.retry_after:
            assert not row.final, row


def test_a_final_code_names_one_status_and_page_and_nothing_else_is_final() -> None:
    for row in FINAL:
        found = errors.final_answer(row.code)
        assert found is not None
        assert (found.status, found.page) == (row.status, row.page)
    for code in (
        "connected",
        "bad_state",
        "smartsheet_unavailable",
        "storage_error",
        "internal_error",
        "not_found",
        "",
    ):
        assert errors.final_answer(code) is None


@pytest.mark.parametrize("row", FINAL, ids=lambda row: row.error.__name__)
def test_a_final_page_drawn_again_from_its_kept_facts_is_the_same_page(
    row: Answer, recorded: dict[str, list[Any]]
) -> None:
    exc = SAMPLES[row.error]
    event = http_event("/fail")
    event["requestContext"]["requestId"] = "req-1"
    first = failing_app(web.resolver(operation=CALLBACK), exc).resolve(event, None)  # type: ignore[arg-type]
    kept = json.loads(json.dumps(web.page_facts(exc, row.page)))  # as the cookie carries them

    again = web.final_page(row.code, kept, "req-1")

    assert again is not None
    assert again.proxy_result() == first  # status, headers (no Retry-After), body and its reference alike
    assert len(recorded["metrics"]) == (1 if row.counted else 0)  # drawing it again counts and logs nothing
    assert len(recorded["logs"]) == 1


def test_a_final_page_keeps_no_more_than_its_page_reads() -> None:
    conflict = errors.BindingConflict(
        "account_bound_to_an_end_user", end_user_id="user-1", smartsheet_user_id="7", existing_connection_id="7"
    )
    assert web.page_facts(conflict, "binding_conflict") == {"reason": "account_bound_to_an_end_user"}
    assert web.page_facts(errors.UserDeclined("access_denied"), "declined") == {}
    assert web.page_facts(errors.CodeRefused("r", start_again=None), "code_refused") == {"start_again": None}
    assert web.final_page("smartsheet_unavailable", {}, "req-1") is None
