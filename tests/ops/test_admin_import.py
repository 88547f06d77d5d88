"""make admin ARGS="import FILE" against a running local stack (moto server, emulator, gateway), found the way `make
admin` finds `make dev`'s: 1,000 grants imported with faults injected, a re-run that finishes the failed ones and skips
the rest, a process killed half-way and a re-run that loses nothing, bad lines with clear reasons, stdin, and no token
ever printed."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.admin.cli import main
from infra.local.stack import LocalStack
from tests.ops.conftest import DevStack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FIRST = 8_100_000_000_000_001
GRANTS = 1000
CRASH_GRANTS = 150
# The pace's ceiling (the template's MaxValue), so 1,000 refreshes take 100 s, not 200.
PACE = "600"
DEV_STACK = ("imp", {"RefreshRatePerMinute": PACE})  # the module's local stack (conftest.dev_stack)


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Importer:
    stack: LocalStack
    state_file: Path
    files: Path

    def admin(self, *args: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(["--state-file", str(self.state_file), *args], out=out, err=err)
        return Run(code, out.getvalue(), err.getvalue())

    def grants(self, first: int, count: int, **extra: Any) -> list[dict[str, Any]]:
        emulator = self.stack.emulator
        known = {user.id for user in emulator.users}
        if first not in known:
            emulator.add_users(count, first_id=first)
        lines = []
        for user in range(first, first + count):
            issued = emulator.issue_grant(user_id=user)
            line = {"refresh_token": issued["refresh_token"], "access_token": issued["access_token"], **extra}
            lines.append(line | {"expires_in": issued["expires_in"]})
        return lines

    def write(self, name: str, lines: list[Any]) -> Path:
        path = self.files / name
        path.write_text("".join(f"{x}\n" if isinstance(x, str) else json.dumps(x) + "\n" for x in lines))
        return path

    def record(self, user: int) -> dict[str, Any] | None:
        item = self.stack.aws.dynamodb.get_item(
            TableName=self.stack.table_name("CONNECTIONS_TABLE_NAME"),
            Key={"connection_id": {"S": str(user)}},
            ConsistentRead=True,
        ).get("Item")
        return {k: int(v["N"]) if "N" in v else v.get("S") for k, v in item.items()} if item else None

    def live(self, user: int) -> bool:
        """The connection's stored refresh token is the grant's live one (nothing lost)."""
        record = self.record(user)
        if record is None:
            return False
        secret = self.stack.aws.secretsmanager.get_secret_value(SecretId=record["secret_arn"])
        return self.stack.emulator.refresh_token_is_live(json.loads(secret["SecretString"])["refresh_token"])

    def age_claims(self, *, seconds_left: int) -> int:
        """Time passing on the import ledger's claims: each ends `seconds_left` from now. How many there were."""
        state_table = self.stack.table_name("STATE_TABLE_NAME")
        aged = 0
        for item in self.stack.aws.dynamodb.scan(TableName=state_table)["Items"]:
            if item.get("kind", {}).get("S") == "grant_import" and "claim_until" in item:
                self.stack.aws.dynamodb.update_item(
                    TableName=state_table,
                    Key={"state": item["state"]},
                    UpdateExpression="SET claim_until = :soon",
                    ExpressionAttributeValues={":soon": {"N": str(int(time.time()) + seconds_left)}},
                )
                aged += 1
        return aged

    def connected(self) -> int:
        table = self.stack.table_name("CONNECTIONS_TABLE_NAME")
        return int(self.stack.aws.dynamodb.scan(TableName=table, Select="COUNT")["Count"])


