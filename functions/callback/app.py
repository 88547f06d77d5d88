"""GET /callback: Smartsheet sends the browser back here with a code (or an error) and our state."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.domain.errors import BindingConflict, CodeRefused, SignInRejected
from smartsheet_oauth.domain.lifecycle import detail_type, status_after
from smartsheet_oauth.edge import pages
from smartsheet_oauth.edge.router import Cookie, Response
from smartsheet_oauth.edge.web import count, failure_page, html, query_params, redirect, resolver
from smartsheet_oauth.flows.connect_return import ConnectSignInFailed
from smartsheet_oauth.flows.sign_in import NONCE_COOKIE, SignedIn, finish_sign_in
from smartsheet_oauth.platform import snapstart
from smartsheet_oauth.platform.observability import logger, metrics
from smartsheet_oauth.stores import events

get_config()  # a bad configuration fails the cold start, naming the variable
snapstart.register()  # SnapStart hooks; nothing is registered off Lambda
app = resolver(operation="callback")

# The nonce is single-use like the state: expire it in the browser whatever the outcome.
_CLEAR_NONCE = Cookie(name=NONCE_COOKIE, value="", path="/", secure=True, http_only=True, same_site="Lax", max_age=0)
# Set with the "connected" page: a reload (or the back button) in this browser shortly after finds the state used, and
# the page says connected again instead of "expired". It holds nothing but that this browser finished a sign-in.
DONE_COOKIE = "__Host-smartsheet-oauth-done"
DONE_SECONDS = 900
_DONE = Cookie(
    name=DONE_COOKIE, value="1", path="/", secure=True, http_only=True, same_site="Lax", max_age=DONE_SECONDS
)


@app.get("/callback")
def callback() -> Response:
    params = query_params(app)
    config = get_config()
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
    )
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
            region=config.region,
            email=signed_in.email,
        )
    )
    if signed_in.return_to:
        return redirect(303, signed_in.return_to, cookies=[_CLEAR_NONCE])
    return html(200, pages.signed_in(signed_in.email), cookies=[_CLEAR_NONCE, _DONE])


@app.exception_handler(SignInRejected)
def _rejected(exc: SignInRejected) -> Response:
    # Each case worded for what it is: a reload of the "connected" page, a bare /callback, another browser, too slow.
    logger.info("sign-in rejected", extra={"outcome": "bad_state", "reason": exc.reason})
    count("callback", "bad_state")
    if exc.reason == "unknown_or_used_state" and app.current_event.cookies.get(DONE_COOKIE) == "1":
        return html(200, pages.already_connected())
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
            region=get_config().region,
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
