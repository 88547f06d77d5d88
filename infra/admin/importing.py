"""`make admin ARGS="import FILE"`: a file of existing grants (JSON lines) imported one by one through the same flow as
POST /connections/import (smartsheet_oauth.flows.import_grant), with a progress bar on a terminal and a summary at
the end. Tokens are read from the file only: no line, token or field value is ever printed or logged, only line
numbers, outcomes, error codes and connection ids."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from smartsheet_oauth.domain.errors import (
    BadRequest,
    Conflict,
    GrantRefused,
    InvalidClient,
    LineRefused,
    PaceExhausted,
    RefreshLost,
    SmartsheetError,
    StorageError,
    TransientSmartsheetError,
)
from smartsheet_oauth.flows.import_grant import checked_grant, import_grant
from smartsheet_oauth.stores.imports import ImportLedger
from smartsheet_oauth.stores.token_vault import PairSealer

if TYPE_CHECKING:
    from smartsheet_oauth.flows.deps import ManagementDeps

    from infra.admin.target import Target

IMPORTED, ALREADY, REFUSED, FAILED = "imported", "already_present", "refused", "failed"
OUTCOMES = (IMPORTED, ALREADY, REFUSED, FAILED)
MAX_LINE_BYTES = 16 * 1024  # as the route's body
# How often a line waits for the shared pace before it is reported failed (each wait is at most a window).
PACE_TRIES = 30


@dataclass(frozen=True, slots=True)
class LineResult:
    """What became of one line: never its content."""

    line: int
    outcome: str
    code: str = ""
    message: str = ""
    connection_id: str | None = None
    retry_after: int | None = None  # for a failure another worker's hold explains: when it lapses

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "outcome": self.outcome,
            "code": self.code or None,
            "message": self.message or None,
            "connection_id": self.connection_id,
        }


@dataclass
class ImportReport:
    results: list[LineResult] = field(default_factory=list)
    stopped: str = ""  # why the run stopped before the end of the file, if it did

    @property
    def counts(self) -> Counter[str]:
        return Counter(result.outcome for result in self.results)

    @property
    def complete(self) -> bool:
        return not self.stopped and all(result.outcome in (IMPORTED, ALREADY) for result in self.results)


def grant_lines(stream: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line (decoded line by line: one bad line is that line's problem)."""
    for number, raw in enumerate(stream, start=1):
        if raw.strip():
            yield number, raw


