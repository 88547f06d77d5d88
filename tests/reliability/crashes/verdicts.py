"""What became of the grant at stake in one killed worker's trial, read from the store's, the emulator's and the
event bus's own state after recovery, and the table of verdicts by crash point.

- recovered: the connection ends active and its stored pair is the grant's live one, with nobody's help.
- lost, accounted: the grant is not held, and everyone who must know does. For a refresh: the connection is
  needs_reauth with reason lost_in_flight, the "Connection Needs Reauth" event carries that reason, and the
  refresh_lost metric counted it. For a sign-in: the worker died before answering (the user saw it fail) and no record
  claims what was not stored. Either way a new sign-in of that user connects.
- lost, unaccounted: anything else (active with a dead token, needs_reauth for another reason, no event, a record
  that says more than is true). Must be 0 at every point."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from smartsheet_oauth.config import load_config
from smartsheet_oauth.domain.vocabulary import ConnectionStatus, RefreshOutcome
from smartsheet_oauth.flows.sign_in import finish_sign_in
from smartsheet_oauth.smartsheet.client import SmartsheetClient
from smartsheet_oauth.stores.completions import CompletionStore
from smartsheet_oauth.stores.connections import ConnectionStore
from smartsheet_oauth.stores.states import StateStore

from tests.reliability.harness import World

RECOVERED = "recovered"
ACCOUNTED = "lost, accounted"
UNACCOUNTED = "lost, unaccounted"
VERDICTS = (RECOVERED, ACCOUNTED, UNACCOUNTED)


@dataclass
class Trial:
    """One killed worker: where it was to stop, whom it worked for, and what it had done when it died."""

    point: str
    kind: str  # "refresh" or "callback"
    connection_id: str
    steps: list[str] = field(default_factory=list)
    # Read right after the kill, from the store and the emulator: the grant could no longer be refreshed from
    # anything the broker keeps (stored token dead at Smartsheet, no kept pair on the record).
    grant_gone_at_kill: bool = False
    verdict: str = ""
    how: str = ""


def stored_token(here: World, connection_id: str) -> str | None:
    pair = here.stored_pair(connection_id)
    return pair.refresh_token if pair is not None else None


def record_of(here: World, connection_id: str) -> dict[str, Any] | None:
    item = here.dynamodb.get_item(
        TableName=here.spec.connections_table, Key={"connection_id": {"S": connection_id}}, ConsistentRead=True
    ).get("Item")
    if item is None:
        return None
    return {name: (int(value["N"]) if "N" in value else value.get("S", value.get("B"))) for name, value in item.items()}


def grant_gone(here: World, connection_id: str) -> bool:
    """Nothing the broker keeps can refresh this connection: its stored refresh token is dead and no new pair waits
    sealed on its record."""
    record = record_of(here, connection_id)
    token = stored_token(here, connection_id)
    kept = record is not None and "pending_pair" in record
    return not kept and (token is None or not here.emulator.refresh_token_is_live(token))


def holds_live_grant(here: World, connection_id: str) -> bool:
    record = record_of(here, connection_id)
    token = stored_token(here, connection_id)
    return (
        record is not None
        and record["status"] == ConnectionStatus.ACTIVE
        and "in_flight_attempt" not in record
        and token is not None
        and here.emulator.refresh_token_is_live(token)
    )


def sign_in_again(here: World, connection_id: str) -> bool:
    """The user does what the broker told them: signs in again (the callback's own steps, in this process).
    True if they end up connected with a live grant."""
    config = load_config(here.spec.environment())
    states = StateStore(here.dynamodb, here.spec.state_table, config.state_ttl_seconds)
    now = int(time.time())
    pending = states.create(now=now)
    code = here.emulator.issue_code(user_id=connection_id)
    finish_sign_in(
        {"state": pending.state, "code": code},
        pending.nonce,
        config=config,
        states=states,
        smartsheet=SmartsheetClient(
            api_base_url=here.spec.api_base_url, client_id=here.spec.client_id, client_secret=here.spec.client_secret
        ),
        vault=here.stores,
        connections=ConnectionStore(here.dynamodb, here.spec.connections_table, default_region=config.region),
        now=now,
        completions=lambda: CompletionStore(here.dynamodb, here.spec.state_table),
    )
    return holds_live_grant(here, connection_id)


def judge_refresh(here: World, trial: Trial, needs_reauth_events: Counter[tuple[str, str]]) -> None:
    record = record_of(here, trial.connection_id) or {}
    if holds_live_grant(here, trial.connection_id):
        trial.verdict, trial.how = RECOVERED, f"active, its stored pair works (generation {record.get('generation')})"
        return
    told = (
        record.get("status") == ConnectionStatus.NEEDS_REAUTH
        and record.get("last_error") == RefreshOutcome.LOST_IN_FLIGHT
        and needs_reauth_events[trial.connection_id, RefreshOutcome.LOST_IN_FLIGHT] == 1
        and grant_gone(here, trial.connection_id)
    )
    if told and sign_in_again(here, trial.connection_id):
        trial.verdict, trial.how = ACCOUNTED, "needs_reauth (lost_in_flight) + event + refresh_lost; signed in again"
        return
    trial.verdict, trial.how = UNACCOUNTED, f"{record.get('status')} ({record.get('last_error')})"


def judge_callback(here: World, trial: Trial) -> None:
    record = record_of(here, trial.connection_id)
    if record is not None:
        # A record exists (the kill came after it, or the user had connected before): it must hold a live grant.
        if holds_live_grant(here, trial.connection_id):
            trial.verdict, trial.how = RECOVERED, "active, its stored pair works"
        else:
            trial.verdict, trial.how = UNACCOUNTED, f"record {record.get('status')} without a live grant"
        return
    # No record claims the grant; the worker died without answering, so the user saw the sign-in fail.
    if sign_in_again(here, trial.connection_id):
        issued = "a grant issued, held by nobody" if "callback.code_exchanged" in trial.steps else "nothing issued"
        trial.verdict, trial.how = ACCOUNTED, f"sign-in failed visibly, no record ({issued}); signed in again"
    else:
        trial.verdict, trial.how = UNACCOUNTED, "signing in again did not connect"


def table(trials: list[Trial], points: list[str]) -> list[dict[str, str]]:
    """One row per crash point, in the order given: kills, verdict counts, and how each verdict came about."""
    rows = []
    for point in points:
        here = [trial for trial in trials if trial.point == point]
        counts = Counter(trial.verdict for trial in here)
        rows.append(
            {
                "point": point,
                "kills": str(len(here)),
                **{verdict: str(counts[verdict]) for verdict in VERDICTS},
                "how": "; ".join(sorted({trial.how for trial in here})),
            }
        )
    return rows
