"""Tags on connections (issue 20 item 3): a connect session's tags land on the connection when its code is redeemed;
the API shows them, lists the connections of one tag through the tag index (a Query, never a Scan), replaces them
(PUT /connections/{id}/tags) with the record and the index changed in one transaction, and a disconnect ends them.
Events carry them. Bad tags are 400s that change nothing. Through the real handlers, moto and the emulator."""

from __future__ import annotations

from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.platform import aws
from smartsheet_oauth.stores.connection_tags import ConnectionTagStore
from smartsheet_oauth_client import BrokerApiError

from tests.management.conftest import (
    RETURN_TO,
    ApiAnswer,
    EventSink,
    call_management,
    complete,
    integrator_tokens,
)
from tests.support.broker import Broker, completion_code

ADA, GRACE, ALAN = "4583173393803140", "6812335718217604", "9007199254740993"


def session(end_user_id: str, **body: Any) -> str:
    answer = call_management(
        "POST", "/connect-sessions", body={"end_user_id": end_user_id, "return_to": RETURN_TO, **body}
    )
    assert answer.status == 201, answer.body
    token: str = answer.body["login_url"].split("session=")[1]
    return token


def connect_tagged(broker: Broker, end_user_id: str, user_id: str, tags: dict[str, str] | None) -> ApiAnswer:
    body = {} if tags is None else {"tags": tags}
    code = completion_code(broker.connect_through(session(end_user_id, **body), user_id=user_id))
    answer = complete(code, end_user_id)
    assert answer.status == 200, answer.body
    return answer


def tagged(query: str) -> list[str]:
    """Every connection id of a listing, page after page (two a page)."""
    ids: list[str] = []
    params: dict[str, str] = {"tag": query, "limit": "2"}
    while True:
        answer = call_management("GET", "/connections", query=params)
        assert answer.status == 200, answer.body
        ids += [c["connection_id"] for c in answer.body["connections"]]
        if answer.body["next"] is None:
            return sorted(ids)
        params["next"] = answer.body["next"]


def index_items(broker: Broker) -> list[tuple[str, str]]:
    items = broker.dynamodb.scan(TableName=broker.env["CONNECTION_TAGS_TABLE_NAME"])["Items"]
    return sorted((item["tag"]["S"], item["connection_id"]["S"]) for item in items)


def put_tags(connection_id: str, body: Any) -> ApiAnswer:
    return call_management("PUT", f"/connections/{connection_id}/tags", body=body)


