"""The admin CLI refuses what it would misread before it looks for a stack (issue 22 item 7): a connection id the
management API would refuse, and an unknown option, reported as such rather than as a missing argument."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from infra.admin.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    try:
        code = main(["--state-file", "/nonexistent/dev.json", *args], out=io.StringIO(), err=err)
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    return code, err.getvalue()


@pytest.mark.parametrize("command", ["show", "refresh", "disconnect"])
@pytest.mark.parametrize("bad_id", ["../../admin", "12a", "²", "1" * 21])
def test_an_id_the_api_would_refuse_is_a_usage_error(
    command: str, bad_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(command, bad_id)

    assert code == 2
    assert "is not a connection id (the Smartsheet user id: 1 to 20 digits)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["show", "--bogus", "123"], "--bogus"), (["show", "--bogus"], "--bogus"), (["--colour=red", "list"], "--colour")],
)
def test_an_unknown_option_is_reported_as_one(args: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(*args)

    assert code == 2
    err = capsys.readouterr().err
    assert f"unknown option {flag}" in err
    assert "required" not in err


def test_python_dash_m_needs_no_pythonpath_and_exits_with_the_commands_status() -> None:
    """Scripts run the CLI as `.venv/bin/python -m infra.admin`: make would turn every failure into its own 2."""
    ran = subprocess.run(
        [sys.executable, "-m", "infra.admin", "--state-file", "/nonexistent/dev.json", "health"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ran.returncode == 2, ran.stderr  # "the stack cannot be used": the CLI's own code, not make's
    assert "make dev" in ran.stderr
