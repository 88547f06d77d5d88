"""The alarm checks: no alarm of the stack is firing (each firing one's own runbook text is its fix), and the alarm
topic has a confirmed subscription, so that someone hears the next one."""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from infra.admin.doctor.checklist import Check, failed, not_here, passed, unchecked
from infra.admin.doctor.readings import ReadError, StackReader, reading

ALARMS: Final = "alarms"
TOPIC: Final = "alarm topic"
PENDING: Final = "PendingConfirmation"  # ListSubscriptionsByTopic's SubscriptionArn until the endpoint confirms
REASON_CHARACTERS: Final = 200
RUNBOOK: Final = "docs/operations.md, Alarms, says what to do"


def _stack_alarms(reader: StackReader) -> list[dict[str, Any]]:
    """Alarms named <stack>-... that notify this stack's topic (a stack named <stack>-staging shares the prefix)."""
    facts = reader.facts
    topic = facts.outputs.get("AlarmTopicArn")
    found: list[dict[str, Any]] = []
    with reading("the stack's alarms", "cloudwatch:DescribeAlarms"):
        pages = reader.client("cloudwatch").get_paginator("describe_alarms")
        for page in pages.paginate(AlarmNamePrefix=f"{facts.name}-", AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
            found += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
    return [alarm for alarm in found if topic is None or topic in alarm.get("AlarmActions", [])]


def runbook_of(description: str) -> str:
    """What the alarm's own description says to do (template.yaml's texts carry a "Do:" part)."""
    _, found, advice = description.partition("Do:")
    return " ".join((advice if found else "").split()) or RUNBOOK


def check_alarms(reader: StackReader) -> Check:
    if reader.facts.local:
        return not_here(ALARMS, "the embedded AWS has no CloudWatch alarms (make dev creates none; AWS evaluates them)")
    try:
        alarms = _stack_alarms(reader)
    except ReadError as exc:
        return unchecked(ALARMS, str(exc), exc.fix)
    if not alarms:
        return failed(
            ALARMS,
            f"no alarm named {reader.facts.name}-... notifies the stack's topic",
            "redeploy (make deploy): the template creates them",
        )
    states = Counter(str(alarm.get("StateValue")) for alarm in alarms)
    firing = sorted((alarm for alarm in alarms if alarm.get("StateValue") == "ALARM"), key=lambda a: a["AlarmName"])
    tally = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    if not firing:
        quiet = " (no data yet: normal on a new or quiet stack)" if states["INSUFFICIENT_DATA"] else ""
        return passed(ALARMS, f"{len(alarms)} alarms, none firing: {tally}{quiet}")
    notes = []
    for alarm in firing:
        reason = " ".join(str(alarm.get("StateReason", "")).split())[:REASON_CHARACTERS]
        since = alarm.get("StateUpdatedTimestamp")
        notes.append(f"{alarm['AlarmName']} since {since:%Y-%m-%d %H:%M}Z: {reason}" if since else alarm["AlarmName"])
        notes.append(f"fix {alarm['AlarmName']}: {runbook_of(str(alarm.get('AlarmDescription', '')))}")
    names = ", ".join(alarm["AlarmName"] for alarm in firing)
    return failed(ALARMS, f"{len(firing)} of {len(alarms)} alarms firing: {names}", "each alarm's fix below", *notes)


def check_alarm_topic(reader: StackReader) -> Check:
    facts = reader.facts
    if facts.local:
        return not_here(TOPIC, "the embedded AWS has no alarm topic (no alarms to send)")
    topic = facts.outputs.get("AlarmTopicArn")
    if not topic:
        return failed(TOPIC, "the stack has no AlarmTopicArn output", "redeploy from this version (make deploy)")
    subscriptions: list[dict[str, Any]] = []
    try:
        with reading("the alarm topic's subscriptions", "sns:ListSubscriptionsByTopic"):
            pages = reader.client("sns").get_paginator("list_subscriptions_by_topic")
            for page in pages.paginate(TopicArn=topic):
                subscriptions += page.get("Subscriptions", [])
    except ReadError as exc:
        if exc.missing:
            return failed(TOPIC, f"the alarm topic {topic} does not exist", "redeploy (make deploy)")
        return unchecked(TOPIC, str(exc), exc.fix)
    # Endpoints are never printed: an https endpoint's URL can carry a chat or paging integration key.
    confirmed = Counter(
        s.get("Protocol", "?") for s in subscriptions if str(s.get("SubscriptionArn")).startswith("arn:")
    )
    pending = Counter(s.get("Protocol", "?") for s in subscriptions if s.get("SubscriptionArn") == PENDING)
    if confirmed:
        kinds = ", ".join(f"{protocol} {count}" for protocol, count in sorted(confirmed.items()))
        waiting = [f"{sum(pending.values())} more wait for confirmation"] if pending else []
        return passed(TOPIC, f"{sum(confirmed.values())} confirmed subscription(s): {kinds}", *waiting)
    subscribe = (
        f"set the AlarmEmail parameter and deploy, then confirm the mail AWS sends; or subscribe a chat or paging "
        f"endpoint: aws sns subscribe --topic-arn {topic} --protocol https --notification-endpoint <url>"
    )
    if pending:
        kinds = ", ".join(f"{protocol} {count}" for protocol, count in sorted(pending.items()))
        return failed(
            TOPIC,
            f"no confirmed subscription: {kinds} wait(s) for confirmation, so nobody hears an alarm yet",
            "click the link in the mail 'AWS Notification - Subscription Confirmation' (or confirm the https "
            f"endpoint); if it was lost or expired, subscribe again: {subscribe}",
        )
    return failed(TOPIC, "the alarm topic has no subscription: nobody hears an alarm", subscribe)
