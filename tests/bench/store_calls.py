"""AWS calls per operation for each token store, counted on the real handlers (in-process, moto): a sign-in, a
refreshed connection (a sweep of many, divided), a consumer's read (smartsheet_oauth_client, cache cold). `make bench`
prints them beside the design's minimum; `make cost` prices them (docs/measured-calls.json, written here)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.bench.report import FAIL, INFO, PASS, Row

MEASURED = Path(__file__).resolve().parents[2] / "docs" / "measured-calls.json"
STORES = ("secretsmanager", "dynamodb")
REFRESHED = 40
# The design's minimum AWS calls per refreshed connection, whatever the store: take the lease, read the pair, save
# the new pair, commit the record (the due query and the sweep's own lease are shared by every connection of a sweep).
MINIMUM_PER_REFRESH = 4
# Billed KMS requests per refresh at least: Secrets Manager asks KMS for the secret's key on each read and each write
# (a customer-managed key); the token table needs none but a data key every few minutes per container.
MINIMUM_KMS = {"secretsmanager": 2.0, "dynamodb": 0.0}


class _Counting:
    """Calls by service and operation; with `shared_table`, calls on that table (the sweep's lease and the shared
    pace, in the state table) are counted apart as shared.*: every connection of a sweep shares them."""

    def __init__(self, shared_table: str | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.shared_table = shared_table
        self._table = threading.local()

    def params(self, params: dict[str, Any], **_: Any) -> None:
        self._table.name = params.get("TableName")

    def hook(self, event_name: str, **kwargs: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        table: object = getattr(self._table, "name", None) if service == "dynamodb" else None
        shared = self.shared_table is not None and table == self.shared_table
        shared = shared or operation == "Query"  # the due index: one query a page of due connections
        self.calls[f"{'shared.' if shared else ''}{service}.{operation}"] += 1


def _measure_store(store: str, emulator: Any) -> dict[str, dict[str, float]]:
    from smartsheet_oauth import services
    from smartsheet_oauth.platform import aws
    from smartsheet_oauth_client import TokenProvider

    from tests.support.fixtures import in_process_broker

    patch = pytest.MonkeyPatch()
    counting = _Counting()
    figures: dict[str, dict[str, float]] = {}
    try:
        with in_process_broker(emulator, patch, stack_name="bench-store", token_store=store) as broker:
            users = [u.id for u in emulator.users[:REFRESHED]]
            counting.shared_table = broker.state_table
            clients = (aws.dynamodb(), aws.secretsmanager(), aws.kms(), aws.events())
            for client in clients:
                client.meta.events.register("before-parameter-build", counting.params)
                client.meta.events.register("before-call", counting.hook)
            counting.calls.clear()
            for user in users:
                assert broker.sign_in(user_id=user).status == 200
            figures["sign_in"] = _per(counting.calls, len(users))
            for user in users:
                broker.make_due(user)
            counting.calls.clear()
            report = broker.sweep()
            refreshed = report["outcomes"]["refreshed"]
            assert refreshed == len(users), report
            figures["refresh"] = _per(counting.calls, refreshed)
            # A consumer's first read of each connection (its own clients; the data-key cache starts cold).
            reader = _Counting()
            session = boto3.session.Session(region_name="us-east-1")
            own: dict[str, Any] = {s: session.client(s) for s in ("secretsmanager", "dynamodb", "kms")}
            for client in own.values():
                client.meta.events.register("before-call", reader.hook)
            provider = TokenProvider(
                api_url="https://broker.example.com",
                secret_prefix=broker.env["TOKEN_SECRET_PREFIX"],
                token_table=broker.env["TOKEN_TABLE_NAME"] if store == "dynamodb" else None,
                session=session,
                secrets_client=own["secretsmanager"],
                dynamodb_client=own["dynamodb"],
                kms_client=own["kms"],
            )
            for user in users:
                provider.access_token(str(user))
            figures["consumer_read"] = _per(reader.calls, len(users))
            services.reset()
    finally:
        patch.undo()
    return figures


def _per(calls: Counter[str], count: int) -> dict[str, float]:
    return {name: round(n / count, 3) for name, n in sorted(calls.items())}


def measure(emulator: Any) -> tuple[list[Row], dict[str, Any]]:
    measured: dict[str, Any] = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d"),
        "how": f"tests/bench/store_calls.py: {REFRESHED} sign-ins, one sweep refreshing them, a consumer reading each",
        "stores": {},
    }
    rows: list[Row] = []
    for store in STORES:
        figures = _measure_store(store, emulator)
        measured["stores"][store] = figures
        refresh = figures["refresh"]
        record_and_pair = sum(v for k, v in refresh.items() if k.split(".")[0] in ("dynamodb", "secrets-manager"))
        kms = sum(v for k, v in refresh.items() if k.startswith("kms."))
        # What this store's pairs add: one read, one write (the record's lease and commit are the rest of 4).
        rows.append(
            Row(
                "10. token stores",
                f"{store}: DynamoDB + Secrets Manager calls per refreshed connection",
                f"{record_and_pair:.2f} ({', '.join(f'{k} {v:g}' for k, v in refresh.items())})",
                f"= {MINIMUM_PER_REFRESH}, the design's minimum (shared.*: the sweep's own, over {REFRESHED})",
                PASS if record_and_pair <= MINIMUM_PER_REFRESH else FAIL,
                gating=True,
            )
        )
        rows.append(
            Row(
                "10. token stores",
                f"{store}: KMS requests per refreshed connection",
                f"{kms:.3f} made by the broker" + (" (+2 Secrets Manager makes for it)" if store == SM else ""),
                f"minimum {MINIMUM_KMS[store]:g} billed",
                INFO,
            )
        )
        rows.append(
            Row(
                "10. token stores",
                f"{store}: AWS calls per consumer read (cache cold)",
                ", ".join(f"{k} {v:g}" for k, v in figures["consumer_read"].items()),
                "1 read (+ KMS per data key)",
                INFO,
            )
        )
    MEASURED.write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return rows, measured


SM = "secretsmanager"


if __name__ == "__main__":  # python -m tests.bench.store_calls: just this part of the bench
    from tests.bench import world
    from tests.bench.report import render

    started = time.monotonic()
    with world.start_emulator(users=REFRESHED) as emulator:
        found, _ = measure(emulator)
    print(render(found))
    print(f"\n({time.monotonic() - started:.0f} s; wrote {MEASURED})")
