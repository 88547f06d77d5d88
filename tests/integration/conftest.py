"""The in-process broker: the `broker` and `emulator` fixtures live in tests/support/fixtures.py (shared)."""
