"""Who the emulated Smartsheet knows: registered apps, users who can sign in, and the scopes an app may ask for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SCOPES: frozenset[str] = frozenset(
    {
        "ADMIN_SHEETS",
        "ADMIN_SIGHTS",
        "ADMIN_USERS",
        "ADMIN_WEBHOOKS",
        "ADMIN_WORKSPACES",
        "CREATE_SHEETS",
        "CREATE_SIGHTS",
        "DELETE_SHEETS",
        "DELETE_SIGHTS",
        "READ_CONTACTS",
        "READ_EVENTS",
        "READ_SHEETS",
        "READ_SIGHTS",
        "READ_USERS",
        "SHARE_SHEETS",
        "SHARE_SIGHTS",
        "WRITE_SHEETS",
    }
)


@dataclass(frozen=True)
class App:
    """A registered Smartsheet app (API client)."""

    client_id: str
    client_secret: str = field(repr=False)  # kept out of reprs so it cannot leak through logs
    name: str
    redirect_uri: str

    def public(self) -> dict[str, str]:
        return {"client_id": self.client_id, "name": self.name, "redirect_uri": self.redirect_uri}


@dataclass(frozen=True)
class User:
    """A Smartsheet user who can sign in on the emulated authorize page."""

    id: int
    email: str
    first_name: str
    last_name: str
    account_id: int = 7254813458524036
    account_name: str = "Local Org"
    locale: str = "en_US"
    time_zone: str = "US/Pacific"
    admin: bool = False

    def profile(self) -> dict[str, Any]:
        """The `/users/me` body; ids stay Python ints so JSON carries every digit of ids above 2^53."""
        return {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "account": {"id": self.account_id, "name": self.account_name},
            "locale": self.locale,
            "timeZone": self.time_zone,
            "admin": self.admin,
        }


DEFAULT_APP = App(
    client_id="local-client-id",
    client_secret="local-client-secret",  # noqa: S106 - a well-known local-only credential
    name="Local Smartsheet Integration",
    redirect_uri="http://127.0.0.1:3000/callback",
)
# Ids above 2^53 on purpose: 9007199254740993 is the first integer a float cannot hold, so any client
# that parses ids as floats (or JavaScript numbers) gets the wrong user.
DEFAULT_USERS: tuple[User, ...] = (
    User(4583173393803140, "ada@example.com", "Ada", "Lovelace", admin=True),
    User(6812335718217604, "grace@example.com", "Grace", "Hopper"),
    User(
        9007199254740993,
        "alan@example.com",
        "Alan",
        "Turing",
        account_id=9223372036854775,
        account_name="Bletchley Park",
        locale="en_GB",
        time_zone="Europe/London",
    ),
)


def known_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    granted = tuple(scopes)
    unknown = [scope for scope in granted if scope not in SCOPES]
    if unknown or not granted:
        raise ValueError(f"scopes must be a non-empty list of Smartsheet scopes; unknown: {unknown}")
    return granted


def user_id_of(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"user_id must be an integer or a string of digits, not {value!r}")
    return int(value)


# The local stack's other regions: each its own instance with its own users (ids unlike the default region's, as two
# regions' users are different people), so a sign-in there and its tokens are told apart from the default region's.
REGIONAL_USERS: dict[str, tuple[User, ...]] = {
    "eu": (
        User(
            5136270480238468,
            "eve@example.eu",
            "Eve",
            "Europa",
            account_id=7254813458524111,
            locale="en_GB",
            time_zone="Europe/Paris",
        ),
        User(
            5136270480238469,
            "max@example.eu",
            "Max",
            "Planck",
            account_id=7254813458524111,
            locale="de_DE",
            time_zone="Europe/Berlin",
        ),
    ),
    "au": (
        User(
            6204113998839812,
            "kim@example.au",
            "Kim",
            "Kangaroo",
            account_id=7254813458524222,
            locale="en_AU",
            time_zone="Australia/Sydney",
        ),
    ),
    "gov": (User(3348297211723652, "sam@example.gov", "Sam", "Federal", account_id=7254813458524333),),
}


def users_of_region(region: str, default_region: str) -> tuple[User, ...]:
    """The users an emulated region knows: the default users in the stack's default region, else the region's own."""
    if region == default_region:
        return DEFAULT_USERS
    return REGIONAL_USERS[region]
