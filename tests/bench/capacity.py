"""How many connections one scheduled sweep keeps alive, computed from the template's own values.

One sweep runs at a time (a sweep lease); it dispatches until its safety margin before the function's timeout, at the
rate that binds (on Lambda, its share of the pace towards Smartsheet: REFRESH_RATE_PER_MINUTE less what each window
keeps for on-demand refreshes), once per schedule interval. A
connection comes due once per (token lifetime - refresh window): that is the steady state; "all due at once" is what
the sweeps get through within one refresh window. docs/performance.md's figures and `make bench` both come from here
(tests/unit/test_docs.py holds the page to them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smartsheet_oauth.stores.pace import Windows

from infra.local.template_model import Resolver, Template

TOKEN_LIFETIME_SECONDS: Final = 7 * 86_400  # Smartsheet's access token (SMARTSHEET.md: expires_in 604799)
DAY_SECONDS: Final = 86_400
REFRESH_APP: Final = Path(__file__).resolve().parents[2] / "functions" / "refresh" / "app.py"
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours)\)")
_CRON_EVERY_HOUR = re.compile(r"cron\((\d+)(?:/(\d+))? \* .*\)")


def schedule_interval_seconds(expression: str) -> int:
    """The time between two sweeps of a RefreshSchedule the template admits (rate(), or cron() firing each hour)."""
    rate = _RATE.fullmatch(expression)
    if rate:
        return int(rate.group(1)) * (60 if rate.group(2).startswith("minute") else 3600)
    cron = _CRON_EVERY_HOUR.fullmatch(expression)
    if cron:
        step = int(cron.group(2) or 60)
        return step * 60 if step in (15, 20, 30) else 3600
    raise ValueError(f"not a schedule the template admits: {expression!r}")


def safety_margin_seconds() -> float:
    """The refresh handler's SAFETY_MARGIN_SECONDS: it stops dispatching this long before the timeout. The handler
    takes it from refresh_window.SWEEP_MARGIN_SECONDS (tests/unit/test_refresh_window.py holds the two together)."""
    from smartsheet_oauth.flows.refresh_window import SWEEP_MARGIN_SECONDS

    if "SAFETY_MARGIN_SECONDS = float(SWEEP_MARGIN_SECONDS)" not in REFRESH_APP.read_text(encoding="utf-8"):
        raise ValueError(f"{REFRESH_APP} no longer sets SAFETY_MARGIN_SECONDS: teach tests/bench/capacity.py")
    return float(SWEEP_MARGIN_SECONDS)


@dataclass(frozen=True)
class Settings:
    """The template values a sweep's capacity follows (defaults, or a deploy's parameters)."""

    pace_per_minute: int
    timeout_seconds: int
    interval_seconds: int
    window_seconds: int
    concurrency: int

    @classmethod
    def of(cls, template: Template | None = None, **parameters: str) -> Settings:
        template = template or Template.load()
        resolver = Resolver(template, stack_name="capacity", parameters={"SmartsheetClientId": "x", **parameters})
        refresh = resolver.function("RefreshFunction")
        return cls(
            pace_per_minute=int(refresh.environment["REFRESH_RATE_PER_MINUTE"]),
            timeout_seconds=refresh.timeout,
            interval_seconds=schedule_interval_seconds(str(resolver.parameter("RefreshSchedule"))),
            window_seconds=int(refresh.environment["REFRESH_WINDOW_SECONDS"]),
            concurrency=int(refresh.environment["REFRESH_CONCURRENCY"]),
        )

    @property
    def sweep_pace_per_second(self) -> float:
        """The sweep's share of the pace: each window's budget less what it keeps for on-demand refreshes."""
        windows = Windows(self.pace_per_minute)
        return windows.sweep_budget / windows.seconds


@dataclass(frozen=True)
class Capacity:
    per_invocation: float  # connections one sweep refreshes before its margin
    steady: float  # connections kept alive when each comes due once per (lifetime - window)
    all_due_at_once: float  # connections refreshed within one refresh window


def capacity(settings: Settings, rate_per_second: float, margin_seconds: float | None = None) -> Capacity:
    """What one scheduled function keeps up with when `rate_per_second` binds (the pace, by default on Lambda)."""
    margin = safety_margin_seconds() if margin_seconds is None else margin_seconds
    per_invocation = rate_per_second * (settings.timeout_seconds - margin)
    sweeps_per_day = DAY_SECONDS / settings.interval_seconds
    return Capacity(
        per_invocation=per_invocation,
        steady=per_invocation * sweeps_per_day * (TOKEN_LIFETIME_SECONDS - settings.window_seconds) / DAY_SECONDS,
        all_due_at_once=per_invocation * sweeps_per_day * settings.window_seconds / DAY_SECONDS,
    )