def _parsed(raw: bytes) -> object:
    if len(raw) > MAX_LINE_BYTES:
        raise LineRefused("line_too_long", f"the line is longer than {MAX_LINE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LineRefused("not_utf8", "the line is not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        # The position only: the decoder's message could quote the line.
        at = getattr(exc, "colno", None)
        raise LineRefused("malformed_json", f"not valid JSON{f' (at column {at})' if at else ''}") from None


def import_line(
    deps: ManagementDeps,
    ledger: ImportLedger,
    number: int,
    text: bytes,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> LineResult:
    """Import one line; every failure becomes its LineResult (InvalidClient is raised: it concerns every line)."""
    try:
        grant = checked_grant(_parsed(text), config=deps.config, now=int(deps.clock()))
        for _ in range(PACE_TRIES):
            try:
                done = import_grant(deps, ledger, grant)
                break
            except PaceExhausted as exhausted:  # the sweep's turn: wait for ours, nothing was sent
                sleep(exhausted.retry_after)
        else:
            return LineResult(number, FAILED, "refresh_rate_limited", "the shared pace stayed used up; run again")
    except (LineRefused, GrantRefused) as exc:
        return LineResult(number, REFUSED, exc.code, str(exc))
    except BadRequest as exc:  # pragma: no cover - every refusal of a line is a LineRefused
        return LineResult(number, REFUSED, "invalid_line", str(exc))
    except RefreshLost as exc:
        return LineResult(number, REFUSED, "refresh_lost", f"the grant is lost: {exc}; the user must connect again")
    except Conflict as exc:
        return LineResult(number, FAILED, exc.code, str(exc), retry_after=exc.retry_after)
    except TransientSmartsheetError as exc:
        return LineResult(number, FAILED, "smartsheet_unavailable", f"Smartsheet did not answer ({exc.reason})")
    except InvalidClient:
        raise
    except SmartsheetError as exc:
        return LineResult(number, FAILED, "smartsheet_refused", f"Smartsheet refused the request ({exc.reason})")
    except StorageError as exc:
        return LineResult(number, FAILED, "storage_unavailable", f"AWS storage failed ({exc.operation}: {exc.code})")
    outcome = ALREADY if done.already else IMPORTED
    code = "" if done.already else ("created" if done.is_new else "reconnected")
    return LineResult(number, outcome, code, connection_id=done.connection.connection_id)


def import_deps(target: Target, pace: Any) -> ManagementDeps:
    """The management API's collaborators, wired for the operator's process, with a sealer for the new pairs (the
    stack's pending-tokens key, as the functions have it) and the pace every refresher shares."""
    from smartsheet_oauth.flows.deps import ManagementDeps  # noqa: PLC0415
    from smartsheet_oauth.stores.connect_sessions import ConnectSessionStore  # noqa: PLC0415
    from smartsheet_oauth.stores.connection_tags import ConnectionTagStore  # noqa: PLC0415

    from infra.admin.target import TargetError  # noqa: PLC0415

    key = target.config.pending_tokens_key_id
    if not key:
        raise TargetError(
            "the stack names no pending-tokens key (PENDING_TOKENS_KEY_ID): imports need it to keep pairs"
        )
    # The admin targets build their stores without one (keep_pairs=False): only the import keeps pairs.
    target.vault.sealer = PairSealer(functools.cache(lambda: target.stack.client("kms")), key)
    return ManagementDeps(
        config=target.config,
        connections=target.connections,
        vault=target.vault,
        sessions=ConnectSessionStore(target.dynamodb, target.config.state_table_name, target.config.state_ttl_seconds),
        smartsheet=target.smartsheet,
        events=target.events(),
        pace=pace,
        # A grant's tags go on its connection and the tag index, as a connect session's do.
        tags=ConnectionTagStore(
            target.dynamodb,
            target.config.connections_table_name,
            target.config.connection_tags_table_name,
            default_region=target.config.region,
        ),
    )


class Progress:
    """A one-line bar on a terminal's stderr, redrawn in place; nothing at all when stderr is not a terminal."""

    WIDTH = 30

    def __init__(self, stream: TextIO, total: int | None) -> None:
        self._stream = stream
        self._total = total
        self._on = stream.isatty()
        self._drawn = 0.0

    def update(self, done: int, counts: Counter[str], *, final: bool = False) -> None:
        if not self._on or (not final and time.monotonic() - self._drawn < 0.1):
            return
        self._drawn = time.monotonic()
        tally = " ".join(f"{name.replace('_', ' ')} {counts[name]}" for name in OUTCOMES)
        if self._total:
            filled = self.WIDTH * done // self._total
            bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self._total}"
        else:
            bar = f"{done} line(s)"
        self._stream.write(f"\r{bar}  {tally}\033[K")
        if final:
            self._stream.write("\n")
        self._stream.flush()


# Failures another worker's hold explains (a claim of a process that died on this grant, a refresh of its
# connection): such a line is tried again at the end of the run, once that hold has lapsed (at most a lease).
_WAIT_AND_RETRY = frozenset({"import_in_progress", "connection_busy"})


def run_import(
    deps: ManagementDeps,
    ledger: ImportLedger,
    lines: Iterable[tuple[int, bytes]],
    *,
    progress: Progress,
    sleep: Callable[[float], None] = time.sleep,
) -> ImportReport:
    """Import every line in order. A line held by another worker (see _WAIT_AND_RETRY) is tried again at the end,
    after its hold lapses, so a run started right after a crash finishes the line the dead process was at."""
    report = ImportReport()
    results: dict[int, LineResult] = {}
    later: list[tuple[float, int, bytes]] = []
    counts: Counter[str] = Counter()
    done = 0
    try:
        for number, text in lines:
            result = import_line(deps, ledger, number, text, sleep=sleep)
            done += 1
            if result.outcome == FAILED and result.code in _WAIT_AND_RETRY:
                later.append((deps.monotonic() + _held_for(result, deps), number, text))
            else:
                results[number] = result
                counts[result.outcome] += 1
            progress.update(done, counts)
        for ready_at, number, text in sorted(later):
            sleep(max(0.0, ready_at - deps.monotonic()))
            result = import_line(deps, ledger, number, text, sleep=sleep)
            results[number] = result
            counts[result.outcome] += 1
            progress.update(done, counts)
    except InvalidClient as exc:
        report.stopped = (
            f"stopped: Smartsheet refuses the app's credentials ({exc.reason}); fix the client secret (make"
            " set-client-secret) and run the same command again. No grant was spent."
        )
    report.results = [results[number] for number in sorted(results)]
    progress.update(done, counts, final=True)
    return report


def _held_for(result: LineResult, deps: ManagementDeps) -> float:
    """Seconds until the hold that failed `result` lapses: at most a lease (what the message's retry came with)."""
    return float(min(deps.config.lease_seconds, max(1, result.retry_after or 1)))


def ledger_of(target: Target) -> ImportLedger:
    return ImportLedger(target.dynamodb, target.config.state_table_name)
