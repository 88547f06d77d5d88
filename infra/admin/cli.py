"""The admin CLI's commands and output. Tokens are never printed: only identifiers, states and times."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from smartsheet_oauth.domain.errors import StorageError
from smartsheet_oauth.domain.vocabulary import ConnectionStatus
from smartsheet_oauth.flows.management import view
from smartsheet_oauth.platform.observability import logger
from smartsheet_oauth.stores.connections import Connection
from smartsheet_oauth_client import is_connection_id

from infra.admin import actions, doctor
from infra.admin.actions import ActionError
from infra.admin.deployed_target import deployed
from infra.admin.doctor.checklist import render

if TYPE_CHECKING:
    from infra.admin.importing import ImportReport
from infra.admin.target import DEV_STATE_FILE, Target, TargetError

# Exit statuses: 0 done (health: healthy), 1 the action failed or health needs attention, 2 usage or target errors.
OK, FAILED, UNUSABLE = 0, 1, 2

EPILOG = """\
target:
  without --stack the CLI acts on the running `make dev` stack (found through .local/dev.json);
  with --stack NAME it finds a deployed stack through its CloudFormation outputs, using your AWS
  credentials (AWS_PROFILE / --profile, AWS_REGION / --region).

examples:
  make admin ARGS="health"
  make admin ARGS="--stack broker-prod --region eu-west-1 list --status needs_reauth"
  make admin ARGS="--stack broker-prod refresh 4583173393803140"
  make admin ARGS="--stack broker-prod disconnect 4583173393803140 --yes"
  make admin ARGS="reconnect-link 4583173393803140 --return-to https://app.example.com/connected"
  make admin ARGS="tags 4583173393803140 --set workspace=acme --remove plan"
  make admin ARGS="--stack broker-prod redrive-webhooks --dry-run"
  make admin ARGS="--stack broker-prod test-webhook"
  make doctor STACK=broker-prod            (python -m infra.admin --stack broker-prod doctor)

in scripts, run `.venv/bin/python -m infra.admin ...` from the repository's root: make turns every
failure into its own exit status 2.

