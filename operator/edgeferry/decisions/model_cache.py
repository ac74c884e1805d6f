"""Which cached models to evict: least recently used first, until the cache fits its bound.

Pure, so the choice is unit-tested without a disk. The adapter that keeps the cache
(`adapters.model_store`) lists what it holds and deletes what this returns. Models a build is
using right now (`in_use`) are never chosen, even if the cache stays over its bound until they
are released: deleting a file under a running build would fail that build, while an oversized
cache only costs disk for a while.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable


@dataclasses.dataclass(frozen=True)
class CachedModel:
    """One model file in the cache."""

    sha256: str
    size: int
    last_used: float
    """When a build last asked for it (seconds since the epoch; the file's mtime on disk)."""


def evictions(
    cached: Iterable[CachedModel], *, limit_bytes: int, in_use: Collection[str] = ()
) -> list[str]:
    """The sha256s to delete so the cache holds at most `limit_bytes`, oldest use first.

    Ties in `last_used` go by sha256, so the choice never depends on listing order.
    """
    models = sorted(cached, key=lambda m: (m.last_used, m.sha256))
    total = sum(m.size for m in models)
    chosen: list[str] = []
    for model in models:
        if total <= limit_bytes:
            break
        if model.sha256 in in_use:
            continue
        chosen.append(model.sha256)
        total -= model.size
    return chosen
