"""template.yaml's alarms, topic and dashboard: present, actionable, and watching metrics the code really emits."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from smartsheet_oauth.domain.errors import ANSWERS, API

from infra.admin.target import REQUIRED_OUTPUTS
from infra.local.template_model import (
    LOCAL_ACCOUNT_ID,
    PhysicalResource,
    Resolver,
    Template,
    TemplateError,
    synthesize_physical,
)
from tests.ops.conftest import Recorded
from tests.ops.support import metric_names
from tests.support.metric_catalog import EMITTED, WHERE_TO_ADD

TEMPLATE = Template.load()
STACK = "broker-prod"
ALARM = "AWS::CloudWatch::Alarm"
# Metric math's own words; every other identifier in an expression must be an Id of the same alarm or widget.
MATH_WORDS = frozenset({"IF", "FILL", "AND", "OR", "NOT", "SUM", "MAX", "MIN", "AVG", "METRICS", "REPEAT", "LINEAR"})


def resolver(stack: str = STACK, **parameters: str) -> Resolver:
    def physical(logical_id: str) -> PhysicalResource:  # a queue's is its URL, with QueueName among its attributes
        return synthesize_physical(TEMPLATE, logical_id, stack, "eu-west-1", LOCAL_ACCOUNT_ID)

    return Resolver(
        TEMPLATE,
        stack_name=stack,
        region="eu-west-1",
        parameters={"SmartsheetClientId": "abc", **parameters},
        physical=physical,
    )


def alarms(r: Resolver) -> dict[str, dict[str, Any]]:
    """The alarms the stack has (their Condition true), resolved."""
    return {
        lid: r.resolve(res["Properties"]) for lid, res in TEMPLATE.resources_of_type(ALARM).items() if r.is_active(lid)
    }


# With WebhookUrl: the webhook delivery function and its alarms exist too.
WITH_WEBHOOK = {"WebhookUrl": "https://hooks.example.com/broker"}


def active_functions(r: Resolver) -> list[str]:
    return [lid for lid in TEMPLATE.resources_of_type("AWS::Serverless::Function") if r.is_active(lid)]


def dashboard(r: Resolver) -> dict[str, Any]:
    (body,) = [
        r.resolve(res["Properties"])["DashboardBody"]
        for res in TEMPLATE.resources_of_type("AWS::CloudWatch::Dashboard").values()
    ]
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def alarm_metrics(props: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(namespace, metric name, dimensions) of every metric an alarm reads."""
    if "MetricName" in props:
        yield props["Namespace"], props["MetricName"], {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
    for query in props.get("Metrics", []):
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            yield metric["Namespace"], metric["MetricName"], {d["Name"]: d["Value"] for d in metric["Dimensions"]}


def widget_metrics(body: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, str]]]:
    for widget in body["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], dict):  # an expression
                continue
            plain = [item for item in row if not isinstance(item, dict)]
            yield plain[0], plain[1], dict(zip(plain[2::2], plain[3::2], strict=True))


def every_metric(r: Resolver) -> list[tuple[str, str, dict[str, str]]]:
    found = [ref for props in alarms(r).values() for ref in alarm_metrics(props)]
    return found + list(widget_metrics(dashboard(r)))


def function_environment(r: Resolver) -> dict[str, str]:
    """The functions' environment: the one they share (the Globals), with what one function has of its own (the
    refresh dispatcher's queue and schedule); no variable may differ between two functions."""
    merged: dict[str, str] = {}
    for spec in r.functions():
        for name, value in spec.environment.items():
            assert merged.setdefault(name, value) == value, f"{name} differs between the functions"
    return merged


# ------------------------------------------------------------------------------------------------------ tests
def test_alarms_and_dashboard_watch_only_metrics_the_code_emits_with_its_namespace_and_dimension(
    recorded: Recorded,
) -> None:
    emitted = metric_names([blob for blobs in recorded.values() for blob in blobs])
    r = resolver()
    env = function_environment(r)
    namespace = env["POWERTOOLS_METRICS_NAMESPACE"]

    ours = [(name, dims) for ns, name, dims in every_metric(r) if ns == namespace]
    assert len(ours) > 30
    assert emitted <= EMITTED  # what the scenarios made the real handlers print is catalogued
    for name, dims in ours:
        # Powertools' only dimension is `service` (POWERTOOLS_SERVICE_NAME): an alarm with others never fires.
        assert dims == {"service": env["POWERTOOLS_SERVICE_NAME"]}, name
    assert {ns for ns, _, _ in every_metric(r)} == {namespace, "AWS/Lambda", "AWS/SQS"}


def test_every_metric_the_code_emits_is_alarmed_or_shown_and_nothing_watches_a_metric_never_emitted() -> None:
    r = resolver()
    namespace = function_environment(r)["POWERTOOLS_METRICS_NAMESPACE"]
    watched = {name for ns, name, _ in every_metric(r) if ns == namespace}

    unwatched = sorted(EMITTED - watched)
    phantom = sorted(watched - EMITTED)

    assert not unwatched, f"emitted but neither alarmed nor on the dashboard: {unwatched}; alarm or show each"
    assert not phantom, (
        f"template.yaml's alarms or dashboard read {phantom}, which the code never emits: such an alarm never "
        f"fires. Fix the name, or if the code does emit it, {WHERE_TO_ADD}"
    )


def test_every_literal_metric_name_in_the_code_is_catalogued() -> None:
    # The autouse guard in tests/conftest.py catches every name a test makes the code emit; this catches the
    # literal ones on paths no test takes.
    found = literal_metric_names()
    assert len(found) > 20, "the source reading is stale: teach literal_metric_names() the emitters"
    assert found <= EMITTED, f"{sorted(found - EMITTED)}: {WHERE_TO_ADD}"


def test_every_sweep_reports_sweep_dispatched_as_it_starts_even_with_nothing_dispatched(recorded: Recorded) -> None:
    # The sweep-not-running alarm counts sweep_dispatched's datapoints (SampleCount), not their sum: a sweep that
    # dispatched nothing must still send one, and so it does as it starts (a 0, flushed at once).
    swept = [blobs for blobs in recorded.values() if any("refresh_ok" in metric_names([blob]) for blob in blobs)]
    assert swept
    for blobs in swept:
        first = next(blob for blob in blobs if "sweep_dispatched" in metric_names([blob]))
        assert metric_names([first]) == {"sweep_dispatched"}, "the heartbeat goes out before the sweep's work"
        assert first["sweep_dispatched"] in (0, [0], 0.0, [0.0])
    (alarm,) = [p for p in alarms(resolver()).values() if p.get("MetricName") == "sweep_dispatched"]
    assert alarm["Statistic"] == "SampleCount"
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["TreatMissingData"]) == (
        "LessThanThreshold",
        1,
        "breaching",
    )


