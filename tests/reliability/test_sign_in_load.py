"""Sign-in under load: hundreds of browsers at once through the local gateway, each its own Smartsheet user, against
the whole local stack (moto server, the emulator, handlers in worker processes) as `make dev` runs it.

Every check is read back from what happened, never from the plan: what each browser was answered, what the broker
stored (connections, secrets, states left in the state table), which grants the emulator holds live, and what the
callback function itself logged. A run that met real trouble (a timeout under load: a 503) passes as long as every
answer is accounted for by the broker's own record and nothing half-done is left behind."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import requests

from infra.local.stack import LocalStack
from tests.reliability.browsers import BrowserRun, percentile, sign_in_all
from tests.reliability.conftest import Scale
from tests.reliability.harness import SPAWN

# The status the callback answers with, by the outcome it logs (smartsheet_oauth/edge/web.py, callback/app.py).
STATUS_OF_OUTCOME = {
    "success": 303,  # to /result, the page that says connected
    "bad_request": 400,
    "bad_state": 400,
    "denied": 400,
    "authorize_error": 400,
    "invalid_code": 400,
    "binding_conflict": 409,
    "smartsheet_error": 502,
    "smartsheet_unavailable": 503,
    "storage_error": 503,
    "internal_error": 500,
}


class CallbackOutcomes:
    """The outcomes the callback function logged, counted as its workers print them."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, function: str, line: str) -> None:
        if function != "CallbackFunction" or not line.startswith("{"):
            return
        try:
            record = json.loads(line)
        except ValueError:
            return
        if record.get("outcome") in STATUS_OF_OUTCOME:
            with self._lock:
                self.counts[record["outcome"]] += 1


def scan(stack: LocalStack, variable: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": stack.table_name(variable), "ConsistentRead": True}
    while True:
        page = stack.aws.dynamodb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def live_connections(stack: LocalStack, connections: list[dict[str, Any]]) -> dict[str, str]:
    """connection id -> e-mail, for the active connections whose stored refresh token the emulator holds live."""
    live = {}
    for item in connections:
        connection_id = item["connection_id"]["S"]
        tokens = stack.token_pair(connection_id)  # a secret, or a sealed item of the token table
        if item["status"]["S"] == "active" and stack.emulator.refresh_token_is_live(tokens["refresh_token"]):
            live[connection_id] = item["email"]["S"]
    return live


def describe(run: BrowserRun) -> str:
    return f"user {run.user_id}: {run.outcome} after {run.seconds:.1f} s via {run.hops}"


def test_sign_in_under_load(scale: Scale, figures: Callable[..., None], token_store: str) -> None:
    n = scale.sign_in_browsers
    logged = CallbackOutcomes()
    parameters = {"TokenStore": token_store}
    name = f"reliability-sign-in-{token_store[:3]}-{os.getpid()}"
    with LocalStack(stack_name=name, log_sink=logged, parameters=parameters) as stack:
        created = requests.post(f"{stack.emulator.base_url}/_emulator/users", json={"count": n}, timeout=30)
        assert created.status_code == 200, created.text
        emails = {str(user["id"]): user["email"] for user in created.json()}
        with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as browsers:
            runs, wall = browsers.submit(sign_in_all, stack.login_url, list(emails)).result(timeout=3000)

        state_ttl = int(stack.functions["CallbackFunction"].spec.environment["STATE_TTL_SECONDS"])
        states_left = {item["state"]["S"] for item in scan(stack, "STATE_TABLE_NAME") if "kind" not in item}
        connections = scan(stack, "CONNECTIONS_TABLE_NAME")
        live = live_connections(stack, connections)
    # The stack is stopped: every worker has ended and every line it printed has been read.

    ended: Counter[str] = Counter(run.outcome for run in runs)
    seconds = [run.seconds for run in runs]
    connected = {
        run.user_id
        for run in runs
        if run.final_status == 303 and run.final_path.endswith("/result") and emails[run.user_id] in run.final_body
    }
    figures(
        connections=len(connected),
        refreshers=f"{n} browsers",
        outcomes={"ok": ended.pop("303", 0), **dict(sorted(ended.items()))},
        latency=f"{percentile(seconds, 0.5):.1f} / {percentile(seconds, 0.95):.1f} / {max(seconds):.1f}",
        states_left=len(states_left),
        sign_in_seconds=round(wall, 1),
        logged=dict(logged.counts),
    )

    assert len(runs) == n
    # Load can make Smartsheet or AWS too slow to answer in time (503), or keep a browser past its state's lifetime
    # (400): nothing else. A 500, a 502, a refused state or cookie, a browser left without an answer is a bug.
    unexplained = [
        describe(run)
        for run in runs
        if not (run.outcome in ("303", "503", "login 503") or (run.outcome == "400" and run.seconds > state_ttl))
    ]
    assert not unexplained, unexplained[:5]
    # The broker's own account of every callback matches what the browsers were answered, one for one.
    answered = Counter(run.final_status for run in runs if run.final_status is not None)
    accounted: Counter[int] = Counter()
    for outcome, count in logged.counts.items():
        accounted[STATUS_OF_OUTCOME[outcome]] += count
    assert answered == accounted
    # Whoever saw "connected" has an active connection with a working grant; nobody else has one.
    assert len(connections) == len(live) == len(connected)
    assert live == {user_id: emails[user_id] for user_id in connected}
    # A state stays only where its callback never came, or could not consume it (a 503 from storage).
    never_called_back = {run.state for run in runs if run.state and run.final_status is None}
    unavailable = {run.state for run in runs if run.state and run.final_status == 503}
    assert never_called_back <= states_left <= never_called_back | unavailable