exit status: 0 done (health: nothing needs attention), 1 the action failed (health: something needs
attention), 2 the stack cannot be used (credentials, name, not running) or a usage error; doctor: see
`doctor --help`.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.admin",
        description="Operate a smartsheet-oauth-broker: list and inspect connections, refresh or disconnect one, "
        "run a sweep, print the health summary.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("target")
    where.add_argument("--stack", metavar="NAME", help="a deployed stack's name (default: the local `make dev` stack)")
    where.add_argument("--region", help="the deployed stack's AWS region (default: AWS_REGION or your profile's)")
    where.add_argument("--profile", help="AWS profile to use (default: AWS_PROFILE or the default chain)")
    where.add_argument(
        "--state-file", type=Path, default=DEV_STATE_FILE, help=f"the dev stack's state file (default {DEV_STATE_FILE})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--verbose", action="store_true", help="also show the broker library's info logs (stderr)")
    # --json and --verbose are accepted after the command too; SUPPRESS keeps a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", parents=[common], help="list connections (all, or of one status)")
    listing.add_argument("--status", choices=tuple(ConnectionStatus), help="only connections of this status")
    listing.add_argument("--ids", action="store_true", help="print only the ids, one a line (for scripts)")

    show = commands.add_parser(
        "show", parents=[common], help="show one connection (record and token metadata, never the tokens)"
    )
    show.add_argument("connection_id")

    refresh = commands.add_parser(
        "refresh",
        parents=[common],
        help="refresh one connection now (a needs_reauth one gets one more try with its stored token)",
    )
    refresh.add_argument("connection_id")

    drop = commands.add_parser(
        "disconnect",
        parents=[common],
        help="revoke one connection at Smartsheet, mark it revoked, schedule its secret's deletion (7 days)",
    )
    drop.add_argument("connection_id")
    drop.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    relink = commands.add_parser(
        "reconnect-link",
        parents=[common],
        help="a one-time link that lets a needs_reauth connection's own Smartsheet account connect again",
    )
    relink.add_argument("connection_id")
    relink.add_argument(
        "--return-to", required=True, metavar="URL", help="your app's page that receives the completion code"
    )
    relink.add_argument("--end-user", metavar="ID", help="the end user (default: the connection's own)")

    tags = commands.add_parser(
        "tags",
        parents=[common],
        help="show a connection's tags, or change them (the record and the tag index together)",
    )
    tags.add_argument("connection_id")
    tags.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a tag (repeatable)")
    tags.add_argument("--remove", action="append", default=[], metavar="KEY", help="remove a tag (repeatable)")
    tags.add_argument("--clear", action="store_true", help="remove every tag first")

    move = commands.add_parser(
        "migrate-store",
        parents=[common],
        help="move every connection's token pair to the other token store, each under its lease (resumable)",
    )
    move.add_argument("--to", required=True, choices=("dynamodb", "secretsmanager"), help="the store to move to")
    move.add_argument("--only", nargs="+", metavar="ID", help="only these connections")
    grants = commands.add_parser(
        "import",
        parents=[common],
        help="import grants your integration already holds (JSON lines: refresh_token, ...), one refresh each;"
        " a re-run skips what is done",
        description="Import existing Smartsheet grants as connections, without their users signing in again. Each"
        " line of FILE is a JSON object: refresh_token (required), access_token, expires_at or expires_in, region,"
        " end_user_id, tags. Each grant is made the broker's by one refresh at the shared pace (its refresh token is"
        " dead afterwards). Resumable and idempotent: run it again after a failure or a crash. Tokens are never"
        " printed.",
        epilog="exit status: 0 every line imported or already present; 1 some line refused or failed (the summary"
        " says which and why; run the same command again for the failed ones); 2 FILE cannot be read, or the stack"
        " cannot be used.",
    )
    grants.add_argument("file", metavar="FILE", help="the JSON-lines file, or - for stdin")
    commands.add_parser("sweep", parents=[common], help="run the refresh sweep now and print its report")
    commands.add_parser(
        "health", parents=[common], help="connections by status, due, failing, dead letters, alarms firing"
    )
    again = commands.add_parser(
        "redrive-webhooks",
        parents=[common],
        help="send the webhook dead-letter queue's events back to the delivery queue (after fixing the receiver)",
        description="Move the events waiting in the webhook dead-letter queue back to the delivery queue: each is"
        " delivered again, with 12 new attempts. Each message is sent before it is deleted, so a run that fails or is"
        " interrupted can leave an event in both queues (delivered twice: receivers deduplicate on Broker-Event-Id),"
        " never in neither. A run moves at most what was waiting when it started.",
        epilog="exit status: 0 every event moved (or --dry-run); 1 some were not (run it again); 2 the stack cannot"
        " be used.",
    )
    again.add_argument("--max", type=int, metavar="N", help="move at most N events (default: all that wait)")
    again.add_argument("--dry-run", action="store_true", help="only count the events waiting; move nothing")
    commands.add_parser(
        "test-webhook",
        parents=[common],
        help="POST a signed 'Webhook Test' event to WebhookUrl and say what the receiver answered",
        description="Send one signed 'Webhook Test' event (docs/events.md) to the stack's WebhookUrl from this"
        " machine, signed as deliveries are, and report the receiver's answer with a hint when it is not 2xx. It"
        " does not go through the bus or the queues.",
        epilog="exit status: 0 the receiver answered 2xx; 1 any other answer, or none; 2 the stack cannot be used.",
    )
    commands.add_parser(
        "doctor",
        parents=[common],
        help="after a deploy: is the stack really working? a checklist with a fix for each failure",
        description="Check a deployed (or the local) broker end to end without a user, and say how to fix what fails.",
        epilog=doctor.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


# ------------------------------------------------------------------------------------------------- formatting
def when(epoch: int | None, now: int) -> str:
    if not epoch:
        return "-"
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    delta = epoch - now
    span = abs(delta)
    if span < 120:
        relative = f"{span}s"
    elif span < 7200:
        relative = f"{span // 60}m"
    elif span < 172800:
        relative = f"{span // 3600}h"
    else:
        relative = f"{span // 86400}d"
    return f"{stamp} ({'in ' + relative if delta >= 0 else relative + ' ago'})"


def _record(connection: Connection) -> dict[str, Any]:
    """A connection as the management API shows it (GET /connections/{id}): its field names and types."""
    return view(connection)


def _expires(connection: Connection, now: int) -> str:
    """When the access token expires, for a connection whose token still counts: a needs_reauth or revoked one has
    none that works, whatever its stored expiry says."""
    if connection.status != ConnectionStatus.ACTIVE:
        return f"- ({connection.status}: no usable token)"
    return when(connection.access_expires_at, now)


def _stored_expiry(connection: Connection, expires_at: int, now: int) -> str:
    if connection.status != ConnectionStatus.ACTIVE:
        return f"{when(expires_at, now)}, but not usable: the connection is {connection.status}"
    return when(expires_at, now)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


class Output:
    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.now = int(time.time())

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, sort_keys=True), file=self.out)

    def line(self, text: str = "") -> None:
        print(text, file=self.out)


# --------------------------------------------------------------------------------------------------- commands
def cmd_list(target: Target, args: argparse.Namespace, out: Output) -> int:
    rows = sorted(target.connections.scan(status=args.status), key=lambda c: (c.status, c.access_expires_at))
    if out.as_json:
        out.json([_record(c) for c in rows])
    elif args.ids:
        for connection in rows:
            out.line(connection.connection_id)
    elif not rows:
        out.line(f"no {args.status + ' ' if args.status else ''}connections in {target.description}")
    else:
        table = [
            [
                "CONNECTION",
                "STATUS",
                "END USER",
                "EMAIL",
                "ACCESS TOKEN EXPIRES",
                "NEXT REFRESH",
                "FAILURES",
                "LAST ERROR",
            ]
        ]
        table += [
            [
                c.connection_id,
                c.status,
                c.end_user_id or "-",
                c.email,
                _expires(c, out.now),
                when(c.refresh_due_at, out.now) if c.status == ConnectionStatus.ACTIVE else "-",
                str(c.failures),
                c.last_error or "-",
            ]
            for c in rows
        ]
        _table(table, out.out)
        out.line(f"{len(rows)} connection(s) in {target.description}")
    return OK


def cmd_show(target: Target, args: argparse.Namespace, out: Output) -> int:
    connection = target.connections.get(args.connection_id)
    if connection is None:
        raise ActionError(f"no connection {args.connection_id} in {target.description}")
    tokens: dict[str, Any]
    try:
        stored = target.vault.load(connection.secret_arn)
        tokens = {
            "token_type": stored.token_type,
            "expires_at": stored.expires_at,
            "obtained_at": stored.obtained_at,
            "scope": stored.scope,
            "region": stored.region or connection.region,  # a pair stored before regions: its connection's
        }
    except StorageError as exc:
        tokens = {"unavailable": exc.code}
    if out.as_json:
        out.json({"connection": _record(connection), "stored_tokens": tokens})
        return OK
    fields = [
        ("connection", connection.connection_id),
        ("status", connection.status),
        ("end user", connection.end_user_id or "- (not bound to one of your users)"),
        ("email", connection.email),
        ("scopes", connection.scopes),
        ("region", connection.region),
        ("access token expires", _expires(connection, out.now)),
        ("next refresh", when(connection.refresh_due_at, out.now) if connection.status == "active" else "-"),
        ("generation", str(connection.generation)),
        ("failures", str(connection.failures)),
        ("last error", connection.last_error or "-"),
        ("lease held until", when(connection.lease_until, out.now)),
        # An attempt that reached Smartsheet (maybe) and never came to an end: the next refresh tells its fate.
        ("refresh in flight since", when(connection.in_flight_since, out.now)),
        ("created", when(connection.created_at, out.now)),
        ("updated", when(connection.updated_at, out.now)),
        ("secret", connection.secret_arn),
    ]
    if "unavailable" in tokens:
        fields.append(("stored tokens", f"unavailable ({tokens['unavailable']})"))
    else:
        fields += [
            ("stored pair obtained", when(tokens["obtained_at"], out.now)),
            ("stored pair expires", _stored_expiry(connection, tokens["expires_at"], out.now)),
        ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        out.line(f"{name.ljust(width)}  {value}")
    return OK


_REFRESH_VERDICT = {
    "refreshed": "a new token pair is stored",
    "transient": "not refreshed this time (Smartsheet or AWS unavailable); the sweep retries it with backoff",
    "needs_reauth": "Smartsheet refused the refresh token (invalid_grant): the user must sign in again",
    "lease_busy": "another worker took it first; it is being refreshed",
    "raced": "another worker refreshed it meanwhile; the grant is alive",
    "lost_in_flight": "the grant was lost by an earlier refresh that reached Smartsheet and never stored its answer"
    " (docs/operations.md, refresh-lost): the user must sign in again",
}


def cmd_refresh(target: Target, args: argparse.Namespace, out: Output) -> int:
    result = actions.refresh_now(target, args.connection_id)
    after = result.after
    if out.as_json:
        out.json({"outcome": result.outcome, "before": _record(result.before), "after": after and _record(after)})
    else:
        out.line(f"{args.connection_id}: {result.outcome}: {_REFRESH_VERDICT.get(result.outcome, result.outcome)}")
        if after is not None:
            out.line(f"  status {result.before.status} -> {after.status}")
            out.line(f"  access token expires {_expires(after, out.now)}")
            if after.last_error:
                out.line(f"  last error: {after.last_error}")
    return OK if result.outcome in ("refreshed", "raced", "lease_busy") else FAILED


def cmd_disconnect(target: Target, args: argparse.Namespace, out: Output, ask: Callable[[str], str]) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise ActionError("disconnect needs --yes when not run from a terminal")
        typed = ask(f"Disconnect {args.connection_id} in {target.description}? Type its id to confirm: ")
        if typed.strip() != args.connection_id:
            out.line("not confirmed; nothing changed")
            return FAILED
    result = actions.disconnect(target, args.connection_id)
    if out.as_json:
        out.json(
            {
                "connection_id": result.connection_id,
                "smartsheet": result.smartsheet,
                "stored_tokens": result.stored_tokens,
                "recovery_window_days": result.recovery_days,
            }
        )
        return OK
    at_smartsheet = {
        "revoked": "grant revoked at Smartsheet",
        "already_invalid": "the grant was already dead at Smartsheet",
        "no_tokens": "no stored tokens to revoke",
    }[result.smartsheet]
    stored = (
        f"token secret deleted in {result.recovery_days} days (undo: aws secretsmanager restore-secret)"
        if result.stored_tokens == "deletion_scheduled"
        else "token secret already deleted"
    )
    out.line(f"{args.connection_id}: disconnected; {at_smartsheet}; marked revoked; {stored}")
    return OK


def cmd_reconnect_link(target: Target, args: argparse.Namespace, out: Output) -> int:
    session = actions.reconnect_link(target, args.connection_id, return_to=args.return_to, end_user_id=args.end_user)
    if out.as_json:
        out.json(session)
        return OK
    out.line(
        f"{args.connection_id}: reconnect link for end user {session['end_user_id']}, valid until"
        f" {when(session['expires_at'], out.now)}; it works once, for this connection's Smartsheet account only"
        f" (region {session.get('region') or 'of the stack'}):"
    )
    out.line(f"  {session['login_url']}")
    out.line(f"  the sign-in ends at {session['return_to']} with a completion code your backend redeems")
    return OK


def cmd_tags(target: Target, args: argparse.Namespace, out: Output) -> int:
    if args.set or args.remove or args.clear:
        put: dict[str, str] = {}
        for pair in args.set:
            key, separator, value = pair.partition("=")
            if not separator:
                raise ActionError(f"--set {pair!r}: write KEY=VALUE")
            put[key] = value
        connection = actions.set_tags(target, args.connection_id, put=put, remove=args.remove, clear=args.clear)
        tags = connection["tags"]
    else:
        current = target.connections.get(args.connection_id)
        if current is None:
            raise ActionError(f"no connection {args.connection_id}")
        tags = dict(current.tags)
    if out.as_json:
        out.json({"connection_id": args.connection_id, "tags": tags})
        return OK
    if not tags:
        out.line(f"{args.connection_id}: no tags")
    for key in sorted(tags):
        out.line(f"{key}={tags[key]}")
    return OK


def cmd_sweep(target: Target, _args: argparse.Namespace, out: Output) -> int:
    started = time.monotonic()
    report = target.run_sweep()
    if out.as_json:
        out.json(report)
        return OK
    if report.get("skipped"):
        ends = when(report.get("lease_until"), out.now)
        out.line(f"sweep skipped on {target.description}: another sweep is running (its lease ends {ends})")
        return OK
    happened = sorted((name, count) for name, count in report.get("outcomes", {}).items() if count)
    outcomes = ", ".join(f"{name} {count}" for name, count in happened) or "none"
    out.line(f"sweep done in {time.monotonic() - started:.1f}s on {target.description}")
    out.line(f"  dispatched {report.get('dispatched', 0)}; outcomes: {outcomes}")
    if "queued" in report and "workers" not in report:
        # Deployed: the dispatch queued them; the refresh workers refresh them now (their refresh_* metrics).
        out.line(f"  queued {report['queued']} for the refresh workers (budget {report.get('budget')})")
    if "backlog" in report:
        out.line(f"  backlog (due, not reached): {report['backlog']}")
    if report.get("stopped_early"):
        out.line("  stopped early: the time budget ran out; the next sweep continues")
    return OK


def cmd_migrate_store(target: Target, args: argparse.Namespace, out: Output) -> int:
    """Move each connection's pair under its lease, verify it, print progress (ids and outcomes, never a token)."""
    from smartsheet_oauth.flows.migrate_store import migrate  # noqa: PLC0415

    if target.config.token_store != args.to:
        out.line(
            f"note: the stack's TokenStore is {target.config.token_store}: new sign-ins still go there. Deploy with "
            f"TokenStore={args.to} TokenStoreMigration=on first (docs/operations.md#migrating-between-stores)."
        )
    started = time.monotonic()

    def progress(n: int, connection_id: str, outcome: str) -> None:
        if not out.as_json:
            out.line(f"  [{n}] {connection_id}: {outcome}")

    report = migrate(target.connections, target.vault, to=args.to, ids=args.only, progress=progress)
    if out.as_json:
        out.json(
            {"to": args.to, "outcomes": dict(report.outcomes), "problems": report.problems, "complete": report.complete}
        )
        return OK if report.complete else FAILED
    counts = ", ".join(f"{name} {count}" for name, count in sorted(report.outcomes.items())) or "no connections"
    out.line(f"migrate-store to {args.to} on {target.description}: {counts} ({time.monotonic() - started:.1f}s)")
    for connection_id, problem in sorted(report.problems.items()):
        out.line(f"  {connection_id}: {problem}")
    if report.complete:
        out.line(f"done: every connection's pair is in {args.to}; deploy with TokenStoreMigration=off")
        return OK
    out.line("not done: run the same command again (what moved is skipped)")
    return FAILED


_IMPORT_LABELS = {
    "imported": "imported",
    "already_present": "already present",
    "refused": "refused",
    "failed": "failed (transient: run again)",
}


def _import_summary(report: ImportReport, out: Output, *, source: str, target: Target, started: float) -> None:
    """The summary table and each line that was not imported, by number, code and reason (never its content)."""
    from infra.admin import importing  # noqa: PLC0415

    counts = report.counts
    out.line(
        f"import of {source} into {target.description}: {len(report.results)} line(s) in "
        f"{time.monotonic() - started:.1f}s"
    )
    imported = [r for r in report.results if r.outcome == importing.IMPORTED]
    new = sum(1 for r in imported if r.code == "created")
    rows = [["OUTCOME", "LINES"]]
    rows += [[_IMPORT_LABELS[name], str(counts[name])] for name in importing.OUTCOMES]
    _table(rows, out.out)
    if imported:
        out.line(f"  ({new} new connection(s), {len(imported) - new} account(s) the broker knew)")
    for outcome, heading in (
        (importing.REFUSED, "refused (the user must connect again, or fix the line):"),
        (importing.FAILED, "failed (nothing lost: run the same command again, what is done is skipped):"),
    ):
        listed = [r for r in report.results if r.outcome == outcome]
        if listed:
            out.line(heading)
            for result in listed:
                out.line(f"  line {result.line}: {result.code}: {result.message}")
    refusals = sum(1 for r in report.results if r.code == "grant_refused")
    if refusals > 5 and not imported:
        out.line(
            f"note: Smartsheet refused all {refusals} grant(s) it was asked about and none was imported: check the"
            " app's client secret (a wrong one can look like a dead grant), then run again"
        )
    if report.stopped:
        out.line(report.stopped)
    if report.complete:
        out.line("done: every grant is a connection")


def cmd_import(target: Target, args: argparse.Namespace, out: Output, err: TextIO) -> int:
    """Import each line of `grants` (never printed: line numbers, outcomes, codes and connection ids only)."""
    from smartsheet_oauth.stores.pace import PaceWindows, SharedPace  # noqa: PLC0415

    from infra.admin import importing  # noqa: PLC0415

    stdin: BinaryIO = sys.stdin.buffer
    try:
        if args.file == "-":
            grants, total = stdin, None
        else:
            with Path(args.file).open("rb") as counted:
                total = sum(1 for _ in importing.grant_lines(counted))
            grants = Path(args.file).open("rb")  # noqa: SIM115 - closed below, after the run
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=err)
        return UNUSABLE
    pace = SharedPace(
        PaceWindows(target.dynamodb, target.config.state_table_name), target.config.refresh_rate_per_minute
    )
    deps = importing.import_deps(target, pace)
    started = time.monotonic()
    try:
        report = importing.run_import(
            deps,
            importing.ledger_of(target),
            importing.grant_lines(grants),
            progress=importing.Progress(err, total),
        )
    finally:
        if grants is not stdin:
            grants.close()
    counts = report.counts
    if out.as_json:
        out.json(
            {
                "file": args.file,
                "counts": {name: counts[name] for name in importing.OUTCOMES},
                "complete": report.complete,
                "stopped": report.stopped or None,
                "lines": [result.as_dict() for result in report.results],
            }
        )
        return OK if report.complete else FAILED
    _import_summary(report, out, source="stdin" if args.file == "-" else args.file, target=target, started=started)
    return OK if report.complete else FAILED


