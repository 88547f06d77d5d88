"""The scheduled refresh sweep (EventBridge Scheduler): refresh every due connection before it expires."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services, snapstart
from smartsheet_oauth.config import get_config
from smartsheet_oauth.observability import logger, metrics
from smartsheet_oauth.refresh import RefreshDeps, sweep
from smartsheet_oauth.sweep_metrics import record_sweep

get_config()  # a bad configuration fails the cold start, naming the variable
snapstart.register()  # SnapStart hooks; nothing is registered off Lambda

# Stop dispatching this long before the Lambda timeout: one in-flight refresh (connect + read timeouts,
# a save with retries, a commit) must still fit.
SAFETY_MARGIN_SECONDS = 30.0


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE, clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = RefreshDeps(
        config=get_config(),
        connections=services.connection_store(),
        vault=services.token_vault(),
        smartsheet=services.smartsheet_client(),
        events=services.event_publisher(),
    )
    started_at = int(time.time())
    report = sweep(
        deps,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        safety_margin_seconds=SAFETY_MARGIN_SECONDS,
    )
    summary = report.as_dict() | record_sweep(
        report,
        connections=deps.connections,
        started_at=started_at,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    logger.info("sweep finished", extra=summary)
    return summary
