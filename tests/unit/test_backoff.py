"""Transient failures back off exponentially with jitter, capped, and never before Retry-After."""

from __future__ import annotations

import random

from smartsheet_oauth.flows.refresh import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, backoff_seconds


def test_grows_with_failures_and_is_capped() -> None:
    rng = random.Random(7)
    first = [backoff_seconds(0, None, rng) for _ in range(200)]
    later = [backoff_seconds(8, None, rng) for _ in range(200)]
    assert all(BACKOFF_BASE_SECONDS / 2 <= d <= BACKOFF_BASE_SECONDS for d in first)
    assert all(BACKOFF_CAP_SECONDS / 2 <= d <= BACKOFF_CAP_SECONDS for d in later)
    assert len(set(first)) > 50  # jitter spreads a fleet of failures out


def test_retry_after_is_a_floor() -> None:
    assert backoff_seconds(0, 2000, random.Random(1)) >= 2000
