"""The doctor's reads of a stack: each part read once (checks share them), AWS errors as ReadError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from infra.admin.stack_facts import StackFacts

FUNCTION_TYPE: Final = "AWS::Lambda::Function"
NOT_FOUND: Final = frozenset({"ResourceNotFoundException", "NotFound", "NotFoundException"})
ACCESS_DENIED: Final = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError"})


class ReadError(RuntimeError):
    """A part of the stack could not be read: `missing` when AWS says it does not exist."""

    def __init__(self, what: str, permission: str, code: str) -> None:
        super().__init__(f"could not read {what} ({code})")
        self.what = what
        self.permission = permission
        self.code = code

    @property
    def missing(self) -> bool:
        return self.code in NOT_FOUND

    @property
    def fix(self) -> str:
        if self.code in ACCESS_DENIED:
            return f"the doctor needs {self.permission} (docs/operations.md lists what make doctor reads)"
        return "try again; if it persists, check the stack in the console"


@contextmanager
def reading(what: str, permission: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        raise ReadError(what, permission, str(exc.response.get("Error", {}).get("Code", "Unknown"))) from None
    except BotoCoreError as exc:  # endpoint unreachable, a timeout
        raise ReadError(what, permission, type(exc).__name__) from None


class StackReader:
    """The stack's facts and the reads several checks need, cached for one examination."""

    def __init__(self, facts: StackFacts, *, now: float) -> None:
        self.facts = facts
        self.now = now

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    @cache  # noqa: B019
    def client(self, service: str) -> Any:
        return self.facts.client(service)

    @cache  # noqa: B019 - one reader per examination, discarded with it
    def functions(self) -> dict[str, str]:
        """The stack's Lambda functions: logical id -> function name (CloudFormation's resource list)."""
        found: dict[str, str] = {}
        with reading("the stack's resources", "cloudformation:ListStackResources"):
            pages = self.client("cloudformation").get_paginator("list_stack_resources")
            for page in pages.paginate(StackName=self.facts.name):
                for resource in page.get("StackResourceSummaries", []):
                    if resource.get("ResourceType") == FUNCTION_TYPE and resource.get("PhysicalResourceId"):
                        found[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
        return found

    @cache  # noqa: B019
    def configuration(self, function: str, qualifier: str | None = None) -> dict[str, Any]:
        """A function's configuration: $LATEST's, or the version an alias points at."""
        where = f"{function}:{qualifier}" if qualifier else function
        with reading(f"the configuration of {where}", "lambda:GetFunctionConfiguration"):
            kwargs = {"FunctionName": function} | ({"Qualifier": qualifier} if qualifier else {})
            answer: dict[str, Any] = self.client("lambda").get_function_configuration(**kwargs)
        return answer

    @cache  # noqa: B019
    def alias_arn(self, function: str, alias: str) -> str:
        with reading(f"the alias {function}:{alias}", "lambda:GetAlias"):
            return str(self.client("lambda").get_alias(FunctionName=function, Name=alias)["AliasArn"])

    @cache  # noqa: B019
    def schedule(self, name: str) -> dict[str, Any]:
        with reading(f"the schedule {name}", "scheduler:GetSchedule"):
            answer: dict[str, Any] = self.client("scheduler").get_schedule(Name=name)
        return answer

    def queue_depth(self, url: str, name: str) -> int:
        with reading(f"the {name}", "sqs:GetQueueAttributes"):
            attributes = self.client("sqs").get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def metric_series(
        self, queries: list[dict[str, Any]], *, seconds: int, what: str
    ) -> dict[str, list[tuple[datetime, float]]]:
        """Each query's datapoints over the last `seconds`, newest first (asked for explicitly: moto's default
        order is the opposite of CloudWatch's)."""
        series: dict[str, list[tuple[datetime, float]]] = {query["Id"]: [] for query in queries}
        with reading(what, "cloudwatch:GetMetricData"):
            pages = self.client("cloudwatch").get_paginator("get_metric_data")
            for page in pages.paginate(
                MetricDataQueries=queries,
                StartTime=datetime.fromtimestamp(self.now - seconds, UTC),
                EndTime=datetime.fromtimestamp(self.now + 60, UTC),  # the minute under way too
                ScanBy="TimestampDescending",
            ):
                for result in page.get("MetricDataResults", []):
                    pairs = zip(result.get("Timestamps", []), result.get("Values", []), strict=False)
                    series[result["Id"]] += [(_utc(stamp), float(value)) for stamp, value in pairs]
        for points in series.values():
            points.sort(key=lambda point: point[0], reverse=True)
        return series


def _utc(stamp: datetime) -> datetime:
    return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)
