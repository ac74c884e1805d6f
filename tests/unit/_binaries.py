"""The command-line tools the packaging tests run, found where `make` puts them.

kubectl and helm are the pinned builds in the edgeferry cache (`testbed/tools/build.sh`, run by
`make unit`, `make tools` and `make test`); promtool and lua5.4 are Debian packages (`make deps`).
These tests need no running service, only the binaries. A missing binary FAILS the test with the
command that provides it: a skip would let `make test` and CI pass without ever rendering the
chart, running the alert tests or the Argo CD health scripts.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from edgeferry.adapters import toolpaths
from edgeferry_testbed import layout

REPO = layout.REPO_ROOT


def _cached(family: str, version: str, binary: str, *, tool: str) -> str:
    path = toolpaths.cache_root() / "bin" / f"{family}-{version}" / binary
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run `make unit` (or `testbed/tools/build.sh {tool}`)",
            pytrace=False,
        )
    return str(path)


def kubectl() -> str:
    return _cached("kubernetes", layout.KUBERNETES_VERSION, "kubectl", tool="kubernetes")


def helm() -> str:
    return _cached("helm", layout.HELM_VERSION, "helm", tool="helm")


def debian(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        pytest.fail(
            f"{binary} is missing: `apt-get install {package}` (or `make deps`)", pytrace=False
        )
    return found


def run(command: Sequence[str], *, cwd: Path | None = None, stdin: str | None = None) -> str:
    """Run a tool; on failure, fail the test with its output (not a bare CalledProcessError)."""
    done = subprocess.run(
        list(command), cwd=cwd, input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout
