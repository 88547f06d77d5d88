"""The RefreshSchedule parameter admits only expressions EventBridge Scheduler accepts for a recurring schedule, and
only ones that run a sweep every 15 to 60 minutes: never two sweeps within the function's timeout, never an hour
without one (the sweep-not-running alarm's period)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.scripts.sam_translate import load_template, translate

PARAMETER = load_template()["Parameters"]["RefreshSchedule"]
PATTERN = str(PARAMETER["AllowedPattern"])
LONGEST_TIMEOUT_SECONDS = int(load_template()["Parameters"]["RefreshTimeoutSeconds"]["MaxValue"])
NOT_RUNNING_ALARM = load_template()["Resources"]["SweepNotRunningAlarm"]["Properties"]

# EventBridge Scheduler's cron fields: (lowest, highest, the special characters the field may use).
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
MONTHS = dict(zip(MONTH_NAMES, range(1, 13), strict=True))
DAYS = dict(zip(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), range(1, 8), strict=True))
CRON_FIELDS: tuple[tuple[str, int, int, str, dict[str, int]], ...] = (
    ("minutes", 0, 59, ",-*/", {}),
    ("hours", 0, 23, ",-*/", {}),
    ("day-of-month", 1, 31, ",-*?/LW", {}),
    ("month", 1, 12, ",-*/", MONTHS),
    ("day-of-week", 1, 7, ",-*?L#", DAYS),
    ("year", 1970, 2199, ",-*/", {}),
)
RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def _value(token: str, low: int, high: int, names: dict[str, int]) -> int | None:
    number = names.get(token.upper()) if token.isalpha() else (int(token) if token.isdigit() else None)
    return number if number is not None and low <= number <= high else None


def _cron_field_is_valid(field: str, low: int, high: int, specials: str, names: dict[str, int]) -> bool:
    if field == "?":
        return "?" in specials
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and ("/" not in specials or not step.isdigit() or int(step) < 1):
            return False
        if base == "*":
            continue
        if base == "L" and "L" in specials:
            continue
        if "W" in specials and base.endswith("W") and (base == "LW" or _value(base[:-1], low, high, names)):
            continue
        if "#" in specials and "#" in base:
            day, _, nth = base.partition("#")
            if _value(day, low, high, names) is None or nth not in {"1", "2", "3", "4", "5"}:
                return False
            continue
        if "L" in specials and base.endswith("L") and field == part and _value(base[:-1], low, high, names):
            continue  # 6L: the last Friday of the month
        first, dash, last = base.partition("-")
        if _value(first, low, high, names) is None or (dash and _value(last, low, high, names) is None):
            return False
    return True


def is_scheduler_expression(expression: str) -> bool:
    """EventBridge Scheduler's rules for rate() and cron() (at() is one-time, not a schedule for a sweep)."""
    rate = RATE.fullmatch(expression)
    if rate:
        value, unit = int(rate.group(1)), rate.group(2)
        return value >= 1 and unit.endswith("s") == (value != 1) and not rate.group(1).startswith("0")
    if not (expression.startswith("cron(") and expression.endswith(")")):
        return False
    fields = expression[5:-1].split(" ")
    if len(fields) != 6 or not all(fields):
        return False
    # Day-of-month and day-of-week cannot both be given: exactly one of them is "?".
    if (fields[2] == "?") == (fields[4] == "?"):
        return False
    return all(_cron_field_is_valid(f, *spec[1:]) for f, spec in zip(fields, CRON_FIELDS, strict=True))


def firing_gaps(expression: str) -> set[int]:
    """The gaps, in seconds, between a schedule's consecutive runs over two days (rate(), and the hourly cron()
    forms the pattern admits: minutes N or N/S, every hour, every day)."""
    rate = RATE.fullmatch(expression)
    if rate:
        return {int(rate.group(1)) * UNIT_SECONDS[rate.group(2).rstrip("s")]}
    minute_field, hour_field, *days = expression[5:-1].split(" ")
    assert hour_field == "*", expression
    assert days in (["*", "*", "?", "*"], ["?", "*", "*", "*"]), expression
    first, _, step = minute_field.partition("/")
    minutes = range(int(first), 60, int(step)) if step else [int(first)]
    runs = [hour * 3600 + minute * 60 for hour in range(48) for minute in minutes]
    return {later - earlier for earlier, later in itertools.pairwise(runs)}


def admitted(expression: str) -> bool:
    """What CloudFormation lets through as the parameter's value (AllowedPattern must match it whole)."""
    return re.fullmatch(PATTERN, expression) is not None


def test_the_default_is_valid_and_admitted() -> None:
    assert PARAMETER["Default"] == "rate(30 minutes)"
    assert admitted(PARAMETER["Default"])
    assert is_scheduler_expression(PARAMETER["Default"])


