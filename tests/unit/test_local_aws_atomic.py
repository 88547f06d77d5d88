"""The embedded AWS (moto server behind LocalAws) answers like AWS where the broker relies on it: of many
conditional writes racing on one item, exactly one succeeds; a secret scheduled for deletion refuses writes; an
HTTP client that asks to continue is told to before it sends its body."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from infra.local.aws import LOCAL_CREDENTIALS, LocalAws, OneRequestAtATime
from infra.local.template_model import Template

RACERS = 12
SWITCH_INTERVAL = 1e-6
ROUNDS = 10
WON = "won"


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    with LocalAws(Template.load(), stack_name="atomic", parameters={"SmartsheetClientId": "atomic-test"}) as aws:
        yield aws


def test_of_many_conditional_updates_racing_on_one_item_exactly_one_wins(local_aws: LocalAws) -> None:
    table = local_aws.table_name("ConnectionsTable")
    # A pool as large as the racers: their requests really are concurrent at the server.
    client = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=local_aws.region,
    ).client(
        "dynamodb",
        endpoint_url=local_aws.endpoint_url,
        config=BotoConfig(retries={"max_attempts": 1}, max_pool_connections=RACERS),
    )

    def take(racer: int, item: str, start: threading.Barrier) -> str:
        start.wait()
        try:
            client.update_item(
                TableName=table,
                Key={"connection_id": {"S": item}},
                UpdateExpression="SET lease_owner = :me",
                ConditionExpression="attribute_not_exists(lease_owner)",
                ExpressionAttributeValues={":me": {"S": f"racer-{racer}"}},
            )
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return WON

    winners_per_round: list[int] = []
    # Threads switch far more often than Python's default 5 ms: a check-then-write in the server is interleaved
    # with the other racers' if anything lets it be.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(max_workers=RACERS) as pool:
            for round_number in range(ROUNDS):
                item = f"race-{round_number}"
                start = threading.Barrier(RACERS)
                answers = list(pool.map(lambda racer: take(racer, item, start), range(RACERS)))  # noqa: B023
                assert set(answers) <= {WON, "ConditionalCheckFailedException"}
                wins = [answer == WON for answer in answers]
                key = {"connection_id": {"S": item}}
                owner = client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]["lease_owner"]["S"]
                winners_per_round.append(sum(wins))
                # The racer that was told it won is the one whose write stands.
                assert sum(wins) != 1 or owner == f"racer-{wins.index(True)}"
    finally:
        sys.setswitchinterval(switch_interval)

    assert winners_per_round == [1] * ROUNDS


def test_a_secret_scheduled_for_deletion_refuses_writes_as_aws_does(local_aws: LocalAws) -> None:
    """moto alone accepts these; AWS answers InvalidRequestException, and the broker's restore path depends on it."""
    secrets = local_aws.secretsmanager
    arn = secrets.create_secret(Name="atomic/connections/1", SecretString='{"v":1}')["ARN"]
    secrets.delete_secret(SecretId=arn, RecoveryWindowInDays=7)

    for write in (
        lambda: secrets.put_secret_value(SecretId=arn, SecretString='{"v":2}'),
        lambda: secrets.put_secret_value(SecretId="atomic/connections/1", SecretString='{"v":2}'),
        lambda: secrets.create_secret(Name="atomic/connections/1", SecretString='{"v":2}'),
    ):
        with pytest.raises(ClientError) as refused:
            write()
        assert refused.value.response["Error"]["Code"] == "InvalidRequestException"

    secrets.restore_secret(SecretId=arn)
    secrets.put_secret_value(SecretId=arn, SecretString='{"v":3}')
    assert secrets.get_secret_value(SecretId=arn)["SecretString"] == '{"v":3}'


