"""The management API (IAM-authorized routes on the broker's HTTP API): connections, refresh, disconnect, connect
sessions and their completion."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.edge import management_api
from smartsheet_oauth.edge.router import Response
from smartsheet_oauth.flows import connect, import_grant, management, on_demand
from smartsheet_oauth.flows.deps import ManagementDeps
from smartsheet_oauth.platform import snapstart
from smartsheet_oauth.platform.observability import logger, metrics

get_config()  # a bad configuration fails the cold start, naming the variable
snapstart.register()  # SnapStart hooks (EnableSnapStart applies to every function); nothing is registered off Lambda
app = management_api.resolver()


def deps() -> ManagementDeps:
    return ManagementDeps(
        config=get_config(),
        connections=services.connection_store(),
        vault=services.token_vault(),
        sessions=services.connect_sessions(),
        smartsheet=services.smartsheet_client,
        events=services.event_publisher(),
        pace=services.shared_pace(),
        tags=services.connection_tags(),
    )


@app.get("/connections")
def list_connections() -> Response:
    params = dict(app.current_event.query_string_parameters)
    result = management.list_connections(deps(), params)
    management_api.count("listed")
    return management_api.answer(200, result)


@app.get("/connections/<connection_id>")
def get_connection(connection_id: str) -> Response:
    result = management.get_connection(deps(), connection_id)
    management_api.count("read")
    return management_api.answer(200, result)


@app.post("/connections/<connection_id>/refresh")
def refresh_connection(connection_id: str) -> Response:
    min_valid = on_demand.min_valid_seconds(management_api.json_body(app, required=False))
    current = deps()
    # One request never retries a failing save past API Gateway's timeout or the function's own.
    time_left = current.request_time_left(lambda: app.lambda_context.get_remaining_time_in_millis() / 1000)
    result = on_demand.refresh_on_demand(current, connection_id, min_valid=min_valid, time_left=time_left)
    logger.info("on-demand refresh", extra={"connection_id": connection_id, "outcome": result["outcome"]})
    management_api.count(f"refresh_{result['outcome']}")
    return management_api.answer(200, result)


@app.put("/connections/<connection_id>/tags")
def set_tags(connection_id: str) -> Response:
    result = management.set_tags(deps(), connection_id, management_api.json_body(app, required=True))
    logger.info("connection tags set", extra={"connection_id": connection_id, "tags": len(result["tags"])})
    management_api.count("tags_set")
    return management_api.answer(200, result)


@app.delete("/connections/<connection_id>")
def disconnect(connection_id: str) -> Response:
    result = management.disconnect(deps(), connection_id)
    logger.info("connection disconnected", extra={"connection_id": connection_id, "smartsheet": result["smartsheet"]})
    management_api.count("disconnected")
    return management_api.answer(200, result)


@app.post("/connect-sessions")
def create_connect_session() -> Response:
    body = management_api.json_body(app, required=True)
    result = management.create_connect_session(
        deps(), body, broker_url=management_api.broker_url(app, get_config().public_base_url)
    )
    logger.info("connect session created", extra={"end_user_id": result["end_user_id"]})
    management_api.count("connect_session_created")
    return management_api.answer(201, result)


@app.post("/connect-sessions/complete")
def complete_connect_session() -> Response:
    body = management_api.json_body(app, required=True)
    completed = connect.complete(deps(), services.completion_store(), body)
    outcome = "created" if completed.is_new else "reconnected"
    logger.info(
        "connect session completed",
        extra={"connection_id": completed.connection.connection_id, "end_user_id": completed.connection.end_user_id},
    )
    management_api.count("connect_session_completed")
    return management_api.answer(200, {"outcome": outcome, "connection": management.view(completed.connection)})


@app.post("/connections/import")
def import_connection() -> Response:
    body = management_api.json_body(app, required=True)
    current = deps()
    grant = import_grant.checked_grant(body, config=current.config, now=int(current.clock()))
    # One request never retries a failing keep past API Gateway's timeout or the function's own.
    time_left = current.request_time_left(lambda: app.lambda_context.get_remaining_time_in_millis() / 1000)
    result = import_grant.import_grant(current, services.import_ledger(), grant, time_left=time_left)
    outcome = "already_present" if result.already else ("created" if result.is_new else "reconnected")
    logger.info("grant imported", extra={"connection_id": result.connection.connection_id, "outcome": outcome})
    management_api.count(f"import_{outcome}")
    answer = {"outcome": outcome, "connection": management.view(result.connection)}
    if result.already:
        return management_api.answer(200, answer)
    return management_api.answer(201, answer)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The IAM caller below is whatever the event says: trusted only in an event API Gateway plausibly sent.
    forged = management_api.not_from_api_gateway(event, function_arn=context.invoked_function_arn, now=time.time())
    if forged is not None:
        logger.error("event not from API Gateway", extra={"outcome": "not_from_api_gateway", "reason": forged})
        management_api.count("not_from_api_gateway")
        refusal = {"error": "forbidden", "message": "This function serves the broker's HTTP API only."}
        return management_api.answer(403, refusal).proxy_result()
    caller = management_api.caller_arn(event)
    if caller is None:
        # Every route is AWS_IAM-authorized in template.yaml; a request without a caller means a route lost its
        # authorization: refuse rather than serve tokens' metadata to anyone.
        logger.error("management request without an IAM caller", extra={"outcome": "no_iam_caller"})
        management_api.count("no_iam_caller")
        refusal = {"error": "forbidden", "message": "This route needs AWS_IAM authorization."}
        return management_api.answer(403, refusal).proxy_result()
    logger.append_keys(caller=caller, route=event.get("routeKey"))
    return app.resolve(event, context)
