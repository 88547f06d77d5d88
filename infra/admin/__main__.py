"""`python -m infra.admin`: the admin CLI (needs the broker library on the path: `make admin` sets it)."""

from __future__ import annotations

import sys

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
