"""The local stack runs the refresh fan-out from the template: the scheduled dispatcher fills the template's refresh
queue, and the local event source mapping hands batches to the worker function in its own process, keeping only
the messages it reports failed (ReportBatchItemFailures), as Lambda does."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from infra.local.demo import BrokerClient
from infra.local.event_sources import QueueNotDrained, failed_ids
from infra.local.gateway import ScheduleRun
from infra.local.lambda_runtime import Invocation
from infra.local.stack import LocalStack

RECORDS = [{"messageId": "a"}, {"messageId": "b"}, {"messageId": "c"}]
# A refresh message for a connection that does not exist: its lease is refused, the message is done (deleted).
UNKNOWN = {"v": 1, "connection_id": "no-such-connection", "generation": 1, "refresh_due_at": 0}


def test_a_partial_batch_response_keeps_only_the_named_messages() -> None:
    ok = Invocation("r", {"batchItemFailures": [{"itemIdentifier": "b"}]})
    assert failed_ids(ok, RECORDS, partial=True) == {"b"}
    assert failed_ids(Invocation("r", {"batchItemFailures": []}), RECORDS, partial=True) == set()
    assert failed_ids(Invocation("r", None), RECORDS, partial=True) == set()


def test_what_lambda_takes_for_a_failure_of_the_whole_batch() -> None:
    crashed = Invocation("r", None, "Sandbox.Timedout", "Task timed out")
    assert failed_ids(crashed, RECORDS, partial=True) is None
    assert failed_ids(crashed, RECORDS, partial=False) is None
    bad: object
    for bad in ([{"itemIdentifier": "zzz"}], [{"itemIdentifier": ""}], [{}], "b"):
        assert failed_ids(Invocation("r", {"batchItemFailures": bad}), RECORDS, partial=True) is None
    # Without ReportBatchItemFailures on the mapping, a returned list means nothing: the batch succeeded.
    assert (
        failed_ids(Invocation("r", {"batchItemFailures": [{"itemIdentifier": "b"}]}), RECORDS, partial=False) == set()
    )


@pytest.fixture
def queue(local_stack: LocalStack) -> str:
    url: str = local_stack.aws.queue_url("RefreshWorkQueue")
    local_stack.wait_for_queues(timeout=60)
    return url


def attributes(stack: LocalStack, url: str) -> dict[str, int]:
    answer = stack.aws.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    return {k: int(v) for k, v in answer["Attributes"].items()}


def test_the_worker_runs_from_the_template_and_only_a_failed_message_stays(local_stack: LocalStack, queue: str) -> None:
    # The one local poller runs every mapping of the template (the webhook's too, when WebhookUrl is set).
    (poller,) = [p for p in local_stack.pollers if p.source.function == "RefreshWorkerFunction"]
    assert poller.source.report_item_failures
    assert (poller.source.batch_size, poller.source.maximum_concurrency) == (10, 2)  # RefreshWorkerConcurrency
    sqs = local_stack.aws.client("sqs")
    # A message for a connection that does not exist (its lease is refused: done) and one that cannot be read.
    invisible = attributes(local_stack, queue)["ApproximateNumberOfMessagesNotVisible"]
    before = poller.snapshot()
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(UNKNOWN))
    sqs.send_message(QueueUrl=queue, MessageBody="not a refresh")

    local_stack.wait_for_queues(timeout=60)

    batches, failed, _ = poller.snapshot()
    assert failed - before[1] == 1
    assert batches > before[0]
    # The unreadable one waits out the queue's visibility timeout (1,080 s) invisibly; the other is gone.
    assert attributes(local_stack, queue) == {
        "ApproximateNumberOfMessages": 0,
        "ApproximateNumberOfMessagesNotVisible": invisible + 1,
    }


def test_a_batch_the_workers_finish_before_the_dispatcher_returns_counts_for_its_run(
    local_stack: LocalStack, queue: str
) -> None:
    # A worker starts on a message as soon as it is sent: its batch can be done before the dispatcher's function
    # returns. Its outcomes belong to that run all the same (the pollers' counts are taken before the function).
    (poller,) = [p for p in local_stack.pollers if p.source.function == "RefreshWorkerFunction"]
    sqs = local_stack.aws.client("sqs")
    (schedule,) = local_stack.gateway.schedules

    def dispatcher() -> ScheduleRun:
        delivered = poller.snapshot()[0]
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(UNKNOWN))
        deadline = time.monotonic() + 30
        while poller.snapshot()[0] == delivered and time.monotonic() < deadline:
            time.sleep(0.05)
        return ScheduleRun(schedule, {}, Invocation("r", {"queued": 1, "outcomes": {}}))

    around = local_stack.gateway.around_schedule
    assert around is not None
    run = around(dispatcher)

    assert run.invocation.payload["workers"] == {"batches": 1, "failed_messages": 0, "drained": True}


def test_the_drain_gives_up_naming_the_queue_and_what_is_on_it(local_stack: LocalStack, queue: str) -> None:
    sqs = local_stack.aws.client("sqs")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(UNKNOWN), DelaySeconds=3)

    with pytest.raises(QueueNotDrained, match=r"after 1 s: .*RefreshWorkQueue.*: 0 waiting, 1 delayed") as caught:
        local_stack.wait_for_queues(timeout=1)

    assert [b.delayed for b in caught.value.backlogs] == [1]
    local_stack.wait_for_queues(timeout=30)  # delivered once its delay ends, then drained
    assert attributes(local_stack, queue)["ApproximateNumberOfMessages"] == 0


def test_the_scheduled_refresh_goes_through_the_queue_and_reports_the_workers_outcomes(
    local_stack: LocalStack, client: BrokerClient, queue: str
) -> None:
    sign_in = client.login()
    client.consent(sign_in, allow=True)
    assert client.callback(sign_in).status_code == 303  # connected: See Other to the result page
    user = str(local_stack.emulator.users[0].id)
    table = local_stack.table_name("CONNECTIONS_TABLE_NAME")
    local_stack.aws.dynamodb.update_item(
        TableName=table,
        Key={"connection_id": {"S": user}},
        # Due now, and no lease an earlier test of this session's stack may have left on the account.
        UpdateExpression="SET refresh_due_at = :due REMOVE lease_until",
        ExpressionAttributeValues={":due": {"N": "0"}},
    )
    before = local_stack.emulator.counts["token.refresh"]

    (run,) = local_stack.run_schedule()

    payload: dict[str, Any] = run.invocation.payload
    assert payload["queued"] >= 1
    # The run waits for the queue to drain, so the workers' outcomes are in its answer: the refresh was done by then.
    assert payload["workers"]["drained"] is True, json.dumps(payload)
    assert payload["workers"]["batches"] >= 1, json.dumps(payload)
    assert payload["outcomes"]["refreshed"] >= 1, json.dumps(payload)
    assert local_stack.emulator.counts["token.refresh"] >= before + 1, json.dumps(payload)
    item = local_stack.aws.dynamodb.get_item(TableName=table, Key={"connection_id": {"S": user}})["Item"]
    assert int(item["refresh_due_at"]["N"]) > time.time()
    assert attributes(local_stack, queue)["ApproximateNumberOfMessages"] == 0
