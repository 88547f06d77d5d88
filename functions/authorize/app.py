"""GET /login: start a sign-in and send the browser to Smartsheet's authorize page."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.observability import logger, metrics
from smartsheet_oauth.sign_in import NONCE_COOKIE, begin_sign_in
from smartsheet_oauth.web import count, query_params, redirect, resolver

get_config()  # a bad configuration fails the cold start, naming the variable
app = resolver(operation="login")


@app.get("/login")
def login() -> Any:
    params = query_params(app)
    config = get_config()
    started = begin_sign_in(
        config=config,
        client_id=services.app_credentials(config).client_id,
        states=services.state_store(),
        now=int(time.time()),
        return_to=params.get("return_to"),
    )
    cookie = Cookie(
        name=NONCE_COOKIE,
        value=started.nonce,
        path="/",
        secure=True,
        http_only=True,
        same_site=SameSite.LAX_MODE,
        max_age=started.max_age,
    )
    logger.info("sign-in started", extra={"outcome": "redirected"})
    count("login", "started")
    return redirect(302, started.location, cookies=[cookie])


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
