"""The JSON log lines an operator searches: a correlation id on every line of an invocation, and the connection
id and outcome on the lines about one connection."""

from __future__ import annotations

from tests.ops.support import ADA, GRACE, captured_logs, log_lines
from tests.support.broker import Broker
from tests.support.events import LambdaContext, http_event, scheduled_event


def test_lines_carry_the_invocations_correlation_id_and_each_connections_outcome(broker: Broker) -> None:
    from callback.app import lambda_handler as callback
    from refresh.app import lambda_handler as refresh

    for user in (ADA, GRACE):
        assert broker.sign_in(user_id=user).status == 200
        broker.make_due(user)
    broker.emulator.revoke_user(GRACE)
    schedule = scheduled_event()
    nonce = "a-nonce-that-must-not-be-logged"
    stale = http_event("/callback", {"state": "unknown", "code": "x"}, cookies={"__Host-smartsheet-oauth-nonce": nonce})

    with captured_logs() as sink:
        refresh(schedule, LambdaContext(timeout_seconds=60))
    sweep_lines = log_lines(sink)
    with captured_logs() as sink:
        callback(stale, LambdaContext())
    callback_lines = log_lines(sink)

    # A sweep: the schedule event's id on every line; each connection's line names it and its outcome.
    assert {line["correlation_id"] for line in sweep_lines} == {schedule["id"]}
    about_one = {(line["connection_id"], line["outcome"]) for line in sweep_lines if "outcome" in line}
    assert about_one >= {(str(ADA), "refreshed"), (str(GRACE), "needs_reauth")}
    (finished,) = [line for line in sweep_lines if line["message"] == "sweep finished"]
    assert finished["backlog"] == 0
    assert finished["outcomes"]["needs_reauth"] == 1
    # A refused callback: API Gateway's request id (the page's reference) and the outcome; never the nonce.
    assert {line["correlation_id"] for line in callback_lines} == {stale["requestContext"]["requestId"]}
    assert any(line.get("outcome") == "bad_state" for line in callback_lines)
    assert nonce not in "\n".join(map(str, callback_lines))


def test_a_storage_failure_logs_the_aws_error_code_as_error_code_never_as_code(broker: Broker) -> None:
    """`code` in these logs would read as an OAuth authorization code; an AWS error code is `error_code`."""
    from callback.app import lambda_handler as callback

    location, nonce = broker.start()
    query = broker.consent(location)
    broker.dynamodb.delete_table(TableName=broker.state_table)  # DynamoDB refuses: the state cannot be consumed
    event = http_event("/callback", query, cookies={"__Host-smartsheet-oauth-nonce": nonce})

    with captured_logs() as sink:
        assert callback(event, LambdaContext())["statusCode"] == 503
    [failure] = [line for line in log_lines(sink) if line.get("outcome") == "storage_error"]

    assert failure["error_code"] == "ResourceNotFoundException"
    assert failure["operation"]
    assert "code" not in failure
    assert query["code"] not in sink.getvalue()
