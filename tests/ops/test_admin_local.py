"""The admin CLI against a running local stack (moto server, emulator, gateway, functions in their own processes),
found the way `make admin` finds `make dev`'s: through the state file infra/local/dev.py writes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth.stores.sweep_lease import SweepLeases

from infra.admin.cli import main
from infra.local.demo import BrokerClient
from infra.local.stack import LocalStack
from tests.management.test_over_http import signed
from tests.ops.conftest import DevStack
from tests.ops.support import ADA, ALAN, GRACE

pytestmark = pytest.mark.e2e

APP = "https://app.example.com"  # the integrator's app: AllowedReturnTo, where reconnect links return
DEV_STACK = ("ops", {"AllowedReturnTo": APP})  # the module's local stack (conftest.dev_stack)


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Ops:
    stack: LocalStack
    state_file: Path
    client: BrokerClient

    def admin(self, *args: str, ask: str = "") -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--state-file", str(self.state_file), *args], out=out, err=err, ask=lambda _prompt: ask)
        return Run(code, out.getvalue(), err.getvalue())

    def sign_in(self, user: int) -> None:
        attempt = self.client.login()
        self.client.consent(attempt, allow=True, user_id=str(user))
        assert self.client.callback(attempt).status_code == 303  # to /result

    @property
    def table(self) -> str:
        return self.stack.table_name("CONNECTIONS_TABLE_NAME")

    def record(self, user: int) -> dict[str, Any]:
        item = self.stack.aws.dynamodb.get_item(
            TableName=self.table, Key={"connection_id": {"S": str(user)}}, ConsistentRead=True
        )["Item"]
        return {k: int(v["N"]) if "N" in v else v.get("S") for k, v in item.items()}

    def update(self, user: int, expression: str, values: dict[str, Any] | None = None) -> None:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"connection_id": {"S": str(user)}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": {"#status": "status"} if "#status" in expression else None,
            "ExpressionAttributeValues": values,
        }
        self.stack.aws.dynamodb.update_item(**{k: v for k, v in kwargs.items() if v is not None})

    def revoked_events(self) -> list[dict[str, Any]]:
        """ "Connection Revoked" events the broker put on the stack's bus, as an integrator's queue receives them."""
        sqs, bus = self.stack.aws.client("sqs"), self.stack.aws.client("events")
        if not hasattr(self, "_queue"):
            self._queue = sqs.create_queue(QueueName=f"revoked-{os.getpid()}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=self._queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            pattern = {"source": ["smartsheet-oauth-broker"], "detail-type": ["Connection Revoked"]}
            bus.put_rule(Name="revoked", EventPattern=json.dumps(pattern))
            bus.put_targets(Rule="revoked", Targets=[{"Id": "queue", "Arn": arn}])
            return []
        messages = sqs.receive_message(QueueUrl=self._queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]

    def tokens(self, user: int) -> dict[str, Any]:
        secret = self.stack.aws.secretsmanager.get_secret_value(SecretId=self.record(user)["secret_arn"])
        value: dict[str, Any] = json.loads(secret["SecretString"])
        return value


@pytest.fixture(scope="module")
def ops(dev_stack: DevStack) -> Iterator[Ops]:
    client = BrokerClient.of(dev_stack.stack)
    yield Ops(dev_stack.stack, dev_stack.state_file, client)
    client.http.close()


@pytest.fixture
def ada(ops: Ops) -> Iterator[Ops]:
    ops.stack.emulator.reset_faults()
    ops.sign_in(ADA)  # a fresh, active connection whatever the test before did
    yield ops
    ops.stack.emulator.reset_faults()


def test_list_shows_connections_and_filters_by_status(ada: Ops) -> None:
    ada.sign_in(GRACE)

    listing = ada.admin("list")
    ids = ada.admin("list", "--ids", "--status", "active")
    none = ada.admin("list", "--status", "revoked", "--json")

    assert listing.code == 0
    assert str(ADA) in listing.out
    assert "ada@example.com" in listing.out
    assert "active" in listing.out
    assert {str(ADA), str(GRACE)} <= set(ids.out.split())
    assert none.code == 0
    assert all(row["status"] == "revoked" for row in none.json())


def test_show_tells_the_state_of_a_connection_but_never_its_tokens(ada: Ops) -> None:
    tokens = ada.tokens(ADA)

    shown = ada.admin("show", str(ADA))
    as_json = ada.admin("show", str(ADA), "--json")

    assert shown.code == 0
    assert "active" in shown.out
    assert "next refresh" in shown.out
    assert "refresh in flight since" in shown.out
    assert as_json.json()["connection"]["generation"] == ada.record(ADA)["generation"]
    for output in (shown.out, as_json.out):
        assert tokens["access_token"] not in output
        assert tokens["refresh_token"] not in output
    assert ada.admin("show", "123").code == 1


def test_a_connection_recorded_before_regions_shows_the_stacks_default_region(ada: Ops) -> None:
    """No region on the record nor in the secret (written before regions): the stack's default (SmartsheetRegion,
    us here) is shown, never an empty region."""
    ada.stack.aws.dynamodb.update_item(
        TableName=ada.table,
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="REMOVE #r",
        ExpressionAttributeNames={"#r": "region"},
    )
    pair = {k: v for k, v in ada.tokens(ADA).items() if k != "region"}
    ada.stack.aws.secretsmanager.put_secret_value(SecretId=ada.record(ADA)["secret_arn"], SecretString=json.dumps(pair))

    shown = ada.admin("show", str(ADA))
    as_json = ada.admin("show", str(ADA), "--json").json()
    listed = [row for row in ada.admin("list", "--json").json() if row["connection_id"] == str(ADA)]

    assert re.search(r"^region\s+us$", shown.out, re.MULTILINE), shown.out
    assert as_json["connection"]["region"] == "us"
    assert as_json["stored_tokens"]["region"] == "us"
    assert [row["region"] for row in listed] == ["us"]
    assert "region" not in ada.record(ADA)  # read as the default, not written back


def test_refresh_rotates_the_pair_now(ada: Ops) -> None:
    before, generation = ada.tokens(ADA), ada.record(ADA)["generation"]

    run = ada.admin("refresh", str(ADA), "--json", "--verbose")

    assert run.code == 0, run.err
    assert run.json()["outcome"] == "refreshed"  # stdout stays JSON: the library's logs went to stderr
    assert "connection refreshed" in run.err
    after = ada.tokens(ADA)
    assert ada.record(ADA)["generation"] == generation + 1
    assert ada.stack.emulator.refresh_token_is_live(after["refresh_token"])
    assert not ada.stack.emulator.refresh_token_is_live(before["refresh_token"])


def test_refresh_brings_back_a_connection_marked_needs_reauth_while_its_grant_lives(ada: Ops) -> None:
    # What a sweep with a wrong client secret leaves behind: the grant is alive, the record says needs_reauth.
    ada.update(
        ADA,
        "SET #status = :s REMOVE refresh_due_at, due_shard",
        {":s": {"S": "needs_reauth"}},
    )

    run = ada.admin("refresh", str(ADA))

    assert run.code == 0, run.err
    assert "needs_reauth -> active" in run.out
    record = ada.record(ADA)
    assert record["status"] == "active"
    assert record["due_shard"] == "due"  # back in the sweep's index


def test_refresh_of_a_dead_grant_says_the_user_must_sign_in(ada: Ops) -> None:
    ada.sign_in(ALAN)
    ada.stack.emulator.revoke_user(ALAN)

    run = ada.admin("refresh", str(ALAN))

    assert run.code == 1
    assert "must sign in again" in run.out
    assert ada.record(ALAN)["status"] == "needs_reauth"


def test_refresh_while_smartsheet_is_down_changes_nothing_but_the_retry_time(ada: Ops) -> None:
    tokens = ada.tokens(ADA)
    ada.stack.emulator.set_faults(error_rate=1.0, token_only=True)

    run = ada.admin("refresh", str(ADA))

    assert run.code == 1
    assert "transient" in run.out
    assert ada.tokens(ADA) == tokens
    record = ada.record(ADA)
    assert record["status"] == "active"
    assert record["failures"] == 1


def test_disconnect_revokes_at_smartsheet_and_the_user_can_come_back(ada: Ops) -> None:
    ada.sign_in(GRACE)
    tokens = ada.tokens(GRACE)
    secret_arn = ada.record(GRACE)["secret_arn"]
    ada.revoked_events()  # the integrator's queue starts listening

    run = ada.admin("disconnect", str(GRACE), "--yes")

    assert run.code == 0, run.err
    assert "grant revoked at Smartsheet" in run.out
    assert not ada.stack.emulator.refresh_token_is_live(tokens["refresh_token"])
    record = ada.record(GRACE)
    assert record["status"] == "revoked"
    assert "refresh_due_at" not in record
    assert "lease_until" not in record
    assert "DeletedDate" in ada.stack.aws.secretsmanager.describe_secret(SecretId=secret_arn)

    again = ada.admin("disconnect", str(GRACE), "--yes")  # a second run (or one after a partial run) is harmless
    assert again.code == 0, again.err
    (event,) = ada.revoked_events()  # one event, not one per run
    assert event["detail"]["connection_id"] == str(GRACE)
    assert event["detail"]["status"] == "revoked"

    ada.sign_in(GRACE)  # the user signs in again: the secret comes back from its deletion
    assert ada.record(GRACE)["status"] == "active"
    assert "DeletedDate" not in ada.stack.aws.secretsmanager.describe_secret(SecretId=secret_arn)
    assert ada.stack.emulator.refresh_token_is_live(ada.tokens(GRACE)["refresh_token"])


def test_disconnect_with_an_expired_access_token_still_kills_the_grant(ada: Ops) -> None:
    ada.sign_in(ALAN)
    ada.stack.emulator.expire_tokens(ALAN)  # revoke needs a live access token: the CLI refreshes first
    before = ada.tokens(ALAN)

    run = ada.admin("disconnect", str(ALAN), "--yes", "--json")

    assert run.code == 0, run.err
    assert run.json()["smartsheet"] == "revoked"
    assert not ada.stack.emulator.refresh_token_is_live(before["refresh_token"])
    assert ada.record(ALAN)["status"] == "revoked"


def test_disconnect_while_smartsheet_is_down_changes_nothing(ada: Ops) -> None:
    tokens = ada.tokens(ADA)
    ada.stack.emulator.set_faults(error_rate=1.0)  # revoke included

    run = ada.admin("disconnect", str(ADA), "--yes")

    assert run.code == 1
    assert "nothing was changed" in run.err
    record = ada.record(ADA)
    assert record["status"] == "active"
    assert "lease_until" not in record  # the lease was given back
    assert ada.stack.emulator.refresh_token_is_live(tokens["refresh_token"])


def test_disconnect_asks_first_and_does_nothing_unconfirmed(ada: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    from_a_script = ada.admin("disconnect", str(ADA))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    declined = ada.admin("disconnect", str(ADA), ask="no")

    assert from_a_script.code == 1
    assert "--yes" in from_a_script.err
    assert declined.code == 1
    assert "not confirmed" in declined.out
    assert ada.record(ADA)["status"] == "active"


def test_sweep_runs_the_scheduled_function_and_reports(ada: Ops) -> None:
    ada.update(ADA, "SET refresh_due_at = :past", {":past": {"N": "0"}})

    run = ada.admin("sweep", "--json")

    assert run.code == 0, run.err
    report = run.json()  # the refresh function's own report, as the schedule would have produced it
    assert report["dispatched"] >= 1
    assert sum(report["outcomes"].values()) == report["dispatched"]
    assert report["backlog"] == 0
    assert report["skipped"] is False
    text = ada.admin("sweep")
    assert "backlog (due, not reached): 0" in text.out


def test_a_sweep_while_another_runs_does_nothing_and_says_so(ada: Ops) -> None:
    ada.update(ADA, "SET refresh_due_at = :past", {":past": {"N": "0"}})
    generation = ada.record(ADA)["generation"]
    leases = SweepLeases(ada.stack.aws.dynamodb, ada.stack.table_name("STATE_TABLE_NAME"))
    leases.take(owner="a-scheduled-sweep", now=int(time.time()), seconds=600)
    try:
        run = ada.admin("sweep")
        as_json = ada.admin("sweep", "--json").json()
    finally:
        leases.release(owner="a-scheduled-sweep")

    assert run.code == 0, run.err
    assert "sweep skipped" in run.out
    assert "another sweep is running" in run.out
    assert as_json["skipped"] is True
    assert ada.record(ADA)["generation"] == generation  # not refreshed


def test_health_is_ok_until_something_needs_attention(ada: Ops) -> None:
    healthy = ada.admin("health")
    ada.update(
        ADA,
        "SET failures = :f, last_error = :e, access_expires_at = :past",
        {":f": {"N": "3"}, ":e": {"S": "http:503"}, ":past": {"N": "1"}},
    )
    sick = ada.admin("health")
    as_json = ada.admin("health", "--json")

    assert healthy.code == 0, healthy.out
    assert healthy.out.rstrip().endswith("OK")
    assert sick.code == 1
    assert "ATTENTION" in sick.out
    assert "expired access token" in sick.out
    assert f"failing {ADA}: 3 failure(s), last error http:503" in sick.out
    assert as_json.json()["connections"]["expired"] == 1


def test_health_names_users_who_must_connect_again_and_exits_1(ada: Ops) -> None:
    """Issue 22 item 7: health printed OK right under "1 user(s) must sign in again", and exited 0."""
    ada.update(ADA, "SET #status = :s", {":s": {"S": "needs_reauth"}})

    run = ada.admin("health")

    assert run.code == 1, run.out
    assert not run.out.rstrip().endswith("OK")
    assert "ATTENTION" in run.out
    assert "1 connection(s) need their user to connect again" in run.out


def test_list_and_show_name_the_end_user_and_give_a_dead_connection_no_expiry(ada: Ops) -> None:
    ada.update(ADA, "SET #status = :s, end_user_id = :u", {":s": {"S": "needs_reauth"}, ":u": {"S": "user-9"}})
    try:
        listing = ada.admin("list")
        shown = ada.admin("show", str(ADA))
        as_json = ada.admin("show", str(ADA), "--json").json()["connection"]
    finally:
        ada.update(ADA, "REMOVE end_user_id")  # a bound account refuses the next test's plain sign-in

    [row] = [line for line in listing.out.splitlines() if line.startswith(str(ADA))]
    assert "user-9" in row
    assert "- (needs_reauth: no usable token)" in row
    assert " in " not in row  # no "access token expires ... (in 6d)" for a token that does not work
    assert re.search(r"^end user +user-9$", shown.out, re.MULTILINE)
    assert re.search(r"^access token expires +- \(needs_reauth: no usable token\)$", shown.out, re.MULTILINE)
    assert re.search(r"^stored pair expires .*, but not usable: the connection is needs_reauth$", shown.out, re.M)
    # --json: the management API's names and types (GET /connections/{id})
    assert as_json["end_user_id"] == "user-9"
    assert as_json["connection_id"] == as_json["smartsheet_user_id"] == str(ADA)
    assert isinstance(as_json["scopes"], list)
    assert "next_refresh_at" in as_json
    assert "refresh_due_at" not in as_json


def test_reconnect_link_lets_the_same_account_connect_again(ada: Ops) -> None:
    """Issue 20 item 4: an operator hands a needs_reauth connection's user a reconnect link."""
    not_needed = ada.admin("reconnect-link", str(ADA), "--return-to", f"{APP}/connected")
    ada.update(ADA, "SET #status = :s", {":s": {"S": "needs_reauth"}})
    try:
        unbound = ada.admin("reconnect-link", str(ADA), "--return-to", f"{APP}/connected")
        made = ada.admin("reconnect-link", str(ADA), "--return-to", f"{APP}/connected", "--end-user", "user-9")
        as_json = ada.admin("reconnect-link", str(ADA), "--return-to", f"{APP}/x", "--end-user", "user-9", "--json")
        [link] = re.findall(r"^  (http://\S+/login\?session=\S+)$", made.out, re.MULTILINE)
        sign_in = ada.client.connect(link)
        ada.client.consent(sign_in, allow=True, user_id=str(ADA))
        returned = ada.client.callback(sign_in)
        [code] = parse_qs(urlsplit(returned.headers["Location"]).query)["completion_code"]
        redeemed = signed(
            "POST", f"{ada.stack.url}/connect-sessions/complete", {"completion_code": code, "end_user_id": "user-9"}
        )
        record = ada.record(ADA)
    finally:
        ada.update(ADA, "REMOVE end_user_id")  # a bound account refuses the next test's plain sign-in

    assert not_needed.code == 1
    assert "only a needs_reauth connection gets a reconnect link" in not_needed.err
    assert unbound.code == 1
    assert "end_user_id is required" in unbound.err
    assert made.code == 0, made.err
    assert "for end user user-9" in made.out
    assert "this connection's Smartsheet account only" in made.out
    assert returned.status_code == 303
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["outcome"] == "reconnected"
    assert (record["status"], record["end_user_id"]) == ("active", "user-9")
    assert as_json.code == 0
    assert "(region us):" in made.out  # the connection's own region (the local stack's default)
    assert set(as_json.json()) == {
        "end_user_id",
        "connection_id",
        "tags",
        "login_url",
        "expires_at",
        "return_to",
        "region",
    }
    assert as_json.json()["region"] == "us"
    assert as_json.json()["connection_id"] == str(ADA)


