"""The refresh throughput bench's other process: moto server (LocalAws, from template.yaml) and the Smartsheet
emulator, seeded with N due connections directly in moto's backends (no sign-ins, no HTTP), then serving until
its stdin closes. Prints one JSON line: the refresh function's environment and what was seeded.

Run by tests/bench/sweep.py; it lives in its own process so moto's and the emulator's work does not share a
GIL with the sweep being measured (on Lambda, AWS and Smartsheet are other machines)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from infra.local.aws import LocalAws
from infra.local.smartsheet_emulator import DEFAULT_APP, SmartsheetEmulator
from tests.bench import world


def seed(aws: LocalAws, env: dict[str, str], emulator: SmartsheetEmulator, count: int) -> float:
    """N connections, each with a live grant at the emulator, its token secret and its record, all due (the
    earliest first). Returns the seconds it took."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.secretsmanager.models import secretsmanager_backends

    started = time.monotonic()
    # Secrets are looked up in constant time (infra/local/aws/moto_fidelity.py indexes moto's store, as AWS would).
    secrets_backend = secretsmanager_backends[aws.account_id][aws.region]
    dynamodb_backend = dynamodb_backends[aws.account_id][aws.region]
    table, prefix = env["CONNECTIONS_TABLE_NAME"], env["TOKEN_SECRET_PREFIX"]
    now = int(time.time())
    users = emulator.users
    for index in range(count):
        user = users[index % len(users)]
        connection_id = str(9_000_000_000_000_000 + index)
        grant = emulator.issue_grant(DEFAULT_APP.client_id, user.id)
        answer = secrets_backend.create_secret(
            name=prefix + connection_id,
            secret_string=world.token_document(grant, connection_id, now=now),
            secret_binary=None,
            description=None,
            tags=None,
            kms_key_id=None,
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        arn = json.loads(answer)["ARN"]
        item = world.connection_item(connection_id, arn, due_at=now - 86_400 + index, now=now)
        dynamodb_backend.put_item(table, item)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()

    emulator = world.start_emulator(users=1000)
    aws = world.local_aws(in_process=False)
    try:
        spec = world.functions(aws)["refresh"]
        env = world.function_env(aws, spec, emulator)
        seconds = seed(aws, env, emulator, args.connections)
        emulator.reset_stats()
        # Smartsheet's answer takes latency_ms; /users/me and the rest answer at once (the sweep never calls them).
        emulator.set_faults(latency_ms=args.latency_ms, latency_token_only=True)
        print(
            json.dumps(
                {
                    "env": env,
                    "timeout": spec.timeout,
                    "memory": spec.memory_size,
                    "seeded": args.connections,
                    "seed_seconds": seconds,
                    "emulator": emulator.base_url,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # serve until the bench closes our stdin
    finally:
        aws.stop()
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
