"""The model cache: model files in the operator's workdir, named by their SHA-256.

Content-addressed, so one file serves every ModelImage that pins the same digest, and a name
never lies: a file is renamed to `models/sha256/<hex>` only after its bytes hashed to `<hex>`
(written to `models/partial/` first, `os.replace` into place). A download that fails or breaks
off leaves no file a build could pick up, and an operator killed mid-download leaves a partial
that the next start deletes.

One fetch per digest per operator: a lock per digest makes a second reconcile that wants the
same model wait for the first download and then use its file. A file's mtime is its last use.
What to evict is not decided here (adapters import no decisions): the runner gives `cached()`
and `in_use()` to `decisions.model_cache.evictions` and hands its answer to `delete()`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from edgeferry.adapters import model_fetch

_LOCK = threading.Lock()
_DIGEST_LOCKS: dict[str, threading.Lock] = {}
_HELD: collections.Counter[str] = collections.Counter()
_SWEPT: set[Path] = set()

Fetch = Callable[[IO[bytes]], model_fetch.Downloaded]
"""Writes the model's bytes into the open file and says what it wrote."""


def _digest_lock(sha256: str) -> threading.Lock:
    with _LOCK:
        return _DIGEST_LOCKS.setdefault(sha256, threading.Lock())


def path_of(root: Path, sha256: str) -> Path:
    """Where the model with that SHA-256 lives once cached."""
    return root / "sha256" / sha256


def _sweep_partials(root: Path) -> None:
    """Delete partial downloads a previous operator process left (once per process)."""
    with _LOCK:  # held while sweeping, so no other build starts a partial the sweep deletes
        if root in _SWEPT:
            return
        _SWEPT.add(root)
        for leftover in (root / "partial").glob("*"):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def held(root: Path, sha256: str, *, fetch: Fetch, where: str) -> Iterator[Path]:
    """The cached file of model `sha256`, fetched first if absent; kept while the block runs.

    Raises `model_fetch.DigestMismatchError` (naming both digests) when what `fetch` wrote
    hashes differently, and whatever `fetch` raises; in both cases nothing is cached.
    """
    _sweep_partials(root)
    with _digest_lock(sha256):
        with _LOCK:
            _HELD[sha256] += 1
        try:
            target = path_of(root, sha256)
            if target.exists():
                os.utime(target)
            else:
                _download(root, sha256, fetch=fetch, where=where)
        except BaseException:
            _release(sha256)
            raise
    try:
        yield target
    finally:
        _release(sha256)


def _release(sha256: str) -> None:
    with _LOCK:
        _HELD[sha256] -= 1
        if _HELD[sha256] <= 0:
            del _HELD[sha256]


def _download(root: Path, sha256: str, *, fetch: Fetch, where: str) -> None:
    partial_dir = root / "partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    (root / "sha256").mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=partial_dir, prefix=sha256[:16] + ".")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as into:
            got = fetch(into)
            into.flush()
            os.fsync(into.fileno())
        if got.sha256 != sha256:
            raise model_fetch.DigestMismatchError(where, expected=sha256, actual=got.sha256)
        partial.chmod(0o644)
        os.replace(partial, path_of(root, sha256))
    finally:
        partial.unlink(missing_ok=True)


class Entry(NamedTuple):
    """One cached model: its SHA-256, size and last use (mtime, seconds since the epoch)."""

    sha256: str
    size: int
    last_used: float


def cached(root: Path) -> list[Entry]:
    """Every model in the cache, with its size and last use."""
    folder = root / "sha256"
    entries = []
    for path in folder.glob("*") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            entries.append(Entry(path.name, stat.st_size, stat.st_mtime))
    return entries


def in_use() -> frozenset[str]:
    """The models some build of this process holds right now."""
    with _LOCK:
        return frozenset(_HELD)


def delete(root: Path, sha256s: Iterable[str]) -> None:
    """Remove these models from the cache (a held one is left alone)."""
    busy = in_use()
    for sha256 in sha256s:
        if sha256 not in busy:
            path_of(root, sha256).unlink(missing_ok=True)
