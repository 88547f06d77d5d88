"""Fixtures of the security suite: everything the broker writes, captured at DEBUG."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from smartsheet_oauth.platform.observability import logger

from tests.management.conftest import event_sink  # noqa: F401 (the connect-link tests watch events too)
from tests.security.support import Capture


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[Capture]:
    """The broker's logger writes into a buffer at DEBUG; every other logger's records are kept at DEBUG too."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous_stream = handler.setStream(buffer)
    previous_level = logger.log_level
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        yield Capture(buffer, capsys, caplog)
    finally:
        handler.setStream(previous_stream)
        logger.setLevel(previous_level)
