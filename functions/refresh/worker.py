"""A refresh worker (RefreshQueue's event source mapping): refresh the due connections of one batch of messages the
scheduled dispatcher queued, at the pace every refresher shares; report back only what must be delivered again."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from smartsheet_oauth import services
from smartsheet_oauth.flows import fanout
from smartsheet_oauth.flows.sweep import Breaker
from smartsheet_oauth.flows.sweep_metrics import worker_outcomes
from smartsheet_oauth.platform.observability import logger, metrics

# Its cold start is the dispatcher's: the configuration checked (a bad one fails it, naming the variable) and the
# SnapStart hooks registered, once.
from refresh.app import SAFETY_MARGIN_SECONDS, refresh_deps

# This container's run of struggling outcomes, across its batches: an outage is waited out, not hammered ten at a time.
BREAKER = Breaker()


@logger.inject_lambda_context(clear_state=True, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report, failed = fanout.work(
        refresh_deps(),
        list(event.get("Records") or []),
        pace=services.worker_pace(),  # the container's view, across its batches (like BREAKER)
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        safety_margin_seconds=SAFETY_MARGIN_SECONDS,
        breaker=BREAKER,
    )
    worker_outcomes(report)
    logger.info(
        "refresh batch finished",
        extra={"received": len(event.get("Records") or []), "failed": len(failed)} | report.as_dict(),
    )
    # ReportBatchItemFailures: only these go back to the queue; the others are deleted.
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
