"""The Smartsheet OAuth emulator on loopback, as tests and tools import it: `from infra.local.smartsheet_emulator import
SmartsheetEmulator`, and `python -m infra.local.smartsheet_emulator` to run it on its own."""

from infra.local.smartsheet_emulator.emulator import (
    DEFAULT_APP,
    DEFAULT_USERS,
    SCOPES,
    App,
    AuthorizeError,
    Faults,
    ManualClock,
    Settings,
    SmartsheetEmulator,
    User,
    is_loopback_host,
    main,
    token_hash,
)

__all__ = [
    "DEFAULT_APP",
    "DEFAULT_USERS",
    "SCOPES",
    "App",
    "AuthorizeError",
    "Faults",
    "ManualClock",
    "Settings",
    "SmartsheetEmulator",
    "User",
    "is_loopback_host",
    "main",
    "token_hash",
]
