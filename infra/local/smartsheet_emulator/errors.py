"""Smartsheet's errors as the emulator answers them (errorCode → HTTP status and OAuth `error`, SMARTSHEET.md's table),
and the exceptions its endpoints raise to give one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    oauth_error: str | None
    message: str


# HTTP status and OAuth `error` per errorCode, as SMARTSHEET.md's table gives them.
ERRORS: dict[int, ErrorSpec] = {
    1001: ErrorSpec(401, None, "An Access Token is required."),
    1002: ErrorSpec(401, None, "Your Access Token is invalid."),
    1003: ErrorSpec(401, None, "Your Access Token has expired."),
    1006: ErrorSpec(404, None, "Not Found."),
    1008: ErrorSpec(400, None, "Unable to parse request."),
    1067: ErrorSpec(401, "invalid_client", "Invalid client_id."),
    1068: ErrorSpec(400, "unsupported_grant_type", "Invalid grant type."),
    1069: ErrorSpec(400, "invalid_grant", "The authorization code has expired."),
    1070: ErrorSpec(400, "invalid_request", "Required parameter is missing."),
    1071: ErrorSpec(400, "invalid_grant", "The authorization code or refresh token provided was invalid."),
    1072: ErrorSpec(400, "invalid_grant", "Invalid hash value."),
    1073: ErrorSpec(400, "invalid_request", "The redirect_uri did not match the expected value."),
    1132: ErrorSpec(400, "invalid_grant", "The token provided has previously been revoked."),
    1236: ErrorSpec(400, "invalid_client", "Client authentication is required: send hash or client_secret."),
    1237: ErrorSpec(400, "invalid_client", "Send either hash or client_secret, not both."),
    1238: ErrorSpec(400, "invalid_client", "Invalid client_secret."),
    4001: ErrorSpec(503, None, "Smartsheet is currently offline for system maintenance."),
    4002: ErrorSpec(503, None, "Server timeout exceeded. Request has failed."),
    4003: ErrorSpec(429, None, "Rate limit exceeded."),
    4004: ErrorSpec(500, None, "An unexpected error has occurred. Please retry your request."),
}
SERVER_ERROR_CODES = frozenset({4001, 4002, 4004})


class ApiError(Exception):
    """An API request answered with Smartsheet's error body for `code`."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


class AuthorizeError(ValueError):
    """An authorize request Smartsheet answers with an error page, never with a redirect to the app."""

    def __init__(self, message: str, error_code: int | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.status = status


class AuthorizeRedirect(Exception):
    """An authorize request answered by redirecting to the app with `error=...`."""

    def __init__(self, location: str, error: str) -> None:
        super().__init__(error)
        self.location = location
        self.error = error
