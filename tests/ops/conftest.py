"""The ops suite's recording: every scenario of tests/ops/support.py run once, its EMF output kept per scenario."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from typing import TYPE_CHECKING, Any

import pytest

from tests.ops.support import SCENARIOS, emf_blobs
from tests.support.fixtures import in_process_broker

if TYPE_CHECKING:
    from infra.local.smartsheet_emulator import SmartsheetEmulator

# Scenarios sharing one broker, in an order where each leaves what the next needs (destructive ones last).
GROUPS = (
    (
        "login_started",
        "callback_success",
        "callback_denied",
        "callback_bad_state",
        "callback_invalid_code",
        "code_flood",
        "callback_smartsheet_error",
        "callback_smartsheet_unavailable",
        "callback_internal_error",
        "events_publish_failed",
        "sweep_backlog",
        "full_sweep",
        "sweep_skipped",
        "callback_storage_error",
    ),
    (
        "refresh_ok",
        "refresh_transient",
        "refresh_needs_reauth",
        "refresh_lease_busy",
        "refresh_raced",
        "refresh_lost_in_flight",
        "sweep_out_of_time",
        "refresh_error",
    ),
)

Recorded = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="session")
def recorded(emulator_server: SmartsheetEmulator) -> Recorded:
    """Scenario name -> the EMF documents the handlers printed while it ran."""
    result: Recorded = {}
    for group in GROUPS:
        emulator_server.reset_state()
        emulator_server.reset_faults()
        with (
            pytest.MonkeyPatch.context() as session_patch,
            in_process_broker(emulator_server, session_patch, stack_name="ops-stack") as broker,
        ):
            for name in group:
                printed = io.StringIO()
                with pytest.MonkeyPatch.context() as patch, redirect_stdout(printed):
                    SCENARIOS[name](broker, patch)
                result[name] = emf_blobs(printed.getvalue())
    emulator_server.reset_faults()
    return result
