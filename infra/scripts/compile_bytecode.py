"""Byte-compiles a `sam build` output (.aws-sam/build) for Lambda: each function's folder as the /var/task it becomes.

Lambda's code folder is read-only, so without shipped bytecode every cold start compiles every module again (`make
bench` measured about twice the CPU). Each .pyc records the source path it was compiled from, and a traceback reads
its lines from there: compiled where `sam build` left it, a traceback in Lambda would name .aws-sam/build/... and show
no source line. Compiled with /var/task as each folder's path, it names the file Lambda really has. unchecked-hash: a
.pyc stays valid whatever times the zip gives the files. Standard library only: `make build` runs it with the
Python it builds with, before any venv exists.
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import sys
from collections.abc import Sequence
from pathlib import Path

LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks a zip function's code (its LAMBDA_TASK_ROOT)


def compile_for_lambda(code_dir: Path, task_root: str = LAMBDA_TASK_ROOT) -> bool:
    """Compile every module under `code_dir` as if it lay under `task_root`; False if a module failed to compile."""
    return bool(
        compileall.compile_dir(
            code_dir,
            ddir=task_root,
            quiet=1,
            workers=0,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    )


def function_folders(build_dir: Path) -> list[Path]:
    """The folders `sam build` writes, one per function (each is a function's /var/task)."""
    return sorted(entry for entry in build_dir.iterdir() if entry.is_dir())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", type=Path, nargs="?", default=Path(".aws-sam/build"))
    args = parser.parse_args(argv)
    folders = function_folders(args.build_dir) if args.build_dir.is_dir() else []
    if not folders:
        print(f"compile_bytecode: no function folders in {args.build_dir} (run sam build first)", file=sys.stderr)
        return 1
    failed = [folder.name for folder in folders if not compile_for_lambda(folder)]
    if failed:
        print(f"compile_bytecode: modules that do not compile in {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
