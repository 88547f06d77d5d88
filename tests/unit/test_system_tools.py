"""infra/scripts/system_tools.sh, which `make test` (and so CI) runs for Chromium and for Node.js with npm: nothing
when the tool is there; installed from Debian's packages as root or through sudo without a prompt; otherwise the exact
command to run, and a failing step. Run against fake apt-get, id and sudo on a PATH of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "scripts" / "system_tools.sh"

FAKE_APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$CALLS"
[ "${APT_FAILS:-}" = yes ] && exit 100
if [ "$1" = install ]; then
  for package in "$@"; do
    case "$package" in
      chromium) printf '#!/bin/sh\\n' > "$INSTALL_ROOT/chromium"; chmod +x "$INSTALL_ROOT/chromium" ;;
      libatomic1) : > "$INSTALL_ROOT/libatomic.so.1" ;;
      npm|nodejs) printf '#!/bin/sh\\n' > "$BIN/$package"; chmod +x "$BIN/$package" ;;
    esac
  done
  [ -f "$BIN/nodejs" ] && mv "$BIN/nodejs" "$BIN/node"
fi
exit 0
"""
FAKE_ID = """#!/bin/sh
echo "$FAKE_UID"
"""
# The loader's cache as `ldconfig -p` prints it: libatomic once the fake apt-get has installed it.
FAKE_LDCONFIG = """#!/bin/sh
echo "2 libs found in cache"
[ -e "$INSTALL_ROOT/libatomic.so.1" ] && printf '\\tlibatomic.so.1 (libc6,x86-64) => /lib/libatomic.so.1\\n'
printf '\\tlibc.so.6 (libc6,x86-64) => /lib/libc.so.6\\n'
"""
# sudo -n true answers whether sudo works without a password; sudo -n COMMAND runs it.
FAKE_SUDO = """#!/bin/sh
echo "sudo $*" >> "$CALLS"
[ "$1" = -n ] && shift
[ "$1" = true ] && { [ "$SUDO_WITHOUT_PASSWORD" = yes ]; exit $?; }
exec "$@"
"""


@dataclass
class Machine:
    bin: Path
    calls: Path
    chromium: Path
    env: dict[str, str]

    def run(self, tool: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", str(SCRIPT), tool], env=self.env, capture_output=True, text=True, timeout=30, check=False
        )

    def recorded(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    """A PATH with the shell's basics only (no node, npm, sudo, apt-get, Chromium), as a user (uid 1000)."""
    bin_dir, root = tmp_path / "bin", tmp_path / "usr-bin"
    bin_dir.mkdir()
    root.mkdir()
    for name in ("cat", "chmod", "env", "grep", "mv", "printf", "sh"):
        found = shutil.which(name)
        assert found is not None, name
        (bin_dir / name).symlink_to(found)
    for name, text in (("id", FAKE_ID), ("ldconfig", FAKE_LDCONFIG)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        "PATH": str(bin_dir),
        "CALLS": str(calls),
        "BIN": str(bin_dir),
        "INSTALL_ROOT": str(root),
        "DEBIAN_CHROMIUM": str(root / "chromium"),
        "FAKE_UID": "1000",
        "SUDO_WITHOUT_PASSWORD": "no",
    }
    return Machine(bin_dir, calls, root / "chromium", env)


def with_tool(machine: Machine, name: str, text: str) -> None:
    (machine.bin / name).write_text(text)
    (machine.bin / name).chmod(0o755)


def test_a_tool_that_is_there_is_left_alone(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)
    machine.chromium.write_text("#!/bin/sh\n")
    machine.chromium.chmod(0o755)
    (machine.chromium.parent / "libatomic.so.1").touch()

    answer = machine.run("chromium")

    assert (answer.returncode, answer.stdout, answer.stderr) == (0, "", "")
    assert machine.recorded() == []


def test_chromium_without_the_playwright_drivers_libatomic_is_completed(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)
    machine.env["FAKE_UID"] = "0"
    machine.chromium.write_text("#!/bin/sh\n")
    machine.chromium.chmod(0o755)

    answer = machine.run("chromium")

    assert answer.returncode == 0, answer.stderr
    assert "apt-get install -y --no-install-recommends chromium libatomic1 -q" in machine.recorded()


def test_as_root_chromium_is_installed_from_debians_packages(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)
    machine.env["FAKE_UID"] = "0"

    answer = machine.run("chromium")

    assert answer.returncode == 0, answer.stderr
    assert machine.recorded() == [
        "apt-get update -q",
        "apt-get install -y --no-install-recommends chromium libatomic1 -q",
    ]
    assert os.access(machine.chromium, os.X_OK)
    assert "installing Debian's chromium libatomic1" in answer.stdout


def test_with_sudo_that_asks_nothing_node_and_npm_are_installed_through_it(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)
    with_tool(machine, "sudo", FAKE_SUDO)
    machine.env["SUDO_WITHOUT_PASSWORD"] = "yes"

    answer = machine.run("npm")

    assert answer.returncode == 0, answer.stderr
    assert machine.recorded() == [
        "sudo -n true",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -q",
        "apt-get update -q",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm -q",
        "apt-get install -y --no-install-recommends nodejs npm -q",
    ]
    assert (machine.bin / "node").exists()
    assert (machine.bin / "npm").exists()


def test_without_root_or_sudo_the_exact_command_is_printed_and_nothing_runs(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)

    chromium, npm = machine.run("chromium"), machine.run("npm")

    assert chromium.returncode == npm.returncode == 1
    assert "  su -c 'apt-get update && apt-get install -y --no-install-recommends chromium libatomic1'\n" in (
        chromium.stderr
    )
    assert "  su -c 'apt-get update && apt-get install -y --no-install-recommends nodejs npm'\n" in npm.stderr
    assert machine.recorded() == []


def test_with_sudo_that_would_ask_for_a_password_the_sudo_command_is_printed(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)
    with_tool(machine, "sudo", FAKE_SUDO)

    answer = machine.run("chromium")

    assert answer.returncode == 1
    assert "needs root (or sudo without a password prompt)" in answer.stderr
    assert "  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium libatomic1\n" in (
        answer.stderr
    )
    assert machine.recorded() == ["sudo -n true"]


def test_a_failed_install_fails_the_step(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)
    machine.env["FAKE_UID"] = "0"
    machine.env["APT_FAILS"] = "yes"

    answer = machine.run("chromium")

    assert answer.returncode == 1
    assert "apt-get could not install chromium libatomic1" in answer.stderr


def test_without_apt_get_it_says_to_use_the_systems_package_manager(machine: Machine) -> None:
    answer = machine.run("npm")

    assert answer.returncode == 1
    assert "no apt-get" in answer.stderr
    assert "Install nodejs npm with this system's package manager" in answer.stderr


def test_a_chromium_path_of_ones_own_is_never_installed_over(machine: Machine) -> None:
    with_tool(machine, "apt-get", FAKE_APT_GET)
    machine.env["FAKE_UID"] = "0"

    elsewhere = machine.chromium.parent / "my-chromium"
    machine.env["CHROMIUM_PATH"] = str(elsewhere)

    answer = machine.run("chromium")

    assert answer.returncode == 1
    assert f"CHROMIUM_PATH={elsewhere}: no Chromium there" in answer.stderr
    assert machine.recorded() == []
