"""Lambda SnapStart runtime hooks: warm the shareable parts before the snapshot, restore uniqueness after it."""

from __future__ import annotations

import importlib
import os
import random
import sys
from collections.abc import Callable

# What the first request would otherwise import: the HTTP client's retry policy (urllib3 itself comes with
# botocore), the collaborators services.py imports on first use, and what a callback imports when it finishes a sign-in
# (a superset of any one function's: the snapshot pays, not a request).
PRELOADED_MODULES = (
    "urllib3.util.retry",
    "smartsheet_oauth.stores.states",
    "smartsheet_oauth.stores.connections",
    "smartsheet_oauth.stores.connect_sessions",
    "smartsheet_oauth.stores.completions",
    "smartsheet_oauth.flows.connect",
    "smartsheet_oauth.stores.token_vault",
    "smartsheet_oauth.stores.events",
    "smartsheet_oauth.smartsheet.client",
    "smartsheet_oauth.stores.sweep_lease",
    "smartsheet_oauth.stores.pace",
)


def before_snapshot() -> None:
    """Runs once, before Lambda takes the snapshot that many execution environments will resume from.

    Only what every environment may share goes in: imported modules and boto3 clients (creating one makes no
    call; under SnapStart botocore gets refreshable container credentials). Nothing unique: no state, nonce,
    token or random value is made here, no secret is read and no connection is opened, since all of it would
    be cloned into every environment restored from the snapshot."""
    from smartsheet_oauth.platform import aws  # noqa: PLC0415 (only under SnapStart)

    for name in PRELOADED_MODULES:
        importlib.import_module(name)
    aws.dynamodb()
    aws.secretsmanager()


def after_restore() -> None:
    """Runs in each restored environment before its first request.

    Every restored environment starts with the same `random` state; re-seed it from the OS so retry and
    backoff jitter differ between them. States, nonces and lease owners never come from `random`: they use
    `secrets`/`uuid4`, which read the OS's entropy at each call and stay unique after a restore. The one random
    value a library makes at import (multiprocessing's authkey, imported with boto3's s3transfer) is renewed too."""
    random.seed()
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        multiprocessing.current_process().authkey = os.urandom(32)


def register(
    before: Callable[[], None] = before_snapshot,
    after: Callable[[], None] = after_restore,
    *,
    module: str = "snapshot_restore_py",
) -> bool:
    """Register the hooks with the runtime's snapshot_restore_py (part of Lambda's Python 3.12+ managed
    runtimes). Elsewhere (tests, the local stack) the module is absent and nothing is registered. Lambda calls
    the hooks only when SnapStart is on (the template's EnableSnapStart parameter)."""
    try:
        hooks = importlib.import_module(module)
    except ImportError:
        return False
    hooks.register_before_snapshot(before)
    hooks.register_after_restore(after)
    return True