@pytest.fixture(scope="module")
def importer(dev_stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Importer:
    return Importer(dev_stack.stack, dev_stack.state_file, tmp_path_factory.mktemp("grants"))


def outcomes(run: Run) -> dict[int, dict[str, Any]]:
    return {line["line"]: line for line in run.json()["lines"]}


def test_a_thousand_grants_with_faults_then_a_rerun_imports_every_one_and_prints_no_token(
    importer: Importer,
) -> None:
    good = importer.grants(FIRST, GRANTS)
    dead = importer.grants(FIRST + GRANTS, 1)
    importer.stack.emulator.revoke_user(FIRST + GRANTS)
    bad = [
        '{"refresh_token": "SECRET-IN-MALFORMED-LINE", ',
        {"access_token": "SECRET-WITHOUT-REFRESH-TOKEN"},
        {"refresh_token": "SECRET-OF-ANOTHER-REGION", "region": "eu"},
        {"refresh_token": "SECRET-WITH-TAGS", "tags": ["vip"]},  # tags are a JSON object, as everywhere
        dead[0],
    ]
    path = importer.write("grants.jsonl", [*good, "", *bad])
    # Smartsheet misbehaves: 5xx, 429s and slow answers on the token endpoint and /users/me alike.
    importer.stack.emulator.set_faults(error_rate=0.04, rate_limit_rate=0.03, latency_ms=5)

    started = time.monotonic()
    first = importer.admin("import", str(path), "--json")
    seconds = time.monotonic() - started
    importer.stack.emulator.reset_faults()
    again = importer.admin("import", str(path), "--json")
    third = importer.admin("import", str(path))

    by_line = outcomes(first)
    counts = first.json()["counts"]
    print(f"1,000 grants with faults: {seconds:.1f} s, {counts}")
    assert first.code == 1  # the bad lines are refused
    assert counts["imported"] + counts["failed"] == GRANTS
    assert counts["imported"] >= GRANTS * 0.8, counts
    assert {line: by_line[line]["code"] for line in range(GRANTS + 2, GRANTS + 7)} == {
        GRANTS + 2: "malformed_json",
        GRANTS + 3: "missing_refresh_token",
        GRANTS + 4: "region_not_served",
        GRANTS + 5: "invalid_tags",
        GRANTS + 6: "grant_refused",
    }
    assert all(by_line[line]["outcome"] == "refused" for line in range(GRANTS + 2, GRANTS + 7))
    # The re-run imports what failed and skips what was imported; a third run has nothing left to do.
    again_counts = again.json()["counts"]
    assert again_counts["already_present"] == counts["imported"]
    assert again_counts["imported"] == counts["failed"]
    assert again_counts["refused"] == len(bad)
    assert third.code == 1
    assert re.search(rf"^already present\s+{GRANTS}$", third.out, re.MULTILINE), third.out
    assert re.search(r"^imported\s+0$", third.out, re.MULTILINE), third.out
    assert f"line {GRANTS + 2}: malformed_json: not valid JSON" in third.out
    assert f"line {GRANTS + 4}: region_not_served: this stack serves Smartsheet's us region(s)" in third.out
    assert all(importer.live(user) for user in range(FIRST, FIRST + GRANTS))
    for run in (first, again, third):
        text = run.out + run.err
        assert "SECRET-" not in text
        assert not any(line["refresh_token"] in text or line["access_token"] in text for line in good[:50])


def test_a_killed_import_resumes_and_loses_nothing(importer: Importer) -> None:
    first_user = FIRST + 2 * GRANTS
    grants = importer.grants(first_user, CRASH_GRANTS)
    path = importer.write("crash.jsonl", grants)
    before = importer.connected()
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.admin", "--state-file", str(importer.state_file), "import", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while importer.connected() - before < CRASH_GRANTS // 3 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    halfway = importer.connected() - before
    assert 0 < halfway < CRASH_GRANTS

    # The dead process's claim on the line it was at lapses with its lease (RefreshLeaseSeconds, 120 s): time passes
    # until 3 s are left, and the re-run, finding that line held, tries it again at the end once the claim lapsed.
    held = importer.age_claims(seconds_left=3)
    resumed = importer.admin("import", str(path), "--json")

    counts = resumed.json()["counts"]
    lost = [line for line in resumed.json()["lines"] if line["code"] == "lost_in_flight"]
    assert counts["already_present"] >= halfway - 1
    assert counts["failed"] == 0, resumed.out
    # Only a kill between a refresh leaving and its new pair being kept can lose that one grant (the named window).
    assert len(lost) <= 1
    assert held <= 1  # one line at a time: the dead process held at most the one it was at
    assert sum(importer.live(user) for user in range(first_user, first_user + CRASH_GRANTS)) >= CRASH_GRANTS - 1


def test_stdin_and_the_exit_statuses(importer: Importer) -> None:
    grants = importer.grants(FIRST + 3 * GRANTS, 2)
    text = "".join(json.dumps(line) + "\n" for line in grants)

    piped = subprocess.run(
        [sys.executable, "-m", "infra.admin", "--state-file", str(importer.state_file), "import", "-"],
        cwd=REPO,
        input=text.encode(),
        capture_output=True,
        check=False,
        timeout=120,
    )
    missing = importer.admin("import", str(importer.files / "no-such-file.jsonl"))

    assert piped.returncode == 0, piped.stderr
    assert b"imported" in piped.stdout
    assert b"done: every grant is a connection" in piped.stdout
    assert b"\r[" not in piped.stderr  # no progress bar when stderr is not a terminal
    assert grants[0]["refresh_token"].encode() not in piped.stdout + piped.stderr
    assert missing.code == 2
    assert "cannot read" in missing.err
    assert Counter(importer.live(FIRST + 3 * GRANTS + n) for n in range(2)) == Counter({True: 2})


def test_tagged_grants_get_their_tags_and_a_bad_tag_is_refused_without_quoting_it(importer: Importer) -> None:
    first_user = FIRST + 4 * GRANTS
    tagged = importer.grants(first_user, 2, tags={"workspace": "acme", "plan": "pro"})
    bad = {**importer.grants(first_user + 2, 1)[0], "tags": {"SECRET-TAG-KEY": "bad\u0007value"}}
    path = importer.write("tagged.jsonl", [*tagged, bad])

    run = importer.admin("import", str(path), "--json")

    by_line = outcomes(run)
    assert run.code == 1  # the bad line is refused
    assert [by_line[n]["outcome"] for n in (1, 2, 3)] == ["imported", "imported", "refused"], run.out
    assert by_line[3]["code"] == "invalid_tags"
    assert "SECRET-" not in run.out + run.err
    for user in (first_user, first_user + 1):
        shown = importer.admin("tags", str(user), "--json")
        assert shown.json()["tags"] == {"workspace": "acme", "plan": "pro"}, shown.out
    # The tag index lists them (a Query of ConnectionTagsTable, as GET /connections?tag= reads it).
    index = importer.stack.aws.dynamodb.query(
        TableName=importer.stack.table_name("CONNECTION_TAGS_TABLE_NAME"),
        KeyConditionExpression="#t = :t",
        ExpressionAttributeNames={"#t": "tag"},
        ExpressionAttributeValues={":t": {"S": "workspace=acme"}},
    )
    assert {item["connection_id"]["S"] for item in index["Items"]} == {str(first_user), str(first_user + 1)}
    assert importer.record(first_user + 2) is None
