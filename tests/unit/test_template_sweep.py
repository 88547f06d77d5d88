"""How the schedule invokes the sweep, read from the SAM translation: which alias, what Lambda does with a sweep that
fails (EventInvokeConfig), where each kind of failure lands, and that each landing place is alarmed and says so."""

from __future__ import annotations

from typing import Any

from infra.scripts.sam_translate import load_template, translate

TEMPLATE = translate()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
SCHEDULE = RESOURCES["RefreshFunctionSweep"]["Properties"]
(INVOKE_CONFIG,) = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
SHORTEST_SCHEDULE_SECONDS = 15 * 60  # RefreshSchedule's pattern (tests/unit/test_refresh_schedule.py)


def queue_alarm(queue: str) -> dict[str, Any]:
    (alarm,) = [
        r["Properties"]
        for r in RESOURCES.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("Dimensions") == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    ]
    description = alarm["AlarmDescription"]
    alarm["text"] = description["Fn::Sub"] if isinstance(description, dict) else description
    found: dict[str, Any] = alarm
    return found


def test_the_schedule_invokes_the_live_alias_the_async_settings_apply_to() -> None:
    alias = RESOURCES["RefreshFunctionAliaslive"]["Properties"]
    assert SCHEDULE["Target"]["Arn"] == {"Ref": "RefreshFunctionAliaslive"}
    # An EventInvokeConfig on another qualifier ($LATEST, a version) would leave the alias on Lambda's defaults:
    # two retries, six hours of event age, no destination.
    assert INVOKE_CONFIG["FunctionName"] == {"Ref": "RefreshFunction"}
    assert INVOKE_CONFIG["Qualifier"] == alias["Name"] == load_template()["Globals"]["Function"]["AutoPublishAlias"]


def test_a_failed_sweep_is_not_retried_and_a_stale_one_is_dropped_before_the_next_is_due() -> None:
    # A retry of a crashed or timed-out sweep can only meet the next scheduled one; the next one does the work.
    assert INVOKE_CONFIG["MaximumRetryAttempts"] == 0
    assert 60 <= INVOKE_CONFIG["MaximumEventAgeInSeconds"] <= SHORTEST_SCHEDULE_SECONDS


def test_each_kind_of_failure_has_its_own_queue() -> None:
    on_failure = INVOKE_CONFIG["DestinationConfig"]["OnFailure"]["Destination"]
    dead_letters = SCHEDULE["Target"]["DeadLetterConfig"]["Arn"]
    assert on_failure == {"Fn::GetAtt": ["FailedSweepQueue", "Arn"]}
    assert dead_letters == {"Fn::GetAtt": ["RefreshDeadLetterQueue", "Arn"]}
    for queue in ("FailedSweepQueue", "RefreshDeadLetterQueue"):
        assert RESOURCES[queue]["Properties"]["SqsManagedSseEnabled"] is True
        assert RESOURCES[queue]["Properties"]["MessageRetentionPeriod"] == 14 * 86400  # two weeks to look


def test_each_queue_is_alarmed_with_a_text_that_says_what_lands_there_and_what_does_not() -> None:
    failed, undelivered = queue_alarm("FailedSweepQueue"), queue_alarm("RefreshDeadLetterQueue")
    for alarm in (failed, undelivered):
        assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["Statistic"]) == (
            "GreaterThanThreshold",
            0,
            "Maximum",
        )
    assert "crashed" in failed["text"]
    assert "timed out" in failed["text"] or "RefreshTimeoutSeconds" in failed["text"]
    assert "does not retry" in failed["text"]
    assert "could not hand" in undelivered["text"]
    assert "NOT" in undelivered["text"]
    assert "refresh-failed-sweeps" in undelivered["text"]  # where a sweep that ran and failed goes instead


def test_the_refresh_function_times_out_as_the_parameter_says() -> None:
    function = RESOURCES["RefreshFunction"]["Properties"]
    assert function["Timeout"] == {"Ref": "RefreshTimeoutSeconds"}
    parameter = TEMPLATE["Parameters"]["RefreshTimeoutSeconds"]
    assert 60 < parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"] <= SHORTEST_SCHEDULE_SECONDS