def test_secrets_are_found_by_name_arn_and_partial_arn_and_gone_after_a_forced_delete(local_aws: LocalAws) -> None:
    """The embedded store is indexed (AWS finds a secret in constant time; moto alone scans every secret): the
    answers stay moto's own."""
    secrets = local_aws.secretsmanager
    arn = secrets.create_secret(Name="atomic/index/1", SecretString="one")["ARN"]
    partial = arn.rsplit("-", 1)[0]  # the ARN without Secrets Manager's 6-character suffix

    for secret_id in ("atomic/index/1", arn, partial):
        assert secrets.get_secret_value(SecretId=secret_id)["SecretString"] == "one"
    with pytest.raises(ClientError) as missing:
        secrets.get_secret_value(SecretId="atomic/index/never")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"

    secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    with pytest.raises(ClientError) as gone:
        secrets.get_secret_value(SecretId=arn)
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
    again = secrets.create_secret(Name="atomic/index/1", SecretString="two")["ARN"]
    assert again != arn
    assert secrets.get_secret_value(SecretId="atomic/index/1")["SecretString"] == "two"


def list_tables(port: int) -> bytes:
    """A ListTables request's head, without its final empty line (a test adds headers)."""
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-amz-json-1.0\r\n".encode()
        + b"X-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Length: 2\r\n"
        # moto picks the service from the credential scope (it checks no signature)
        + b"Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request,"
        + b" SignedHeaders=host, Signature=0\r\n"
    )


def read_answer(conn: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One HTTP answer off the connection, framed by its Content-Length: (head, body, bytes after it)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed before a whole answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    [length] = [
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ]
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk, "the connection closed inside the body"
        rest += chunk
    return head, rest[:length], rest[length:]


def test_a_request_expecting_100_continue_is_told_to_continue_before_it_sends_its_body(local_aws: LocalAws) -> None:
    # The server buffers what it writes (an answer leaves in one send); the interim answer must not wait in it.
    port = urlsplit(local_aws.endpoint_url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(list_tables(port) + b"Expect: 100-continue\r\n\r\n")
        interim = conn.recv(25)  # a timeout (5 s) here: the interim answer was held back
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(b"{}")
        head, body, rest = read_answer(conn)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"TableNames" in body
    assert b"100 Continue" not in head + body + rest  # one interim answer, not a second from werkzeug


def test_a_connection_serves_request_after_request_as_aws_does(local_aws: LocalAws) -> None:
    port = urlsplit(local_aws.endpoint_url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        # Two requests sent at once: the first body must be read to its end, not into the second request.
        conn.sendall((list_tables(port) + b"\r\n{}") * 2)
        first_head, first_body, rest = read_answer(conn)
        second_head, second_body, rest = read_answer(conn, rest)
        assert b"connection: close" not in first_head.lower()
        conn.sendall(list_tables(port) + b"Connection: close\r\n\r\n{}")
        third_head, third_body, rest = read_answer(conn, rest)
        while chunk := conn.recv(65536):  # a timeout (5 s) here: the connection was kept open
            rest += chunk
    assert [h.split(b"\r\n")[0] for h in (first_head, second_head, third_head)] == [b"HTTP/1.1 200 OK"] * 3
    assert first_body == second_body == third_body
    assert b"TableNames" in first_body
    assert rest == b""


def test_a_failure_inside_moto_is_a_500_answer_and_the_connection_serves_on(
    local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: OneRequestAtATime, environ: object, start_response: object) -> list[bytes]:
        raise RuntimeError("moto broke")

    port = urlsplit(local_aws.endpoint_url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        monkeypatch.setattr(OneRequestAtATime, "__call__", broken)
        conn.sendall(list_tables(port) + b"\r\n{}")
        failed_head, failed_body, rest = read_answer(conn)
        monkeypatch.undo()
        conn.sendall(list_tables(port) + b"\r\n{}")
        head, body, _rest = read_answer(conn, rest)
    assert failed_head.startswith(b"HTTP/1.1 500 ")
    assert failed_body == b"the embedded AWS failed to answer: see its log"
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"TableNames" in body