def test_the_dashboard_shows_every_figure_an_operator_needs() -> None:
    shown = {name for _, name, _ in widget_metrics(dashboard(resolver()))}

    assert {
        "login_started",
        *(f"callback_{o}" for o in ("success", "denied", "bad_state", "smartsheet_error")),
        *(f"refresh_{o}" for o in ("ok", "transient", "needs_reauth", "lease_busy")),
        "sweep_duration",
        "sweep_lag",
        "sweep_skipped",
        "sweep_backlog",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "Throttles",
    } <= shown
    body = dashboard(resolver())
    kinds = {widget["type"] for widget in body["widgets"]}
    assert {"metric", "alarm", "log", "text"} <= kinds


def watched_names(props: Mapping[str, Any]) -> set[str]:
    """An alarm's metrics by name; a queue's metric by the queue's logical id too (two queues, two alarms)."""
    names = set()
    for _, name, dims in alarm_metrics(props):
        names.add(name)
        names |= {f"queue:{lid}" for lid in QUEUES if dims.get("QueueName") == resolver().get_att(lid, "QueueName")}
    return names


QUEUES = ("RefreshDeadLetterQueue", "FailedSweepQueue")


@pytest.mark.parametrize(
    ("watched", "what"),
    [
        ({"refresh_transient", "refresh_ok"}, "refresh failures rising"),
        ({"refresh_needs_reauth"}, "needs_reauth spike"),
        ({"refresh_lost", "management_refresh_lost"}, "a grant lost by us (sweep or on-demand)"),
        ({"refresh_kept", "management_refresh_kept"}, "refreshed pairs kept, not stored, hour after hour"),
        ({"sweep_backlog"}, "sweep backlog"),
        ({"sweep_dispatched"}, "no sweep reported for two periods"),
        ({"queue:RefreshDeadLetterQueue"}, "ticks Scheduler could not deliver"),
        ({"queue:FailedSweepQueue"}, "sweeps that started and failed"),
        ({"Errors"}, "function errors"),
        ({"Throttles"}, "function throttles"),
        ({"callback_success", "callback_smartsheet_error", "callback_denied"}, "callback error ratio"),
    ],
)
def test_each_alarm_the_issue_asks_for_exists_and_says_what_to_do(watched: set[str], what: str) -> None:
    r = resolver()
    matching = [props for props in alarms(r).values() if watched <= watched_names(props)]

    assert len(matching) == 1, what
    (props,) = matching
    assert "Do:" in props["AlarmDescription"], what
    assert len(props["AlarmDescription"]) <= 1024
    assert props["AlarmActions"] == props["OKActions"] == [r.ref("AlarmTopic")]
    assert props["AlarmName"].startswith(f"{STACK}-")  # the CLI's health finds firing alarms by this prefix


