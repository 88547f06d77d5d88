"""The one Logger and Metrics instance every handler shares (Powertools: JSON logs, EMF metrics)."""

from __future__ import annotations

import logging
import os
import threading
import traceback

from aws_lambda_powertools import Logger, Metrics

SERVICE = "smartsheet-oauth-broker"
NAMESPACE = "SmartsheetOAuthBroker"


def debug_sampling_rate(value: str | None) -> float | str | None:
    """POWERTOOLS_LOGGER_SAMPLE_RATE for the Logger. Powertools takes any non-empty text as "sampling on" and
    then re-levels the logger at every warm invocation (which clears every logger's level cache), even for the
    template's default "0"; a rate of 0 is passed as the number 0, which it reads as off. Anything else is left
    as it is, so Powertools' own check names a bad value."""
    if value is None or not value.strip():
        return None
    try:
        rate = float(value)
    except ValueError:
        return value
    return 0 if rate == 0 else value


# POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE (set in template.yaml) win over these defaults.
logger = Logger(
    service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE,
    sampling_rate=debug_sampling_rate(os.environ.get("POWERTOOLS_LOGGER_SAMPLE_RATE")),  # type: ignore[arg-type]
)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE,
    service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE,
)

# Powertools' metric set is a plain dict: the sweep's worker threads add to it (events) while its main thread may
# flush it (flush_metrics_now). Both hold this lock.
metrics_lock = threading.Lock()


def add_metric_safely(name: str, unit: str, value: float) -> None:
    """add_metric from a thread that may run while the sweep flushes."""
    with metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


def flush_metrics_now() -> None:
    """Print the metrics added so far as one EMF document now, instead of when the handler returns: a sweep that
    Lambda ends at its timeout never returns, and its log keeps only what was printed before.

    It prints under the Logger's own lock: the sweep's worker threads log while its main thread flushes, and print()
    writes the document and its newline separately, so a log record could land between the two and share the
    document's line, which CloudWatch then reads as neither (refresh_lost among the metrics lost with it)."""
    with metrics_lock:
        if metrics.metric_set:
            handler = logger.registered_handler
            handler.acquire()
            try:
                metrics.flush_metrics()
            finally:
                handler.release()


# botocore's wire logs dump whole request and response bodies at DEBUG: token secrets, the app credentials.
# Keep them quiet whatever level the Lambda runtime gives the root logger (ApplicationLogLevel=DEBUG).
for _wire_log in ("botocore.endpoint", "botocore.parsers"):
    logging.getLogger(_wire_log).setLevel(logging.INFO)


def log_unexpected(exc: BaseException) -> None:
    """Log a failure nobody planned for: its type and frames only, since an exception's text can carry request
    values (a code, a state, a token)."""
    logger.error(
        "unexpected failure",
        extra={
            "outcome": "internal_error",
            "error_type": type(exc).__name__,
            "stack": traceback.format_tb(exc.__traceback__),
        },
    )


def log_failure(level: str | None, message: str, outcome: str, exc: BaseException, fields: dict[str, object]) -> None:
    """Log a request's failure as its row in domain/errors.ANSWERS says: at `level` ("unexpected": type and frames
    only; None: not at all), with its outcome and the fields the error allows in a log."""
    if level == "unexpected":
        log_unexpected(exc)
    elif level is not None:
        getattr(logger, level)(message, extra={"outcome": outcome, **fields})
