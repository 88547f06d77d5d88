"""Sizes of the crash scenarios, and the crash-point table printed at the end of the run (after the figures).

`make test` kills one worker at each point; `make reliability` (RELIABILITY_SCALE=large) several."""

from __future__ import annotations

import os
from typing import Any

import pytest

# Workers killed at each crash point; users signed in through the local stack for the kill-mid-flight reproduction.
KILLS_PER_POINT = {"default": 1, "large": 5}
MID_FLIGHT_USERS = {"default": 12, "large": 48}

_table: list[dict[str, str]] = []
COLUMNS = (
    ("point", "crash point"),
    ("kills", "kills"),
    ("recovered", "recovered"),
    ("lost, accounted", "lost, accounted"),
    ("lost, unaccounted", "lost, unaccounted"),
    ("how", "how"),
)


def scale_name() -> str:
    name = os.environ.get("RELIABILITY_SCALE", "default")
    if name not in KILLS_PER_POINT:
        raise pytest.UsageError(f"RELIABILITY_SCALE must be one of {', '.join(KILLS_PER_POINT)}, got {name!r}")
    return name


@pytest.fixture(scope="session")
def kills_per_point() -> int:
    return KILLS_PER_POINT[scale_name()]


@pytest.fixture(scope="session")
def mid_flight_users() -> int:
    return MID_FLIGHT_USERS[scale_name()]


def keep_rows(rows: list[dict[str, str]]) -> None:
    """The crash-point table's rows, for the summary at the end of the run."""
    _table.extend(rows)


def format_table(rows: list[dict[str, str]]) -> list[str]:
    cells = [[title for _, title in COLUMNS]] + [[row.get(key, "") for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _table:
        return
    terminalreporter.section(f"crash points ({scale_name()} sizes): a worker process killed (SIGKILL) at each")
    for line in format_table(_table):
        terminalreporter.write_line(line)
