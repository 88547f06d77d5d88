"""GET /login: start a sign-in and send the browser to Smartsheet's authorize page."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import pages, services, snapstart
from smartsheet_oauth.config import get_config
from smartsheet_oauth.errors import AnonymousLoginDisabled, ConnectLinkRejected
from smartsheet_oauth.observability import logger, metrics
from smartsheet_oauth.router import Cookie, Response
from smartsheet_oauth.sign_in import NONCE_COOKIE, begin_sign_in
from smartsheet_oauth.web import count, html, query_params, redirect, resolver

get_config()  # a bad configuration fails the cold start, naming the variable
snapstart.register()  # SnapStart hooks; nothing is registered off Lambda
app = resolver(operation="login")


@app.get("/login")
def login() -> Response:
    params = query_params(app)
    config = get_config()
    now = int(time.time())
    # A connect session (POST /connect-sessions) binds the sign-in to the integrator's end user; its return_to
    # is the one the integrator chose, so a return_to added to the link is ignored.
    session = services.connect_sessions().consume(params["session"], now=now) if "session" in params else None
    if session is None and not config.anonymous_login:
        raise AnonymousLoginDisabled
    started = begin_sign_in(
        config=config,
        client_id=config.client_id,
        states=services.state_store(),
        now=now,
        return_to=session.return_to if session else params.get("return_to"),
        end_user_id=session.end_user_id if session else None,
    )
    cookie = Cookie(
        name=NONCE_COOKIE,
        value=started.nonce,
        path="/",
        secure=True,
        http_only=True,
        same_site="Lax",
        max_age=started.max_age,
    )
    logger.info("sign-in started", extra={"outcome": "redirected", "connect_session": session is not None})
    count("login", "started")
    return redirect(302, started.location, cookies=[cookie])


@app.exception_handler(ConnectLinkRejected)
def _connect_link_rejected(exc: ConnectLinkRejected) -> Response:
    logger.info("connect link rejected", extra={"outcome": "bad_session", "reason": exc.reason})
    count("login", "bad_session")
    return html(400, pages.connect_link_expired())


@app.exception_handler(AnonymousLoginDisabled)
def _anonymous_login_disabled(_: AnonymousLoginDisabled) -> Response:
    logger.info("sign-in without a connect session refused", extra={"outcome": "anonymous_refused"})
    count("login", "anonymous_refused")
    return html(403, pages.anonymous_login_disabled())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
