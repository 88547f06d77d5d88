"""What template.yaml declares is what runs locally: a new table and a new route need no code change."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import requests

from infra.local.stack import LocalStack
from infra.local.template_model import DEFAULT_TEMPLATE

pytestmark = pytest.mark.e2e

NEW_RESOURCES = """
  AuditTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - AttributeName: event_id
          AttributeType: S
        - AttributeName: connection_id
          AttributeType: S
      KeySchema:
        - AttributeName: event_id
          KeyType: HASH
      GlobalSecondaryIndexes:
        - IndexName: by-connection
          KeySchema:
            - AttributeName: connection_id
              KeyType: HASH
          Projection:
            ProjectionType: KEYS_ONLY
      TimeToLiveSpecification:
        AttributeName: expires_at
        Enabled: true

  AuditFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: audit_code/
      Handler: audit.app.lambda_handler
      Environment:
        Variables:
          AUDIT_TABLE_NAME: !Ref AuditTable
          AUDIT_TABLE_ARN: !GetAtt AuditTable.Arn
      Events:
        Audit:
          Type: HttpApi
          Properties:
            ApiId: !Ref HttpApi
            Path: /audit/{connection_id}
            Method: POST
"""

AUDIT_HANDLER = """
import json
import os

import boto3

dynamodb = boto3.client("dynamodb")


def lambda_handler(event, context):
    connection_id = event["pathParameters"]["connection_id"]
    dynamodb.put_item(
        TableName=os.environ["AUDIT_TABLE_NAME"],
        Item={"event_id": {"S": context.aws_request_id}, "connection_id": {"S": connection_id}},
    )
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"table": os.environ["AUDIT_TABLE_NAME"], "arn": os.environ["AUDIT_TABLE_ARN"]}),
    }
"""


@pytest.fixture
def extended_template(tmp_path: Path) -> Path:
    text = DEFAULT_TEMPLATE.read_text(encoding="utf-8")
    head, outputs = text.split("\nOutputs:", 1)
    template = tmp_path / "template.yaml"
    template.write_text(f"{head.rstrip()}\n{NEW_RESOURCES}\nOutputs:{outputs}", encoding="utf-8")
    # The existing functions keep their code (CodeUri: functions/ beside the template).
    (tmp_path / "functions").symlink_to(DEFAULT_TEMPLATE.parent / "functions", target_is_directory=True)
    package = tmp_path / "audit_code" / "audit"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "app.py").write_text(textwrap.dedent(AUDIT_HANDLER), encoding="utf-8")
    return template


def test_a_table_and_a_route_added_to_the_template_appear_locally(extended_template: Path) -> None:
    with LocalStack(extended_template, stack_name="e2e-extended") as stack:
        table = stack.aws.table_name("AuditTable")
        description = stack.aws.dynamodb.describe_table(TableName=table)["Table"]
        assert [index["IndexName"] for index in description["GlobalSecondaryIndexes"]] == ["by-connection"]
        ttl = stack.aws.dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

        answer = requests.post(f"{stack.url}/audit/42", timeout=30)

        assert answer.status_code == 201, answer.text
        assert answer.json() == {"table": table, "arn": description["TableArn"]}
        items = stack.aws.dynamodb.scan(TableName=table)["Items"]
        assert [item["connection_id"]["S"] for item in items] == ["42"]
        # The template's own routes are still there beside the new one.
        assert requests.get(f"{stack.url}/login", allow_redirects=False, timeout=30).status_code == 302
        assert requests.get(f"{stack.url}/audit/42", timeout=30).status_code == 404
