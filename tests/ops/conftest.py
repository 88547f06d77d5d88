"""The ops suite's fixtures: the recording (every scenario of tests/ops/support.py run once, its EMF output kept per
scenario), and a local stack per module that the admin CLI finds as `make admin` finds `make dev`'s."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from infra.local import dev
from infra.local.stack import LocalStack
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


@dataclass
class DevStack:
    """A running local stack and the state file through which the admin CLI finds it."""

    stack: LocalStack
    state_file: Path


@pytest.fixture(scope="module")
def dev_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, empty_moto_backends: None
) -> Iterator[DevStack]:
    """One local stack per test module (moto server, emulator, gateway, functions in their own processes), alone in
    moto's backends (tests/conftest.empty_moto_backends), its state file written as `make dev` writes it. The module
    names the stack and its parameters in DEV_STACK, e.g. `DEV_STACK = ("ops", {"AllowedReturnTo": APP})`."""
    name, parameters = request.module.DEV_STACK
    state_file = tmp_path_factory.mktemp("dev") / "dev.json"
    # No prewarm: only the functions the tests call start a worker (CPU is shared with the whole suite).
    with (
        LocalStack(stack_name=f"{name}-{os.getpid()}", prewarm=False, parameters=parameters) as stack,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(dev, "STATE_FILE", state_file)
        dev._write_state(stack)  # exactly what `make dev` writes
        yield DevStack(stack, state_file)
