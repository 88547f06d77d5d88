"""HTTP plumbing shared by the public handlers: the resolver, query checks, and errors drawn as pages (ANSWERS)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

from smartsheet_oauth.domain.errors import BadRequest, BrokerError, ReconnectWrongAccount, answer_for, final_answer
from smartsheet_oauth.edge import pages
from smartsheet_oauth.edge.router import Cookie, Response, Router
from smartsheet_oauth.platform.observability import log_failure, metrics

HTML = "text/html; charset=utf-8"
MAX_QUERY_LENGTH = 4096
MAX_PARAM_LENGTH = 2048


def html(
    status: int, body: str, *, headers: dict[str, str] | None = None, cookies: list[Cookie] | None = None
) -> Response:
    return Response(
        status_code=status,
        content_type=HTML,
        body=body,
        headers={**pages.security_headers(), **(headers or {})},
        cookies=cookies,
    )


def redirect(status: int, location: str, *, cookies: list[Cookie] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=HTML,
        body="",
        headers={**pages.security_headers(), "Location": location},
        cookies=cookies,
    )


def query_params(app: Router) -> dict[str, str]:
    """The query string as a dict, refusing what no browser following our links sends: oversized input."""
    event = app.current_event
    if len(event.raw_query_string) > MAX_QUERY_LENGTH:
        raise BadRequest("The address is too long.")
    params = event.query_string_parameters
    for name, value in params.items():
        if len(name) > 64 or len(value) > MAX_PARAM_LENGTH:
            raise BadRequest("The address has a value that is too long.")
    return dict(params)


def form_params(app: Router) -> dict[str, str]:
    """A POSTed HTML form (application/x-www-form-urlencoded, maybe base64 as API Gateway passes it) as a dict,
    refusing what our own forms never send: another content type, oversized bodies, repeated fields."""
    event = app.current_event
    if not event.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        raise BadRequest("The form was not sent as a form.")
    raw = event.body or ""
    try:
        data = base64.b64decode(raw, validate=True) if event.is_base64_encoded else raw.encode()
        text = data.decode("ascii")
    except (binascii.Error, ValueError):
        raise BadRequest("The form is not valid.") from None
    if len(text) > MAX_QUERY_LENGTH:
        raise BadRequest("The form is too long.")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=8)
    except ValueError:
        raise BadRequest("The form is not valid.") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise BadRequest("The form is not valid.")
    return fields


def count(operation: str, outcome: str) -> None:
    """One EMF count per outcome, e.g. callback_success: names are fixed, so cardinality stays low."""
    metrics.add_metric(name=f"{operation}_{outcome}", unit="Count", value=1)


# How each page of domain/errors.ANSWERS is drawn for one error (the rows say which page, status and headers).
_PAGES: dict[str, Callable[[Any, str], str]] = {
    "not_found": lambda exc, reference: pages.not_found(),
    "bad_request": lambda exc, reference: pages.bad_request(str(exc)),
    "expired_or_used": lambda exc, reference: pages.expired_or_used(),
    "declined": lambda exc, reference: pages.declined(),
    "authorization_failed": lambda exc, reference: pages.authorization_failed(),
    "code_refused": lambda exc, reference: pages.code_refused(exc.start_again, reference),
    "binding_conflict": lambda exc, reference: (
        pages.bound_through_app()
        if exc.reason == "account_bound_to_an_end_user"
        else pages.reconnect_wrong_account(exc.back)
        if isinstance(exc, ReconnectWrongAccount)
        else pages.binding_conflict(exc.reason)
    ),
    "region_not_allowed": lambda exc, reference: pages.region_not_allowed(exc.allowed),
    "region_conflict": lambda exc, reference: pages.region_conflict(exc.existing_region, reference),
    "unavailable": lambda exc, reference: pages.unavailable(reference),
    "smartsheet_error": lambda exc, reference: pages.smartsheet_error(reference),
    "connect_link": lambda exc, reference: pages.connect_link_expired(),
    "connect_form": lambda exc, reference: pages.connect_form_rejected(),
    "anonymous_login": lambda exc, reference: pages.anonymous_login_disabled(),
    "internal_error": lambda exc, reference: pages.internal_error(reference),
}


# What a final page (ANSWERS' final rows) is drawn from besides its reference: the error's fields its drawing above
# reads, kept in the sign-in's result cookie (edge/result.py) so a reload draws the same page. No row listed here keeps
# more than its page shows.
_FACTS: dict[str, tuple[str, ...]] = {
    "code_refused": ("start_again",),
    "binding_conflict": ("reason",),
    "region_conflict": ("existing_region",),
}


def page_facts(exc: Exception, page: str) -> dict[str, str | None]:
    """What the final page `page` is drawn from of exc, for the result cookie."""
    return {name: getattr(exc, name) for name in _FACTS.get(page, ())}


def final_page(code: str, facts: Mapping[str, str | None], reference: str) -> Response | None:
    """The page a final callback answer with `code` showed, drawn again from what the sign-in's result cookie kept (its
    status and headers as its row says; logged and counted by nobody: the failure was, once). None for a code that is
    no final answer's."""
    row = final_answer(code)
    if row is None:
        return None
    kept = SimpleNamespace(**{name: facts.get(name) for name in _FACTS.get(row.page, ())})
    return html(row.status, _PAGES[row.page](kept, reference))


def failure_page(app: Router, exc: Exception, *, operation: str) -> Response:
    """The page `operation`'s surface answers exc with, logged and counted as its row in ANSWERS says."""
    answer = answer_for(exc, operation)
    row = answer.row
    log_failure(row.level, row.log, answer.code, exc, exc.log_fields() if isinstance(exc, BrokerError) else {})
    if row.counted:
        count(operation, answer.code)
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after else None
    return html(answer.status, _PAGES[row.page](exc, app.current_event.reference), headers=headers)


def resolver(*, operation: str) -> Router:
    """A router whose failures are pages: each error gets its status and a page without internals (ANSWERS)."""
    app = Router()

    @app.exception_handler(Exception)
    def _failed(exc: Exception) -> Response:
        return failure_page(app, exc, operation=operation)

    return app
