"""make cost: the monthly bill by service from the measured calls, the template's schedule and window, and a price
table naming its source; the dynamodb store's target at 1M connections is printed with PASS/FAIL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.local.template_model import Template
from infra.scripts import cost

SERVICES = ["Secrets Manager", "DynamoDB", "KMS", "Lambda", "SQS", "CloudWatch", "EventBridge"]


def measured() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cost.MEASURED.read_text(encoding="utf-8"))
    return data


def test_the_schedule_is_read_from_the_template() -> None:
    plan = cost.schedule(Template.load())
    assert plan.sweeps_per_month == pytest.approx(1461, rel=0.01)  # rate(30 minutes)
    assert plan.refreshes_per_connection == pytest.approx(30.4375 / 5, rel=0.001)  # 7-day token, 48 h window


def test_the_bill_names_every_service_and_each_price_its_source() -> None:
    text, _ = cost.render(1000, "dynamodb", measured(), Template.load())
    for service in SERVICES:
        assert f"  {service}" in text
    assert all("aws.amazon.com/" in source for _, source in cost.PRICES.values())
    assert "as read 2026-12-02" in text


def test_the_dynamodb_store_meets_its_target_at_a_million_and_secrets_manager_costs_a_secret_each() -> None:
    template = Template.load()
    dynamodb = cost.bill(1_000_000, "dynamodb", measured(), template)
    secrets = cost.bill(1_000_000, "secretsmanager", measured(), template)

    assert sum(dynamodb.values()) / 1_000_000 <= cost.TARGET_PER_CONNECTION
    assert dynamodb["Secrets Manager"] == 0
    assert secrets["Secrets Manager"] >= 0.40 * 1_000_000
    text, ok = cost.render(1_000_000, "dynamodb", measured(), template)
    assert ok
    assert "(dynamodb): PASS" in text


def test_a_bill_over_the_target_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cost.PRICES, "ddb_read_per_m", (100.0, "aws.amazon.com/dynamodb/pricing (a test's price)"))
    text, ok = cost.render(1_000_000, "dynamodb", measured(), Template.load())
    assert not ok
    assert "(dynamodb): FAIL" in text


def test_without_measured_calls_it_says_to_run_the_bench(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cost.main(["--measured", str(tmp_path / "none.json")]) == 2
    assert "make bench" in capsys.readouterr().err
