"""The broker's errors, and the one table of how each is answered: by the public pages (/login, /callback) and by
the management API, with its status, code, log level and Retry-After (ANSWERS; edge/web.py and edge/management_api.py
render it, edge/failures.py logs and counts it)."""

from __future__ import annotations

from typing import Any, NamedTuple


class ConfigError(RuntimeError):
    """A missing or malformed environment variable: fails the cold start and names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable} {problem}")
        self.variable = variable
        self.problem = problem


class BrokerError(Exception):
    """Base of the errors a request or a refresh can end in."""

    def log_fields(self) -> dict[str, Any]:
        """What a log line about this error may say: never a token, a code or a state."""
        return {}


class NoSuchRoute(BrokerError):
    """No route has this method and path (a wrong method is not found too, as API Gateway's own routes are)."""


class BadRequest(BrokerError):
    """The browser sent something malformed (oversized or invalid query)."""

    def log_fields(self) -> dict[str, Any]:
        return {"detail": str(self)}


class RegionNotAllowed(BadRequest):
    """A sign-in or connect session asked for a Smartsheet region this stack does not offer (unknown, or not in
    AllowedRegions). The message names the regions it offers; nothing was started."""

    def __init__(self, region: str, allowed: tuple[str, ...]) -> None:
        shown = region if region.isascii() and region.isprintable() and len(region) <= 16 else "(malformed)"
        super().__init__(f"region {shown!r} is not offered here; choose one of: {', '.join(allowed)}")
        self.region = shown
        self.allowed = allowed

    def log_fields(self) -> dict[str, Any]:
        return {"region": self.region}


class RegionConflict(BrokerError):
    """The Smartsheet user id that signed in is already a connection of another Smartsheet region: connection ids are
    Smartsheet user ids, and each region numbers its users on its own. Refused before anything is stored; the
    existing connection, its tokens and its binding stay as they were."""

    def __init__(self, *, connection_id: str, region: str, existing_region: str) -> None:
        super().__init__("connected_in_another_region")
        self.connection_id = connection_id
        self.region = region
        self.existing_region = existing_region

    def log_fields(self) -> dict[str, Any]:
        return {"connection_id": self.connection_id, "region": self.region, "existing_region": self.existing_region}


class SignInRejected(BrokerError):
    """The sign-in cannot go on: unknown, used or expired state, or a nonce cookie that does not match."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason}


class AccessDenied(BrokerError):
    """The user declined (error=access_denied) or Smartsheet refused the authorization request."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error

    def log_fields(self) -> dict[str, Any]:
        return {"error": self.error}


class UserDeclined(AccessDenied):
    """The user declined the authorization request (error=access_denied)."""

    def log_fields(self) -> dict[str, Any]:
        return {}


class CodeRefused(BrokerError):
    """Smartsheet refused the authorization code a callback brought (expired, used, revoked or never issued: 1069,
    1071, 1132). The caller's problem, not the broker's: anyone can bring a state of their own and `code=abc`.
    Carries where the user starts again (None when only the integrator's app can start a new sign-in)."""

    def __init__(self, reason: str, *, start_again: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.start_again = start_again

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason}


class StorageError(BrokerError):
    """DynamoDB or Secrets Manager failed (throttled, unavailable): infrastructure, not the user's fault."""

    def __init__(self, operation: str, code: str, *, transient: bool) -> None:
        super().__init__(f"{operation} failed: {code}")
        self.operation = operation
        self.code = code
        self.transient = transient

    def log_fields(self) -> dict[str, Any]:
        # `error_code`, never `code`: in these logs that word means an OAuth authorization code.
        return {"operation": self.operation, "error_code": self.code}


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

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason, "smartsheet_ref_id": self.ref_id}


class InvalidGrant(SmartsheetError):
    """The code or refresh token is invalid, expired, already used or revoked (1069, 1071, 1132)."""


class InvalidClient(SmartsheetError):
    """The app's client id or secret is wrong (1067, 1072 hash mismatch, 1236-1238): an operator must fix it."""

    def log_fields(self) -> dict[str, Any]:
        return {**super().log_fields(), "hint": "check the app credentials secret"}


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

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason}


class ConnectFormRejected(BrokerError):
    """A POST of the connect page without the page's own anti-forgery binding (cookie and form token): a cross-site
    form, a replayed request, or a browser that keeps no cookies. The connect session is left unused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason}


class AnonymousLoginDisabled(BrokerError):
    """/login without a connect session while the deployment only admits sign-ins started by the integrator."""


class BindingConflict(BrokerError):
    """The Smartsheet account that signed in cannot be bound to the session's end user: the end user already has
    another connected account, or the account belongs to another end user. Reported, never merged. `region` is the
    refused sign-in's Smartsheet region (None: not known, the stack's default is named)."""

    def __init__(
        self,
        reason: str,
        *,
        end_user_id: str,
        smartsheet_user_id: str,
        existing_connection_id: str,
        region: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.end_user_id = end_user_id
        self.smartsheet_user_id = smartsheet_user_id
        self.existing_connection_id = existing_connection_id
        self.region = region

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason, "end_user_id": self.end_user_id}


class ReconnectWrongAccount(BindingConflict):
    """A reconnect link (a connect session for one connection) finished by another Smartsheet account: nothing is
    held or changed, the new grant is revoked. `back` is the integrator's return_to with outcome=failed added, for the
    page's button."""

    def __init__(
        self, *, end_user_id: str, smartsheet_user_id: str, connection_id: str, back: str, region: str
    ) -> None:
        super().__init__(
            "reconnected_with_another_smartsheet_account",
            end_user_id=end_user_id,
            smartsheet_user_id=smartsheet_user_id,
            existing_connection_id=connection_id,
            region=region,
        )
        self.back = back


