"""The refresh fan-out as the template deploys it, read from the SAM translation: the queue and its dead-letter queue,
the workers' event source mapping, the dispatcher's and the workers' wiring, and the alarms. Each AWS fact here is
from the Lambda and SQS guides (services-sqs-configure, services-sqs-errorhandling, the EventSourceMapping
reference)."""

from __future__ import annotations

from typing import Any

from infra.scripts.sam_translate import load_template, translate

TEMPLATE = translate()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
PARAMETERS: dict[str, Any] = load_template()["Parameters"]
QUEUE = RESOURCES["RefreshWorkQueue"]["Properties"]
DEAD_LETTERS = RESOURCES["RefreshWorkDeadLetterQueue"]["Properties"]
(MAPPING,) = [
    r["Properties"]
    for r in RESOURCES.values()
    if r["Type"] == "AWS::Lambda::EventSourceMapping"
    and r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["RefreshWorkQueue", "Arn"]}
]
WORKER = RESOURCES["RefreshWorkerFunction"]["Properties"]
DISPATCHER = RESOURCES["RefreshFunction"]["Properties"]


def alarms_on(queue: str, metric: str) -> list[dict[str, Any]]:
    return [
        r["Properties"]
        for r in RESOURCES.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("MetricName") == metric
        and r["Properties"].get("Dimensions") == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    ]


def test_the_queue_hides_a_batch_six_times_as_long_as_a_worker_may_run() -> None:
    # AWS: at least six times the function's timeout, so a throttled batch is retried before it shows again; and
    # Lambda refuses a mapping whose function's timeout exceeds the queue's visibility timeout.
    assert int(QUEUE["VisibilityTimeout"]) >= 6 * int(WORKER["Timeout"])


def test_the_mapping_reads_batches_of_ten_reports_partial_failures_and_caps_its_workers() -> None:
    assert MAPPING["EventSourceArn"] == {"Fn::GetAtt": ["RefreshWorkQueue", "Arn"]}
    assert MAPPING["BatchSize"] == 10
    assert MAPPING["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert MAPPING["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "RefreshWorkerConcurrency"}}
    # MaximumConcurrency is 2 to 1,000: a parameter value outside it would fail the deploy.
    assert int(PARAMETERS["RefreshWorkerConcurrency"]["MinValue"]) >= 2
    assert int(PARAMETERS["RefreshWorkerConcurrency"]["MaxValue"]) <= 1000
    # No batching window: a batch goes to a worker as soon as it is there.
    assert "MaximumBatchingWindowInSeconds" not in MAPPING


def test_the_mapping_invokes_the_workers_live_alias() -> None:
    alias = RESOURCES["RefreshWorkerFunctionAliaslive"]
    assert alias["Type"] == "AWS::Lambda::Alias"
    assert MAPPING["FunctionName"] == {"Ref": "RefreshWorkerFunctionAliaslive"}


def test_what_keeps_failing_is_dead_lettered_and_both_queues_are_encrypted() -> None:
    redrive = QUEUE["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RefreshWorkDeadLetterQueue", "Arn"]}
    assert 1 < int(redrive["maxReceiveCount"]) <= 10
    # A dead letter keeps its original enqueue time: the dead-letter queue must keep messages longer than the queue.
    assert int(DEAD_LETTERS["MessageRetentionPeriod"]) > int(QUEUE["MessageRetentionPeriod"])
    for properties in (QUEUE, DEAD_LETTERS):
        assert properties["SqsManagedSseEnabled"] is True
        assert "QueueName" not in properties  # CloudFormation names them: two stacks in one account deploy


def test_the_dead_letters_and_the_oldest_waiting_message_are_alarmed() -> None:
    (dead,) = alarms_on("RefreshWorkDeadLetterQueue", "ApproximateNumberOfMessagesVisible")
    assert dead["Threshold"] == 0
    assert dead["ComparisonOperator"] == "GreaterThanThreshold"
    (behind,) = alarms_on("RefreshWorkQueue", "ApproximateAgeOfOldestMessage")
    assert behind["ComparisonOperator"] == "GreaterThanThreshold"
    # Longer than the longest schedule interval: a healthy queue drains within one dispatch period.
    assert int(behind["Threshold"]) >= 3600
    for alarm in (dead, behind):
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["TreatMissingData"] == "notBreaching"


def test_the_dispatcher_knows_its_queue_and_schedule_and_the_worker_has_no_schedule() -> None:
    variables = DISPATCHER["Environment"]["Variables"]
    assert variables["REFRESH_QUEUE_URL"] == {"Ref": "RefreshWorkQueue"}
    assert variables["REFRESH_SCHEDULE"] == {"Ref": "RefreshSchedule"}
    assert "REFRESH_QUEUE_URL" not in WORKER["Environment"]["Variables"]
    assert WORKER["Handler"] == "refresh.worker.lambda_handler"
    assert not [r for r in RESOURCES.values() if r["Type"] == "AWS::Scheduler::Schedule" and "RefreshWorker" in str(r)]


def test_every_function_writing_due_times_spreads_them_over_the_same_partitions() -> None:
    functions = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::Lambda::Function"]
    assert {str(f["Environment"]["Variables"].get("DUE_SHARDS")) for f in functions} == {str({"Ref": "DueShards"})}
    assert int(PARAMETERS["DueShards"]["MaxValue"]) == 16  # domain/shards.MAX_DUE_SHARDS: all of them are read
