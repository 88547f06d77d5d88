"""GET /callback: Smartsheet sends the browser back here with a code (or an error) and our state. A sign-in that ends
here answers 303 See Other to GET /result, the page that says how it ended and that a reload cannot break. One that
ends in a final failure (declined, a refused code, a binding conflict: domain/errors.ANSWERS' final rows) is answered
here with its own status and page, and its result cookie keeps that: a reload shows the same page again."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.errors import (
    CALLBACK,
    BindingConflict,
    CodeRefused,
    ConfigError,
    SignInRejected,
    StorageError,
    answer_for,
)
from smartsheet_oauth.domain.lifecycle import detail_type, status_after
from smartsheet_oauth.edge import pages, result
from smartsheet_oauth.edge.router import Cookie, Response
from smartsheet_oauth.edge.web import (
    count,
    failure_page,
    final_page,
    html,
    page_facts,
    query_params,
    redirect,
    resolver,
)
from smartsheet_oauth.flows.connect_return import ConnectSignInFailed
from smartsheet_oauth.flows.sign_in import NONCE_COOKIE, SignedIn, finish_sign_in
from smartsheet_oauth.platform import snapstart
from smartsheet_oauth.platform.observability import logger, metrics
from smartsheet_oauth.stores import events

if TYPE_CHECKING:
    from smartsheet_oauth.stores.states import StateRecord

get_config()  # a bad configuration fails the cold start, naming the variable
snapstart.register()  # SnapStart hooks; nothing is registered off Lambda
app = resolver(operation="callback")

# The nonce is single-use like the state: expire it in the browser whatever the outcome.
_CLEAR_NONCE = Cookie(name=NONCE_COOKIE, value="", path="/", secure=True, http_only=True, same_site="Lax", max_age=0)


@app.get("/callback")
def callback() -> Response:
    params = query_params(app)
    config = get_config()
    checked: list[StateRecord] = []
    try:
        signed_in = finish_sign_in(
            params,
            app.current_event.cookies.get(NONCE_COOKIE),
            config=config,
            states=services.state_store(),
            smartsheet=services.smartsheet_client(),
            vault=services.token_vault(),
            connections=services.connection_store(),
            now=int(time.time()),
            completions=services.completion_store,
            browser_checked=checked.append,
        )
    except Exception as exc:
        if not checked or checked[0].end_user_id is not None:
            raise  # not (yet) this browser's sign-in, or a connect session's: answered as ever (exception handlers)
        return _ended(exc, params["state"])
    if not isinstance(signed_in, SignedIn):
        # A connect-session sign-in: nothing is bound or announced until the integrator redeems the code that
        # return_to receives (the redirect is the only place the code appears; Referrer-Policy keeps it there).
        logger.info("sign-in held for confirmation", extra={"outcome": "awaiting_confirmation"})
        count("callback", "awaiting_confirmation")
        return redirect(303, signed_in.location, cookies=[_CLEAR_NONCE])
    logger.append_keys(connection_id=signed_in.connection_id)
    logger.info("connection stored", extra={"outcome": "success", "new_connection": signed_in.is_new})
    count("callback", "success")
    transition = "created" if signed_in.is_new else "reconnected"
    services.event_publisher().publish(
        events.ConnectionEvent(
            detail_type=detail_type(transition),
            connection_id=signed_in.connection_id,
            status=status_after(transition),
            region=signed_in.region,
            email=signed_in.email,
        )
    )
    if signed_in.return_to:
        return redirect(303, signed_in.return_to, cookies=[_CLEAR_NONCE])
    # The page itself is GET /result: this URL's state is spent, so a reload here could only say "used"; the result's
    # cookie (signed, this sign-in's) is what a reload of /result, or the back button to this URL, reads again.
    now = int(time.time())
    outcome = result.SignInResult(
        result.CONNECTED, signed_in.email, now + result.RESULT_SECONDS, result.state_hash(params["state"])
    )
    secret = services.app_credentials(config).client_secret
    return redirect(
        303, result.RESULT_PATH, cookies=[_CLEAR_NONCE, result.result_cookie(outcome, client_secret=secret, now=now)]
    )


def _ended(exc: Exception, state: str) -> Response:
    """This browser's own sign-in (no connect session) ended in exc: its answer as its exception handler gives it
    (logged, counted, announced), and when that answer is final, the sign-in's result cookie with its code, reference
    and what its page is drawn from (no account: the cookie names none for a failure)."""
    page = app.answer_for(exc)
    answer = answer_for(exc, CALLBACK)
    if not answer.row.final:
        return page  # try again later (Retry-After), or unexpected: a reload says the link is used, which is true
    now = int(time.time())
    kept = result.SignInResult(
        answer.code,
        "",
        now + result.RESULT_SECONDS,
        result.state_hash(state),
        reference=app.current_event.reference,
        facts=page_facts(exc, answer.row.page),
    )
    try:
        secret = services.app_credentials().client_secret
    except (StorageError, ConfigError) as key_error:  # the answer stands; only a reload will say "used"
        logger.warning("result not kept", extra={"outcome": "result_unkept", "error": type(key_error).__name__})
        return page
    page.cookies = [*(page.cookies or ()), result.result_cookie(kept, client_secret=secret, now=now)]
    return page


@app.get(result.RESULT_PATH)
def result_page() -> Response:
    """How this browser's last sign-in ended, from its signed cookie alone: no value in the address can change what
    it says. Without a valid cookie (expired, another browser, never signed in here) it says it has nothing to show."""
    try:
        shown = _this_browsers_result()
    except (StorageError, ConfigError) as exc:  # the key is out of reach: say what is known, which is nothing
        logger.warning("result cookie not checked", extra={"outcome": "result_unchecked", "error": type(exc).__name__})
        shown = None
    if shown is not None and shown.outcome == result.CONNECTED:
        logger.info("result page shown", extra={"outcome": "result_connected"})
        return html(200, pages.signed_in(shown.email))
    failed = None if shown is None else final_page(shown.outcome, shown.facts, shown.reference)
    if shown is not None and failed is not None:
        # 200: this page was found and shown. The refusal was the callback's answer, with its status, logged and
        # counted once there; the page that tells of it again is no new failure (nor one for 4xx/5xx monitoring).
        logger.info("result page shown", extra={"outcome": "result_failed", "answer": shown.outcome})
        return html(200, failed.body)
    logger.info("result page shown", extra={"outcome": "result_none"})
    return html(200, pages.no_result(start_again="/login" if get_config().anonymous_login else None))


def _this_browsers_result() -> result.SignInResult | None:
    value = app.current_event.cookies.get(result.RESULT_COOKIE)
    if not value:
        return None  # nothing to check: no read of the client secret
    secret = services.app_credentials().client_secret
    return result.open_result(value, client_secret=secret, now=int(time.time()))


@app.exception_handler(SignInRejected)
def _rejected(exc: SignInRejected) -> Response:
    # Each case worded for what it is: a reload of the "connected" page, a bare /callback, another browser, too slow.
    if exc.reason == "unknown_or_used_state":
        # The back button (or a reload of this URL) after this browser finished this very sign-in: its result page.
        shown = _this_browsers_result()  # the key was read already: the callback's Smartsheet client needs it
        state = app.current_event.query_string_parameters.get("state", "")
        if shown is not None and hmac.compare_digest(shown.state_hash, result.state_hash(state)):
            if shown.outcome == result.CONNECTED:
                logger.info("finished sign-in revisited", extra={"outcome": "result_again"})
                return redirect(303, result.RESULT_PATH)
            # A final failure of this sign-in: its own page and status again, not "used" (nor a redirect: the
            # status is the failure's); not counted again, nor announced.
            failed = final_page(shown.outcome, shown.facts, shown.reference)
            if failed is not None:
                logger.info("finished sign-in revisited", extra={"outcome": "result_again", "answer": shown.outcome})
                return failed
    logger.info("sign-in rejected", extra={"outcome": "bad_state", "reason": exc.reason})
    count("callback", "bad_state")
    start_again = "/login" if get_config().anonymous_login else None
    return html(400, pages.sign_in_rejected(exc.reason, start_again=start_again))


@app.exception_handler(BindingConflict)
def _binding_conflict(exc: BindingConflict) -> Response:
    # Reported, never merged: the user sees why, the integrator gets an event, nothing was bound.
    page = failure_page(app, exc, operation="callback")
    services.event_publisher().publish(
        events.ConnectionEvent(
            detail_type=detail_type("binding_refused"),
            connection_id=exc.existing_connection_id,
            status=status_after("binding_refused"),
            region=get_config().region_of(exc.region),
            end_user_id=exc.end_user_id,
            reason=exc.reason,
            extra={"attempted_smartsheet_user_id": exc.smartsheet_user_id},
        )
    )
    page.cookies = [_CLEAR_NONCE]
    return page


@app.exception_handler(ConnectSignInFailed)
def _connect_sign_in_failed(exc: ConnectSignInFailed) -> Response:
    # Logged, counted and announced as the failure's own page would be; the user goes back to the integrator's app
    # with the outcome and error code instead, never to a broker page that leads to an unbound /login.
    app.answer_for(exc.cause)
    logger.info("connect sign-in returned to the app", extra={"outcome": "connect_failed_returned"})
    return redirect(303, exc.location, cookies=[_CLEAR_NONCE])


@app.exception_handler(CodeRefused)
def _code_refused(exc: CodeRefused) -> Response:
    # The caller's problem, counted on its own and kept out of the callback-errors alarm: anyone can bring a state
    # of their own and `code=abc`, so counting it as a broker error would let anyone page the operator.
    page = failure_page(app, exc, operation="callback")
    page.cookies = [_CLEAR_NONCE]
    return page


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
