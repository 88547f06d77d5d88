"""Checks of the values a test or an admin request sets (faults, settings, new users), and how a set is applied."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


def check_number(name: str, value: object, *, low: float = 0.0, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be between {low} and {high if high is not None else 'infinity'}")


def check_int(name: str, value: object, *, low: int = 0, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{' or null' if optional else ''}, not {value!r}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    allowed = list(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed!r}, not {value!r}")


def update_in_place(target: Any, changes: Mapping[str, Any]) -> None:
    """Validate a whole new value first, then copy it over, so a bad change leaves the old one intact (the object
    stays the same one: whoever holds it sees the change)."""
    known = {f.name for f in dataclasses.fields(target)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; known: {sorted(known)}")
    candidate = dataclasses.replace(target, **changes)
    for name in known:
        setattr(target, name, getattr(candidate, name))
