"""The RefreshSchedule parameter admits only expressions EventBridge Scheduler accepts for a recurring schedule."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.scripts.sam_translate import load_template, translate

PARAMETER = load_template()["Parameters"]["RefreshSchedule"]
PATTERN = str(PARAMETER["AllowedPattern"])
MAX_INTERVAL_SECONDS = 24 * 3600

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


def admitted(expression: str) -> bool:
    """What CloudFormation lets through as the parameter's value (AllowedPattern must match it whole)."""
    return re.fullmatch(PATTERN, expression) is not None


def test_the_default_is_valid_and_admitted() -> None:
    assert PARAMETER["Default"] == "rate(30 minutes)"
    assert admitted(PARAMETER["Default"])
    assert is_scheduler_expression(PARAMETER["Default"])


def test_the_schedule_reaches_the_scheduler_unchanged() -> None:
    schedule = translate()["Resources"]["RefreshFunctionSweep"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    assert schedule["Properties"]["ScheduleExpression"] == {"Ref": "RefreshSchedule"}


@settings(max_examples=300, deadline=None)
@given(st.from_regex(PATTERN, fullmatch=True))
def test_every_admitted_rate_is_a_valid_rate_of_at_most_a_day(expression: str) -> None:
    if not expression.startswith("rate("):
        return  # cron() forms: the examples below
    assert is_scheduler_expression(expression), expression
    rate = RATE.fullmatch(expression)
    assert rate is not None
    assert int(rate.group(1)) * UNIT_SECONDS[rate.group(2).rstrip("s")] <= MAX_INTERVAL_SECONDS


@pytest.mark.parametrize(
    "expression",
    [
        "rate(1 minute)",
        "rate(5 minutes)",
        "rate(1440 minutes)",
        "rate(1 hour)",
        "rate(24 hours)",
        "cron(0/30 * * * ? *)",
        "cron(15 10 ? * MON-FRI *)",
        "cron(0 */6 * * ? *)",
        "cron(0 8 1 * ? *)",
        "cron(0 0 ? * 6L *)",
        "cron(0 0 ? * 2#1 2026-2030)",
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


@pytest.mark.parametrize("expression", ["rate(1441 minutes)", "rate(25 hours)", "rate(2 days)"])
def test_valid_but_too_sparse_for_the_refresh_window_is_refused(expression: str) -> None:
    assert is_scheduler_expression(expression)
    assert not admitted(expression)


@pytest.mark.parametrize(
    "expression",
    ["cron(60 * ? * * *)", "cron(0 24 ? * * *)", "cron(0 0 32 * ? *)", "cron(0 0 ? 13 * *)", "cron(0 0 ? * 8 *)"],
)
def test_the_validator_knows_the_field_ranges(expression: str) -> None:
    # CloudFormation admits these (the pattern checks the shape); the Scheduler API refuses them at deploy time.
    assert admitted(expression)
    assert not is_scheduler_expression(expression)