class CompletionRefused(BrokerError):
    """A completion code the integrator redeemed that binds nothing: unknown (404), already used, expired, issued for
    another end user, or a binding that would merge two identities (409). `code` is the API's error code."""

    def __init__(self, code: str, message: str, *, status: int = 409, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


class LineRefused(BadRequest):
    """An import line (or the import route's body) that cannot be imported as it is: `code` names the problem for the
    CLI's summary (the API answers 400 invalid_request with the message). Never carries a token."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class GrantRefused(BrokerError):
    """A grant that will not be imported: Smartsheet refused its refresh token, an earlier import's refresh of it was
    lost in flight, or binding it would merge two identities. `code` is the API's error code; final (a re-run refuses
    it again without calling Smartsheet)."""

    def __init__(self, code: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.code}


class NotFound(BrokerError):
    """The management API was asked about a connection that does not exist."""


class Conflict(BrokerError):
    """The connection is not in a state that allows the request (revoked, needs_reauth, leased by a worker)."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class RefreshFailed(Conflict):
    """Smartsheet did not refresh the token this time (busy, rate limited, unreachable), or its new pair is kept
    but not yet stored: answered 503."""


class RefreshLost(BrokerError):
    """Smartsheet rotated the tokens but the new pair could be neither stored nor kept: answered 500."""


class RefreshCooldown(BrokerError):
    """The connection was refreshed less than the on-demand cooldown ago and its pair does not meet the caller's
    min_valid_seconds: answered 429 with the seconds until the cooldown ends."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PaceExhausted(BrokerError):
    """Every slot of the shared pace is taken until `retry_after` seconds from now: answered 429."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the pace of refreshes sent to Smartsheet is used up for {retry_after} s")
        self.retry_after = retry_after


# -- how each error is answered ----------------------------------------------------------------------------------
# The surfaces: the public pages of /login and /callback (HTML, counted as <surface>_<code>), and the management API
# (JSON {error: code, message, reference}, counted as management_<code>).
LOGIN, CALLBACK, API = "login", "callback", "api"
PAGES = (LOGIN, CALLBACK)
# Log levels; UNEXPECTED logs the type and frames only (observability.log_unexpected); None: not logged here (the
# flow that raised it logged what matters, or it is the caller's everyday answer).
INFO, WARNING, ERROR, UNEXPECTED = "info", "warning", "error", "unexpected"


class Answer(NamedTuple):
    """One row: how `surfaces` answer `error` (and its subclasses without a row of their own)."""

    error: type[Exception]
    surfaces: tuple[str, ...]
    status: int
    code: str  # "": the error's own (it carries one)
    level: str | None
    log: str = ""
    retry_after: int | None = None  # seconds, as the Retry-After header (and the API's retry_after field)
    own: bool = False  # the error's own code, status and retry_after, where it carries them, win over the row's
    page: str = ""  # the public page (edge/pages.py) the pages surfaces show
    message: str = ""  # the API's message ({reason}: the error's); "": the error's own text
    counted: bool = True  # one metric count per answer
    # The callback's answer ends this browser's sign-in for good (no Retry-After: trying the same sign-in again cannot
    # change it): its result cookie keeps it, so a reload of the spent URL or /result shows this page again.
    final: bool = False


_NO_ROUTE = "There is no such route; see the README's management API section."
_PACED = (
    "The broker's pace of refreshes sent to Smartsheet (shared with the scheduled sweep) is used up for now; nothing"
    " was changed. Ask again after Retry-After."
)
_BUSY = "Smartsheet did not answer ({reason}); nothing was changed. Ask again later."
_UNSTORED = "AWS storage is unavailable; ask again."
_UNEXPECTED = "The request failed; quote the reference to support."
_REFUSED = "Smartsheet refused the request"

