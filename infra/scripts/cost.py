"""`make cost CONNECTIONS=1000000 STORE=dynamodb`: the broker's monthly AWS bill by service, from the AWS calls per
operation `make bench` measured (docs/measured-calls.json), the template's schedule, refresh window and sizes, and a
price table that names its source and date (us-east-1, public on-demand prices). Prints PASS/FAIL against the target:
the dynamodb store at most $0.01 per connection-month at 1M connections (storage + refresh + reads)."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.local.template_model import Template

ROOT = Path(__file__).resolve().parents[2]
MEASURED = ROOT / "docs" / "measured-calls.json"
TARGET_PER_CONNECTION = 0.01  # dollars a connection-month, dynamodb store, at 1M connections
ACCESS_TOKEN_SECONDS = 7 * 24 * 3600  # Smartsheet's access token lifetime (SMARTSHEET.md)
MONTH_SECONDS = 30.4375 * 24 * 3600

# us-east-1 public prices. Source: the AWS pricing pages named per row, as read (through the stored copies the search
# tool holds) on 2026-12-02; rows marked "not seen" are the pages' published rates that the stored copies did not show.
PRICES: dict[str, tuple[float, str]] = {
    "secret_month": (
        0.40,
        "aws.amazon.com/secrets-manager/pricing: $0.40 per secret-month (seen, page read 2026-09-20)",
    ),
    "secrets_per_10k": (0.05, "aws.amazon.com/secrets-manager/pricing: $0.05 per 10,000 API calls (seen)"),
    "kms_key_month": (1.00, "aws.amazon.com/kms/pricing: $1 per customer-managed key-month (seen)"),
    "kms_per_10k": (0.03, "aws.amazon.com/kms/pricing: $0.03 per 10,000 requests, 20,000 free (seen)"),
    "ddb_write_per_m": (0.625, "aws.amazon.com/dynamodb/pricing/on-demand: $0.625 per million write units (not seen)"),
    "ddb_read_per_m": (0.125, "aws.amazon.com/dynamodb/pricing/on-demand: $0.125 per million read units (not seen)"),
    "ddb_gb_month": (
        0.25,
        "aws.amazon.com/dynamodb/pricing/on-demand: $0.25 per GB-month, first 25 GB free (not seen)",
    ),
    "pitr_gb_month": (0.20, "aws.amazon.com/dynamodb/pricing/on-demand: PITR $0.20 per GB-month (not seen)"),
    "lambda_gb_s": (0.0000133334, "aws.amazon.com/lambda/pricing: arm64 $0.0000133334 per GB-second (seen)"),
    "lambda_per_m": (0.20, "aws.amazon.com/lambda/pricing: $0.20 per million requests (seen)"),
    "sqs_per_m": (0.40, "aws.amazon.com/sqs/pricing: $0.40 per million standard requests (not seen)"),
    "logs_gb": (0.50, "aws.amazon.com/cloudwatch/pricing: $0.50 per GB of logs ingested (not seen)"),
    "metric_month": (0.30, "aws.amazon.com/cloudwatch/pricing: $0.30 per custom metric-month (not seen)"),
    "alarm_month": (0.10, "aws.amazon.com/cloudwatch/pricing: $0.10 per standard alarm-month (not seen)"),
    "events_per_m": (1.00, "aws.amazon.com/eventbridge/pricing: $1.00 per million custom events (not seen)"),
    "scheduler_per_m": (1.00, "aws.amazon.com/eventbridge/pricing: Scheduler $1.00 per million, 14M free (not seen)"),
}

# What the model assumes beyond the measured calls (each printed with the bill).
ASSUMPTIONS = {
    "consumer_reads": 720,  # reads by your code per connection-month that miss its cache (one an hour)
    "sign_ins": 0.05,  # sign-ins per connection-month (new users, returning users)
    "log_bytes_per_refresh": 1200,  # the refresh's JSON log lines and EMF metrics, measured from its log lines
    "refresh_seconds": 0.15,  # a refresh's share of a 256 MB function's time (Smartsheet answering in 100 ms)
    "pair_item_bytes": 1400,  # token table item: two sealed pairs (current and previous) and their attributes
    "record_bytes": 600,  # connection record (and its sparse index entry)
    "metrics": 45,  # custom metrics the functions emit (tests/support/metric_catalog.py, one dimension)
    # The refresh fan-out (template.yaml): SQS requests a refresh costs (a tenth each of the dispatcher's
    # SendMessageBatch, the mapping's ReceiveMessage and its DeleteMessageBatch: batches of ten).
    "sqs_requests_per_refresh": 0.3,
    # The event source mapping's pollers long-poll an empty queue too: ~5 pollers, a 20 s poll each.
    "sqs_idle_polls_per_month": 5 * 3 * 60 * 24 * 30.4375,
    "dispatch_seconds": 2.0,  # one dispatch (a due-index read and a few SendMessageBatch calls)
}


@dataclass(frozen=True)
class Schedule:
    sweeps_per_month: float
    window_seconds: int
    pace_per_minute: int

    @property
    def refreshes_per_connection(self) -> float:
        return MONTH_SECONDS / (ACCESS_TOKEN_SECONDS - self.window_seconds)


def schedule(template: Template) -> Schedule:
    parameters = template.parameters
    expression = str(parameters["RefreshSchedule"]["Default"])
    found = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expression)
    if not found:
        raise SystemExit(f"cannot read the template's RefreshSchedule {expression!r}")
    minutes = int(found.group(1)) * (60 if found.group(2).startswith("hour") else 1)
    return Schedule(
        sweeps_per_month=MONTH_SECONDS / 60 / minutes,
        window_seconds=int(parameters["RefreshWindowSeconds"]["Default"]),
        pace_per_minute=int(parameters["RefreshRatePerMinute"]["Default"]),
    )


def alarms(template: Template) -> int:
    return sum(1 for r in template.resources.values() if r.get("Type") == "AWS::CloudWatch::Alarm")


def _calls(per_op: dict[str, float], service: str, operations: tuple[str, ...] | None = None) -> float:
    return sum(
        v
        for k, v in per_op.items()
        if k.removeprefix("shared.").split(".")[0] == service and (operations is None or k.split(".")[-1] in operations)
    )


def bill(connections: int, store: str, measured: dict[str, Any], template: Template) -> dict[str, float]:
    """Monthly dollars by service."""
    p = {name: price for name, (price, _) in PRICES.items()}
    a = ASSUMPTIONS
    plan = schedule(template)
    figures = measured["stores"][store]
    refreshes = connections * plan.refreshes_per_connection
    sign_ins = connections * a["sign_ins"]
    reads = connections * a["consumer_reads"]
    ops = {"refresh": refreshes, "sign_in": sign_ins, "consumer_read": reads}

    def total(service: str, operations: tuple[str, ...] | None = None) -> float:
        return sum(count * _calls(figures[op], service, operations) for op, count in ops.items())

    writes = total("dynamodb", ("PutItem", "UpdateItem", "DeleteItem"))
    dynamo_reads = total("dynamodb", ("GetItem", "Query"))
    pair_write_units = math.ceil(a["pair_item_bytes"] / 1024) if store == "dynamodb" else 0
    # A token-table write of two sealed pairs is two write units; each refresh and sign-in writes the pair once.
    extra_units = (refreshes + sign_ins) * max(pair_write_units - 1, 0)
    stored_gb = connections * (a["record_bytes"] + (a["pair_item_bytes"] if store == "dynamodb" else 0)) / 1e9
    dynamodb = (
        (writes + extra_units) / 1e6 * p["ddb_write_per_m"]
        + dynamo_reads / 1e6 * p["ddb_read_per_m"]
        + max(stored_gb - 25, 0) * p["ddb_gb_month"]
        + stored_gb * p["pitr_gb_month"]
    )
    secrets = 0.0
    kms_requests = total("kms")
    if store == "secretsmanager":
        secrets = connections * p["secret_month"] + total("secrets-manager") / 1e4 * p["secrets_per_10k"]
        # Secrets Manager asks KMS for the secret's (customer-managed) key on each token-secret read and write.
        kms_requests += total("secrets-manager", ("GetSecretValue", "PutSecretValue", "CreateSecret"))
    kms = 2 * p["kms_key_month"] + max(kms_requests - 20_000, 0) / 1e4 * p["kms_per_10k"]
    # The workers: each refresh's share of a worker's time; the dispatcher: one short run per schedule tick.
    lambda_seconds = refreshes * a["refresh_seconds"] + sign_ins * 0.3 + plan.sweeps_per_month * a["dispatch_seconds"]
    worker_invocations = refreshes / 10  # batches of ten
    # on-demand refreshes: a hundredth of reads
    invocations = plan.sweeps_per_month + worker_invocations + sign_ins * 2 + reads * 0.01
    lambda_cost = lambda_seconds * 0.25 * p["lambda_gb_s"] + invocations / 1e6 * p["lambda_per_m"]
    logs_gb = (refreshes + sign_ins * 3) * a["log_bytes_per_refresh"] / 1e9
    cloudwatch = logs_gb * p["logs_gb"] + a["metrics"] * p["metric_month"] + alarms(template) * p["alarm_month"]
    events = sign_ins * _calls(figures["sign_in"], "eventbridge") / 1e6 * p["events_per_m"]
    scheduler = max(plan.sweeps_per_month - 14e6, 0) / 1e6 * p["scheduler_per_m"]
    # The refresh queue (its dead-letter queues stay empty while nothing fails); SSE-SQS costs nothing extra.
    sqs_requests = refreshes * a["sqs_requests_per_refresh"] + a["sqs_idle_polls_per_month"] + plan.sweeps_per_month
    sqs = sqs_requests / 1e6 * p["sqs_per_m"]
    return {
        "Secrets Manager": secrets,
        "DynamoDB": dynamodb,
        "KMS": kms,
        "Lambda": lambda_cost,
        "SQS": sqs,
        "CloudWatch": cloudwatch,
        "EventBridge": events + scheduler,
    }


def render(connections: int, store: str, measured: dict[str, Any], template: Template) -> tuple[str, bool]:
    services = bill(connections, store, measured, template)
    plan = schedule(template)
    total = sum(services.values())
    per = total / connections
    lines = [
        f"monthly AWS bill: {connections:,} connections, TokenStore={store} (us-east-1, on-demand prices)",
        f"  schedule: a sweep every {MONTH_SECONDS / 60 / plan.sweeps_per_month:.0f} min, window "
        f"{plan.window_seconds // 3600} h of a 7-day token: {plan.refreshes_per_connection:.2f} refreshes a "
        f"connection-month; calls per operation measured {measured['measured_at']} ({measured['how']})",
        "",
        f"  {'service':<16} {'$ / month':>14} {'$ / connection-month':>22}",
    ]
    lines += [f"  {name:<16} {value:>14,.2f} {value / connections:>22.6f}" for name, value in services.items()]
    lines.append(f"  {'total':<16} {total:>14,.2f} {per:>22.6f}")
    if store == "dynamodb":
        reads = connections * ASSUMPTIONS["consumer_reads"]
        worst = reads * (1 - _calls(measured["stores"][store]["consumer_read"], "kms")) / 1e4 * PRICES["kms_per_10k"][0]
        lines.append(
            f"  (measured: a consumer opens {_calls(measured['stores'][store]['consumer_read'], 'kms'):g} data keys a "
            f"read; if every read needed its own KMS Decrypt, KMS would add ${worst:,.2f}, "
            f"${worst / connections:.6f} a connection-month)"
        )
    ok = True
    if store == "dynamodb" and connections >= 1_000_000:
        ok = per <= TARGET_PER_CONNECTION
        lines.append(
            f"\n  target: <= ${TARGET_PER_CONNECTION} per connection-month at 1M (dynamodb): {'PASS' if ok else 'FAIL'}"
        )
    else:
        lines.append(f"\n  target: <= ${TARGET_PER_CONNECTION} per connection-month applies to dynamodb at 1M: INFO")
    lines.append("\n  assumptions: " + ", ".join(f"{k}={v}" for k, v in ASSUMPTIONS.items()))
    lines.append("  prices (source, as read 2026-12-02):")
    lines += [f"    {name}: ${price:g}  {source}" for name, (price, source) in PRICES.items()]
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cost", description=__doc__)
    parser.add_argument("--connections", type=int, default=1_000_000)
    parser.add_argument("--store", choices=("dynamodb", "secretsmanager"), default="dynamodb")
    parser.add_argument("--measured", type=Path, default=MEASURED, help="calls per operation (make bench writes it)")
    args = parser.parse_args(argv)
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    try:
        measured = json.loads(args.measured.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: no measured calls in {args.measured} ({exc}): run `make bench` first", file=sys.stderr)
        return 2
    text, ok = render(args.connections, args.store, measured, Template.load())
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
