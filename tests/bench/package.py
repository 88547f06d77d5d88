"""Package size from the `sam build` artifacts, the import-time top 10 (`-X importtime`), and the SnapStart
hooks checked in a fresh interpreter."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from tests.bench import world
from tests.bench.report import Row, check

SIZES = "5. package size and import time"
SNAPSTART = "6. SnapStart hooks (EnableSnapStart=true)"
FUNCTIONS = {"authorize": "AuthorizeFunction", "callback": "CallbackFunction", "refresh": "RefreshFunction"}
ZIP_LIMIT_MB, UNZIPPED_LIMIT_MB = 50, 250


def _size(folder: Path) -> tuple[int, int, int, Counter[str]]:
    """(bytes, zipped bytes, .pyc files, bytes by top-level entry)."""
    total, pyc = 0, 0
    by_top: Counter[str] = Counter()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                size = path.stat().st_size
                total += size
                pyc += int(path.suffix == ".pyc")
                top = path.relative_to(folder).parts[0].split("-")[0]
                by_top[top] += size
                archive.write(path, path.relative_to(folder))
    return total, buffer.tell(), pyc, by_top


def _importtime(handler: str, env: dict[str, str], code_dir: Path) -> tuple[float, list[tuple[str, float]]]:
    """The handler module's import time and the ten packages costing most (self time, ms)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {handler}.app"],
        env={**env, "PYTHONPATH": str(code_dir), "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=world.ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    by_package: dict[str, float] = defaultdict(float)
    total = 0.0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line.removeprefix("import time:").split("|", 2))
        top = name.split(".")[0]
        by_package[top] += int(self_us) / 1000
        if name == f"{handler}.app":
            total = int(cumulative_us) / 1000
    return total, sorted(by_package.items(), key=lambda item: -item[1])[:10]


def measure(env: dict[str, dict[str, str]], compiled: dict[str, Path] | None) -> list[Row]:
    rows: list[Row] = []
    built = world.ROOT / ".aws-sam" / "build"
    if all((built / name).is_dir() for name in FUNCTIONS.values()):
        sizes = {kind: _size(built / name) for kind, name in FUNCTIONS.items()}
        for kind, (total, zipped, pyc, by_top) in sizes.items():
            biggest = ", ".join(f"{name} {size / 2**20:.1f}" for name, size in by_top.most_common(4))
            rows.append(
                Row(
                    SIZES,
                    f"{FUNCTIONS[kind]} artifact: zipped / unzipped (MB)",
                    f"{zipped / 2**20:.1f} / {total / 2**20:.1f} ({biggest}); .pyc files: {pyc}",
                    f"< {ZIP_LIMIT_MB} / {UNZIPPED_LIMIT_MB} (Lambda)",
                    check(zipped < ZIP_LIMIT_MB * 2**20 and total < UNZIPPED_LIMIT_MB * 2**20),
                )
            )
    else:
        rows.append(Row(SIZES, "artifact size", "not measured: no .aws-sam/build (run `make build` first)"))
    for kind in FUNCTIONS:
        code_dir = compiled[kind] if compiled else world.FUNCTIONS_DIR
        import_ms, top = _importtime(kind, env[kind], code_dir)
        listed = ", ".join(f"{name} {ms:.0f}" for name, ms in top)
        rows.append(
            Row(SIZES, f"import {kind}.app: total, then top 10 packages (self ms)", f"{import_ms:.0f} ms: {listed}")
        )
    return rows


def snapstart(env: dict[str, str]) -> list[Row]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("snapstart_child.py")), *FUNCTIONS],
        env={**env, "PYTHONPATH": str(world.FUNCTIONS_DIR), "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"},
        cwd=world.ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH-RESULT ")), None)
    if line is None:
        return [Row(SNAPSTART, "hooks", f"check failed: {done.stderr[-300:]}", "", "FAIL")]
    result = json.loads(line.removeprefix("BENCH-RESULT "))
    made = result["random_values_before_snapshot"]
    return [
        Row(
            SNAPSTART,
            "hooks registered by the handlers (before snapshot / after restore)",
            f"{result['before_hooks']} / {result['after_hooks']}",
            ">= 1 / >= 1",
            check(result["before_hooks"] >= 1 and result["after_hooks"] >= 1),
        ),
        Row(
            SNAPSTART,
            "random values the broker makes before the snapshot (init + before-snapshot hooks)",
            f"{result['urandom_by_broker']} (no state, nonce, lease owner or seed)",
            "0",
            check(result["urandom_by_broker"] == 0 and made["random_seeded"] == 0),
        ),
        Row(
            SNAPSTART,
            "random values libraries make at import, renewed after restore",
            f"os.urandom {made['urandom']} ({', '.join(result['urandom_callers']) or 'none'}); renewed:"
            f" {'yes' if result['authkey_renewed'] else 'no'}",
            "renewed",
            check(result["authkey_renewed"] and len(result["urandom_callers"]) <= 1),
        ),
        Row(
            SNAPSTART,
            "`random` re-seeded after restore",
            "yes" if result["reseeded_after_restore"] else "no",
            "yes",
            check(result["reseeded_after_restore"]),
        ),
    ]


if __name__ == "__main__":
    from tests.bench.report import render

    with world.start_emulator() as emu:
        aws = world.local_aws(in_process=False)
        try:
            specs = world.functions(aws)
            envs = {kind: world.function_env(aws, specs[kind], emu) for kind in FUNCTIONS}
            found = measure(envs, None) + snapstart({**envs["callback"], "PATH": os.environ.get("PATH", "")})
        finally:
            aws.stop()
    print(render(found))
