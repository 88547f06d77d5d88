"""Sizes of the reliability scenarios, and the table of figures printed at the end of the run.

`make test` runs the default sizes; `make reliability` sets RELIABILITY_SCALE=large."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Scale:
    name: str
    race_connections: int
    race_threads: int
    race_processes: int
    race_concurrency: int
    fault_connections: int
    crash_kills_per_point: int  # workers killed at each crash point (crashes/test_crash_points.py)
    crash_mid_flight_users: int  # users signed in before the refresh worker is killed (crashes/test_kill_mid_flight.py)
    outage_connections: int
    revocation_connections: int
    revoked: int
    sign_in_browsers: int


# moto answers a DynamoDB or Secrets Manager call in 10-15 ms on this 2-core machine (one request at a time, see
# infra.local.aws.OneRequestAtATime), about 5 calls per refresh: the default sizes keep `make test` near a minute, the
# large ones are the figures and beyond.
SCALES = {
    "default": Scale("default", 100, 4, 4, 4, 200, 1, 12, 40, 100, 10, 20),
    "large": Scale("large", 500, 4, 4, 4, 1000, 5, 48, 200, 1000, 100, 500),
}

_rows: list[dict[str, Any]] = []
COLUMNS = (
    ("scenario", "scenario"),
    ("connections", "conns"),
    ("refreshers", "refreshers / browsers"),
    ("sweeps", "sweeps"),
    ("refresh_calls", "smartsheet refreshes"),
    ("refresh_faults", "smartsheet faults"),
    ("aws_throttled", "aws throttled"),
    ("outcomes", "outcomes"),
    ("needs_reauth", "needs_reauth"),
    ("lost", "lost"),
    ("latency", "sign-in p50 / p95 / max s"),
    ("states_left", "states left"),
    ("seconds", "seconds"),
)


@pytest.fixture(params=("secretsmanager", "dynamodb"))
def token_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """The token store a world-based scenario runs with (its modules use this fixture: each runs once per store)."""
    from tests.reliability.harness import use_store

    use_store(request.param)
    yield request.param
    use_store("secretsmanager")


@pytest.fixture(scope="session")
def scale() -> Scale:
    name = os.environ.get("RELIABILITY_SCALE", "default")
    if name not in SCALES:
        raise pytest.UsageError(f"RELIABILITY_SCALE must be one of {', '.join(SCALES)}, got {name!r}")
    return SCALES[name]


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """Record (and print) a scenario's figures; they also go to the table at the end of the run."""
    started = time.monotonic()
    row: dict[str, Any] = {"scenario": request.node.name.removeprefix("test_")}

    def record(**values: Any) -> None:
        row.update(values)
        row["seconds"] = round(time.monotonic() - started, 1)
        print(f"\n[reliability] {row['scenario']}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "scenario"))

    yield record
    if len(row) > 1:
        _rows.append(row)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _rows:
        return
    cells = [[title for _, title in COLUMNS]] + [[_cell(row.get(key)) for key, _ in COLUMNS] for row in _rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    terminalreporter.section(f"reliability figures ({os.environ.get('RELIABILITY_SCALE', 'default')} sizes)")
    for n, line in enumerate(cells):
        terminalreporter.write_line(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if n == 0:
            terminalreporter.write_line("-+-".join("-" * width for width in widths))
