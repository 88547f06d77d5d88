"""The tag index as the SAM-translated template makes it (issue 20 item 3). Facts from AWS's documentation held here:
UpdateTable creates or deletes only one global secondary index per call, so one stack update may add at most one GSI to
an existing table (CloudFormation fails the update otherwise); the tag index is therefore a table of its own and
ConnectionsTable keeps exactly the GSIs it had. A transaction's actions need their own permissions (PutItem,
UpdateItem, DeleteItem), which the management function's role grants on the tag table."""

from __future__ import annotations

from functools import cache
from typing import Any

from infra.scripts.sam_translate import load_template, translate

# ConnectionsTable's GSIs as released before tags: a change to this set must add (or remove) one per release.
RELEASED_GSIS = {"by-refresh-due", "by-end-user"}


@cache
def resources() -> dict[str, Any]:
    resources: dict[str, Any] = translate(parameters={})["Resources"]
    return resources


def test_the_tag_index_is_a_table_of_its_own_keyed_by_tag_then_connection() -> None:
    table = resources()["ConnectionTagsTable"]
    properties = table["Properties"]

    assert table["Type"] == "AWS::DynamoDB::Table"
    assert properties["KeySchema"] == [
        {"AttributeName": "tag", "KeyType": "HASH"},
        {"AttributeName": "connection_id", "KeyType": "RANGE"},
    ]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert "GlobalSecondaryIndexes" not in properties
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    # No TableName: two stacks in one account and region each get their own.
    assert "TableName" not in properties


def test_the_connections_table_gains_no_global_secondary_index() -> None:
    indexes = resources()["ConnectionsTable"]["Properties"]["GlobalSecondaryIndexes"]

    assert {index["IndexName"] for index in indexes} == RELEASED_GSIS


def test_every_function_is_told_the_tag_table_and_only_the_management_function_may_write_it() -> None:
    template = load_template()
    assert template["Globals"]["Function"]["Environment"]["Variables"]["CONNECTION_TAGS_TABLE_NAME"] == {
        "Ref": "ConnectionTagsTable"
    }
    writers = set()
    for logical_id, resource in resources().items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if not isinstance(statement, dict):
                    continue
                targets = statement.get("Resource")
                targets = targets if isinstance(targets, list) else [targets]
                if {"Fn::GetAtt": ["ConnectionTagsTable", "Arn"]} in targets:
                    writers.add(logical_id)
    assert writers == {"ManagementFunctionRole"}


def test_put_tags_is_an_iam_authorized_route() -> None:
    event = load_template()["Resources"]["ManagementFunction"]["Properties"]["Events"]["SetConnectionTags"]

    assert event["Properties"]["Path"] == "/connections/{connection_id}/tags"
    assert event["Properties"]["Method"] == "PUT"
    assert event["Properties"]["Auth"] == {"Authorizer": "AWS_IAM"}
