"""CSRF and login binding (RFC 9700 4.7, RFC 6749 10.12): the state is one-time, 256-bit, bound to the browser by
the nonce cookie (compared in constant time) and expires in code. A state from another browser, used twice, late,
or raced is refused before Smartsheet hears of it."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from smartsheet_oauth.platform.observability import metrics
from smartsheet_oauth.stores.states import nonce_hash

from tests.security.support import Capture, b64url_bytes, smartsheet_api_calls, state_of
from tests.support.broker import NONCE_COOKIE, Broker

ADA = 4583173393803140


def rejections(captured: Capture) -> list[str]:
    return [line["reason"] for line in captured.broker_lines() if line.get("outcome") == "bad_state"]


@pytest.fixture
def shared_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Lambda runs one invocation per environment at a time; threads in one process share Powertools' global
    metric set, and one handler's flush can empty another's (SchemaValidationError). Racing handlers here
    skip the flush; the metric set is cleared afterwards."""
    monkeypatch.setattr(metrics.provider, "flush_metrics", lambda *args, **kwargs: None)
    yield
    metrics.clear_metrics()


def race(count: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run `attempt(i)` in `count` threads released at the same moment; their results in thread order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = attempt(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_state_and_nonce_are_256_bit_one_time_values_bound_by_a_host_only_cookie(broker: Broker) -> None:
    seen: set[str] = set()
    for _ in range(12):
        answer = broker.login()
        state = state_of(answer.location)
        nonce = answer.cookie(NONCE_COOKIE)
        assert nonce
        assert len(b64url_bytes(state)) == 32
        assert len(b64url_bytes(nonce)) >= 32
        assert state not in seen
        assert nonce not in seen
        seen |= {state, nonce}
        [cookie] = answer.cookies
        name, *attributes = [part.strip() for part in cookie.split(";")]
        assert name.startswith("__Host-")  # no Domain, Path=/, Secure: no subdomain can plant or read it
        lowered = {a.lower() for a in attributes}
        assert {"secure", "httponly", "samesite=lax", "path=/", "max-age=600"} <= lowered
        assert not any(a.startswith("domain") for a in lowered)
        # The table keeps only the nonce's hash: a read of the table cannot forge a browser.
        item = broker.dynamodb.get_item(TableName=broker.state_table, Key={"state": {"S": state}})["Item"]
        assert item["nonce_hash"]["S"] == nonce_hash(nonce)
        assert nonce not in str(item)
        assert int(item["expires_at"]["N"]) - int(item["created_at"]["N"]) == 600


def test_the_cookie_is_compared_in_constant_time(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    comparisons: list[tuple[str, str]] = []
    real_compare = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        comparisons.append((a, b))
        return real_compare(a, b)

    # stores/states.py calls hmac.compare_digest through the module: the spy sees every comparison it makes.
    monkeypatch.setattr(hmac, "compare_digest", spy)
    location, nonce = broker.start()
    almost = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")

    assert broker.callback(broker.consent(location, user_id=ADA), almost).status == 400

    assert comparisons == [(nonce_hash(almost), nonce_hash(nonce))]
    assert smartsheet_api_calls(broker.emulator) == {}


def test_a_state_presented_from_another_browser_is_refused_before_smartsheet(broker: Broker, captured: Capture) -> None:
    # The victim's callback (state + code) in the attacker's browser, which has a nonce of its own from /login;
    # and the attacker's callback planted in a browser that never started it (login CSRF): both refused.
    victim_location, victim_nonce = broker.start()
    _, attacker_nonce = broker.start()
    victim_callback = broker.consent(victim_location, user_id=ADA)
    attacker_location, _ = broker.start()
    attacker_callback = broker.consent(attacker_location, user_id=ADA)

    assert broker.callback(victim_callback, attacker_nonce).status == 400
    assert broker.callback(attacker_callback, victim_nonce).status == 400

    assert smartsheet_api_calls(broker.emulator) == {}
    assert rejections(captured) == ["nonce_mismatch", "nonce_mismatch"]
    # One try per state: the right browser now comes too late, and still nothing reaches Smartsheet.
    assert broker.callback(victim_callback, victim_nonce).status == 400
    assert smartsheet_api_calls(broker.emulator) == {}
    assert rejections(captured)[-1] == "unknown_or_used_state"
    assert broker.connections() == []


FORGED_COOKIES = [None, "", " ", "x" * 43, "%00", "\u00e9" * 43, "\ud800", "=", "a=b; c=d"]


def test_a_missing_or_forged_cookie_is_refused_before_smartsheet(broker: Broker, subtests: pytest.Subtests) -> None:
    for cookie in FORGED_COOKIES:
        with subtests.test(cookie=cookie):
            location, _ = broker.start()

            answer = broker.callback(broker.consent(location, user_id=ADA), cookie)

            assert answer.status == 400
            assert "<title>Finish in the browser where you started</title>" in answer.body  # worded for the case
    assert smartsheet_api_calls(broker.emulator) == {}


def test_a_state_works_once(broker: Broker, captured: Capture) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    assert broker.callback(query, nonce).status == 200
    calls = smartsheet_api_calls(broker.emulator)
    assert calls["token"] == 1

    assert broker.callback(query, nonce).status == 400  # the same browser again
    _, other_nonce = broker.start()
    assert broker.callback(query, other_nonce).status == 400  # another browser

    assert smartsheet_api_calls(broker.emulator) == calls  # no token request for either replay
    assert rejections(captured) == ["unknown_or_used_state", "unknown_or_used_state"]
    assert (
        broker.dynamodb.get_item(TableName=broker.state_table, Key={"state": {"S": query["state"]}}).get("Item") is None
    )


def test_expiry_is_checked_in_code_to_the_second_although_the_table_still_holds_the_state(
    broker: Broker, captured: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB's TTL deletes lazily (up to days later): the item is there, its time is up, the code says no."""
    import callback.app

    started = int(time.time())
    clock = {"now": float(started)}

    class Clock:
        @staticmethod
        def time() -> float:
            return clock["now"]

    monkeypatch.setattr(callback.app, "time", Clock)
    late_location, late_nonce = broker.start()
    late = broker.consent(late_location, user_id=ADA)
    in_time_location, in_time_nonce = broker.start()
    in_time = broker.consent(in_time_location, user_id=ADA)
    expiries = []
    for query in (late, in_time):
        item = broker.dynamodb.get_item(TableName=broker.state_table, Key={"state": {"S": query["state"]}})["Item"]
        expiries.append(int(item["expires_at"]["N"]))
        assert expiries[-1] - int(item["created_at"]["N"]) == 600

    clock["now"] = float(expiries[0])  # the very second it expires
    answer = broker.callback(late, late_nonce)

    assert answer.status == 400
    assert "<title>This sign-in took too long</title>" in answer.body
    assert rejections(captured) == ["expired_state"]
    assert smartsheet_api_calls(broker.emulator) == {}
    assert broker.connections() == []

    clock["now"] = float(expiries[1] - 1)  # one second to spare
    assert broker.callback(in_time, in_time_nonce).status == 200
    assert smartsheet_api_calls(broker.emulator)["token"] == 1


@pytest.mark.usefixtures("shared_process")
def test_a_stolen_state_raced_from_other_browsers_never_reaches_smartsheet(broker: Broker, captured: Capture) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    foreign = [broker.start()[1] for _ in range(6)]

    statuses = race(6, lambda i: broker.callback(query, foreign[i]).status)

    assert statuses == [400] * 6
    # One atomic consume: exactly one attempt found the state (and the wrong cookie); the rest found nothing.
    assert sorted(rejections(captured)) == ["nonce_mismatch"] + ["unknown_or_used_state"] * 5
    assert broker.callback(query, nonce).status == 400
    assert smartsheet_api_calls(broker.emulator) == {}
    assert broker.connections() == []


@pytest.mark.usefixtures("shared_process")
def test_the_owner_racing_an_attacker_never_lets_the_attacker_through(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)
    attackers = [broker.start()[1] for _ in range(3)]
    cookies = [nonce, *attackers]

    statuses = race(4, lambda i: broker.callback(query, cookies[i]).status)

    # Whoever consumed the state first, only the owner's browser can ever get past it.
    assert statuses[1:] == [400, 400, 400]
    assert statuses[0] in (200, 400)
    assert smartsheet_api_calls(broker.emulator).get("token", 0) == (1 if statuses[0] == 200 else 0)


@pytest.mark.usefixtures("shared_process")
def test_concurrent_callbacks_from_the_right_browser_exchange_the_code_once(broker: Broker) -> None:
    location, nonce = broker.start()
    query = broker.consent(location, user_id=ADA)

    statuses = race(5, lambda _: broker.callback(query, nonce).status)

    assert sorted(statuses) == [200, 400, 400, 400, 400]
    assert smartsheet_api_calls(broker.emulator) == {"token": 1, "users_me": 1}
