"""The JSON log lines an operator searches: a correlation id on every line of an invocation, and the connection
id and outcome on the lines about one connection."""

from __future__ import annotations

from tests.ops.support import ADA, GRACE, captured_logs, log_lines
from tests.support.broker import Broker
from tests.support.events import LambdaContext, http_event, scheduled_event


def test_a_sweeps_lines_carry_the_schedule_event_id_and_each_connections_outcome(broker: Broker) -> None:
    from refresh.app import lambda_handler

    for user in (ADA, GRACE):
        assert broker.sign_in(user_id=user).status == 200
        broker.make_due(user)
    broker.emulator.revoke_user(GRACE)
    event = scheduled_event()

    with captured_logs() as sink:
        lambda_handler(event, LambdaContext(timeout_seconds=60))
    lines = log_lines(sink)

    assert lines
    assert {line["correlation_id"] for line in lines} == {event["id"]}
    about_one = [line for line in lines if "outcome" in line]
    assert {(line["connection_id"], line["outcome"]) for line in about_one} >= {
        (str(ADA), "ok"),
        (str(GRACE), "needs_reauth"),
    }
    (finished,) = [line for line in lines if line["message"] == "sweep finished"]
    assert finished["backlog"] == 0
    assert finished["connections"]["needs_reauth"] == 1


def test_a_refused_callback_logs_its_outcome_under_the_request_id(broker: Broker) -> None:
    from callback.app import lambda_handler

    nonce = "a-nonce-that-must-not-be-logged"
    event = http_event("/callback", {"state": "unknown", "code": "x"}, cookies={"__Host-smartsheet-oauth-nonce": nonce})

    with captured_logs() as sink:
        lambda_handler(event, LambdaContext())
    lines = log_lines(sink)

    assert lines
    assert {line["correlation_id"] for line in lines} == {event["requestContext"]["requestId"]}
    assert any(line.get("outcome") == "bad_state" for line in lines)
    assert nonce not in "\n".join(map(str, lines))