# fmt: off
ANSWERS: tuple[Answer, ...] = (
    # error                   surfaces     status code                  level       log line
    Answer(NoSuchRoute,           PAGES,       404, "not_found",          None, page="not_found", counted=False),
    Answer(RegionNotAllowed,      (LOGIN,),    400, "region_not_allowed", INFO,    "region not offered",
           page="region_not_allowed"),
    Answer(BadRequest,            PAGES,       400, "bad_request",        INFO,    "bad request", page="bad_request",
           final=True),
    Answer(SignInRejected,        (CALLBACK,), 400, "bad_state",          INFO,    "sign-in rejected",
           page="expired_or_used"),
    Answer(UserDeclined,          (CALLBACK,), 400, "denied",             INFO,    "user declined access",
           page="declined", final=True),
    Answer(AccessDenied,          (CALLBACK,), 400, "authorize_error",    WARNING, "authorization failed at Smartsheet",
           page="authorization_failed", final=True),
    Answer(CodeRefused,           (CALLBACK,), 400, "invalid_code",       INFO,    "authorization code refused",
           page="code_refused", final=True),
    Answer(BindingConflict,       (CALLBACK,), 409, "binding_conflict",   WARNING, "connection binding refused",
           page="binding_conflict", final=True),
    Answer(RegionConflict,        (CALLBACK,), 409, "region_conflict",    WARNING,
           "sign-in refused: the user id is connected in another region", page="region_conflict",
           final=True),
    Answer(TransientSmartsheetError, (CALLBACK,), 503, "smartsheet_unavailable", WARNING, "Smartsheet unavailable",
           retry_after=60, page="unavailable"),
    Answer(InvalidClient,         (CALLBACK,), 502, "smartsheet_error",   ERROR,   _REFUSED, page="smartsheet_error",
           final=True),
    Answer(SmartsheetError,       (CALLBACK,), 502, "smartsheet_error",   WARNING, _REFUSED, page="smartsheet_error",
           final=True),
    Answer(ConnectLinkRejected,   (LOGIN,),    400, "bad_session",        INFO,    "connect link rejected",
           page="connect_link"),
    Answer(ConnectFormRejected,   (LOGIN,),    403, "bad_connect_form",   INFO,    "connect form rejected",
           page="connect_form"),
    Answer(AnonymousLoginDisabled, (LOGIN,),   403, "anonymous_refused",  INFO,
           "sign-in without a connect session refused", page="anonymous_login"),
    Answer(StorageError,          PAGES,       503, "storage_error",      ERROR,   "AWS storage failed", retry_after=30,
           page="unavailable"),
    Answer(Exception,             PAGES,       500, "internal_error",     UNEXPECTED, page="internal_error"),
    # -- the management API
    Answer(NoSuchRoute,           (API,),      404, "no_such_route",      None, message=_NO_ROUTE),
    Answer(RegionNotAllowed,      (API,),      400, "region_not_allowed", INFO,    "region not offered"),
    Answer(BadRequest,            (API,),      400, "invalid_request",    INFO,    "bad request"),
    Answer(NotFound,              (API,),      404, "not_found",          None),
    Answer(RefreshFailed,         (API,),      503, "",                   None, retry_after=60, own=True),
    Answer(RefreshLost,           (API,),      500, "refresh_lost",       ERROR,   "on-demand refresh lost the grant"),
    Answer(RefreshCooldown,       (API,),      429, "refresh_cooldown",   None, own=True),
    Answer(PaceExhausted,         (API,),      429, "refresh_rate_limited", WARNING,
           "on-demand refresh held back by the pace", own=True, message=_PACED),
    Answer(Conflict,              (API,),      409, "",                   None, own=True),
    Answer(CompletionRefused,     (API,),      409, "",                   WARNING, "completion code refused", own=True),
    Answer(GrantRefused,          (API,),      422, "",                   WARNING, "grant import refused", own=True),
    Answer(TransientSmartsheetError, (API,),   503, "smartsheet_unavailable", WARNING, "Smartsheet unavailable",
           retry_after=30, message=_BUSY),
    Answer(SmartsheetError,       (API,),      502, "smartsheet_refused", WARNING, "Smartsheet refused"),
    Answer(StorageError,          (API,),      503, "storage_unavailable", ERROR,  "AWS storage failed", retry_after=5,
           message=_UNSTORED),
    Answer(Exception,             (API,),      500, "internal_error",     UNEXPECTED, message=_UNEXPECTED),
)
# fmt: on

_BY_SURFACE: dict[tuple[type[BaseException], str], Answer] = {
    (row.error, surface): row for row in ANSWERS for surface in row.surfaces
}


def final_answer(code: str) -> Answer | None:
    """The callback's final row answering with `code` (a sign-in's result cookie names its answer by its code; the rows
    sharing a code share their status and page), or None: no final answer has that code."""
    for row in ANSWERS:
        if row.final and row.code == code and CALLBACK in row.surfaces:
            return row
    return None


class Rendered(NamedTuple):
    """An error's answer on one surface: its row, and the status, code and Retry-After it gets."""

    row: Answer
    status: int
    code: str
    retry_after: int | None


def answer_for(exc: BaseException, surface: str) -> Rendered:
    """The row of the nearest class in exc's MRO that `surface` answers (Exception's row catches the rest)."""
    for cls in type(exc).__mro__:
        row = _BY_SURFACE.get((cls, surface))
        if row is not None:
            break
    else:  # a BaseException that is no Exception: never routed here
        raise exc
    if not row.own:
        return Rendered(row, row.status, row.code, row.retry_after)
    return Rendered(
        row,
        getattr(exc, "status", None) or row.status,
        getattr(exc, "code", None) or row.code,
        getattr(exc, "retry_after", None) or row.retry_after,
    )
