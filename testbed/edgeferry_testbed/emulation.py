"""arm64 emulation for the testbed's Docker daemon: qemu-user-static registered in binfmt_misc.

The smoke test runs every platform of a multi-platform image, and the arm64 base image is made
by running Debian's maintainer scripts, so this amd64 machine must run arm64 binaries. Debian's
`qemu-user-static` ships the emulator and a binfmt_misc rule (`/usr/lib/binfmt.d/`) but
registers it only through systemd or binfmt-support, which a container or a fresh VM may not run;
so the testbed registers it itself, idempotently, before any image is made or used.

The rule must carry the F (fix-binary) flag: the kernel then opens the emulator once, at
registration, and uses that open file for every arm64 process, so the emulator need not exist
inside the container's root filesystem (our images do not ship it). A rule without F is replaced.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess

BINFMT_DIR = pathlib.Path("/proc/sys/fs/binfmt_misc")
RULES_DIR = pathlib.Path("/usr/lib/binfmt.d")
ARM64_RULE = "qemu-aarch64"
"""The name qemu-user-static gives its aarch64 rule (its file in RULES_DIR, its binfmt entry)."""


class EmulationError(RuntimeError):
    """arm64 emulation cannot be set up on this machine; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered binfmt_misc rule, as its file under BINFMT_DIR reads."""

    enabled: bool
    interpreter: str
    flags: str

    @property
    def fixes_binary(self) -> bool:
        """Whether the kernel keeps the emulator open (F), so it works inside containers."""
        return "F" in self.flags


def parse_entry(text: str) -> Entry:
    """An entry file's text (`enabled`, `interpreter ...`, `flags: ...`, magic lines)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
    return Entry(
        enabled=bool(lines) and lines[0] == "enabled",
        interpreter=fields.get("interpreter", ""),
        flags=fields.get("flags:", "").strip(),
    )


def rule_interpreter(rule: str) -> str:
    """The interpreter a `:name:type:offset:magic:mask:interpreter:flags` rule names."""
    separator = rule[0]
    parts = rule.strip().split(separator)
    if len(parts) != 8:
        raise EmulationError(f"not a binfmt_misc rule: {rule.strip()!r}")
    return parts[6]


def ensure_arm64(
    *, binfmt_dir: pathlib.Path = BINFMT_DIR, rules_dir: pathlib.Path = RULES_DIR
) -> str:
    """Make arm64 binaries run here (mount binfmt_misc, register the rule); says what it did.

    Needs root. Raises EmulationError naming the missing piece when it cannot.
    """
    done: list[str] = []
    if not (binfmt_dir / "register").exists():
        _mount(binfmt_dir)
        done.append(f"mounted binfmt_misc on {binfmt_dir}")
    if (binfmt_dir / "status").read_text().strip() != "enabled":
        (binfmt_dir / "status").write_text("1")
        done.append("enabled binfmt_misc")
    entry_path = binfmt_dir / ARM64_RULE
    if entry_path.exists():
        entry = parse_entry(entry_path.read_text())
        if entry.fixes_binary and pathlib.Path(entry.interpreter).exists():
            if not entry.enabled:
                entry_path.write_text("1")
                done.append(f"enabled {ARM64_RULE}")
            return _summary(done, entry, already=not done)
        entry_path.write_text("-1")  # removes the rule; it is registered again below
        done.append(f"removed {ARM64_RULE} (flags {entry.flags!r}, {entry.interpreter})")
    rule = _rule(rules_dir)
    try:
        (binfmt_dir / "register").write_text(rule)
    except OSError as error:
        raise EmulationError(f"registering {ARM64_RULE} in {binfmt_dir} failed: {error}") from None
    done.append(f"registered {ARM64_RULE} from {rules_dir / (ARM64_RULE + '.conf')}")
    if not entry_path.exists():
        raise EmulationError(f"{entry_path} is missing right after registering it")
    entry = parse_entry(entry_path.read_text())
    if not (entry.enabled and entry.fixes_binary):
        raise EmulationError(
            f"{ARM64_RULE} registered with flags {entry.flags!r}; it needs F (fix-binary) to "
            "work inside containers"
        )
    return _summary(done, entry, already=False)


def _rule(rules_dir: pathlib.Path) -> str:
    path = rules_dir / f"{ARM64_RULE}.conf"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise EmulationError(
            f"{path} is missing: apt-get install qemu-user-static (or `make deps`)"
        ) from None
    rules = [line for line in lines if line.strip() and not line.startswith("#")]
    if len(rules) != 1:
        raise EmulationError(f"{path} holds {len(rules)} rules, not one")
    rule = rules[0].strip()
    interpreter = rule_interpreter(rule)
    if not pathlib.Path(interpreter).exists():
        raise EmulationError(
            f"{path} names {interpreter}, which is missing: apt-get install --reinstall "
            "qemu-user-static"
        )
    flags = rule.split(rule[0])[7]
    if "F" not in flags:
        rule = f"{rule}F"  # a rule file without F: add it (see the module docstring)
    return rule


def _mount(binfmt_dir: pathlib.Path) -> None:
    done = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not (binfmt_dir / "register").exists():
        raise EmulationError(
            f"cannot mount binfmt_misc on {binfmt_dir} ({done.stderr.strip() or done.returncode}):"
            " the kernel needs CONFIG_BINFMT_MISC and the testbed needs root"
        )


def _summary(done: list[str], entry: Entry, *, already: bool) -> str:
    how = "already registered" if already else "; ".join(done)
    return f"arm64 emulation: {how} ({entry.interpreter}, flags {entry.flags})"
