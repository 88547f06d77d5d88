"""The scheduled refresh sweep (EventBridge Scheduler): queue every due connection for the refresh workers
(refresh/worker.py) before it expires; with no refresh queue configured, refresh them in this process."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.config import get_config
from smartsheet_oauth.flows import scheduled_sweep
from smartsheet_oauth.flows.deps import RefreshDeps
from smartsheet_oauth.flows.refresh_window import SWEEP_MARGIN_SECONDS
from smartsheet_oauth.platform import snapstart
from smartsheet_oauth.platform.observability import logger, metrics

get_config()  # a bad configuration fails the cold start, naming the variable
snapstart.register()  # SnapStart hooks; nothing is registered off Lambda

# Stop dispatching this long before the Lambda timeout: a refresh dispatched just before still has time to lease,
# send its token request, and save the answer (refresh_window.py); one that would not is not sent.
SAFETY_MARGIN_SECONDS = float(SWEEP_MARGIN_SECONDS)


def refresh_deps() -> RefreshDeps:
    return RefreshDeps(
        config=get_config(),
        connections=services.connection_store(),
        vault=services.token_vault(),
        smartsheet=services.smartsheet_client(),
        events=services.event_publisher(),
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE, clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = scheduled_sweep.run(
        refresh_deps,
        leases=services.sweep_leases(),
        pace=services.shared_pace(),
        owner=context.aws_request_id,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        safety_margin_seconds=SAFETY_MARGIN_SECONDS,
        queue=services.refresh_queue(),
    )
    logger.info("sweep skipped" if summary["skipped"] else "sweep finished", extra=summary)
    return summary
