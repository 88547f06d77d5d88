"""The sweep checks: the schedule is enabled and runs the refresh function's live alias; the last sweep started within
two schedule periods (its heartbeat, `sweep_dispatched`) and did not fail (Lambda's Errors on the alias since then,
and both of the sweep's queues empty). Locally there is no timer: the doctor runs one sweep, as make refresh does."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from infra.admin.doctor.checklist import Check, failed, not_here, passed, unchecked
from infra.admin.doctor.readings import ReadError, StackReader
from infra.admin.target import LIVE_ALIAS, TargetError

SCHEDULE: Final = "schedule"
RAN: Final = "last sweep ran"
SUCCEEDED: Final = "last sweep succeeded"
NAMESPACE: Final = "SmartsheetOAuthBroker"  # the functions' POWERTOOLS_METRICS_NAMESPACE
HEARTBEAT: Final = "sweep_dispatched"  # every sweep's first metric, 0 included (template.yaml, SweepNotRunningAlarm)
LOOK_BACK_SECONDS: Final = 24 * 3600
MINUTE: Final = 60
LONGEST_PERIOD_SECONDS: Final = 3600  # RefreshSchedule admits every 15 to 60 minutes

_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours)\)")
_CRON = re.compile(r"cron\((\d+)(?:/(\d+))? \* (?:\* \* \?|\? \* \*) \*\)")


def period_seconds(expression: str) -> int | None:
    """How often RefreshSchedule's expression fires (the forms its AllowedPattern admits), None for another form."""
    rate = _RATE.fullmatch(expression.strip())
    if rate:
        return int(rate.group(1)) * (3600 if rate.group(2).startswith("hour") else MINUTE)
    cron = _CRON.fullmatch(expression.strip())
    if cron:
        return int(cron.group(2)) * MINUTE if cron.group(2) else 3600
    return None


def _ago(moment: datetime, reader: StackReader) -> str:
    minutes = max(0, int((reader.now - moment.timestamp()) // MINUTE))
    return f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min ago"


# ------------------------------------------------------------------------------------------------ schedule
def check_schedule(reader: StackReader) -> Check:
    facts = reader.facts
    if facts.local:
        return not_here(
            SCHEDULE,
            "locally there is no EventBridge Scheduler: the gateway fires template.yaml's schedule when asked "
            "(make refresh)",
        )
    name, function = facts.outputs.get("RefreshScheduleName"), facts.outputs.get("RefreshFunctionName")
    if not name or not function:
        return failed(SCHEDULE, "the stack has no RefreshScheduleName output", "redeploy from this version")
    try:
        schedule = reader.schedule(name)
        alias = reader.alias_arn(function, LIVE_ALIAS)
    except ReadError as exc:
        if exc.missing:
            return failed(
                SCHEDULE,
                f"{exc.what} does not exist",
                "redeploy (make deploy); it is part of the stack, so someone deleted it",
            )
        return unchecked(SCHEDULE, str(exc), exc.fix)
    target = str(schedule.get("Target", {}).get("Arn", ""))
    problems: list[tuple[str, str]] = []
    if schedule.get("State") != "ENABLED":
        problems.append(
            (
                f"{name} is {schedule.get('State', 'not enabled')}: no sweep runs, grants are not refreshed",
                "enable it: EventBridge Scheduler console, or aws scheduler update-schedule with --state ENABLED and "
                "every other setting repeated (it resets what it is not given; docs/operations.md, rotation step 5)",
            )
        )
    if target != alias:
        runs = "$LATEST" if target.endswith((":$LATEST", f":function:{function}")) else target
        problems.append(
            (
                f"{name} invokes {runs}, not the live alias {alias}: the async settings (no retry, failed-sweep "
                "queue) and SnapStart's snapshot apply to the alias",
                f"set its target back to {alias} (console: the function's alias live); a deploy does not undo a "
                "change made outside CloudFormation",
            )
        )
    if problems:
        (summary, fix), *more = problems
        return failed(SCHEDULE, summary, fix, *(f"also: {text} (fix: {how})" for text, how in more))
    return passed(SCHEDULE, f"{name} is enabled, {schedule.get('ScheduleExpression')}, and runs {alias}")


def _period(reader: StackReader) -> tuple[int, str]:
    """The schedule's period in seconds and where it was read; the longest the template admits when unknown."""
    facts = reader.facts
    expression = ""
    name = facts.outputs.get("RefreshScheduleName")
    if name:
        try:
            expression = str(reader.schedule(name).get("ScheduleExpression", ""))
        except ReadError:
            expression = ""
    expression = expression or facts.parameters.get("RefreshSchedule", "")
    seconds = period_seconds(expression)
    if seconds is None:
        return LONGEST_PERIOD_SECONDS, "unknown, taken as every 60 min (the longest RefreshSchedule admits)"
    return seconds, f"{expression}, every {seconds // MINUTE} min"


def _created(reader: StackReader) -> datetime | None:
    name = reader.facts.outputs.get("RefreshScheduleName")
    try:
        created = reader.schedule(name).get("CreationDate") if name else None
    except ReadError:
        return None
    return created if isinstance(created, datetime) else None


# -------------------------------------------------------------------------------------------------- sweeps
def check_sweeps(reader: StackReader, run_sweep: Callable[[], dict[str, Any]]) -> list[Check]:
    if reader.facts.local:
        return _local_sweep(run_sweep)
    facts = reader.facts
    function = facts.outputs.get("RefreshFunctionName", "")
    period, period_text = _period(reader)
    queries = [
        _query("heartbeat", NAMESPACE, HEARTBEAT, {"service": facts.name}, "SampleCount"),
        _query(
            "errors", "AWS/Lambda", "Errors", {"FunctionName": function, "Resource": f"{function}:{LIVE_ALIAS}"}, "Sum"
        ),
    ]
    try:
        series = reader.metric_series(queries, seconds=LOOK_BACK_SECONDS, what="the sweep's metrics")
    except ReadError as exc:
        return [unchecked(RAN, str(exc), exc.fix), unchecked(SUCCEEDED, str(exc), exc.fix)]
    last = series["heartbeat"][0][0] if series["heartbeat"] else None
    return [_ran(reader, last, period, period_text, function), _succeeded(reader, last, series["errors"], period)]


def _query(query_id: str, namespace: str, metric: str, dimensions: dict[str, str], stat: str) -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions.items()],
            },
            "Period": MINUTE,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def _ran(reader: StackReader, last: datetime | None, period: int, period_text: str, function: str) -> Check:
    run_now = f'make admin ARGS="--stack {reader.facts.name} sweep" runs one now'
    # A datapoint is stamped with the start of its minute: a minute of slack.
    if last is not None and reader.now - last.timestamp() <= 2 * period + MINUTE:
        return passed(RAN, f"a sweep last started {_ago(last, reader)} (schedule {period_text})")
    created = _created(reader)
    if last is None and created is not None and reader.now - created.timestamp() <= 2 * period:
        return unchecked(
            RAN,
            f"no sweep yet: the schedule was created {_ago(created, reader)} ({period_text})",
            f"run the doctor again after the first sweep; {run_now}",
        )
    when = f"the last started {_ago(last, reader)}" if last else "none in the last 24 hours"
    return failed(
        RAN,
        f"no sweep started within two periods (schedule {period_text}): {when}; grants are not being refreshed",
        f"see the schedule check above and the RefreshFunction's errors ({function}); {run_now}",
    )