def test_the_timeout_is_at_most_lambdas_and_the_not_running_alarm_needs_two_empty_periods() -> None:
    assert LONGEST_TIMEOUT_SECONDS <= 900  # Lambda's maximum timeout
    assert NOT_RUNNING_ALARM["EvaluationPeriods"] == NOT_RUNNING_ALARM["DatapointsToAlarm"] == 2
    assert NOT_RUNNING_ALARM["TreatMissingData"] == "breaching"


def test_the_schedule_reaches_the_scheduler_unchanged() -> None:
    schedule = translate()["Resources"]["RefreshFunctionSweep"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    assert schedule["Properties"]["ScheduleExpression"] == {"Ref": "RefreshSchedule"}


@settings(max_examples=300, deadline=None)
@given(st.from_regex(PATTERN, fullmatch=True))
def test_every_admitted_schedule_is_valid_outlasts_any_timeout_and_runs_every_alarm_period(expression: str) -> None:
    assert is_scheduler_expression(expression), expression
    gaps = firing_gaps(expression)
    # A sweep ends (its timeout) before the next one is due, whatever RefreshTimeoutSeconds is...
    assert min(gaps) >= LONGEST_TIMEOUT_SECONDS, (expression, sorted(gaps))
    # ...and every period of the sweep-not-running alarm gets a sweep's figures.
    assert max(gaps) <= NOT_RUNNING_ALARM["Period"], (expression, sorted(gaps))


@pytest.mark.parametrize(
    "expression",
    [
        "rate(15 minutes)",
        "rate(30 minutes)",
        "rate(60 minutes)",
        "rate(1 hour)",
        "cron(0/30 * * * ? *)",
        "cron(5/15 * * * ? *)",
        "cron(7 * * * ? *)",
        "cron(10/20 * ? * * *)",
    ],
)
def test_valid_expressions_are_admitted(expression: str) -> None:
    assert is_scheduler_expression(expression)
    assert admitted(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(0 minutes)",  # not positive
        "rate(1 minutes)",  # 1 takes the singular
        "rate(2 hour)",  # more than 1 takes the plural
        "rate(05 minutes)",
        "rate(-5 minutes)",
        "rate(30 seconds)",
        "rate(30  minutes)",
        "rate(30 minutes) ",
        "cron(0/30 * * * *)",  # five fields: Unix cron, not Scheduler's
        "cron(0/30 * * * * *)",  # day-of-month and day-of-week both given
        "cron(0/30 * ? * ? *)",  # neither given
        "cron()",
        "at(2026-01-01T00:00:00)",  # one-time
        "30 minutes",
        "",
    ],
)
def test_invalid_expressions_are_refused_at_deploy(expression: str) -> None:
    assert not is_scheduler_expression(expression)
    assert not admitted(expression)


@pytest.mark.parametrize(
    "expression",
    ["rate(1 minute)", "rate(5 minutes)", "rate(14 minutes)", "cron(0/5 * * * ? *)", "cron(0/10 * * * ? *)"],
)
def test_valid_but_shorter_than_a_sweep_may_run_is_refused(expression: str) -> None:
    # RefreshTimeoutSeconds can be 900: a sweep every 14 minutes could start before the last one ends.
    assert is_scheduler_expression(expression)
    assert not admitted(expression)
    assert min(firing_gaps(expression)) < LONGEST_TIMEOUT_SECONDS


@pytest.mark.parametrize(
    "expression",
    [
        "rate(61 minutes)",
        "rate(2 hours)",
        "rate(24 hours)",
        "rate(1440 minutes)",
        "rate(2 days)",
        "cron(15 10 ? * MON-FRI *)",  # weekdays only: a weekend without a sweep
        "cron(0 */6 * * ? *)",
        "cron(0 8 1 * ? *)",
        "cron(0/30 8-18 * * ? *)",  # office hours only
        "cron(5/50 * * * ? *)",  # 5 and 55 past: ten minutes apart
        "cron(0 * * * ? 2026-2030)",  # stops one day
    ],
)
def test_valid_but_not_every_15_to_60_minutes_all_day_is_refused(expression: str) -> None:
    assert is_scheduler_expression(expression)
    assert not admitted(expression)


@pytest.mark.parametrize("expression", ["cron(60 * ? * * *)", "cron(0 24 ? * * *)", "cron(0 0 32 * ? *)"])
def test_the_validator_knows_the_field_ranges(expression: str) -> None:
    # What the Scheduler API would refuse at deploy time, CloudFormation refuses first.
    assert not is_scheduler_expression(expression)
    assert not admitted(expression)
