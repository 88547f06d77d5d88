"""The Smartsheet OAuth emulator on loopback, as tests and tools import it: `from infra.local.smartsheet_emulator import
SmartsheetEmulator`, and `python -m infra.local.smartsheet_emulator` to run it on its own."""

from infra.local.smartsheet_emulator.accounts import (
    DEFAULT_APP,
    DEFAULT_USERS,
    REGIONAL_USERS,
    SCOPES,
    App,
    User,
    users_of_region,
)
from infra.local.smartsheet_emulator.api import token_hash
from infra.local.smartsheet_emulator.cli import main
from infra.local.smartsheet_emulator.emulator import SmartsheetEmulator
from infra.local.smartsheet_emulator.errors import AuthorizeError
from infra.local.smartsheet_emulator.faults import Faults
from infra.local.smartsheet_emulator.model import ManualClock
from infra.local.smartsheet_emulator.server import is_loopback_host
from infra.local.smartsheet_emulator.settings import Settings

__all__ = [
    "DEFAULT_APP",
    "DEFAULT_USERS",
    "REGIONAL_USERS",
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
    "users_of_region",
]
