"""A connection's record as the connections table holds it (Connection), the kept pair on it, and the due index's
entries: what stores/connections.py reads and the flows work with."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple


class Connection(NamedTuple):
    """One connection's record: its status, its secret, when its token expires and when to refresh it."""

    connection_id: str
    status: str
    secret_arn: str
    email: str
    scopes: str
    region: str
    access_expires_at: int
    refresh_due_at: int | None
    generation: int
    lease_until: int | None
    failures: int
    last_error: str | None
    created_at: int
    updated_at: int
    # The integrator's own user this connection is bound to (through a connect session), if any.
    end_user_id: str | None = None
    # A refreshed pair that is not in the secret yet: the next refresh stores it before anything else.
    pending: PendingPair | None = None
    # When a refresh was last committed (a new secret version): on-demand refreshes wait a cooldown after it.
    refreshed_at: int | None = None
    # A refresh attempt that may have reached Smartsheet and whose answer was never used (its worker died, or the
    # answer never came): the lease owner of the earliest such attempt, and when it started. Set with the lease,
    # gone once the grant's fate is known (refreshed, needs_reauth, signed in again). See refusals.py.
    in_flight_attempt: str | None = None
    in_flight_since: int | None = None
    # The integrator's labels (domain/tags.py), indexed in the tag table (stores/connection_tags.py).
    tags: Mapping[str, str] = MappingProxyType({})


class PendingPair(NamedTuple):
    """A new token pair kept sealed on the record (TokenVault's PairSealer) until it is in its secret, under the
    secret version id it is written with, so a repeated write of it is a no-op."""

    sealed: bytes
    version_id: str
    generation: int

    def __repr__(self) -> str:
        return f"PendingPair(version_id={self.version_id!r}, generation={self.generation}, sealed=<hidden>)"


class DueConnection(NamedTuple):
    """An entry of the due index: enough to lease the connection (its generation) and order the sweep."""

    connection_id: str
    refresh_due_at: int
    access_expires_at: int
    generation: int


def number(item: dict[str, Any], name: str, default: int | None = None) -> int | None:
    return int(item[name]["N"]) if name in item else default


def _s(item: dict[str, Any], name: str) -> str | None:
    return str(item[name]["S"]) if name in item else None


def connection_from_item(item: dict[str, Any], default_region: str) -> Connection:
    """The record as the flows read it. A record written before regions were recorded has none: its region is the
    stack's default (SmartsheetRegion, `default_region`), so every reader (the management API, events, the admin CLI,
    the refresh) sees the region its tokens work in, and the item is left as it is."""
    return Connection(
        connection_id=item["connection_id"]["S"],
        status=item["status"]["S"],
        secret_arn=item["secret_arn"]["S"],
        email=_s(item, "email") or "",
        scopes=_s(item, "scopes") or "",
        region=_s(item, "region") or default_region,
        access_expires_at=number(item, "access_expires_at", 0) or 0,
        refresh_due_at=number(item, "refresh_due_at"),
        generation=number(item, "generation", 0) or 0,
        lease_until=number(item, "lease_until"),
        failures=number(item, "failures", 0) or 0,
        last_error=_s(item, "last_error"),
        created_at=number(item, "created_at", 0) or 0,
        updated_at=number(item, "updated_at", 0) or 0,
        end_user_id=_s(item, "end_user_id"),
        pending=_pending(item),
        refreshed_at=number(item, "refreshed_at"),
        in_flight_attempt=_s(item, "in_flight_attempt"),
        in_flight_since=number(item, "in_flight_since"),
        tags={key: str(value["S"]) for key, value in item.get("tags", {}).get("M", {}).items()},
    )


def _pending(item: dict[str, Any]) -> PendingPair | None:
    if "pending_pair" not in item or "pending_version" not in item:
        return None
    return PendingPair(
        sealed=bytes(item["pending_pair"]["B"]),
        version_id=str(item["pending_version"]["S"]),
        generation=number(item, "pending_generation", 0) or 0,
    )