def test_every_alarm_notifies_the_topic_both_ways_and_says_what_to_do() -> None:
    r = resolver()
    for lid, props in alarms(r).items():
        assert props["AlarmActions"] == props["OKActions"] == [r.ref("AlarmTopic")], lid
        assert "Do:" in props["AlarmDescription"], lid
        assert props["TreatMissingData"] in {"notBreaching", "ignore", "breaching"}, lid


@pytest.mark.parametrize("parameters", [{}, WITH_WEBHOOK], ids=["default", "with-webhook"])
def test_lambda_alarms_cover_every_function_of_the_template(parameters: dict[str, str]) -> None:
    r = resolver(**parameters)
    functions = {r.ref(lid) for lid in active_functions(r)}
    assert ("WebhookDeliveryFunction" in active_functions(r)) is bool(parameters)
    for metric in ("Errors", "Throttles"):
        watched = {
            dims["FunctionName"]
            for props in alarms(r).values()
            for _, name, dims in alarm_metrics(props)
            if name == metric
        }
        assert watched == functions, metric


def test_metric_math_only_uses_ids_it_defines() -> None:
    r = resolver()
    for lid, props in alarms(r).items():
        queries = props.get("Metrics", [])
        if not queries:
            continue
        ids = {query["Id"] for query in queries}
        assert sum(query.get("ReturnData", True) for query in queries) == 1, lid
        assert sum("MetricStat" in query for query in queries) <= 10, lid  # CloudWatch's limit per alarm
        for query in queries:
            if "Expression" in query:
                used = set(re.findall(r"[A-Za-z_]\w*", query["Expression"])) - MATH_WORDS
                assert used <= ids, (lid, used - ids)
    for widget in dashboard(r)["widgets"]:
        rows = widget["properties"].get("metrics", [])
        ids = {item["id"] for row in rows for item in row if isinstance(item, dict) and "id" in item}
        for row in rows:
            if isinstance(row[0], dict) and "expression" in row[0]:
                used = set(re.findall(r"[A-Za-z_]\w*", row[0]["expression"])) - MATH_WORDS
                assert used <= ids, widget["properties"]["title"]


