"""The local stack (make dev, make demo) with TokenStore=dynamodb: the real handlers behind the local gateway sign in,
store the pair sealed in the template's TokenTable (no token secret), and the scheduled sweep rotates it there."""

from __future__ import annotations

import io
import os

import pytest

from infra.local import demo
from infra.local.stack import LocalStack

pytestmark = pytest.mark.e2e


def test_the_demo_story_runs_on_a_local_stack_with_the_dynamodb_store() -> None:
    with LocalStack(stack_name=f"e2e-ddb-{os.getpid()}", parameters={"TokenStore": "dynamodb"}) as stack:
        lines = io.StringIO()

        ok = demo.run(stack, out=lambda line: print(line, file=lines))

        assert ok, lines.getvalue()
        user = str(stack.emulator.users[0].id)
        table = stack.table_name("TOKEN_TABLE_NAME")
        item = stack.aws.dynamodb.get_item(TableName=table, Key={"connection_id": {"S": user}})["Item"]
        assert int(item["pair_generation"]["N"]) >= 1  # rotated by the sweep, in the table
        pair = stack.token_pair(user)
        assert pair["access_token"].encode() not in bytes(item["sealed_pair"]["B"])
        names = [s["Name"] for s in stack.aws.secretsmanager.list_secrets()["SecretList"]]
        assert not [name for name in names if name.startswith(stack.token_secret_prefix)]
        assert pair["refresh_token"] not in lines.getvalue()  # the demo masks tokens
