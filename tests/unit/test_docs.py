"""The README and docs/ are part of the product: the configuration tables, the make commands they name and the
capacity figures must match the code, every link must lead somewhere, and the README stays a five-minute read."""

from __future__ import annotations

import re
from pathlib import Path

from smartsheet_oauth.config import KNOWN_SCOPES

from infra.local.template_model import Template
from tests.bench.capacity import Settings, capacity, safety_margin_seconds

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {"README.md": README, "SECURITY.md": (ROOT / "SECURITY.md").read_text(encoding="utf-8")} | {
    f"docs/{name}": text for name, text in DOCS.items()
}
CONFIG_SOURCE = (ROOT / "functions" / "smartsheet_oauth" / "config.py").read_text(encoding="utf-8")
README_MAX_LINES = 200  # the README is read in five minutes; the reference lives in docs/


def _section(page: str, title: str) -> str:
    start = page.index(f"## {title}\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else None]


def _first_column(section: str) -> set[str]:
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Za-z_]+)`", line.split("|")[1]))
    return names


def test_every_template_parameter_is_documented_and_nothing_else() -> None:
    documented = _first_column(_section(DOCS["configuration.md"], "Template parameters"))
    assert documented == set(Template.load().parameters)


def test_documented_defaults_are_the_templates() -> None:
    table = _section(DOCS["configuration.md"], "Template parameters")
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
    documented = _first_column(_section(DOCS["configuration.md"], "The functions' environment"))
    assert names, "the config reads no variables? the pattern is stale"
    assert names <= documented, sorted(names - documented)


def _make_commands(text: str) -> set[str]:
    """The make targets a page names as commands: in code blocks and `code` spans (prose may "make it" anything)."""
    code = re.findall(r"^```.*?^```|`[^`\n]+`", text, flags=re.MULTILINE | re.DOTALL)
    return {target for block in code for target in re.findall(r"\bmake ([a-z][a-z-]+)", block)}


def test_every_make_command_the_readme_and_the_docs_name_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    # The README's promise: two commands to run it and test it, and deploy's four steps.
    assert {"dev", "test", "deploy", "set-client-secret", "doctor"} <= _make_commands(README)
    for name, text in PAGES.items():
        assert _make_commands(text) <= targets, (name, sorted(_make_commands(text) - targets))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens and underscores dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return {_anchor(line.lstrip("#")) for line in outside_code.splitlines() if re.match(r"#{1,6} ", line)}


def test_every_relative_link_leads_to_a_file_and_a_heading_there() -> None:
    for name, text in PAGES.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https://..., mailto:
            path, _, anchor = target.partition("#")
            resolved = (ROOT / name).parent / path if path else ROOT / name
            assert resolved.exists(), (name, target)
            if anchor:
                assert anchor in _anchors(resolved.read_text(encoding="utf-8")), (name, target)


def test_the_readme_is_short_and_leads_to_every_docs_page() -> None:
    assert len(README.splitlines()) <= README_MAX_LINES
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)", README))
    assert linked == set(DOCS), sorted(set(DOCS) ^ linked)


def _performance_row(label_start: str) -> str:
    rows = [
        line
        for line in _section(DOCS["performance.md"], "`make bench`").splitlines()
        if line.startswith(f"| {label_start}")
    ]
    assert len(rows) == 1, f"docs/performance.md's bench table needs one row starting with {label_start!r}"
    return rows[0]


def _thousands(value: float) -> str:
    return f"~{round(value, -3):,.0f}"


def test_the_capacity_figures_follow_the_templates_values() -> None:
    # On Lambda the pace binds (the bench measures CPU and concurrency far above it): every figure is the sweep's share
    # of the pace times the time a sweep dispatches, from the template's defaults: a new default, new figures.
    default = Settings.of()
    busiest = Settings.of(RefreshTimeoutSeconds="900", RefreshSchedule="rate(15 minutes)")
    margin = safety_margin_seconds()
    now, most = capacity(default, default.sweep_pace_per_second), capacity(busiest, busiest.sweep_pace_per_second)

    per_invocation = _performance_row("capacity per invocation")
    assert f"timeout {default.timeout_seconds} s less the {margin:.0f} s margin" in per_invocation
    assert f"the sweep's share of a pace of {default.pace_per_minute} a minute" in per_invocation
    assert f"| {now.per_invocation:,.0f} connections |" in per_invocation
    steady = _performance_row("one scheduled function keeps up to")
    assert f"every {default.interval_seconds // 60} minutes" in steady
    assert f"{_thousands(now.steady)} steady, {_thousands(now.all_due_at_once)} all due at once" in steady
    assert f"{_thousands(most.steady)} steady, {_thousands(most.all_due_at_once)} all due at once" in (
        _performance_row("the same with a sweep every 15 minutes, timeout 900 s")
    )
    assert f"pace {default.sweep_pace_per_second:g}/s (binds)" in _performance_row("one invocation's limits")


def test_every_file_the_pages_name_exists() -> None:
    """A page that cites a file sends its reader there: `infra/...`, `tests/...` paths from the repository's root, and a
    bare `test_*.py` somewhere under tests/ (issue 22 item 7: operations.md cited one that did not exist)."""
    roots = ("functions/", "infra/", "tests/", "docs/", ".ci/")
    test_files = {path.name for path in (ROOT / "tests").rglob("test_*.py")}
    checked = 0
    for name, text in PAGES.items():
        for cited in re.findall(r"`([\w./-]+\.(?:py|yaml|md|sh|json|toml|txt))`", text):
            if cited.startswith(roots):
                assert (ROOT / cited).exists(), (name, cited)
            elif re.fullmatch(r"test_\w+\.py", cited):
                assert cited in test_files, (name, cited)
            else:
                continue
            checked += 1
    assert checked > 20, "the pattern finds no cited file: stale?"
