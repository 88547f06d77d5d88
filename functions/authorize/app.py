"""GET /login: start a sign-in and send the browser to Smartsheet's authorize page; a connect link (?session=) first
shows the connect page, whose button (POST /login) starts the sign-in bound to the integrator's end user."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.config import Config, get_config
from smartsheet_oauth.domain.errors import AnonymousLoginDisabled, ConnectFormRejected
from smartsheet_oauth.edge import pages
from smartsheet_oauth.edge.router import Cookie, Response
from smartsheet_oauth.edge.web import count, form_params, html, query_params, redirect, resolver
from smartsheet_oauth.flows.sign_in import NONCE_COOKIE, begin_sign_in
from smartsheet_oauth.platform import snapstart
from smartsheet_oauth.platform.observability import logger, metrics

# The connect page's browser key: __Host- (Secure, Path=/, no Domain: no subdomain can plant one), HttpOnly.
CONNECT_COOKIE = "__Host-smartsheet-oauth-connect"
_BROWSER_KEY = re.compile(r"[A-Za-z0-9_-]{43}")

get_config()  # a bad configuration fails the cold start, naming the variable
snapstart.register()  # SnapStart hooks; nothing is registered off Lambda
app = resolver(operation="login")


@app.get("/login")
def login() -> Response:
    params = query_params(app)
    config = get_config()
    now = int(time.time())
    if "session" in params:
        return _connect_page(params["session"], config, now)
    if not config.anonymous_login:
        raise AnonymousLoginDisabled
    return _start(
        config,
        now,
        return_to=params.get("return_to"),
        end_user_id=None,
        connection_id=None,
        tags=None,
        status=302,
        region=params.get("region"),
    )


@app.post("/login")
def connect() -> Response:
    """The connect page's button. Only this uses the connect session up, and only with the page's own binding: the
    browser key cookie (SameSite=Strict, so a cross-site form never carries it) and the form token derived from it
    and the session (a cross-site page cannot read it). Checked before the session is touched."""
    form = form_params(app)
    session_token = form.get("session", "")
    browser_key = app.current_event.cookies.get(CONNECT_COOKIE, "")
    if not _BROWSER_KEY.fullmatch(browser_key):
        raise ConnectFormRejected("no_browser_key")
    expected = _form_token(browser_key, session_token)
    if not hmac.compare_digest(form.get("form_token", "").encode(), expected.encode()):
        raise ConnectFormRejected("form_token_mismatch")
    config = get_config()
    now = int(time.time())
    # A connect session binds the sign-in to the integrator's end user; its return_to is the one the integrator
    # chose (it receives the completion code). A reconnect link also names the account that must sign in.
    session = services.connect_sessions().consume(session_token, now=now)
    return _start(
        config,
        now,
        return_to=session.return_to,
        end_user_id=session.end_user_id,
        connection_id=session.connection_id,
        tags=session.tags,
        status=303,
        region=session.region,
    )


def _connect_page(session_token: str, config: Config, now: int) -> Response:
    """Show what the link would do, leaving the session unused: scanners that fetch links only ever get this."""
    session = services.connect_sessions().peek(session_token, now=now)
    browser_key = app.current_event.cookies.get(CONNECT_COOKIE, "")
    if not _BROWSER_KEY.fullmatch(browser_key):  # kept when present, so two open connect pages both work
        browser_key = secrets.token_urlsafe(32)
    cookie = Cookie(
        name=CONNECT_COOKIE,
        value=browser_key,
        path="/",
        secure=True,
        http_only=True,
        same_site="Strict",
        max_age=session.expires_at - now,
    )
    # The form's answer redirects to the session's region's authorize page: the CSP names that one.
    authorize = urlsplit(config.endpoints(session.region)[0])
    body = pages.connect(
        urlsplit(session.return_to).hostname or "the app",
        session=session_token,
        form_token=_form_token(browser_key, session_token),
        reconnect=session.connection_id is not None,
    )
    logger.info("connect page shown", extra={"outcome": "connect_page"})
    count("login", "connect_page")
    return html(
        200, body, headers=pages.connect_page_headers(f"{authorize.scheme}://{authorize.netloc}"), cookies=[cookie]
    )


def _form_token(browser_key: str, session_token: str) -> str:
    # Keyed by the browser's cookie, over the session: the key never appears in a page, the token fits one session.
    return hmac.new(browser_key.encode(), session_token.encode(), hashlib.sha256).hexdigest()


def _start(
    config: Config,
    now: int,
    *,
    return_to: str | None,
    end_user_id: str | None,
    connection_id: str | None,
    tags: dict[str, str] | None,
    status: int,
    region: str | None = None,
) -> Response:
    started = begin_sign_in(
        config=config,
        client_id=config.client_id,
        states=services.state_store(),
        now=now,
        return_to=return_to,
        end_user_id=end_user_id,
        region=region,
        connection_id=connection_id,
        tags=tags,
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
    logger.info(
        "sign-in started",
        extra={"outcome": "redirected", "connect_session": end_user_id is not None, "region": region or config.region},
    )
    count("login", "started")
    return redirect(status, started.location, cookies=[cookie])


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
