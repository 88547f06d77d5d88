"""The in-process broker: the `broker` and `emulator` fixtures live in tests/support/fixtures.py (shared)."""

from tests.management.conftest import event_sink  # noqa: F401 (the result page's tests watch events too)
