"""The broker's domain errors: what the handlers map to pages and the sweep maps to outcomes."""

from __future__ import annotations

from typing import Any


class ConfigError(RuntimeError):
    """A missing or malformed environment variable: fails the cold start and names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable} {problem}")
        self.variable = variable
        self.problem = problem


class BrokerError(Exception):
    """Base of the errors a request or a refresh can end in."""


class BadRequest(BrokerError):
    """The browser sent something malformed (oversized or invalid query)."""


class SignInRejected(BrokerError):
    """The sign-in cannot go on: unknown, used or expired state, or a nonce cookie that does not match."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AccessDenied(BrokerError):
    """The user declined (error=access_denied) or Smartsheet refused the authorization request."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class CodeRefused(BrokerError):
    """Smartsheet refused the authorization code a callback brought (expired, used, revoked or never issued: 1069,
    1071, 1132). The caller's problem, not the broker's: anyone can bring a state of their own and `code=abc`.
    Carries where the user starts again (None when only the integrator's app can start a new sign-in)."""

    def __init__(self, reason: str, *, start_again: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.start_again = start_again


class StorageError(BrokerError):
    """DynamoDB or Secrets Manager failed (throttled, unavailable): infrastructure, not the user's fault."""

    def __init__(self, operation: str, code: str, *, transient: bool) -> None:
        super().__init__(f"{operation} failed: {code}")
        self.operation = operation
        self.code = code
        self.transient = transient


class ConditionFailed(StorageError):
    """A conditional write lost: the item was not in the state the caller expected (used state, held lease).
    `item` is the item as it was, when the write asked for it (ReturnValuesOnConditionCheckFailure=ALL_OLD)."""

    def __init__(self, operation: str, code: str, *, transient: bool, item: dict[str, Any] | None = None) -> None:
        super().__init__(operation, code, transient=transient)
        self.item = item


class SmartsheetError(BrokerError):
    """Smartsheet answered with an error, or not at all."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        oauth_error: str | None = None,
        ref_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.oauth_error = oauth_error
        self.ref_id = ref_id

    @property
    def reason(self) -> str:
        """A short, secret-free label for logs, metrics and the connection record."""
        if self.error_code is not None:
            return f"{self.oauth_error or 'error'}:{self.error_code}"
        if self.status is not None:
            return f"http:{self.status}"
        return type(self).__name__


class InvalidGrant(SmartsheetError):
    """The code or refresh token is invalid, expired, already used or revoked (1069, 1071, 1132)."""


class InvalidClient(SmartsheetError):
    """The app's client id or secret is wrong (1067, 1072 hash mismatch, 1236-1238): an operator must fix it."""


class SmartsheetRejected(SmartsheetError):
    """Any other 4xx answer (bad request, redirect_uri mismatch, unsupported grant type)."""


class TransientSmartsheetError(SmartsheetError):
    """Rate limited (429/4003), a server error (5xx, 4001/4002/4004), a timeout or a dropped connection.

    `outcome_unknown`: Smartsheet may have carried the request out (its answer never came, or was a server error
    that does not say). For a refresh that means the pair may have been rotated: the attempt stays "in flight"."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        error_code: int | None = None,
        oauth_error: str | None = None,
        ref_id: str | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message, status=status, error_code=error_code, oauth_error=oauth_error, ref_id=ref_id)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown

    @property
    def reason(self) -> str:
        if self.outcome_unknown and (self.status is None or self.status < 500):
            # No answer came (or only a refusal of what an attempt whose answer was lost had already done).
            return "no_answer"
        if self.status is None and self.error_code is None:
            return "unreachable"
        return super().reason


class NoTimeToRefresh(BrokerError):
    """A token request was not sent: its answer and the save of the new pair would not fit before the refresh's
    deadline (refresh_window.py). Nothing reached Smartsheet."""


class MalformedResponse(SmartsheetError):
    """Smartsheet answered 2xx with a body that is not what the API documents."""


# -- connections as a product: connect sessions, end-user binding, the management API --------------------------


class ConnectLinkRejected(BrokerError):
    """A connect-session link that is unknown, already used or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectFormRejected(BrokerError):
    """A POST of the connect page without the page's own anti-forgery binding (cookie and form token): a cross-site
    form, a replayed request, or a browser that keeps no cookies. The connect session is left unused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AnonymousLoginDisabled(BrokerError):
    """/login without a connect session while the deployment only admits sign-ins started by the integrator."""


class BindingConflict(BrokerError):
    """The Smartsheet account that signed in cannot be bound to the session's end user: the end user already has
    another connected account, or the account belongs to another end user. Reported, never merged."""

    def __init__(self, reason: str, *, end_user_id: str, smartsheet_user_id: str, existing_connection_id: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.end_user_id = end_user_id
        self.smartsheet_user_id = smartsheet_user_id
        self.existing_connection_id = existing_connection_id


class CompletionRefused(BrokerError):
    """A completion code the integrator redeemed that binds nothing: unknown (404), already used, expired, issued for
    another end user, or a binding that would merge two identities (409). `code` is the API's error code."""

    def __init__(self, code: str, message: str, *, status: int = 409, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


class NotFound(BrokerError):
    """The management API was asked about a connection that does not exist."""


class Conflict(BrokerError):
    """The connection is not in a state that allows the request (revoked, needs_reauth, leased by a worker)."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
