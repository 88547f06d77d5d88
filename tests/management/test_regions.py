"""All four Smartsheet regions in one stack, through the real handlers: /login?region= and a connect session's region
(checked against AllowedRegions), the code exchanged, /users/me asked, the connection refreshed and revoked at its own
region's API, the token client pointed at it, and the same numeric user id from two regions refused.

Two emulators play two regions: each its own users, codes and tokens, so a call sent to the wrong region fails here
as it would at Smartsheet."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.errors import ConditionFailed
from smartsheet_oauth.stores.connections import Connection, ConnectionStore
from smartsheet_oauth_client import BrokerApiError, TokenProvider

from infra.local.smartsheet_emulator import SmartsheetEmulator, User
from tests.management.conftest import RETURN_TO, EventSink, call_management, complete, integrator_tokens
from tests.support.broker import NONCE_COOKIE, Answer, Broker, completion_code

ADA = 4583173393803140  # a US user of the default emulator
EVE = 1234567890123457  # only in the EU
ADA_EU = User(ADA, "ada@example.eu", "Ada", "Europe")  # another person with ADA's number, in the EU


@pytest.fixture(scope="module")
def eu_server() -> Iterator[SmartsheetEmulator]:
    users = [User(EVE, "eve@example.eu", "Eve", "Europa"), ADA_EU]
    with SmartsheetEmulator(users=users, seed=99).start() as emulator:
        yield emulator


@pytest.fixture
def eu(eu_server: SmartsheetEmulator) -> SmartsheetEmulator:
    eu_server.reset_state()
    eu_server.reset_faults()
    eu_server.reset_stats()
    return eu_server


@pytest.fixture
def regional(broker: Broker, eu: SmartsheetEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """The broker with AllowedRegions=us,eu, the EU's authorize page and API at the second emulator."""
    extra = {
        "ALLOWED_REGIONS": "us,eu",
        "SMARTSHEET_AUTHORIZE_URL_EU": eu.authorize_url,
        "SMARTSHEET_API_BASE_URL_EU": eu.api_base_url,
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    broker.env.update(extra)
    services.reset()
    yield broker
    services.reset()


def callback_query(redirect: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}


def sign_in_eu(broker: Broker, eu: SmartsheetEmulator, user_id: int) -> tuple[int, str]:
    answer = broker.login({"region": "eu"})
    assert answer.status == 302, answer.body
    back = callback_query(eu.consent(answer.location, user_id=user_id))
    callback = broker.callback(back, answer.cookie(NONCE_COOKIE))
    return callback.status, callback.body


def eu_connect(
    broker: Broker, eu: SmartsheetEmulator, user_id: int, *, end_user_id: str = "", reconnect: int = 0
) -> Answer:
    """An EU connect session for end_user_id (or a reconnect link of connection `reconnect`) signed in at the EU as
    user_id: the callback's answer."""
    asked = {"connection_id": str(reconnect)} if reconnect else {"end_user_id": end_user_id, "region": "eu"}
    created = call_management("POST", "/connect-sessions", body={**asked, "return_to": RETURN_TO})
    assert created.status == 201, created.body
    started = broker.press_connect(broker.login({"session": created.body["login_url"].split("session=")[1]}))
    return broker.callback(callback_query(eu.consent(started.location, user_id=user_id)), started.cookie(NONCE_COOKIE))


def test_login_with_region_sends_the_browser_to_that_regions_authorize_page_and_keeps_the_region_with_the_state(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    answer = regional.login({"region": "EU"})

    assert answer.status == 302
    url = urlsplit(answer.location)
    assert f"{url.scheme}://{url.netloc}{url.path}" == eu.authorize_url
    [state] = parse_qs(url.query)["state"]
    item = regional.dynamodb.get_item(TableName=regional.state_table, Key={"state": {"S": state}})["Item"]
    assert item["region"] == {"S": "eu"}
    # Without ?region= the stack's default region, as before (its state carries none).
    default = regional.login()
    assert default.location.startswith(regional.emulator.authorize_url)
    [state] = parse_qs(urlsplit(default.location).query)["state"]
    item = regional.dynamodb.get_item(TableName=regional.state_table, Key={"state": {"S": state}})["Item"]
    assert "region" not in item


@pytest.mark.parametrize("region", ["au", "gov", "mars", "", "e u", "é"])
def test_a_region_not_allowed_or_unknown_gets_a_clear_400_page_and_starts_nothing(
    regional: Broker, region: str
) -> None:
    before = regional.dynamodb.scan(TableName=regional.state_table)["Count"]

    answer = regional.login({"region": region} if region else "region=")

    if region == "":  # an empty value is no choice: the default region
        assert answer.status == 302
        return
    assert answer.status == 400, answer.body
    assert "This Smartsheet region is not available" in answer.body
    assert "region=us" in answer.body
    assert "region=eu" in answer.body
    assert answer.headers["Cache-Control"] == "no-store"
    assert regional.dynamodb.scan(TableName=regional.state_table)["Count"] == before
    assert not answer.cookies


def test_without_allowed_regions_only_the_default_region_is_offered(broker: Broker) -> None:
    answer = broker.login({"region": "eu"})

    assert answer.status == 400
    assert "region=us" in answer.body
    assert "region=eu" not in answer.body


def test_a_sign_in_in_another_region_exchanges_there_records_the_region_and_its_tokens_work_only_there(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    status, body = sign_in_eu(regional, eu, EVE)

    assert status == 200, body
    assert "eve@example.eu" in body
    record = regional.connection(EVE)
    assert record is not None
    assert record["region"] == "eu"
    tokens = regional.tokens(EVE)
    assert tokens["region"] == "eu"
    assert eu.access_token_is_live(tokens["access_token"])
    assert not regional.emulator.access_token_is_live(tokens["access_token"])
    assert eu.counts["token.code"] == 1
    assert eu.counts["users_me"] == 1
    assert regional.emulator.counts["token.code"] + regional.emulator.counts["token.refresh"] == 0
    assert regional.emulator.counts["users_me"] == 0


def test_the_sweep_refreshes_each_connection_at_its_own_region(regional: Broker, eu: SmartsheetEmulator) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    assert sign_in_eu(regional, eu, EVE)[0] == 200
    regional.make_due(ADA)
    regional.make_due(EVE)

    regional.sweep()

    assert eu.counts["token.refresh"] == 1
    assert regional.emulator.counts["token.refresh"] == 1
    eve = regional.tokens(EVE)
    assert eve["region"] == "eu"
    assert eu.access_token_is_live(eve["access_token"])
    assert regional.connection(EVE)["generation"] == 2  # type: ignore[index]
    assert regional.connection(EVE)["status"] == "active"  # type: ignore[index]


def test_a_record_without_a_region_is_of_the_stacks_default_region(regional: Broker, eu: SmartsheetEmulator) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    regional.dynamodb.update_item(
        TableName=regional.connections_table,
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="REMOVE #r",
        ExpressionAttributeNames={"#r": "region"},
    )
    regional.make_due(ADA)

    regional.sweep()

    assert regional.emulator.counts["token.refresh"] == 1
    assert eu.counts["token.code"] + eu.counts["token.refresh"] == 0
    assert regional.connection(ADA)["generation"] == 2  # type: ignore[index]
    # The same user signs in again in the default region: no conflict with a record written before regions.
    assert regional.sign_in(user_id=ADA).status == 200
    assert regional.connection(ADA)["region"] == "us"  # type: ignore[index]
    # ...and an EU sign-in of the same number is refused: the record is of the default region.
    assert sign_in_eu(regional, eu, ADA)[0] == 409


def test_a_record_without_a_region_reads_as_the_stacks_default_region_everywhere_and_is_not_rewritten(
    regional: Broker, event_sink: EventSink
) -> None:
    """A connection recorded before regions has no region attribute: the API and events name the stack's default
    region (SMARTSHEET_REGION, here us), never an empty one, and reading it writes nothing."""
    assert regional.sign_in(user_id=ADA).status == 200
    regional.dynamodb.update_item(
        TableName=regional.connections_table,
        Key={"connection_id": {"S": str(ADA)}},
        UpdateExpression="REMOVE #r",
        ExpressionAttributeNames={"#r": "region"},
    )
    event_sink.drain()

    one = call_management("GET", f"/connections/{ADA}")
    listed = call_management("GET", "/connections")
    tagged = call_management("PUT", f"/connections/{ADA}/tags", body={"tags": {"team": "a"}})
    by_tag = call_management("GET", "/connections", query={"tag": "team=a"})
    refreshed = call_management("POST", f"/connections/{ADA}/refresh", body={"min_valid_seconds": 7 * 24 * 3600})

    assert one.body["region"] == "us", one.body
    assert [c["region"] for c in listed.body["connections"] if c["connection_id"] == str(ADA)] == ["us"]
    assert tagged.body["region"] == "us", tagged.body
    assert [c["region"] for c in by_tag.body["connections"]] == ["us"]
    assert refreshed.body["connection"]["region"] == "us", refreshed.body
    item = regional.dynamodb.get_item(TableName=regional.connections_table, Key={"connection_id": {"S": str(ADA)}})
    assert "region" not in item["Item"]  # read as the default, never written back

    gone = call_management("DELETE", f"/connections/{ADA}")

    assert gone.status == 200, gone.body
    events = [event for event in event_sink.drain() if event["detail"]["connection_id"] == str(ADA)]
    assert "Connection Revoked" in {event["detail-type"] for event in events}
    assert {event["detail"]["region"] for event in events} == {"us"}


def test_on_demand_refresh_and_disconnect_go_to_the_connections_region(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    assert sign_in_eu(regional, eu, EVE)[0] == 200
    first = regional.tokens(EVE)

    refreshed = call_management("POST", f"/connections/{EVE}/refresh", body={"min_valid_seconds": 7 * 24 * 3600})
    assert refreshed.status == 200, refreshed.body
    assert refreshed.body["connection"]["region"] == "eu"
    second = regional.tokens(EVE)
    assert second["access_token"] != first["access_token"]
    assert eu.access_token_is_live(second["access_token"])

    gone = call_management("DELETE", f"/connections/{EVE}")

    assert gone.status == 200, gone.body
    assert gone.body["smartsheet"] == "revoked"
    assert not eu.access_token_is_live(second["access_token"])
    assert not eu.refresh_token_is_live(second["refresh_token"])
    assert regional.emulator.counts["token.code"] + regional.emulator.counts["token.refresh"] == 0
    assert regional.emulator.counts["revoke"] == 0


def test_the_token_client_hands_out_the_connections_region_api(
    regional: Broker, eu: SmartsheetEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    assert sign_in_eu(regional, eu, EVE)[0] == 200
    plain = integrator_tokens(regional)  # no overrides: the regions' real API bases

    assert plain.token(str(EVE)).api_base_url == "https://api.smartsheet.eu/2.0"
    assert plain.token(str(ADA)).api_base_url == "https://api.smartsheet.com/2.0"

    # As make dev's banner sets it: each region's API at its emulator (the unsuffixed one is the default's).
    monkeypatch.setenv("SMARTSHEET_BROKER_API_URL", "https://broker.example.com")
    monkeypatch.setenv("SMARTSHEET_BROKER_SECRET_PREFIX", regional.env["TOKEN_SECRET_PREFIX"])
    monkeypatch.setenv("SMARTSHEET_API_BASE_URL", regional.emulator.api_base_url)
    monkeypatch.setenv("SMARTSHEET_API_BASE_URL_EU", eu.api_base_url)
    local = TokenProvider.from_environment(secrets_client=regional.secrets, region="us-east-1")
    eve, ada = local.token(str(EVE)), local.token(str(ADA))
    assert eve.api_base_url == eu.api_base_url
    assert ada.api_base_url == regional.emulator.api_base_url
    assert eu.access_token_is_live(eve.access_token)
    with pytest.raises(ValueError, match="api_base_urls"):
        TokenProvider(api_url="https://b.example.com", secret_prefix="p/", region="us-east-1", api_base_urls={"xx": ""})


def test_the_same_user_id_from_a_second_region_is_refused_and_nothing_changes(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    before = regional.connection(ADA)
    tokens = regional.tokens(ADA)

    status, body = sign_in_eu(regional, eu, ADA)

    assert status == 409, body
    assert "can&#x27;t be connected from this region" in body or "can't be connected from this region" in body
    assert "Smartsheet US" in body
    assert regional.connection(ADA) == before
    assert regional.tokens(ADA) == tokens
    assert regional.emulator.access_token_is_live(tokens["access_token"])
    # The refused sign-in's grant was revoked at its own region, so no token outlives the refusal.
    assert eu.counts["revoke"] == 1
    assert eu.live_grants() == 0


def test_once_the_other_regions_connection_is_disconnected_the_id_is_free(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    assert call_management("DELETE", f"/connections/{ADA}").status == 200

    status, body = sign_in_eu(regional, eu, ADA)

    assert status == 200, body
    record = regional.connection(ADA)
    assert record is not None
    assert (record["region"], record["status"], record["email"]) == ("eu", "active", "ada@example.eu")
    assert eu.access_token_is_live(regional.tokens(ADA)["access_token"])


def test_the_records_condition_refuses_a_region_change_even_when_the_look_before_missed_it(regional: Broker) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    store = services.connection_store()

    with pytest.raises(ConditionFailed):
        store.record_sign_in(
            connection_id=str(ADA),
            secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
            email="ada@example.eu",
            scopes="READ_SHEETS",
            region="eu",
            access_expires_at=2,
            refresh_due_at=1,
            now=1,
            default_region="us",
        )
    assert regional.connection(ADA)["region"] == "us"  # type: ignore[index]


def test_a_connect_session_in_another_region_signs_in_there_and_binds_after_confirmation(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    created = call_management(
        "POST", "/connect-sessions", body={"end_user_id": "user-eu", "return_to": RETURN_TO, "region": "eu"}
    )
    assert created.status == 201, created.body
    assert created.body["region"] == "eu"
    session = created.body["login_url"].split("session=")[1]

    page = regional.login({"session": session})
    assert page.status == 200
    assert urlsplit(eu.authorize_url).netloc in page.headers["Content-Security-Policy"]
    started = regional.press_connect(page)
    assert started.status == 303, started.body
    assert started.location.startswith(eu.authorize_url)
    back = regional.callback(callback_query(eu.consent(started.location, user_id=EVE)), started.cookie(NONCE_COOKIE))
    answer = complete(completion_code(back), "user-eu")

    assert answer.status == 200, answer.body
    assert answer.body["connection"]["region"] == "eu"
    assert answer.body["connection"]["end_user_id"] == "user-eu"
    assert eu.access_token_is_live(regional.tokens(EVE)["access_token"])


def test_a_connect_session_of_the_same_id_in_another_region_returns_region_conflict(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    before = regional.connection(ADA)

    back = eu_connect(regional, eu, ADA, end_user_id="user-x")

    assert back.status == 303
    query = parse_qs(urlsplit(back.location).query)
    assert query["outcome"] == ["failed"]
    assert query["error"] == ["region_conflict"]
    assert query["error_detail"] == ["us"]
    assert regional.connection(ADA) == before
    assert eu.live_grants() == 0


@pytest.mark.parametrize(
    ("region", "error"),
    [("au", "region_not_allowed"), ("mars", "region_not_allowed"), (7, "invalid_request"), (None, "")],
)
def test_a_connect_session_with_a_region_not_allowed_is_a_clear_400(
    regional: Broker, region: object, error: str
) -> None:
    answer = call_management(
        "POST", "/connect-sessions", body={"end_user_id": "user-1", "return_to": RETURN_TO, "region": region}
    )

    if region is None:  # null is no choice: the default region
        assert answer.status == 201, answer.body
        assert answer.body["region"] == "us"
        return
    assert answer.status == 400, answer.body
    assert answer.error == error
    if error == "region_not_allowed":
        assert re.search(r"choose one of: us, eu\b", answer.body["message"])


def test_a_refused_code_in_another_region_offers_to_start_again_in_that_region(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    answer = regional.login({"region": "eu"})
    query = callback_query(eu.consent(answer.location, user_id=EVE))
    query["code"] = "not-a-code-smartsheet-issued"

    refused = regional.callback(query, answer.cookie(NONCE_COOKIE))

    assert refused.status == 400, refused.body
    assert 'href="/login?region=eu"' in refused.body
    assert eu.counts["token.code"] == 1  # refused at the EU, where the sign-in was
    assert regional.emulator.counts["token.code"] == 0


def test_two_regions_in_the_same_instant_the_loser_revokes_its_grant_so_no_live_foreign_token_is_stored(
    regional: Broker, eu: SmartsheetEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert regional.sign_in(user_id=ADA).status == 200
    before = regional.connection(ADA)
    real_get = ConnectionStore.get
    looked: list[str] = []

    def missed_once(self: ConnectionStore, connection_id: str) -> Connection | None:
        looked.append(connection_id)
        # The look before storing runs while the other region's first sign-in has not written its record yet.
        return None if len(looked) == 1 else real_get(self, connection_id)

    monkeypatch.setattr(ConnectionStore, "get", missed_once)

    status, body = sign_in_eu(regional, eu, ADA)

    assert status == 409, body
    assert regional.connection(ADA) == before  # the record refused the region change
    stored = regional.tokens(ADA)
    assert stored["region"] == "eu"  # the window: this pair was stored before its record write was refused...
    assert not eu.access_token_is_live(stored["access_token"])  # ...and its grant revoked at once
    assert not eu.refresh_token_is_live(stored["refresh_token"])
    assert eu.live_grants() == 0


def test_the_management_client_asks_for_a_region_and_reads_the_broker_s_refusal(regional: Broker) -> None:
    management = integrator_tokens(regional).management

    session = management.create_connect_session("user-7", return_to=RETURN_TO, region="eu")
    assert session.region == "eu"
    assert management.create_connect_session("user-8", return_to=RETURN_TO).region == "us"
    with pytest.raises(BrokerApiError) as refused:
        management.create_connect_session("user-9", return_to=RETURN_TO, region="au")
    assert (refused.value.status, refused.value.error) == (400, "region_not_allowed")


def eu_connection_needing_reauth(broker: Broker, eu: SmartsheetEmulator) -> None:
    """EVE connected through an EU connect session as user-eu, then revoked the app at the EU's Smartsheet."""
    assert complete(completion_code(eu_connect(broker, eu, EVE, end_user_id="user-eu")), "user-eu").status == 200
    eu.revoke_user(EVE)
    broker.make_due(EVE)
    broker.sweep()
    assert (broker.connection(EVE) or {}).get("status") == "needs_reauth"


def test_a_reconnect_link_signs_in_at_the_connections_own_region(regional: Broker, eu: SmartsheetEmulator) -> None:
    eu_connection_needing_reauth(regional, eu)

    created = call_management("POST", "/connect-sessions", body={"connection_id": str(EVE), "return_to": RETURN_TO})
    assert created.status == 201, created.body
    assert (created.body["region"], created.body["end_user_id"]) == ("eu", "user-eu")  # the connection's own
    page = regional.login({"session": created.body["login_url"].split("session=")[1]})
    assert urlsplit(eu.authorize_url).netloc in page.headers["Content-Security-Policy"]
    started = regional.press_connect(page)
    assert started.location.startswith(eu.authorize_url)
    back = regional.callback(callback_query(eu.consent(started.location, user_id=EVE)), started.cookie(NONCE_COOKIE))
    answer = complete(completion_code(back), "user-eu")

    assert answer.status == 200, answer.body
    assert answer.body["outcome"] == "reconnected"
    assert (answer.body["connection"]["status"], answer.body["connection"]["region"]) == ("active", "eu")
    assert eu.access_token_is_live(regional.tokens(EVE)["access_token"])


def test_a_reconnect_link_names_no_other_region_than_the_connections(regional: Broker, eu: SmartsheetEmulator) -> None:
    eu_connection_needing_reauth(regional, eu)
    body = {"connection_id": str(EVE), "return_to": RETURN_TO}

    other = call_management("POST", "/connect-sessions", body={**body, "region": "us"})
    same = call_management("POST", "/connect-sessions", body={**body, "region": "EU"})

    assert other.status == 400
    assert other.body["error"] == "invalid_request"
    assert "made in region eu" in other.body["message"]
    assert same.status == 201, same.body
    assert same.body["region"] == "eu"


def test_a_reconnect_link_is_refused_once_its_region_is_no_longer_allowed(
    regional: Broker, eu: SmartsheetEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    eu_connection_needing_reauth(regional, eu)
    monkeypatch.setenv("ALLOWED_REGIONS", "us")
    services.reset()

    answer = call_management("POST", "/connect-sessions", body={"connection_id": str(EVE), "return_to": RETURN_TO})

    assert answer.status == 400
    assert answer.body["error"] == "region_not_allowed"


def test_another_account_on_an_eu_reconnect_link_has_its_grant_revoked_in_the_eu(
    regional: Broker, eu: SmartsheetEmulator
) -> None:
    eu_connection_needing_reauth(regional, eu)
    before = regional.connection(EVE)

    back = eu_connect(regional, eu, ADA, reconnect=EVE)

    assert back.status == 409, back.body
    assert "wrong_account" in back.body
    assert eu.live_grants() == 0  # ADA's EU grant, revoked where it was issued
    assert regional.connection(EVE) == before
    assert regional.connection(ADA) is None


# ------------------------------------------------------------------ events name the sign-in's region, not the stack's
def announced(sink: EventSink) -> list[tuple[str, str, str, str | None]]:
    """(detail-type, connection_id, region, reason) of each event published since the last drain."""
    return [
        (e["detail-type"], e["detail"]["connection_id"], e["detail"]["region"], e["detail"]["reason"])
        for e in sink.drain()
    ]


def test_a_plain_eu_sign_in_is_announced_in_the_eu_and_a_default_one_in_the_default_region(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink
) -> None:
    assert sign_in_eu(regional, eu, EVE)[0] == 200
    assert sign_in_eu(regional, eu, EVE)[0] == 200
    assert regional.sign_in(user_id=ADA).status == 200

    assert announced(event_sink) == [
        ("Connection Created", str(EVE), "eu", None),
        ("Connection Reconnected", str(EVE), "eu", None),
        ("Connection Created", str(ADA), "us", None),
    ]


def test_a_plain_eu_sign_in_of_a_bound_account_announces_its_conflict_in_the_eu(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink
) -> None:
    assert complete(completion_code(eu_connect(regional, eu, EVE, end_user_id="user-eu")), "user-eu").status == 200
    event_sink.drain()

    status, body = sign_in_eu(regional, eu, EVE)

    assert status == 409, body
    assert announced(event_sink) == [("Connection Binding Conflict", str(EVE), "eu", "account_bound_to_an_end_user")]


def test_an_eu_connect_session_refused_at_the_callback_announces_its_conflict_in_the_eu(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink
) -> None:
    assert complete(completion_code(eu_connect(regional, eu, EVE, end_user_id="user-a")), "user-a").status == 200
    event_sink.drain()

    back = eu_connect(regional, eu, EVE, end_user_id="user-b")

    assert back.status == 303
    assert parse_qs(urlsplit(back.location).query)["error"] == ["binding_conflict"]
    assert announced(event_sink) == [
        ("Connection Binding Conflict", str(EVE), "eu", "smartsheet_account_bound_to_another_end_user")
    ]


def test_another_account_on_an_eu_reconnect_link_is_announced_in_the_eu(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink
) -> None:
    eu_connection_needing_reauth(regional, eu)
    event_sink.drain()

    back = eu_connect(regional, eu, ADA, reconnect=EVE)

    assert back.status == 409, back.body
    assert announced(event_sink) == [
        ("Connection Binding Conflict", str(EVE), "eu", "reconnected_with_another_smartsheet_account")
    ]


def test_an_eu_completion_redeemed_for_another_end_user_is_announced_in_the_eu(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink
) -> None:
    code = completion_code(eu_connect(regional, eu, EVE, end_user_id="user-eu"))

    refused = complete(code, "someone-else")

    assert refused.status == 409, refused.body
    assert announced(event_sink) == [("Connection Binding Conflict", str(EVE), "eu", "completed_by_another_end_user")]
    assert eu.live_grants() == 0


def test_an_eu_completion_refused_at_redemption_is_announced_in_the_eu(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink
) -> None:
    # Both sign-ins finish before either code is redeemed: the callback's check passes both, redemption refuses one.
    first = completion_code(eu_connect(regional, eu, EVE, end_user_id="user-a"))
    second = completion_code(eu_connect(regional, eu, EVE, end_user_id="user-b"))

    assert complete(first, "user-a").status == 200
    refused = complete(second, "user-b")

    assert refused.status == 409, refused.body
    assert announced(event_sink) == [
        ("Connection Created", str(EVE), "eu", None),
        ("Connection Binding Conflict", str(EVE), "eu", "smartsheet_account_bound_to_another_end_user"),
    ]


def test_an_eu_completion_that_loses_the_binding_race_is_announced_in_the_eu(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = completion_code(eu_connect(regional, eu, EVE, end_user_id="user-a"))
    second = completion_code(eu_connect(regional, eu, EVE, end_user_id="user-b"))
    assert complete(first, "user-a").status == 200
    event_sink.drain()
    # The look before binding ran before user-a's binding was written: the record's own condition refuses it.
    monkeypatch.setattr("smartsheet_oauth.flows.connect.check_binding", lambda *args, **kwargs: None)

    refused = complete(second, "user-b")

    assert refused.status == 409, refused.body
    assert regional.connection(EVE)["end_user_id"] == "user-a"  # type: ignore[index]
    assert announced(event_sink) == [
        ("Connection Binding Conflict", str(EVE), "eu", "smartsheet_account_bound_to_another_end_user")
    ]


def test_an_eu_connections_lifecycle_is_announced_in_the_eu_throughout(
    regional: Broker, eu: SmartsheetEmulator, event_sink: EventSink
) -> None:
    eu_connection_needing_reauth(regional, eu)  # connected at redemption, then needs_reauth at its sweep
    assert complete(completion_code(eu_connect(regional, eu, EVE, reconnect=EVE)), "user-eu").status == 200
    regional.make_due(EVE)
    regional.sweep()  # a plain refresh: no event
    assert call_management("DELETE", f"/connections/{EVE}").status == 200

    assert [(kind, region) for kind, _, region, _ in announced(event_sink)] == [
        ("Connection Created", "eu"),
        ("Connection Needs Reauth", "eu"),
        ("Connection Recovered", "eu"),
        ("Connection Revoked", "eu"),
    ]
