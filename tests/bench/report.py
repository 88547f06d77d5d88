"""The bench's table: one row per figure, with its target and PASS/FAIL (or INFO for printed-only figures)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PASS, FAIL, INFO = "PASS", "FAIL", "INFO"


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: str
    target: str = ""
    status: str = INFO
    # A FAIL of a gating row makes the bench exit non-zero; other FAILs are reported only.
    gating: bool = False


def check(ok: bool) -> str:
    return PASS if ok else FAIL


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def render(rows: Iterable[Row]) -> str:
    rows = list(rows)
    headers = ("figure", "measured", "target", "result")
    cells = [(r.figure, r.value, r.target, r.status + ("*" if r.gating and r.status == FAIL else "")) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    widths[1] = min(widths[1], 60)

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    section = None
    for row, cell in zip(rows, cells, strict=True):
        if row.section != section:
            section = row.section
            out.append(line((f"**{section}**", "", "", "")))
        out.append(line(cell))
    return "\n".join(out)


def exit_code(rows: Iterable[Row]) -> int:
    return 1 if any(r.gating and r.status == FAIL for r in rows) else 0
