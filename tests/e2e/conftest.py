"""The e2e suite's local stack: one per session (moto + emulator + gateway on ephemeral loopback ports)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from infra.local.demo import BrokerClient
from infra.local.stack import LocalStack


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    # Separate stack name from `make dev`'s, so a dev stack and the tests never share secrets' names.
    # The functions' logs go to logging: pytest shows them beside a failing test.
    with LocalStack(stack_name=f"e2e-{os.getpid()}") as local:
        yield local


@pytest.fixture
def local_stack(stack: LocalStack) -> Iterator[LocalStack]:
    """The session stack with the emulator's faults cleared before and after the test."""
    stack.emulator.reset_faults()
    yield stack
    stack.emulator.reset_faults()


@pytest.fixture
def client(local_stack: LocalStack) -> Iterator[BrokerClient]:
    broker = BrokerClient(local_stack.url, local_stack.emulator.base_url)
    yield broker
    broker.http.close()
