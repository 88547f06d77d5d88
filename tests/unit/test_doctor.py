"""make doctor's parts that need no stack: the schedule's period, the live-alias comparison, the exit status, the
HTTP helper (what the admin CLI loads for a deployed stack: test_admin_imports.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from infra.admin.doctor.alarms import RUNBOOK, runbook_of
from infra.admin.doctor.checklist import (
    ALL_PASSED,
    SOME_FAILED,
    SOME_UNCHECKED,
    exit_status,
    failed,
    not_here,
    passed,
    unchecked,
)
from infra.admin.doctor.sign_in import Unreachable, fetch
from infra.admin.doctor.sweeps import period_seconds
from infra.admin.doctor.versions import differences
from infra.scripts.sam_translate import load_template

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(15 minutes)", 900),
        ("rate(30 minutes)", 1800),
        ("rate(60 minutes)", 3600),
        ("rate(1 hour)", 3600),
        ("cron(0 * * * ? *)", 3600),
        ("cron(5/20 * * * ? *)", 1200),
        ("cron(0/15 * ? * * *)", 900),
    ],
)
def test_the_period_of_every_form_refresh_schedule_admits(expression: str, seconds: int) -> None:
    pattern = load_template()["Parameters"]["RefreshSchedule"]["AllowedPattern"]
    assert re.fullmatch(pattern, expression), f"{expression} is not one the template admits"
    assert period_seconds(expression) == seconds


def test_an_expression_of_another_form_has_no_period() -> None:
    assert period_seconds("at(2026-01-01T00:00:00)") is None
    assert period_seconds("cron(0 12 * * ? *)") is None


def test_the_template_default_schedule_has_a_period() -> None:
    assert period_seconds(load_template()["Parameters"]["RefreshSchedule"]["Default"]) == 1800


def test_a_version_differs_from_latest_by_setting_and_variable_names_only() -> None:
    latest = {
        "Timeout": 600,
        "CodeSha256": "abc",
        "SnapStart": {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"},
        "Environment": {"Variables": {"OAUTH_SCOPES": "READ_SHEETS WRITE_SHEETS", "NEW": "1", "SAME": "x"}},
        "Layers": [{"Arn": "b", "CodeSize": 1}, {"Arn": "a", "CodeSize": 2}],
    }
    live = {
        "Timeout": 300,
        "CodeSha256": "abc",
        "SnapStart": {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"},  # a version's nature, not drift
        "Environment": {"Variables": {"OAUTH_SCOPES": "READ_SHEETS", "GONE": "1", "SAME": "x"}},
        "Layers": [{"Arn": "a", "CodeSize": 2}, {"Arn": "b", "CodeSize": 1}],
    }

    assert differences(latest, live) == ["Timeout", "GONE", "NEW", "OAUTH_SCOPES"]
    assert differences(latest, latest) == []
    assert differences(latest, live | {"SnapStart": {"ApplyOn": "None"}}) == [
        "Timeout",
        "SnapStart",
        "GONE",
        "NEW",
        "OAUTH_SCOPES",
    ]


def test_every_alarm_of_the_template_gives_the_doctor_its_fix() -> None:
    """A firing alarm's fix is the "Do:" part of its own description (what the console shows too)."""
    resources = load_template()["Resources"].items()
    alarms = {
        name: str(r["Properties"]["AlarmDescription"]) for name, r in resources if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert alarms
    for name, description in alarms.items():
        assert runbook_of(description) != RUNBOOK, f"{name}'s AlarmDescription has no 'Do:' part"
    assert runbook_of("No advice here.") == RUNBOOK


def test_the_exit_status_is_the_worst_verdict() -> None:
    assert exit_status([passed("a", "ok"), not_here("b", "none here")]) == ALL_PASSED
    assert exit_status([passed("a", "ok"), unchecked("b", "?", "grant it")]) == SOME_UNCHECKED
    assert exit_status([unchecked("b", "?", "grant it"), failed("c", "bad", "fix it")]) == SOME_FAILED


def test_fetch_raises_unreachable_when_nothing_listens() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unreachable, match="ConnectionRefusedError"):
        fetch(f"http://127.0.0.1:{port}/login")
    with pytest.raises(Unreachable, match="not an http"):
        fetch("file:///etc/passwd")


def _make_dry_run(*arguments: str) -> str:
    # A make of its own: under `make test` the parent's MAKEFLAGS would pass its command-line variables (ARGS) down.
    environment = {
        k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    }
    answer = subprocess.run(
        ["make", "--no-print-directory", "-n", "doctor", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return " ".join(answer.stdout.split())


def test_make_doctor_passes_the_stack_and_the_arguments_to_the_cli() -> None:
    deployed = _make_dry_run("STACK=broker-prod", "ARGS=--json")
    local = _make_dry_run()

    assert deployed.endswith("PYTHONPATH=functions .venv/bin/python -m infra.admin --stack broker-prod doctor --json")
    assert local.endswith("PYTHONPATH=functions .venv/bin/python -m infra.admin doctor")  # no --stack: make dev's