@pytest.fixture
def no_scans(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing by tag must not Scan: the management function's DynamoDB client refuses to."""

    def refuse(**_: Any) -> None:
        raise AssertionError("a Scan on a listing by tag")

    monkeypatch.setattr(aws.dynamodb(), "scan", refuse)


def test_a_connect_sessions_tags_land_on_the_connection_and_in_its_events(
    broker: Broker, event_sink: EventSink
) -> None:
    tags = {"workspace": "acme", "plan": "pro tier", "region/eu": "yes=really"}

    answer = connect_tagged(broker, "user-1", ADA, tags)

    assert answer.body["connection"]["tags"] == tags
    assert call_management("GET", f"/connections/{ADA}").body["tags"] == tags
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Created"
    assert event["detail"]["tags"] == tags
    assert index_items(broker) == sorted((f"{k}={v}", ADA) for k, v in tags.items())


def test_a_listing_by_one_tag_queries_the_index_and_pages(broker: Broker, no_scans: None) -> None:
    connect_tagged(broker, "user-1", ADA, {"workspace": "acme"})
    connect_tagged(broker, "user-2", GRACE, {"workspace": "acme", "plan": "pro"})
    connect_tagged(broker, "user-3", ALAN, {"workspace": "globex"})

    assert tagged("workspace=acme") == sorted([ADA, GRACE])
    assert tagged("plan=pro") == [GRACE]
    assert tagged("workspace=initech") == []
    only_active = call_management("GET", "/connections", query={"tag": "workspace=globex", "status": "revoked"})
    assert only_active.body == {"connections": [], "next": None}
    untagged = call_management("GET", f"/connections/{ALAN}").body
    assert untagged["tags"] == {"workspace": "globex"}


def test_replacing_tags_moves_the_connection_in_the_index(broker: Broker, event_sink: EventSink) -> None:
    connect_tagged(broker, "user-1", ADA, {"workspace": "acme", "plan": "pro"})
    event_sink.drain()

    answer = put_tags(ADA, {"tags": {"workspace": "globex", "team": "sales"}})

    assert answer.status == 200, answer.body
    assert answer.body["tags"] == {"workspace": "globex", "team": "sales"}
    assert answer.body["connection_id"] == ADA
    assert tagged("workspace=acme") == []
    assert tagged("plan=pro") == []
    assert tagged("workspace=globex") == [ADA]
    assert index_items(broker) == [("team=sales", ADA), ("workspace=globex", ADA)]
    cleared = put_tags(ADA, {"tags": {}})
    assert cleared.body["tags"] == {}
    assert index_items(broker) == []
    assert "tags" not in (broker.connection(ADA) or {})
    assert event_sink.drain() == []  # tags are the integrator's own: changing them is no connection event


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"tags": ["a"]}, "tags must be a JSON object"),
        ({"tags": "a=b"}, "tags must be a JSON object"),
        ({"tags": {f"k{i}": "v" for i in range(11)}}, "11 tags: at most 10"),
        ({"tags": {"": "v"}}, "tag key '' is not allowed"),
        ({"tags": {"a=b": "v"}}, "tag key 'a=b' is not allowed"),
        ({"tags": {"k" * 65: "v"}}, "is not allowed"),
        ({"tags": {"naïve": "v"}}, "tag key 'naïve' is not allowed"),
        ({"tags": {"k": 1}}, "the value of tag 'k' is not allowed"),
        ({"tags": {"k": None}}, "the value of tag 'k' is not allowed"),
        ({"tags": {"k": "v" * 257}}, "the value of tag 'k' is not allowed"),
        ({"tags": {"k": "line\nbreak"}}, "the value of tag 'k' is not allowed"),
        ({"tags": {"k": "v"}, "extra": 1}, "unknown field(s): extra"),
        ({}, "tags is required"),
    ],
)
def test_bad_tags_are_refused_and_change_nothing(broker: Broker, body: dict[str, Any], says: str) -> None:
    connect_tagged(broker, "user-1", ADA, {"workspace": "acme"})
    before = broker.connection(ADA)

    answer = put_tags(ADA, body)
    in_a_session = call_management(
        "POST", "/connect-sessions", body={"end_user_id": "user-2", "return_to": RETURN_TO, **body}
    )

    assert (answer.status, answer.error) == (400, "invalid_request")
    assert says in answer.body["message"]
    assert broker.connection(ADA) == before
    assert index_items(broker) == [("workspace=acme", ADA)]
    if "tags" in body:  # a session refuses the same tags, and no link is made
        assert (in_a_session.status, in_a_session.error) == (400, "invalid_request")
        assert says in in_a_session.body["message"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"tag": "workspace"}, "tag must be key=value"),
        ({"tag": "=acme"}, "tag must be key=value"),
        ({"tag": "work space=acme"}, "tag must be key=value"),
        ({"tag": "workspace=acme", "end_user_id": "user-1"}, "not both"),
        ({"tag": "workspace=acme", "next": "eyJjb25uZWN0aW9uX2lkIjoiMSJ9"}, "next is not a token"),
    ],
)
def test_a_bad_tag_filter_is_a_clear_400(broker: Broker, query: dict[str, str], says: str) -> None:
    answer = call_management("GET", "/connections", query=query)

    assert (answer.status, answer.error) == (400, "invalid_request")
    assert says in answer.body["message"]


def test_a_next_token_works_only_for_its_own_tag(broker: Broker) -> None:
    for user, end_user in ((ADA, "user-1"), (GRACE, "user-2")):
        connect_tagged(broker, end_user, user, {"workspace": "acme", "plan": "pro"})
    first = call_management("GET", "/connections", query={"tag": "workspace=acme", "limit": "1"})

    other = call_management("GET", "/connections", query={"tag": "plan=pro", "next": first.body["next"]})

    assert first.body["next"] is not None
    assert (other.status, other.error) == (400, "invalid_request")


def test_tags_of_an_unknown_or_revoked_connection_are_refused(broker: Broker) -> None:
    connect_tagged(broker, "user-1", ADA, None)
    assert call_management("DELETE", f"/connections/{ADA}").status == 200

    revoked = put_tags(ADA, {"tags": {"workspace": "acme"}})
    unknown = put_tags(GRACE, {"tags": {"workspace": "acme"}})
    malformed = put_tags("ada", {"tags": {}})

    assert (revoked.status, revoked.error) == (409, "revoked")
    assert (unknown.status, unknown.error) == (404, "not_found")
    assert (malformed.status, malformed.error) == (400, "invalid_request")
    assert index_items(broker) == []


def test_a_disconnect_ends_the_tags_and_its_event_still_names_them(broker: Broker, event_sink: EventSink) -> None:
    connect_tagged(broker, "user-1", ADA, {"workspace": "acme"})
    event_sink.drain()

    answer = call_management("DELETE", f"/connections/{ADA}")

    assert answer.status == 200, answer.body
    assert answer.body["connection"]["tags"] == {}
    assert index_items(broker) == []
    assert tagged("workspace=acme") == []
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Revoked"
    assert event["detail"]["tags"] == {"workspace": "acme"}


