"""Where a connect session's sign-in ends: always at the integrator's return_to, saying what happened.

The integrator's app made the session for one of its users, and only it can start another, so its user never lands on
a broker page that leads to a plain /login (that would connect them unbound, or be refused when anonymous sign-in is
off). Whatever happens after the state is spent, the browser goes back to return_to with:

- `outcome=connected&completion_code=...`: the user allowed; the integrator's backend redeems the code
  (POST /connect-sessions/complete) for the user signed in to its app, which binds the connection;
- `outcome=declined&error=access_denied`: the user declined at Smartsheet;
- `outcome=failed&error=<code>` (and `error_detail` for a binding conflict): anything else, nothing was bound.

The codes are a stable vocabulary for the integrator's code (FAILURE_CODES), never an internal message.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from smartsheet_oauth.domain.errors import (
    AccessDenied,
    BadRequest,
    BindingConflict,
    BrokerError,
    CodeRefused,
    RegionConflict,
    SignInRejected,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)

OUTCOME, ERROR, ERROR_DETAIL = "outcome", "error", "error_detail"
CONNECTED, DECLINED, FAILED = "connected", "declined", "failed"

# error= on return_to, and when it is sent (docs/management-api.md lists them for the integrator).
FAILURE_CODES = {
    "access_denied": "the user declined access at Smartsheet (outcome=declined)",
    "authorization_failed": "Smartsheet refused the authorization request (e.g. the app's scopes or redirect URL)",
    "code_refused": "Smartsheet refused the sign-in's authorization code (it took too long, or was used)",
    "browser_mismatch": "the sign-in was finished in another browser than the one that started it",
    "binding_conflict": "the account or the end user is already connected otherwise (error_detail says which)",
    "region_conflict": "the same Smartsheet user id is already connected from another region (error_detail names it)",
    "wrong_account": "a reconnect link was signed in with another Smartsheet account than the connection's (the"
    " broker's page said so; its button leads here)",
    "temporarily_unavailable": "Smartsheet or AWS storage did not answer; the user can try again in a few minutes",
    "smartsheet_error": "Smartsheet refused the sign-in (e.g. the app's credentials are wrong)",
    "invalid_request": "the callback came without what Smartsheet sends (no code)",
    "server_error": "the broker failed; its logs hold the reference",
}


def with_params(url: str, params: dict[str, str]) -> str:
    """url with params added to its query (its own parameters and fragment kept)."""
    parts = urlsplit(url)
    extra = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def failure_params(exc: BaseException) -> dict[str, str]:
    """outcome, error (and error_detail) for a connect session's sign-in that ended in exc."""
    if isinstance(exc, AccessDenied):
        if exc.error == "access_denied":
            return {OUTCOME: DECLINED, ERROR: "access_denied"}
        return {OUTCOME: FAILED, ERROR: "authorization_failed"}
    if isinstance(exc, BindingConflict):
        return {OUTCOME: FAILED, ERROR: "binding_conflict", ERROR_DETAIL: exc.reason}
    if isinstance(exc, RegionConflict):
        return {OUTCOME: FAILED, ERROR: "region_conflict", ERROR_DETAIL: exc.existing_region}
    if isinstance(exc, SignInRejected):
        return {OUTCOME: FAILED, ERROR: "browser_mismatch"}
    error = "server_error"
    if isinstance(exc, CodeRefused):
        error = "code_refused"
    elif isinstance(exc, TransientSmartsheetError | StorageError):
        error = "temporarily_unavailable"
    elif isinstance(exc, SmartsheetError):
        error = "smartsheet_error"
    elif isinstance(exc, BadRequest):
        error = "invalid_request"
    return {OUTCOME: FAILED, ERROR: error}


class ConnectSignInFailed(BrokerError):
    """A connect session's sign-in that failed after its state was spent. `cause` is the failure as a plain sign-in
    would have answered it with a page (it is logged, counted and announced the same way); the browser goes to
    `location` instead: return_to with the outcome and error code."""

    def __init__(self, cause: Exception, *, return_to: str) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.location = with_params(return_to, failure_params(cause))
