"""Supply chain: every requirements file make and sam build install from pins each package, transitive ones too,
with the hashes of its files, so a changed or substituted file on an index is refused rather than installed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# What sam build installs into every function's artifact (aws-lambda-builders reads CodeUri's requirements.txt).
ARTIFACT_LOCK = ROOT / "functions" / "requirements.txt"
LOCKS = (ARTIFACT_LOCK, ROOT / "requirements.txt", ROOT / "requirements-deploy.txt", ROOT / "requirements-iac.txt")
# Where the functions run (template.yaml: python3.13 on arm64), for the markers of the artifact's dependencies.
LAMBDA_ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.13.0",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.13.0",
    "python_version": "3.13",
    "sys_platform": "linux",
}
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Locked:
    requirement: Requirement
    hashes: int


def _logical_lines(path: Path) -> list[str]:
    """The file's requirement and option lines, continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _locked(path: Path) -> dict[str, Locked]:
    found: dict[str, Locked] = {}
    for line in _logical_lines(path):
        if line.startswith("-"):
            continue  # an option line; test_locks_stand_alone refuses the ones that would pull in other files
        spec = _HASH.sub("", line).strip()
        requirement = Requirement(spec)
        found[canonicalize_name(requirement.name)] = Locked(requirement, len(_HASH.findall(line)))
    return found


def _pinned_version(requirement: Requirement) -> str | None:
    [*specifiers] = requirement.specifier
    if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
        return specifiers[0].version
    return None


def _closure(roots: list[Requirement], environment: dict[str, str]) -> dict[str, str]:
    """Every distribution pip installs for `roots` where `environment` holds, with the version this venv has (the
    venv installs the same lock's versions, so the metadata read here is the artifact's)."""

    def applies(requirement: Requirement, extras: frozenset[str]) -> bool:
        marker = requirement.marker
        return marker is None or any(marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras))

    versions: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots if applies(r, frozenset())]
    while pending:
        name, extras = pending.pop()
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        distribution = metadata.distribution(name)
        versions[name] = distribution.version
        for raw in distribution.requires or []:
            child = Requirement(raw)
            if applies(child, extras):
                pending.append((canonicalize_name(child.name), frozenset(child.extras)))
    return versions


def test_every_package_the_artifact_ships_is_locked_at_its_version_with_hashes() -> None:
    locked = _locked(ARTIFACT_LOCK)
    shipped = _closure([entry.requirement for entry in locked.values()], LAMBDA_ENVIRONMENT)
    assert {"jmespath", "typing-extensions", "cffi", "pycparser"} <= set(shipped), "the closure walk is stale"
    problems = []
    for name, version in sorted(shipped.items()):
        entry = locked.get(name)
        if entry is None:
            problems.append(f"{name}=={version} is shipped but not locked")
        elif _pinned_version(entry.requirement) != version:
            problems.append(f"{name}: locked as {entry.requirement.specifier}, the venv (and artifact) has {version}")
        elif entry.hashes == 0:
            problems.append(f"{name}=={version} is locked without a hash")
    assert not problems, f"{ARTIFACT_LOCK.relative_to(ROOT)}: " + "; ".join(problems) + " (run make lock)"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_requirement_of_a_lock_is_pinned_with_hashes(lock: Path) -> None:
    entries = _locked(lock)
    assert entries
    unpinned = sorted(name for name, entry in entries.items() if _pinned_version(entry.requirement) is None)
    unhashed = sorted(name for name, entry in entries.items() if entry.hashes == 0)
    assert not unpinned, f"not pinned with ==: {unpinned}"
    assert not unhashed, f"no --hash: {unhashed}"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: str(path.relative_to(ROOT)))
def test_locks_stand_alone(lock: Path) -> None:
    # pip's hash checking covers what the file names; an included file, index or link would widen that silently.
    options = [line for line in _logical_lines(lock) if line.startswith("-")]
    assert not options, options


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_hand_edited_pin_is_in_its_lock(lock: Path) -> None:
    # The lock is written from the .in list beside it: an edited pin without `make lock` fails here.
    source = lock.with_suffix(".in")
    locked = _locked(lock)
    stale = []
    for line in _logical_lines(source):
        if line.startswith("-"):
            continue
        requirement = Requirement(line)
        entry = locked.get(canonicalize_name(requirement.name))
        if entry is None or _pinned_version(entry.requirement) != _pinned_version(requirement):
            stale.append(str(requirement))
    assert not stale, f"{source.name} asks for {stale}, which {lock.name} does not lock: run make lock"


def test_the_dev_venv_takes_the_artifacts_versions() -> None:
    # The tests run the functions' code with the versions the artifact ships (requirements.in constrains to it).
    artifact = _locked(ARTIFACT_LOCK)
    dev = _locked(ROOT / "requirements.txt")
    differing = sorted(
        name
        for name, entry in artifact.items()
        if name in dev and _pinned_version(dev[name].requirement) != _pinned_version(entry.requirement)
    )
    assert not differing
    assert set(artifact) <= set(dev)
