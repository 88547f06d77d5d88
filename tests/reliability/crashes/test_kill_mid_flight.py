"""The operator's worst day, as issue 17 reproduced it on `make dev`: users sign in through the local gateway,
Smartsheet's token endpoint gets slow (the emulator's fault route), the connections are made due, the refresh
function runs, its worker process is killed (SIGKILL, as `kill -9` would) while token requests are at Smartsheet, the
leases run out, and the refresh function runs again. Every grant the kill lost is accounted for (lost_in_flight:
needs_reauth, the event with that reason, refresh_lost in the function's metrics) and none is left active with a
dead token. Which grants were lost is read from the emulator and the store after the kill, never guessed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from smartsheet_oauth.domain.vocabulary import RefreshOutcome
from smartsheet_oauth.stores.sweep_lease import LEASE_KEY

from infra.local.demo import BrokerClient
from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator
from infra.local.stack import LocalStack
from tests.management.conftest import make_sink
from tests.ops.support import emf_blobs, metric_totals
from tests.reliability.conftest import Scale
from tests.reliability.harness import users

# The refresh workers (the refresh queue's event source mapping) send the token requests; the dispatcher does not.
REFRESH_HANDLER = "refresh.worker.lambda_handler"
TOKEN_LATENCY_MS = 800


def refresh_workers(stack: LocalStack) -> list[int]:
    """The processes of this stack's local refresh function, as `ps` would show them to an operator (other stacks of
    the test session have refresh workers of their own: this one's reach its embedded AWS)."""
    endpoint = f"AWS_ENDPOINT_URL={stack.aws.endpoint_url}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and REFRESH_HANDLER.encode() in command and endpoint in environment:
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


