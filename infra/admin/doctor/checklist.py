"""The doctor's checklist: each check's verdict and fix, the exit status they add up to, and how they are printed."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

# Exit statuses of `doctor` (the admin CLI's 2 stays "the stack cannot be used").
ALL_PASSED, SOME_FAILED, UNUSABLE, SOME_UNCHECKED = 0, 1, 2, 3


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    # Could not be judged: the operator's credentials may not read it, or there is nothing to judge yet (a stack
    # deployed minutes ago has not swept). Not a failure, not a pass: exit status 3 when nothing failed.
    UNCHECKED = "unchecked"
    # The part does not exist where this stack runs (make dev has no alarms, schedule timer or versions).
    NOT_HERE = "not_applicable"


MARKS = {Verdict.PASSED: "✓", Verdict.FAILED: "✗", Verdict.UNCHECKED: "?", Verdict.NOT_HERE: "-"}


@dataclass(frozen=True)
class Check:
    """One line of the checklist. `summary` says what was found, `fix` what to do about it (failed or unchecked),
    `notes` anything else worth a line. None of them ever holds a token or the client secret."""

    name: str
    verdict: Verdict
    summary: str
    fix: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "fix": self.fix or None,
            "notes": list(self.notes),
        }


def passed(name: str, summary: str, *notes: str) -> Check:
    return Check(name, Verdict.PASSED, summary, notes=notes)


def failed(name: str, summary: str, fix: str, *notes: str) -> Check:
    return Check(name, Verdict.FAILED, summary, fix=fix, notes=notes)


def unchecked(name: str, summary: str, fix: str, *notes: str) -> Check:
    return Check(name, Verdict.UNCHECKED, summary, fix=fix, notes=notes)


def not_here(name: str, summary: str) -> Check:
    return Check(name, Verdict.NOT_HERE, summary)


def exit_status(checks: Iterable[Check]) -> int:
    verdicts = {check.verdict for check in checks}
    if Verdict.FAILED in verdicts:
        return SOME_FAILED
    if Verdict.UNCHECKED in verdicts:
        return SOME_UNCHECKED
    return ALL_PASSED


@dataclass(frozen=True)
class Examination:
    """What the doctor found on one stack."""

    target: str
    checks: Sequence[Check]
    callback_url: str | None  # what the operator registers as the app's redirect URL in Smartsheet

    @property
    def exit_status(self) -> int:
        return exit_status(self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "checks": [check.as_dict() for check in self.checks],
            "callback_url": self.callback_url,
            "exit_status": self.exit_status,
        }


WIDTH = 110


def _wrapped(text: str, indent: str) -> list[str]:
    # URLs, ARNs and commands stay whole, so they can be copied from the terminal.
    lines = textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [indent]


def render(examination: Examination, out: TextIO) -> None:
    print(f"doctor: {examination.target}", file=out)
    for check in examination.checks:
        lines = _wrapped(f"{MARKS[check.verdict]} {check.name}: {check.summary}", "  ")
        for note in check.notes:
            lines += _wrapped(note, "      ")
        if check.fix:
            lines += _wrapped(f"fix: {check.fix}", "      ")
        print("\n".join(lines), file=out)
    if examination.callback_url:
        print("register this callback URL as the app's redirect URL (Smartsheet Developer Tools):", file=out)
        print(f"  {examination.callback_url}", file=out)
    counts = {verdict: sum(c.verdict is verdict for c in examination.checks) for verdict in Verdict}
    tally = [
        f"{counts[Verdict.PASSED]} passed",
        f"{counts[Verdict.FAILED]} failed",
        f"{counts[Verdict.UNCHECKED]} could not be checked",
        f"{counts[Verdict.NOT_HERE]} not applicable here",
    ]
    print(", ".join(tally), file=out)