def cmd_health(target: Target, _args: argparse.Namespace, out: Output) -> int:
    report = actions.health(target)
    if out.as_json:
        out.json(report.as_dict())
        return FAILED if report.attention else OK
    counts = report.connections
    out.line(f"health of {report.target}")
    out.line(
        f"  connections: {counts['active']} active, {counts['needs_reauth']} needs_reauth, {counts['revoked']} revoked"
    )
    out.line(f"  due now: {report.due_now} (the next sweep takes them)")
    out.line(f"  refresh dead-letter queue (ticks not delivered): {report.dead_letters}")
    if report.failed_sweeps is not None:
        out.line(f"  failed sweep queue: {report.failed_sweeps}")
    alarms = "n/a locally" if report.alarms_firing is None else (", ".join(report.alarms_firing) or "none")
    out.line(f"  alarms firing: {alarms}")
    for item in report.failing:
        out.line(
            f"  failing {item['connection_id']}: {item['failures']} failure(s), last error {item['last_error'] or '-'},"
            f" access token expires {when(item['access_expires_at'], out.now)}"
        )
    if report.attention:
        out.line("ATTENTION")
        for problem in report.attention:
            out.line(f"  - {problem}")
        return FAILED
    out.line("OK")
    return OK


def cmd_redrive_webhooks(target: Target, args: argparse.Namespace, out: Output) -> int:
    from infra.admin import webhooks  # noqa: PLC0415

    if args.max is not None and args.max < 1:
        raise ActionError("--max must be 1 or more")
    report = webhooks.redrive_webhooks(target, limit=args.max, dry_run=args.dry_run)
    complete = report.not_sent == 0 and report.not_deleted == 0
    if out.as_json:
        out.json({"dry_run": args.dry_run, **dataclasses.asdict(report)})
        return OK if complete else FAILED
    in_flight = f" (and {report.in_flight} in flight, back in the queue later)" if report.in_flight else ""
    out.line(f"webhook dead-letter queue of {target.description}: {report.waiting} event(s) waiting{in_flight}")
    if args.dry_run:
        out.line("dry run: nothing moved")
        return OK
    out.line(f"  moved {report.moved} to the delivery queue: each is delivered again (Broker-Delivery-Attempt from 1)")
    if report.not_sent:
        out.line(f"  {report.not_sent} not sent (SQS refused): still in the dead-letter queue; run it again")
    if report.not_deleted:
        out.line(
            f"  {report.not_deleted} sent but not deleted: they will be delivered twice (receivers deduplicate on"
            " Broker-Event-Id)"
        )
    left = report.waiting - report.moved
    if complete and left > 0:
        out.line(f"  {left} left (--max); run it again for the rest")
    return OK if complete else FAILED


