"""The README is part of the product: its configuration tables and commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from smartsheet_oauth.config import KNOWN_SCOPES

from infra.local.template_model import Template

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_SOURCE = (ROOT / "functions" / "smartsheet_oauth" / "config.py").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _first_column(section: str) -> set[str]:
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Za-z_]+)`", line.split("|")[1]))
    return names


def test_every_template_parameter_is_documented_and_nothing_else() -> None:
    documented = _first_column(_section("Configuration").split("The functions read")[0])
    assert documented == set(Template.load().parameters)


def test_documented_defaults_are_the_templates() -> None:
    table = _section("Configuration").split("The functions read")[0]
    for name, spec in Template.load().parameters.items():
        [row] = [line for line in table.splitlines() if line.startswith(f"| `{name}` |")]
        default = row.split("|")[2].strip()
        expected = spec.get("Default")
        if expected in (None, ""):
            assert default in ("—", "empty"), name
        else:
            assert default == f"`{expected}`", name


def test_every_environment_variable_the_config_reads_is_documented() -> None:
    # Every upper-case string literal in config.py is a variable it reads, except the scope names.
    names = set(re.findall(r'"([A-Z][A-Z_]{3,})"', CONFIG_SOURCE)) - KNOWN_SCOPES
    documented = _first_column(_section("Configuration").split("The functions read")[1])
    assert names, "the config reads no variables? the pattern is stale"
    assert names <= documented, sorted(names - documented)


def test_every_make_command_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"\bmake ([a-z][a-z-]+)", README))
    assert {"dev", "test", "demo", "deploy"} <= named
    assert named <= targets, sorted(named - targets)
