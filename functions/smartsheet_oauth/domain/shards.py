"""The due index's partitions (DueShards): which one a connection's due time goes to, and every one the dispatcher
reads. Also the spread of due times, so a burst of sign-ins does not come due in the same minute days later."""

from __future__ import annotations

import hashlib

# The DueShards parameter's maximum. The dispatcher reads every partition up to it, whatever DueShards is now: a
# stack whose DueShards went down (or an older stack, whose records all say "due") orphans no connection.
MAX_DUE_SHARDS = 16
# Partition 0 keeps the name every record had before the fan-out: an upgraded stack's records are in it already.
LEGACY_SHARD = "due"
# Due times move earlier by up to this share of the refresh window, by connection id: sign-ins made together come
# due spread over a tenth of the window (4.8 hours of the default 48) instead of together.
JITTER_SHARE = 10


def _digest(connection_id: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{connection_id}".encode()).digest()[:8], "big")


def shard_name(index: int) -> str:
    return LEGACY_SHARD if index == 0 else f"{LEGACY_SHARD}-{index}"


def due_shard(connection_id: str, shards: int) -> str:
    """The partition of the due index a connection's due time is written to: a stable hash of its id over `shards`."""
    if shards <= 1:
        return LEGACY_SHARD
    return shard_name(_digest(connection_id, "shard") % min(shards, MAX_DUE_SHARDS))


def every_shard() -> tuple[str, ...]:
    """Every partition a due time may be in: the dispatcher reads all of them."""
    return tuple(shard_name(index) for index in range(MAX_DUE_SHARDS))


def due_jitter(connection_id: str, window_seconds: int) -> int:
    """How much earlier than the window's start this connection comes due: stable per connection (a re-read or a
    retried write gives the same time), spread evenly over a tenth of the window."""
    spread = window_seconds // JITTER_SHARE
    return _digest(connection_id, "jitter") % (spread + 1) if spread > 0 else 0
