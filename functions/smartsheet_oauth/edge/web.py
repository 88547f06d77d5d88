"""HTTP plumbing shared by the public handlers: the resolver, query checks, and domain errors mapped to pages."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl

from smartsheet_oauth.domain.errors import (
    AccessDenied,
    BadRequest,
    InvalidClient,
    SignInRejected,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.edge import pages
from smartsheet_oauth.edge.router import Cookie, NotFoundError, Response, Router
from smartsheet_oauth.platform.observability import log_unexpected, logger, metrics

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
        headers={**pages.SECURITY_HEADERS, **(headers or {})},
        cookies=cookies,
    )


def redirect(status: int, location: str, *, cookies: list[Cookie] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=HTML,
        body="",
        headers={**pages.SECURITY_HEADERS, "Location": location},
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


def resolver(*, operation: str) -> Router:
    """A router whose failures are pages: each domain error gets its status and a page without internals."""
    app = Router()

    def outcome(name: str) -> None:
        count(operation, name)

    @app.not_found
    def _not_found(_: NotFoundError) -> Response:
        return html(404, pages.not_found())

    @app.exception_handler(BadRequest)
    def _bad_request(exc: BadRequest) -> Response:
        logger.info("bad request", extra={"outcome": "bad_request", "detail": str(exc)})
        outcome("bad_request")
        return html(400, pages.bad_request(str(exc)))

    @app.exception_handler(SignInRejected)
    def _rejected(exc: SignInRejected) -> Response:
        logger.info("sign-in rejected", extra={"outcome": "bad_state", "reason": exc.reason})
        outcome("bad_state")
        return html(400, pages.expired_or_used())

    @app.exception_handler(AccessDenied)
    def _denied(exc: AccessDenied) -> Response:
        if exc.error == "access_denied":
            logger.info("user declined access", extra={"outcome": "denied"})
            outcome("denied")
            return html(400, pages.declined())
        logger.warning("authorization failed at Smartsheet", extra={"outcome": "authorize_error", "error": exc.error})
        outcome("authorize_error")
        return html(400, pages.authorization_failed())

    @app.exception_handler(TransientSmartsheetError)
    def _smartsheet_busy(exc: TransientSmartsheetError) -> Response:
        logger.warning("Smartsheet unavailable", extra={"outcome": "smartsheet_unavailable", "reason": exc.reason})
        outcome("smartsheet_unavailable")
        return html(503, pages.unavailable(app.current_event.reference), headers={"Retry-After": "60"})

    @app.exception_handler(SmartsheetError)
    def _smartsheet_refused(exc: SmartsheetError) -> Response:
        log = logger.error if isinstance(exc, InvalidClient) else logger.warning
        log(
            "Smartsheet refused the request",
            extra={
                "outcome": "smartsheet_error",
                "reason": exc.reason,
                "smartsheet_ref_id": exc.ref_id,
                "hint": "check the app credentials secret" if isinstance(exc, InvalidClient) else None,
            },
        )
        outcome("smartsheet_error")
        return html(502, pages.smartsheet_error(app.current_event.reference))

    @app.exception_handler(StorageError)
    def _storage(exc: StorageError) -> Response:
        logger.error(
            "AWS storage failed",
            extra={"outcome": "storage_error", "operation": exc.operation, "code": exc.code},
        )
        outcome("storage_error")
        return html(503, pages.unavailable(app.current_event.reference), headers={"Retry-After": "30"})

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log_unexpected(exc)
        outcome("internal_error")
        return html(500, pages.internal_error(app.current_event.reference))

    return app
