"""The crash-point table, printed at the end of the run (after the figures). Sizes are the reliability suite's
(Scale.crash_*): `make test` kills one worker at each point, `make reliability` (RELIABILITY_SCALE=large) five."""

from __future__ import annotations

import os
from typing import Any

_table: list[dict[str, str]] = []
COLUMNS = (
    ("point", "crash point"),
    ("kills", "kills"),
    ("recovered", "recovered"),
    ("lost, accounted", "lost, accounted"),
    ("lost, unaccounted", "lost, unaccounted"),
    ("how", "how"),
)


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
    sizes = os.environ.get("RELIABILITY_SCALE", "default")
    terminalreporter.section(f"crash points ({sizes} sizes): a worker process killed (SIGKILL) at each")
    for line in format_table(_table):
        terminalreporter.write_line(line)
