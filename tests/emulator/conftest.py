"""Fixtures for the emulator's own tests: an in-process emulator on an ephemeral port and a hand-moved clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from infra.local.smartsheet_emulator import DEFAULT_APP, App, ManualClock, SmartsheetEmulator

# A second registered app, to show that codes and tokens never cross from one client to another.
OTHER_APP = App(
    client_id="other-client-id",
    client_secret="other-client-secret",
    name="Other Integration",
    redirect_uri="http://127.0.0.1:4000/oauth/done",
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[SmartsheetEmulator]:
    with SmartsheetEmulator(apps=[DEFAULT_APP, OTHER_APP], clock=clock, seed=1234) as emulator:
        yield emulator


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
