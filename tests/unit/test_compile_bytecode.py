"""The shipped bytecode names the paths Lambda has (/var/task/...), so a traceback in Lambda shows source lines."""

from __future__ import annotations

import importlib.util
import marshal
import traceback
import types
from pathlib import Path

import pytest

from infra.scripts.compile_bytecode import LAMBDA_TASK_ROOT, main

FAILING_MODULE = """\
def handler(event, context):
    return helper(event)


def helper(event):
    raise ValueError("boom")
"""
PYC_HEADER = 16  # magic, flags, then 8 bytes of source hash (hash-based pyc)
HASH_BASED, CHECK_SOURCE = 0b01, 0b10


def build_tree(root: Path) -> Path:
    """What `sam build` leaves: a folder per function, the template beside them."""
    build = root / ".aws-sam" / "build"
    (build / "RefreshFunction" / "refresh").mkdir(parents=True)
    (build / "RefreshFunction" / "refresh" / "__init__.py").write_text("", encoding="utf-8")
    (build / "RefreshFunction" / "refresh" / "app.py").write_text(FAILING_MODULE, encoding="utf-8")
    (build / "AuthorizeFunction").mkdir()
    (build / "AuthorizeFunction" / "dependency.py").write_text("VALUE = 1\n", encoding="utf-8")
    (build / "template.yaml").write_text("Resources: {}\n", encoding="utf-8")
    return build


def read_pyc(source: Path) -> tuple[int, types.CodeType]:
    data = Path(importlib.util.cache_from_source(str(source))).read_bytes()
    flags = int.from_bytes(data[4:8], "little")
    return flags, marshal.loads(data[PYC_HEADER:])  # noqa: S302 (our own freshly compiled file)


def test_every_function_folder_is_compiled_as_var_task(tmp_path: Path) -> None:
    build = build_tree(tmp_path)

    assert main([str(build)]) == 0

    flags, code = read_pyc(build / "RefreshFunction" / "refresh" / "app.py")
    assert code.co_filename == f"{LAMBDA_TASK_ROOT}/refresh/app.py"
    nested = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    assert {c.co_filename for c in nested} == {f"{LAMBDA_TASK_ROOT}/refresh/app.py"}
    assert flags & HASH_BASED
    assert not flags & CHECK_SOURCE  # unchecked-hash: valid whatever times the zip gives the files
    _, dependency = read_pyc(build / "AuthorizeFunction" / "dependency.py")
    assert dependency.co_filename == f"{LAMBDA_TASK_ROOT}/dependency.py"


def test_a_traceback_from_the_shipped_bytecode_names_the_file_lambda_has(tmp_path: Path) -> None:
    build = build_tree(tmp_path)
    assert main([str(build)]) == 0
    _, code = read_pyc(build / "RefreshFunction" / "refresh" / "app.py")
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 (the module compiled above)

    with pytest.raises(ValueError, match="boom") as raised:
        namespace["handler"]({}, None)  # type: ignore[operator]

    frames = traceback.extract_tb(raised.value.__traceback__)[1:]
    assert [(frame.filename, frame.lineno, frame.name) for frame in frames] == [
        (f"{LAMBDA_TASK_ROOT}/refresh/app.py", 2, "handler"),
        (f"{LAMBDA_TASK_ROOT}/refresh/app.py", 6, "helper"),
    ]
    assert str(tmp_path) not in "".join(traceback.format_tb(raised.value.__traceback__))


def test_a_module_that_does_not_compile_fails_the_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = build_tree(tmp_path)
    (build / "AuthorizeFunction" / "broken.py").write_text("def broken(:\n", encoding="utf-8")

    assert main([str(build)]) == 1
    assert "AuthorizeFunction" in capsys.readouterr().err


def test_no_build_output_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing")]) == 1
    assert "sam build" in capsys.readouterr().err
