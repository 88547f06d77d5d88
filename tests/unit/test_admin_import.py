"""The admin CLI's import, offline: how lines are read and refused (never quoting them), the progress bar only on a
terminal, and FILE's usage errors."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from smartsheet_oauth.domain.errors import LineRefused

from infra.admin import importing
from infra.admin.cli import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_blank_lines_are_skipped_and_numbers_kept() -> None:
    lines = list(importing.grant_lines([b'{"a": 1}\n', b"\n", b"   \n", b'{"b": 2}\n']))

    assert [number for number, _ in lines] == [1, 4]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"refresh_token": "TOKEN-abc", ', "malformed_json"),
        (b'{"refresh_token": "TOKEN-\xff"}\n', "not_utf8"),
        (b'{"refresh_token": "' + b"T" * 20_000 + b'"}', "line_too_long"),
    ],
)
def test_a_line_that_is_no_grant_is_refused_without_quoting_it(raw: bytes, code: str) -> None:
    with pytest.raises(LineRefused) as refused:
        importing._parsed(raw)

    assert refused.value.code == code
    assert "TOKEN" not in str(refused.value)


def test_the_progress_bar_is_drawn_on_a_terminal_only() -> None:
    terminal, piped = Terminal(), io.StringIO()
    counts = Counter({"imported": 3, "refused": 1})

    for stream in (terminal, piped):
        bar = importing.Progress(stream, total=8)
        bar.update(4, counts, final=True)
    unknown = Terminal()
    importing.Progress(unknown, total=None).update(2, counts, final=True)

    assert terminal.getvalue().startswith("\r[" + "#" * 15 + "." * 15 + "] 4/8")
    assert "imported 3" in terminal.getvalue()
    assert "refused 1" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")
    assert piped.getvalue() == ""
    assert unknown.getvalue().startswith("\r2 line(s)")


def test_an_import_without_a_file_is_a_usage_error() -> None:
    err = io.StringIO()
    with pytest.raises(SystemExit) as no_file:
        main(["import"], out=io.StringIO(), err=err)
    assert no_file.value.code == 2


def test_a_dash_is_stdin_not_an_unknown_option(tmp_path: Path) -> None:
    err = io.StringIO()

    code = main(["--state-file", str(tmp_path / "none.json"), "import", "-"], out=io.StringIO(), err=err)

    assert code == 2
    assert "no local dev stack" in err.getvalue()
    assert "unknown option" not in err.getvalue()