def test_a_reconnect_keeps_the_tags_unless_its_session_carries_new_ones(broker: Broker) -> None:
    connect_tagged(broker, "user-1", ADA, {"workspace": "acme"})

    again = connect_tagged(broker, "user-1", ADA, None)
    retagged = connect_tagged(broker, "user-1", ADA, {"workspace": "globex"})

    assert again.body["connection"]["tags"] == {"workspace": "acme"}
    assert retagged.body["connection"]["tags"] == {"workspace": "globex"}
    assert index_items(broker) == [("workspace=globex", ADA)]


def test_a_change_made_meanwhile_is_read_again_and_the_index_stays_exact(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect_tagged(broker, "user-1", ADA, {"workspace": "acme"})
    real = ConnectionTagStore._transact
    interfered: list[bool] = []

    def another_writer_first(self: ConnectionTagStore, actions: list[Any]) -> None:
        if not interfered:  # another request sets other tags between this one's read and its write
            interfered.append(True)
            services.connection_tags().replace(ADA, {"owner": "bob"}, now=1)
        real(self, actions)

    monkeypatch.setattr(ConnectionTagStore, "_transact", another_writer_first)

    answer = put_tags(ADA, {"tags": {"workspace": "globex"}})

    assert answer.status == 200, answer.body
    assert answer.body["tags"] == {"workspace": "globex"}
    assert index_items(broker) == [("workspace=globex", ADA)]  # neither acme nor the other writer's owner=bob


def test_a_storage_failure_while_tagging_gives_the_code_back(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    code = completion_code(broker.connect_through(session("user-1", tags={"workspace": "acme"}), user_id=ADA))
    real = ConnectionTagStore._transact
    failures: list[bool] = []

    def throttled_once(self: ConnectionTagStore, actions: list[Any]) -> None:
        if not failures:
            failures.append(True)
            raise StorageError("tags.write", "ThrottlingException", transient=True)
        real(self, actions)

    monkeypatch.setattr(ConnectionTagStore, "_transact", throttled_once)

    first = complete(code, "user-1")
    second = complete(code, "user-1")

    assert (first.status, first.error) == (503, "storage_unavailable")
    assert second.status == 200, second.body
    assert second.body["connection"]["tags"] == {"workspace": "acme"}
    assert index_items(broker) == [("workspace=acme", ADA)]


def test_the_python_client_sets_lists_and_reads_tags(broker: Broker) -> None:
    management = integrator_tokens(broker).management
    for user, end_user in ((ADA, "user-1"), (GRACE, "user-2")):
        connect_tagged(broker, end_user, user, None)

    set_ = management.set_tags(ADA, {"workspace": "acme"})
    listed = [c.connection_id for c in management.list_connections(tag=("workspace", "acme"), page_size=1)]
    link = management.create_connect_session("user-3", return_to=RETURN_TO, tags={"workspace": "acme"})
    with pytest.raises(BrokerApiError) as refused:
        management.set_tags(ADA, {"a=b": "c"})

    assert set_.tags == {"workspace": "acme"}
    assert listed == [ADA]
    assert management.get_connection(ADA).tags == {"workspace": "acme"}
    assert management.get_connection(GRACE).tags == {}
    assert link.login_url
    assert (refused.value.status, refused.value.error) == (400, "invalid_request")


def test_a_tags_listing_reads_its_own_connections_whatever_the_tables_size(broker: Broker, no_scans: None) -> None:
    """The figure behind the design: listing one tag costs one Query of the tag index and one BatchGetItem of that
    page's records, and reads only the tagged records, however many connections the table holds (a Scan with a
    filter would read all of them, and pay for all of them)."""
    store, tags = services.connection_store(), services.connection_tags()
    for n in range(300):
        store.record_sign_in(
            connection_id=str(10_000 + n),
            secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
            email="",
            scopes="READ_SHEETS",
            region="us",
            access_expires_at=2_000_000_000,
            refresh_due_at=1_999_000_000,
            now=1,
        )
        tags.replace(str(10_000 + n), {"workspace": "acme" if n % 30 == 0 else f"w{n}"}, now=1)
    calls: list[tuple[str, int]] = []

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        keys = params.get("RequestItems", {}).get(broker.connections_table, {}).get("Keys", [])
        calls.append((model.name, len(keys)))

    aws.dynamodb().meta.events.register("before-parameter-build.dynamodb", count)

    listed = call_management("GET", "/connections", query={"tag": "workspace=acme", "limit": "100"})

    assert sorted(c["connection_id"] for c in listed.body["connections"]) == [
        str(10_000 + n) for n in range(0, 300, 30)
    ]
    assert listed.body["next"] is None
    assert calls == [("Query", 0), ("BatchGetItem", 10)]  # 10 records read of 300