def cmd_test_webhook(target: Target, _args: argparse.Namespace, out: Output) -> int:
    from infra.admin import webhooks  # noqa: PLC0415

    result = webhooks.send_test_event(target)
    if out.as_json:
        out.json(dataclasses.asdict(result))
        return OK if result.ok else FAILED
    answered = "no answer" if result.status is None else f"answered {result.status}"
    out.line(f"test-webhook: {result.receiver} {answered} (event {result.event_id})")
    out.line(f"  {result.message}")
    return OK if result.ok else FAILED


def cmd_doctor(target: Target, _args: argparse.Namespace, out: Output) -> int:
    examination = doctor.examine(target)
    if out.as_json:
        out.json(examination.as_dict())
    else:
        render(examination, out.out)
    return examination.exit_status


COMMANDS: dict[str, Callable[[Target, argparse.Namespace, Output], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "refresh": cmd_refresh,
    "reconnect-link": cmd_reconnect_link,
    "tags": cmd_tags,
    "sweep": cmd_sweep,
    "migrate-store": cmd_migrate_store,
    "health": cmd_health,
    "redrive-webhooks": cmd_redrive_webhooks,
    "test-webhook": cmd_test_webhook,
    "doctor": cmd_doctor,
}


def _unknown_flags(parser: argparse.ArgumentParser, arguments: Sequence[str]) -> str | None:
    """The first option no command knows. argparse reports a missing positional first ("show --bogus": "the following
    arguments are required"), which hides the real mistake."""
    known = {"-h", "--help"}
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            known.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    for argument in arguments:
        if argument == "--":
            return None
        if argument.startswith("-") and argument != "-" and argument.split("=", 1)[0] not in known:  # "-": stdin
            return argument.split("=", 1)[0]
    return None


@contextmanager
def _library_logs(stream: TextIO, *, verbose: bool) -> Iterator[None]:
    """The broker library logs JSON to stdout (Lambda's log): here it goes to stderr, warnings only unless
    --verbose, so stdout stays the command's output (and valid JSON with --json)."""
    handler = logger.registered_handler
    level = logger.log_level
    previous = handler.setStream(stream) if isinstance(handler, logging.StreamHandler) else None
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        if previous is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(previous)


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    ask: Callable[[str], str] = input,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    unknown = _unknown_flags(parser, arguments)
    if unknown:
        parser.error(f"unknown option {unknown} (see --help)")
    args = parser.parse_args(arguments)
    if getattr(args, "connection_id", None) is not None and not is_connection_id(args.connection_id):
        # The management API's own rule: a Smartsheet user id, 1 to 20 ASCII digits.
        parser.error(f"{args.connection_id!r} is not a connection id (the Smartsheet user id: 1 to 20 digits)")
    try:
        if args.stack:
            target = deployed(args.stack, region=args.region, profile=args.profile)
        else:
            if args.region or args.profile:
                parser.error("--region and --profile need --stack (the local stack needs neither)")
            from infra.admin.local_target import local  # noqa: PLC0415 - the local stack's modules: only for it

            target = local(args.state_file)
    except TargetError as exc:
        print(f"error: {exc}", file=err)
        return UNUSABLE
    output = Output(out, args.json)
    try:
        with _library_logs(err, verbose=args.verbose):
            if args.command == "disconnect":
                return cmd_disconnect(target, args, output, ask)
            if args.command == "import":
                return cmd_import(target, args, output, err)
            return COMMANDS[args.command](target, args, output)
    except ActionError as exc:
        print(f"error: {exc}", file=err)
        return FAILED
    except TargetError as exc:
        print(f"error: {exc}", file=err)
        return UNUSABLE
    except StorageError as exc:
        print(f"error: AWS storage failed ({exc.operation}: {exc.code}); try again", file=err)
        return FAILED
