"""AccountsPerEndUser (issue 20 item 2): `one` keeps the rule that an end user has one Smartsheet account connected,
`many` lets an end user own several connections. In both, one Smartsheet account is never bound to two end users."""

from __future__ import annotations

from typing import Any

import pytest
from smartsheet_oauth.config import load_config
from smartsheet_oauth.domain.errors import BindingConflict, ConfigError
from smartsheet_oauth.flows.connect import check_binding
from smartsheet_oauth.stores.connection_records import Connection

from infra.scripts.sam_translate import load_template, translate
from tests.unit.test_config import BASE

ADA, GRACE, ALAN = "4583173393803140", "6812335718217604", "9007199254740993"


def test_the_default_is_one_account_per_end_user() -> None:
    assert load_config(BASE).accounts_per_end_user == "one"


@pytest.mark.parametrize(("raw", "read"), [("one", "one"), ("many", "many"), (" Many ", "many"), ("", "one")])
def test_the_setting_is_read(raw: str, read: str) -> None:
    assert load_config({**BASE, "ACCOUNTS_PER_END_USER": raw}).accounts_per_end_user == read


@pytest.mark.parametrize("raw", ["two", "several", "1", "one,many"])
def test_a_bad_value_fails_the_cold_start_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="ACCOUNTS_PER_END_USER") as info:
        load_config({**BASE, "ACCOUNTS_PER_END_USER": raw})
    assert info.value.variable == "ACCOUNTS_PER_END_USER"
    assert "one or many" in str(info.value)


def test_the_template_parameter_admits_what_the_config_reads_and_defaults_to_one() -> None:
    spec = load_template()["Parameters"]["AccountsPerEndUser"]

    assert spec["Default"] == "one"
    assert spec["AllowedValues"] == ["one", "many"]
    for value in spec["AllowedValues"]:
        assert load_config({**BASE, "ACCOUNTS_PER_END_USER": value}).accounts_per_end_user == value


def test_every_function_that_binds_connections_reads_the_parameter() -> None:
    """The callback (a connect session's sign-in), the management API (completions, reconnects, imports) and the
    refresh function, whose configuration the admin CLI's `import` runs with (infra/admin)."""
    resources = translate()["Resources"]
    reading = {
        logical_id
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"].get("Environment", {}).get("Variables", {}).get("ACCOUNTS_PER_END_USER")
        == {"Ref": "AccountsPerEndUser"}
    }
    assert reading >= {"CallbackFunction", "ManagementFunction", "RefreshFunction"}


# -------------------------------------------------------------------------------------------------- check_binding
def connection(connection_id: str, end_user_id: str | None, status: str = "active") -> Connection:
    return Connection(
        connection_id=connection_id,
        status=status,
        secret_arn="",
        email="",
        scopes="READ_SHEETS",
        region="us",
        access_expires_at=0,
        refresh_due_at=None,
        generation=1,
        lease_until=None,
        failures=0,
        last_error=None,
        created_at=0,
        updated_at=0,
        end_user_id=end_user_id,
    )


class Connections:
    """The two reads check_binding makes of the connections table: a record by id, an end user's pages (one each)."""

    def __init__(self, *records: Connection) -> None:
        self.records = {record.connection_id: record for record in records}
        self.pages = 0

    def get(self, connection_id: str) -> Connection | None:
        return self.records.get(connection_id)

    def page(self, *, limit: int, end_user_id: str, start_key: Any = None) -> tuple[list[Connection], Any]:
        self.pages += 1
        mine = [c for c in self.records.values() if c.end_user_id == end_user_id]
        offset = int(start_key or 0)
        following = offset + 1 if offset + 1 < len(mine) else None  # one a page: the paging is walked
        return mine[offset : offset + 1], following


def check(store: Connections, mode: str, *, end_user_id: str, account: str) -> None:
    check_binding(
        store,  # type: ignore[arg-type]
        end_user_id=end_user_id,
        smartsheet_user_id=account,
        accounts_per_end_user=mode,
        region="eu",
    )


def test_under_one_an_end_user_with_another_account_is_refused() -> None:
    store = Connections(connection(ADA, "user-1"))

    with pytest.raises(BindingConflict) as refused:
        check(store, "one", end_user_id="user-1", account=GRACE)

    assert refused.value.reason == "end_user_has_another_smartsheet_account"
    assert refused.value.existing_connection_id == ADA
    assert refused.value.region == "eu"  # the signing-in account's region, for the refusal's event


def test_under_one_the_other_account_is_found_past_the_first_page() -> None:
    store = Connections(connection(ALAN, "user-1", status="revoked"), connection(ADA, "user-1"))

    with pytest.raises(BindingConflict) as refused:
        check(store, "one", end_user_id="user-1", account=GRACE)

    assert refused.value.existing_connection_id == ADA
    assert store.pages == 2


def test_under_many_an_end_user_may_add_accounts() -> None:
    store = Connections(connection(ADA, "user-1"), connection(ALAN, "user-1"))

    check(store, "many", end_user_id="user-1", account=GRACE)  # no conflict

    assert store.pages == 0  # nothing of the end user's own connections needs reading


@pytest.mark.parametrize("mode", ["one", "many"])
def test_in_both_modes_an_account_bound_to_another_end_user_is_refused(mode: str) -> None:
    store = Connections(connection(ADA, "user-1"))

    with pytest.raises(BindingConflict) as refused:
        check(store, mode, end_user_id="user-2", account=ADA)

    assert refused.value.reason == "smartsheet_account_bound_to_another_end_user"
    assert (refused.value.end_user_id, refused.value.existing_connection_id, refused.value.region) == (
        "user-2",
        ADA,
        "eu",
    )


@pytest.mark.parametrize("mode", ["one", "many"])
def test_in_both_modes_the_same_account_reconnects_and_revoked_bindings_do_not_count(mode: str) -> None:
    store = Connections(connection(ADA, "user-1"), connection(GRACE, "user-2", status="revoked"))

    check(store, mode, end_user_id="user-1", account=ADA)  # the same end user, the same account
    check(store, mode, end_user_id="user-3", account=GRACE)  # its binding ended with its disconnect