def test_the_email_subscription_is_optional_and_checked() -> None:
    (subscription,) = TEMPLATE.resources_of_type("AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail"
    assert resolver().condition("HasAlarmEmail") is False
    assert resolver(AlarmEmail="ops@example.com").condition("HasAlarmEmail") is True
    assert resolver(AlarmEmail="ops@example.com").resolve(subscription["Properties"])["Endpoint"] == "ops@example.com"
    with pytest.raises(TemplateError, match="AlarmEmail"):
        resolver(AlarmEmail="not an address").parameter("AlarmEmail")


def test_debug_log_sampling_is_a_checked_parameter() -> None:
    assert function_environment(resolver())["POWERTOOLS_LOGGER_SAMPLE_RATE"] == "0"
    assert function_environment(resolver(DebugLogSampleRate="0.05"))["POWERTOOLS_LOGGER_SAMPLE_RATE"] == "0.05"
    with pytest.raises(TemplateError, match="DebugLogSampleRate"):
        function_environment(resolver(DebugLogSampleRate="2"))


def test_two_stacks_in_one_account_never_share_a_metric() -> None:
    staging = {tuple(sorted(d.items())) for ns, _, d in every_metric(resolver("staging")) if ns != "AWS/Lambda"}
    production = {tuple(sorted(d.items())) for ns, _, d in every_metric(resolver("production")) if ns != "AWS/Lambda"}
    assert not staging & production


def test_the_refresh_function_never_scans_a_table() -> None:
    """No step of the sweep may grow with the table: counts by status are the admin CLI's, on an operator's ask."""
    r = resolver()
    (policy,) = r.resolve(TEMPLATE.resources["RefreshFunction"]["Properties"]["Policies"])
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "dynamodb:Scan" not in actions


def test_the_outputs_hold_what_the_admin_cli_looks_for() -> None:
    outputs = TEMPLATE.section("Outputs")
    assert set(REQUIRED_OUTPUTS) <= set(outputs)
    r = resolver()
    assert r.resolve(outputs["RefreshFunctionName"]["Value"]) == r.ref("RefreshFunction")
    assert r.resolve(outputs["ConnectionsTableName"]["Value"]) == r.ref("ConnectionsTable")
    assert "AlarmTopicArn" in outputs
    assert "DashboardUrl" in outputs


@pytest.mark.parametrize("parameters", [{}, WITH_WEBHOOK], ids=["default", "with-webhook"])
def test_the_dashboards_log_widget_reads_every_functions_log_group(parameters: dict[str, str]) -> None:
    r = resolver(**parameters)
    (query,) = [w["properties"]["query"] for w in dashboard(r)["widgets"] if w["type"] == "log"]
    sources = set(re.findall(r"SOURCE '([^']+)'", query))
    groups = {spec_group(r, lid) for lid in active_functions(r)}
    assert sources == groups


def spec_group(r: Resolver, function: str) -> str:
    """The log group a function writes to: its LoggingConfig's, else Lambda's default name."""
    props = TEMPLATE.resources[function]["Properties"]
    configured = (props.get("LoggingConfig") or {}).get("LogGroup")
    return str(r.resolve(configured)) if configured else f"/aws/lambda/{r.ref(function)}"


# -- literal metric names in the functions' source ------------------------------------------------------------------
FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
# The emitters and the name each makes: web.count(operation, outcome), management_api.count(code) (management_<code>),
# the management errors carrying a code, and add_metric(name=...) itself; and every counted row of the errors' table
# (domain/errors.ANSWERS): <surface>_<code> on the pages, management_<code> on the API.
MANAGEMENT_CODE_CALLS = {"Conflict": 0, "RefreshFailed": 0, "CompletionRefused": 0}


def literal_metric_names() -> set[str]:
    names = {
        f"management_{row.code}" if surface == API else f"{surface}_{row.code}"
        for row in ANSWERS
        if row.counted and row.code
        for surface in row.surfaces
    }
    operations = set()
    for path in FUNCTIONS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            texts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            keywords = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            if function == "add_metric" and isinstance(keywords.get("name"), str):
                names.add(str(keywords["name"]))
            elif function == "count" and len(texts) == 2:  # web.count(operation, outcome)
                names.add(f"{texts[0]}_{texts[1]}")
            elif function == "count" and len(texts) == 1 and _is_api_count(node.func, path):
                names.add(f"management_{texts[0]}")
            elif function in MANAGEMENT_CODE_CALLS:
                position = MANAGEMENT_CODE_CALLS[function]
                argument = node.args[position] if len(node.args) > position else None
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    names.add(f"management_{argument.value}")
            elif function == "resolver" and isinstance(keywords.get("operation"), str):
                operations.add(str(keywords["operation"]))
    assert operations == {"login", "callback"}, operations
    return names


def _is_api_count(function: ast.expr, path: Path) -> bool:
    """management_api.count(code) from a handler, or count(code) inside management_api.py; not str.count(":") and the
    like."""
    if isinstance(function, ast.Attribute):
        return isinstance(function.value, ast.Name) and function.value.id == "management_api"
    return path.name == "management_api.py"


def test_every_alarm_has_its_row_in_the_operations_runbook() -> None:
    runbook = (FUNCTIONS.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip() for line in runbook.splitlines() if line.startswith("| `<stack>-")}
    every = alarms(resolver(**WITH_WEBHOOK))
    names = {props["AlarmName"].replace(f"{STACK}-", "`<stack>-", 1) + "`" for props in every.values()}
    assert names == rows, f"undocumented: {sorted(names - rows)}; documented but gone: {sorted(rows - names)}"