def _succeeded(reader: StackReader, last: datetime | None, errors: list[tuple[datetime, float]], period: int) -> Check:
    facts = reader.facts
    # The last sweep's errors: Lambda stamps an error with its invocation's start, so every error from the last
    # heartbeat on belongs to it, or to a later sweep that failed before its heartbeat. A minute before it: the
    # invocation can start in the minute before its heartbeat's; the sweep before started a period earlier.
    since = last.timestamp() - MINUTE if last else reader.now - 2 * period
    failures = int(sum(value for stamp, value in errors if stamp.timestamp() >= since))
    problems: list[tuple[str, str]] = []
    if failures:
        problems.append(
            (
                f"the last sweep failed: {failures} Lambda error(s) on the live alias "
                f"{'since it started' if last else 'in the last two periods, and no heartbeat'}",
                "read the RefreshFunction's log group (a configuration error names the variable; a placeholder "
                f'client secret fails every sweep: see above), fix it, then make admin ARGS="--stack {facts.name} '
                'sweep"',
            )
        )
    try:
        queues = [
            (name, reader.queue_depth(url, name), fix)
            for output, name, fix in (
                (
                    "FailedSweepQueueUrl",
                    "FailedSweepQueue",
                    "each record holds a failed sweep's error: read them, fix the cause, then purge the queue",
                ),
                (
                    "RefreshDeadLetterQueueUrl",
                    "RefreshDeadLetterQueue",
                    "Scheduler could not invoke the alias: "
                    "check the schedule's target and role (refresh-dlq in docs/operations.md), then purge the queue",
                ),
            )
            if (url := facts.outputs.get(output))
        ]
    except ReadError as exc:
        return unchecked(SUCCEEDED, str(exc), exc.fix)
    problems += [(f"{depth} record(s) wait in {name}", fix) for name, depth, fix in queues if depth]
    if problems:
        (summary, fix), *more = problems
        return failed(SUCCEEDED, summary, fix, *(f"also: {text} (fix: {how})" for text, how in more))
    empty = " and ".join(name for name, _, _ in queues) or "no queue"
    if last is None:
        return unchecked(SUCCEEDED, f"no sweep to judge yet; no error, {empty} empty", "see the check above")
    return passed(SUCCEEDED, f"no Lambda error since it started; {empty} empty")


def _local_sweep(run_sweep: Callable[[], dict[str, Any]]) -> list[Check]:
    try:
        report = run_sweep()
    except TargetError as exc:
        return [
            failed(
                RAN,
                f"the doctor ran a sweep and it did not complete: {exc}",
                "read make dev's output for the RefreshFunction's traceback",
            ),
            not_here(SUCCEEDED, "locally the sweep's failure is the line above (no Lambda metrics or queues)"),
        ]
    if report.get("skipped"):
        outcome = "it was skipped: another sweep holds the lease"
    else:
        happened = ", ".join(f"{name} {count}" for name, count in sorted(report.get("outcomes", {}).items()) if count)
        outcome = f"it dispatched {report.get('dispatched', 0)} refresh(es) (outcomes: {happened or 'none'})"
    return [
        passed(RAN, f"locally there is no timer: the doctor ran one sweep now, as make refresh does; {outcome}"),
        not_here(SUCCEEDED, "locally the sweep the doctor ran is the line above (no Lambda metrics or queues)"),
    ]
