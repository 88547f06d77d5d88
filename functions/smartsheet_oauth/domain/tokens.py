"""Token pairs: as Smartsheet issues them (TokenGrant), as the broker keeps them (TokenSet, built by one
TokenSet.from_grant), and when a kept pair comes due for its refresh (refresh_due_at)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple


def refresh_due_at(expires_at: int, *, window_seconds: int, now: int, jitter_seconds: int = 0) -> int:
    """When a pair that expires at `expires_at` is due for its refresh: `window_seconds` before it expires, and never
    before `now`. A pair that already lives less than the window (an organisation's token policy can shorten it) is due
    now, not in the past: the due index is served earliest first, and the sweep's lag (sweep_lag, and its alarm) is
    measured from the earliest due time, so a time in the past would jump the queue and read as a sweep running late.
    `jitter_seconds` moves it earlier still (domain/shards.due_jitter: pairs issued together come due spread out)."""
    return max(now, expires_at - window_seconds - jitter_seconds)


class TokenGrant(NamedTuple):
    """A token pair as Smartsheet issued it. repr hides the tokens so they never reach a log by accident."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int

    def __repr__(self) -> str:
        return f"TokenGrant(token_type={self.token_type!r}, expires_in={self.expires_in}, tokens=<hidden>)"


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The secret's JSON document. repr hides the tokens."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_at: int
    scope: str
    region: str
    user_id: str
    email: str
    obtained_at: int

    def __repr__(self) -> str:
        return f"TokenSet(user_id={self.user_id!r}, expires_at={self.expires_at}, tokens=<hidden>)"

    @classmethod
    def from_grant(
        cls, grant: TokenGrant, *, obtained_at: int, scope: str, region: str, user_id: str, email: str
    ) -> TokenSet:
        """The pair Smartsheet issued, as the broker keeps it: its lifetime counted from `obtained_at`."""
        return cls(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            token_type=grant.token_type,
            expires_at=obtained_at + grant.expires_in,
            scope=scope,
            region=region,
            user_id=user_id,
            email=email,
            obtained_at=obtained_at,
        )

    def rotated(self, grant: TokenGrant, *, obtained_at: int) -> TokenSet:
        """The pair a refresh of this one returned: the same grant's scope, region and user."""
        return TokenSet.from_grant(
            grant, obtained_at=obtained_at, scope=self.scope, region=self.region, user_id=self.user_id, email=self.email
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> TokenSet:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            token_type=str(data.get("token_type", "bearer")),
            expires_at=int(data["expires_at"]),
            scope=str(data.get("scope", "")),
            region=str(data.get("region", "")),
            user_id=str(data.get("user_id", "")),
            email=str(data.get("email", "")),
            obtained_at=int(data.get("obtained_at", 0)),
        )
