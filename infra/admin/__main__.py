"""`python -m infra.admin`: the admin CLI (needs the broker library on the path: `make admin` sets it)."""

from __future__ import annotations

import sys
from pathlib import Path

# The broker library beside this repository's infra/: `python -m infra.admin` from the repository's root works as it
# is, and its exit status is the command's (make admin's is make's own 2 when the command fails).
_FUNCTIONS = str(Path(__file__).resolve().parents[2] / "functions")
if _FUNCTIONS not in sys.path:
    sys.path.append(_FUNCTIONS)

try:
    from infra.admin.cli import main
except ModuleNotFoundError as exc:  # pragma: no cover - depends on how it is started
    if exc.name != "smartsheet_oauth":
        raise
    sys.exit(
        "error: the broker library (functions/smartsheet_oauth) is not importable. "
        'Run `make admin ARGS="..."`, or PYTHONPATH=functions python -m infra.admin ...'
    )

sys.exit(main())
