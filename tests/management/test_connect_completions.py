"""POST /connect-sessions/complete: a completion code binds once, for the end user its session was made for, before
it expires; every other redemption is refused with its own status and error code and binds nothing. AWS storage
failing mid-way gives the code back, and never loses or corrupts the held pair or the account's stored one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from smartsheet_oauth import services
from smartsheet_oauth.domain.errors import ConditionFailed, StorageError
from smartsheet_oauth.platform.observability import metrics
from smartsheet_oauth.stores.completions import CLAIM_SECONDS, KEY_PREFIX, CompletionStore

from tests.management.conftest import (
    RETURN_TO,
    ApiAnswer,
    EventSink,
    call_management,
    complete,
    connect,
    new_session,
)
from tests.ops.support import captured_logs, log_lines
from tests.support.broker import Broker, completion_code

ADA, GRACE = "4583173393803140", "6812335718217604"


def held_code(broker: Broker, end_user_id: str = "user-1", user_id: str = ADA) -> str:
    return completion_code(broker.connect_through(new_session(end_user_id), user_id=user_id))


def completion_items(broker: Broker) -> list[dict[str, Any]]:
    items = broker.dynamodb.scan(TableName=broker.state_table)["Items"]
    return [item for item in items if item["state"]["S"].startswith(KEY_PREFIX)]


def assert_refused(answer: ApiAnswer, status: int, error: str) -> None:
    assert answer.status == status, answer.body
    assert answer.error == error
    assert answer.body["message"]
    assert answer.body["reference"]


def test_a_replayed_code_is_refused_and_changes_nothing(broker: Broker, event_sink: EventSink) -> None:
    code = held_code(broker)
    assert complete(code, "user-1").status == 200
    event_sink.drain()
    record = broker.connection(ADA)

    replayed = complete(code, "user-1")

    assert_refused(replayed, 409, "completion_code_used")
    assert broker.connection(ADA) == record
    assert event_sink.drain() == []
    [item] = completion_items(broker)
    assert "sealed_pair" not in item  # a used code keeps no tokens


def test_a_code_redeemed_for_another_end_user_is_void_and_its_grant_revoked(
    broker: Broker, event_sink: EventSink
) -> None:
    code = held_code(broker, "user-1", GRACE)
    grants = broker.emulator.stats()["live_grants"]

    foreign = complete(code, "user-2")
    then_the_right_one = complete(code, "user-1")

    assert_refused(foreign, 409, "end_user_mismatch")
    assert "another end user" in foreign.body["message"]
    assert_refused(then_the_right_one, 409, "completion_code_used")  # void: the link must be started again
    assert broker.connection(GRACE) is None
    assert broker.emulator.stats()["live_grants"] == grants - 1
    [event] = event_sink.drain()
    assert event["detail-type"] == "Connection Binding Conflict"
    assert event["detail"]["reason"] == "completed_by_another_end_user"
    assert event["detail"]["end_user_id"] == "user-1"
    assert event["detail"]["attempted_smartsheet_user_id"] == GRACE


def test_an_expired_code_is_refused_and_its_grant_revoked(broker: Broker) -> None:
    code = held_code(broker)
    [item] = completion_items(broker)
    broker.dynamodb.update_item(
        TableName=broker.state_table,
        Key={"state": item["state"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},  # TTL deletes lazily: the item is still there
    )
    grants = broker.emulator.stats()["live_grants"]

    answer = complete(code, "user-1")

    assert_refused(answer, 409, "completion_code_expired")
    assert broker.connection(ADA) is None
    assert broker.emulator.stats()["live_grants"] == grants - 1
    assert_refused(complete(code, "user-1"), 409, "completion_code_used")


@pytest.mark.parametrize(
    ("body", "status", "error", "says"),
    [
        ({"completion_code": "A" * 43, "end_user_id": "user-1"}, 404, "unknown_completion_code", "never issued"),
        ({"completion_code": "short", "end_user_id": "user-1"}, 400, "invalid_request", "completion_code"),
        ({"completion_code": "A" * 42 + "!", "end_user_id": "user-1"}, 400, "invalid_request", "completion_code"),
        ({"completion_code": 42, "end_user_id": "user-1"}, 400, "invalid_request", "completion_code"),
        ({"completion_code": "A" * 43}, 400, "invalid_request", "end_user_id is required"),
        ({"completion_code": "A" * 43, "end_user_id": "a b"}, 400, "invalid_request", "end_user_id must be"),
        ({"completion_code": "A" * 43, "end_user_id": "u", "extra": 1}, 400, "invalid_request", "unknown field"),
        (None, 400, "invalid_request", "JSON object body is required"),
    ],
)
def test_unknown_and_malformed_redemptions_are_refused(
    broker: Broker, body: Any, status: int, error: str, says: str
) -> None:
    answer = call_management("POST", "/connect-sessions/complete", body=body)

    assert_refused(answer, status, error)
    assert says in answer.body["message"]


def test_a_code_claimed_by_a_redemption_under_way_answers_retry_later(broker: Broker) -> None:
    code = held_code(broker)
    services.completion_store().claim(code, owner="another-request", now=int(time.time()))

    answer = complete(code, "user-1")

    assert_refused(answer, 409, "completion_in_progress")
    assert 1 <= int(answer.headers["Retry-After"]) <= CLAIM_SECONDS
    assert answer.body["retry_after"] == int(answer.headers["Retry-After"])
    assert broker.connection(ADA) is None


def test_concurrent_redemptions_bind_once(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    # Threads in one process share Powertools' metric set; Lambda runs one invocation per environment at a time.
    monkeypatch.setattr(metrics.provider, "flush_metrics", lambda *args, **kwargs: None)
    code = held_code(broker)
    barrier = threading.Barrier(4)
    answers: list[ApiAnswer] = []
    lock = threading.Lock()

    def redeem() -> None:
        barrier.wait()
        answer = complete(code, "user-1")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics.clear_metrics()

    assert sorted(a.status for a in answers) == [200, 409, 409, 409]
    assert {a.error for a in answers if a.status == 409} <= {"completion_code_used", "completion_in_progress"}
    assert broker.connection(ADA)["generation"] == 1  # type: ignore[index]


class FailingOnce:
    """Wraps one collaborator method: the first call fails as AWS storage would, later calls go through."""

    def __init__(self, real: Callable[..., Any], error: StorageError) -> None:
        self.real, self.error, self.calls = real, error, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return self.real(*args, **kwargs)


@pytest.mark.parametrize(
    ("target", "method"),
    [("vault", "save"), ("connections", "record_sign_in"), ("sealer", "open")],
    ids=["secret-write", "record-write", "unseal"],
)
def test_storage_failing_mid_way_gives_the_code_back_and_loses_nothing(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, target: str, method: str
) -> None:
    code = held_code(broker)
    owner: Any = {
        "vault": services.token_vault(),
        "connections": services.connection_store(),
        "sealer": services.token_vault().sealer,
    }[target]
    failing = FailingOnce(getattr(owner, method), StorageError("test", "ThrottlingException", transient=True))
    monkeypatch.setattr(owner, method, failing)

    first = complete(code, "user-1")
    again = complete(code, "user-1")

    assert_refused(first, 503, "storage_unavailable")
    assert again.status == 200, again.body
    assert broker.connection(ADA)["end_user_id"] == "user-1"  # type: ignore[index]
    assert broker.emulator.access_token_is_live(broker.tokens(ADA)["access_token"])


@pytest.mark.parametrize(
    ("failing_method", "message", "status"),
    [("finish", "completion code not marked used", 200), ("release", "completion claim not released", 503)],
)
def test_a_completion_store_failure_logs_its_aws_error_code_as_error_code(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, failing_method: str, message: str, status: int
) -> None:
    """Next to completion codes a log field `code` would read as one: the AWS error code is `error_code`."""
    code = held_code(broker)

    def fails(*_args: Any, **_kwargs: Any) -> None:
        raise StorageError(f"completions.{failing_method}", "ThrottlingException", transient=True)

    monkeypatch.setattr(CompletionStore, failing_method, fails)
    if failing_method == "release":  # release runs only when binding failed: make the secret write fail once
        vault = services.token_vault()
        failing = FailingOnce(vault.save, StorageError("vault.put", "InternalServiceError", transient=True))
        monkeypatch.setattr(vault, "save", failing)

    with captured_logs() as sink:
        assert complete(code, "user-1").status == status
    [line] = [line for line in log_lines(sink) if line["message"] == message]

    assert line["error_code"] == "ThrottlingException"
    assert "code" not in line
    assert code not in sink.getvalue()


def test_an_account_bound_elsewhere_in_the_instant_before_the_record_is_written_is_not_rebound(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, event_sink: EventSink
) -> None:
    code = held_code(broker, "user-2")
    store = services.connection_store()

    def raced(**kwargs: Any) -> bool:
        raise ConditionFailed("connections.sign_in", "ConditionalCheckFailedException", transient=False)

    monkeypatch.setattr(store, "record_sign_in", raced)

    answer = complete(code, "user-2")

    assert_refused(answer, 409, "binding_conflict")
    [event] = event_sink.drain()
    assert event["detail"]["reason"] == "smartsheet_account_bound_to_another_end_user"
    # The pair went into the account's own secret before the record refused: it is a grant of the same account,
    # so it is kept live (revoking it would break that account's connection).
    assert broker.emulator.access_token_is_live(broker.tokens(ADA)["access_token"])


def test_a_sign_in_that_cannot_be_held_revokes_its_grant(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    session = new_session("user-1")

    def hold(self: CompletionStore, *args: Any, **kwargs: Any) -> str:
        raise StorageError("completions.hold", "ProvisionedThroughputExceededException", transient=True)

    monkeypatch.setattr(CompletionStore, "hold", hold)
    grants = broker.emulator.stats()["live_grants"]

    answer = broker.connect_through(session, user_id=ADA)

    assert (answer.status, answer.location) == (303, f"{RETURN_TO}?outcome=failed&error=temporarily_unavailable")
    assert broker.emulator.stats()["live_grants"] == grants  # issued, then revoked
    assert broker.connection(ADA) is None


def test_without_a_sealing_key_nothing_is_held(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    session = new_session("user-1")
    monkeypatch.delenv("PENDING_TOKENS_KEY_ID")
    services.reset()

    answer = broker.connect_through(session, user_id=ADA)

    assert (answer.status, answer.location) == (303, f"{RETURN_TO}?outcome=failed&error=temporarily_unavailable")
    assert completion_items(broker) == []


def test_the_held_pair_is_sealed_to_its_code_account_and_end_user(broker: Broker) -> None:
    held_code(broker)
    [item] = completion_items(broker)

    sealed = bytes(item["sealed_pair"]["B"])
    assert b"access_token" not in sealed  # the TokenSet JSON is encrypted, not just encoded
    assert item["end_user_id"]["S"] == "user-1"
    assert item["smartsheet_user_id"]["S"] == ADA
    assert int(item["expires_at"]["N"]) - int(item["created_at"]["N"]) == 600
    # Moved onto another end user's item, the sealed pair does not open.
    sealer = services.token_vault().sealer
    assert sealer is not None
    with pytest.raises(StorageError):
        sealer.open(sealed, binding=f"connect-completion/v1/{item['state']['S']}/{ADA}/user-2")


def test_redeeming_reconnects_a_disconnected_account_for_its_new_end_user(broker: Broker) -> None:
    connect(broker, "user-1", ADA)
    assert call_management("DELETE", f"/connections/{ADA}").status == 200  # its secret is scheduled for deletion

    answer = connect(broker, "user-2", ADA)

    assert answer.body["outcome"] == "reconnected"
    assert answer.body["connection"]["status"] == "active"
    assert broker.emulator.access_token_is_live(broker.tokens(ADA)["access_token"])
