"""arm64 emulation as the testbed sets it up, on this machine's kernel.

The machine's own binfmt_misc already has the rule (the "already there" path). A fresh machine's
path (mount binfmt_misc, register from qemu-user-static's rule) is run for real in a new user
namespace: since Linux 6.7 binfmt_misc can be mounted there as an instance of its own, empty, so
registering in it touches nothing outside. A tiny arm64 program (exit status 42, written below)
shows the kernel refusing arm64 before the registration and running it after.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from edgeferry_testbed import emulation
from tests.integration import _programs

pytestmark = pytest.mark.integration


def arm64_program_exiting_42(path: pathlib.Path) -> pathlib.Path:
    """`arm64_program_exiting_42_bytes` written to `path`, executable."""
    path.write_bytes(_programs.arm64_program_exiting_42_bytes())
    path.chmod(0o755)
    return path


def in_new_user_namespace(script: str) -> subprocess.CompletedProcess[str]:
    """`script` under `sh` as root of a new user and mount namespace."""
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_machines_arm64_rule_is_found_already_registered_with_fix_binary() -> None:
    said = emulation.ensure_arm64()
    assert said.startswith("arm64 emulation: already registered"), said
    entry = emulation.parse_entry((emulation.BINFMT_DIR / emulation.ARM64_RULE).read_text())
    assert entry.enabled and entry.fixes_binary, entry


def test_an_arm64_program_runs_on_this_amd64_machine(tmp_path: pathlib.Path) -> None:
    emulation.ensure_arm64()
    program = arm64_program_exiting_42(tmp_path / "exit42")
    assert subprocess.run([str(program)], check=False).returncode == 42


def test_a_fresh_binfmt_misc_is_mounted_and_registered_and_then_runs_arm64(
    tmp_path: pathlib.Path,
) -> None:
    program = arm64_program_exiting_42(tmp_path / "exit42")
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    ensure = (
        f"{sys.executable} -c 'import pathlib; from edgeferry_testbed import emulation; "
        f'print(emulation.ensure_arm64(binfmt_dir=pathlib.Path("{binfmt}")))\''
    )
    done = in_new_user_namespace(
        f"mount -t binfmt_misc binfmt_misc {binfmt} && {program}; echo before=$?; umount {binfmt};"
        f" {ensure} && {ensure} && {program}; echo after=$?"
    )
    lines = done.stdout.splitlines()
    assert "before=126" in lines, (done.stdout, done.stderr)  # the kernel: Exec format error
    assert "Exec format error" in done.stderr, done.stderr
    first, second = (line for line in lines if line.startswith("arm64 emulation:"))
    assert first.startswith(
        f"arm64 emulation: mounted binfmt_misc on {binfmt}; registered qemu-aarch64 from "
        "/usr/lib/binfmt.d/qemu-aarch64.conf"
    ), first
    assert "flags POF" in first, first
    assert second.startswith("arm64 emulation: already registered"), second
    assert lines[-1] == "after=42", (done.stdout, done.stderr)


def test_a_rule_without_fix_binary_is_replaced_by_one_with_it(tmp_path: pathlib.Path) -> None:
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    rule = (emulation.RULES_DIR / f"{emulation.ARM64_RULE}.conf").read_text().strip()
    without_f = rule.rsplit(":", 1)[0] + ":P"
    done = in_new_user_namespace(
        f"mount -t binfmt_misc binfmt_misc {binfmt} && printf '%s' '{without_f}' > "
        f"{binfmt}/register && grep flags {binfmt}/qemu-aarch64 && {sys.executable} -c "
        "'import pathlib; from edgeferry_testbed import emulation; "
        f'print(emulation.ensure_arm64(binfmt_dir=pathlib.Path("{binfmt}")))\''
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "flags: P", (done.stdout, done.stderr)
    assert lines[1].startswith(
        "arm64 emulation: removed qemu-aarch64 (flags 'P', /usr/libexec/qemu-binfmt/"
        "aarch64-binfmt-P); registered qemu-aarch64"
    ), lines
    assert lines[1].endswith("flags POF)"), lines


def test_a_machine_without_qemu_user_static_is_told_to_install_it(tmp_path: pathlib.Path) -> None:
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    done = in_new_user_namespace(
        f"{sys.executable} -c 'import pathlib; from edgeferry_testbed import emulation; "
        f'emulation.ensure_arm64(binfmt_dir=pathlib.Path("{binfmt}"), '
        f'rules_dir=pathlib.Path("{tmp_path}"))\''
    )
    assert done.returncode == 1
    assert (
        f"EmulationError: {tmp_path}/qemu-aarch64.conf is missing: apt-get install qemu-user-static"
    ) in done.stderr, done.stderr