def test_tags_are_shown_set_and_removed_with_the_index_kept_in_step(ada: Ops) -> None:
    """Issue 20 item 3: operators change tags from the CLI as the API does."""
    try:
        empty = ada.admin("tags", str(ADA))
        set_ = ada.admin("tags", str(ADA), "--set", "workspace=acme", "--set", "plan=pro tier")
        moved = ada.admin("tags", str(ADA), "--remove", "plan", "--set", "workspace=globex", "--json")
        listed = signed("GET", f"{ada.stack.url}/connections?tag=workspace%3Dglobex").json()["connections"]
        old = signed("GET", f"{ada.stack.url}/connections?tag=workspace%3Dacme").json()["connections"]
        bad = ada.admin("tags", str(ADA), "--set", "a b=c")
        malformed = ada.admin("tags", str(ADA), "--set", "novalue")
    finally:
        cleared = ada.admin("tags", str(ADA), "--clear")

    assert (empty.code, empty.out.strip()) == (0, f"{ADA}: no tags")
    assert set_.code == 0, set_.err
    assert set_.out.splitlines() == ["plan=pro tier", "workspace=acme"]
    assert moved.json() == {"connection_id": str(ADA), "tags": {"workspace": "globex"}}
    assert [c["connection_id"] for c in listed] == [str(ADA)]
    assert old == []
    assert bad.code == 1
    assert "tag key 'a b' is not allowed" in bad.err
    assert malformed.code == 1
    assert "KEY=VALUE" in malformed.err
    assert cleared.code == 0
    assert "tags" not in ada.record(ADA)


def test_without_a_running_dev_stack_the_cli_says_what_to_do(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    missing = main(["--state-file", str(tmp_path / "dev.json"), "health"], out=out, err=err)
    assert missing == 2
    assert "make dev" in err.getvalue()
    assert "--stack" in err.getvalue()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid that is surely gone once waited for
    gone.wait()
    state = tmp_path / "stale.json"
    loopback = "http://127.0.0.1:9"
    state.write_text(json.dumps({"pid": gone.pid, "gateway_url": loopback, "moto_url": loopback}))
    err = io.StringIO()
    assert main(["--state-file", str(state), "list"], out=out, err=err) == 2
    assert "is gone" in err.getvalue()

    with pytest.raises(SystemExit) as usage:
        main(["--region", "eu-west-1", "list"], out=out, err=io.StringIO())
    assert usage.value.code == 2