class Store:
    """The stack's records and secrets, read as an operator would (through the embedded AWS)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.table = stack.table_name("CONNECTIONS_TABLE_NAME")

    def records(self) -> dict[str, dict[str, Any]]:
        items = self.stack.aws.dynamodb.scan(TableName=self.table, ConsistentRead=True)["Items"]
        return {
            item["connection_id"]["S"]: {k: int(v["N"]) if "N" in v else v.get("S") for k, v in item.items()}
            for item in items
        }

    def refresh_token(self, connection_id: str) -> str:
        """The stored refresh token, from whichever store the stack keeps pairs in (its record says)."""
        return str(self.stack.token_pair(connection_id)["refresh_token"])

    def update(self, connection_id: str, expression: str, values: dict[str, Any]) -> None:
        self.stack.aws.dynamodb.update_item(
            TableName=self.table,
            Key={"connection_id": {"S": connection_id}},
            UpdateExpression=expression,
            ExpressionAttributeValues=values,
        )


def test_kill_the_refresh_worker_mid_flight(scale: Scale, figures: Callable[..., None], token_store: str) -> None:
    n = scale.crash_mid_flight_users
    emulator = SmartsheetEmulator(users=users(n), seed=61)
    parameters = {"TokenStore": token_store}
    with LocalStack(emulator=emulator, log_sink=lambda _function, _line: None, parameters=parameters) as stack:
        client = BrokerClient.of(stack)
        store = Store(stack)
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        sink = make_sink(session, endpoint_url=stack.aws.endpoint_url, name="mid-flight")

        # Sign in every user through the gateway, as their browsers would.
        for user in emulator.users:
            attempt = client.login()
            # The emulator's app is registered with the default callback URL; this gateway has a port of its own.
            redirect = client.consent(attempt, allow=True, user_id=str(user.id))
            attempt.callback_url = stack.callback_url + redirect[len(DEFAULT_APP.redirect_uri) :]
            assert client.callback(attempt).status_code == 303  # to /result
        ids = sorted(store.records())
        assert len(ids) == n

        # Slow token answers; every connection due now; the refresh function runs.
        client.emulator_admin("faults", {"latency_ms": TOKEN_LATENCY_MS, "latency_token_only": True})
        for connection_id in ids:
            store.update(connection_id, "SET refresh_due_at = :due", {":due": {"N": "0"}})
        first_run: list[Any] = []
        sweep = threading.Thread(target=lambda: first_run.append(client.run_schedule()), daemon=True)
        sweep.start()

        # kill -9 the busy refresh workers while token requests are at Smartsheet.
        wait_until(lambda: emulator.in_progress["token.refresh"] >= 1)
        workers = refresh_workers(stack)
        assert 1 <= len(workers) <= 2  # RefreshWorkerConcurrency's minimum, 2
        at_smartsheet = emulator.in_progress["token.refresh"]
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        sweep.join(120)
        assert first_run
        # The dispatch succeeded; the batches died with their workers and stay in the queue (invisible until the
        # queue's visibility timeout: the next dispatch queues those connections again, duplicates are refused).
        assert first_run[0][0]["ok"]
        assert first_run[0][0]["payload"]["workers"]["failed_messages"] >= 1
        wait_until(lambda: emulator.in_progress["token.refresh"] == 0)  # Smartsheet finished what it had

        # What the kill did, from the emulator and the store: grants whose stored refresh token is dead.
        lost = {c for c in ids if not emulator.refresh_token_is_live(store.refresh_token(c))}
        assert len(lost) >= at_smartsheet >= 1
        assert not any("pending_pair" in record for record in store.records().values())

        # Wait out the leases (the connections' and the dead sweep's: it held it until its timeout).
        for connection_id, record in store.records().items():
            if "lease_until" in record:
                store.update(connection_id, "SET lease_until = :past", {":past": {"N": "0"}})
        stack.aws.dynamodb.update_item(
            TableName=stack.table_name("STATE_TABLE_NAME"),
            Key={"state": {"S": LEASE_KEY}},
            UpdateExpression="SET lease_until = :past",
            ExpressionAttributeValues={":past": {"N": "0"}},
        )
        client.emulator_admin("faults", {"latency_ms": 0})
        printed_before = len(stack.function_logs("RefreshWorkerFunction"))  # the killed worker's last line may be cut
        [second_run] = client.run_schedule()
        assert second_run["ok"], second_run

        records = store.records()
        events = [event for event in sink.drain() if event["detail-type"] == "Connection Needs Reauth"]
        told = {
            event["detail"]["connection_id"]
            for event in events
            if event["detail"]["reason"] == RefreshOutcome.LOST_IN_FLIGHT
        }
        logged = "\n".join(stack.function_logs("RefreshWorkerFunction")[printed_before:])
        lost_metric = metric_totals(emf_blobs(logged))["refresh_lost"]  # every EMF line whole (observability.py)
        dead_and_active = [
            c
            for c in ids
            if records[c]["status"] == "active" and not emulator.refresh_token_is_live(store.refresh_token(c))
        ]
        figures(
            connections=n,
            refreshers="1 killed (kill -9) + 1",
            sweeps=2,
            refresh_calls=emulator.counts["token.refresh"],
            outcomes={k: v for k, v in second_run["payload"]["outcomes"].items() if v},
            needs_reauth=sum(record["status"] == "needs_reauth" for record in records.values()),
            lost=f"{len(lost)} in flight ({at_smartsheet} at Smartsheet at the kill), accounted {len(told)}",
        )

        assert dead_and_active == []  # none left active with a dead token
        for connection_id in lost:
            assert (records[connection_id]["status"], records[connection_id]["last_error"]) == (
                "needs_reauth",
                RefreshOutcome.LOST_IN_FLIGHT,
            )
        assert told == lost
        assert len(events) == len(lost)  # nothing else needs reauth
        assert lost_metric == second_run["payload"]["outcomes"][RefreshOutcome.LOST_IN_FLIGHT] == len(lost)
        for connection_id in set(ids) - lost:
            assert records[connection_id]["status"] == "active"
            assert "in_flight_attempt" not in records[connection_id]
        assert "held back" not in logged  # the grant guard counted none of them
