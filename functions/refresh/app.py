"""The scheduled refresh sweep (EventBridge Scheduler): refresh every due connection before it expires."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.observability import logger, metrics
from smartsheet_oauth.refresh import RefreshDeps, sweep

get_config()  # a bad configuration fails the cold start, naming the variable

# Stop dispatching this long before the Lambda timeout: one in-flight refresh (connect + read timeouts,
# a save with retries, a commit) must still fit.
SAFETY_MARGIN_SECONDS = 30.0


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = RefreshDeps(
        config=get_config(),
        connections=services.connection_store(),
        vault=services.token_vault(),
        smartsheet=services.smartsheet_client(),
        events=services.event_publisher(),
    )
    report = sweep(
        deps,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        safety_margin_seconds=SAFETY_MARGIN_SECONDS,
    )
    for outcome, count in report.outcomes.items():
        metrics.add_metric(name=f"refresh_{outcome}", unit="Count", value=count)
    metrics.add_metric(name="sweep_dispatched", unit="Count", value=report.dispatched)
    metrics.add_metric(name="sweep_duration", unit="Seconds", value=report.duration_seconds)
    logger.info("sweep finished", extra=report.as_dict())
    return report.as_dict()
