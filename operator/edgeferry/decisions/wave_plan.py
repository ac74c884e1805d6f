"""Waves: which targets go together, which wave is open, and whether the rollout halted.

Targets are ordered by name, so the plan is the same on every reconcile and after a restart,
without storing it: first `canary` targets, then chunks of at most `maxPerWave` (a count, or a
percentage of the compatible targets, rounded up, at least one). A wave opens only when every
earlier wave is settled; more than `maxFailures` failures in a wave halt the rollout there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from edgeferry.models import modeldeployment as md


def wave_size(max_per_wave: md.MaxPerWave, *, total: int) -> int:
    """Targets per wave: an integer as is, a percentage of `total` rounded up; at least 1."""
    if isinstance(max_per_wave, int):
        return max(1, max_per_wave)
    percent = int(max_per_wave.rstrip("%"))
    return max(1, (total * percent + 99) // 100)


def plan_waves(
    names: Iterable[str], *, canary: int, max_per_wave: md.MaxPerWave
) -> tuple[tuple[str, ...], ...]:
    """Split targets into waves: `canary` targets first, then chunks of `wave_size`.

    Names are sorted, so the plan is deterministic and needs no storage.
    """
    ordered = sorted(set(names))
    if not ordered:
        return ()
    size = wave_size(max_per_wave, total=len(ordered))
    first = ordered[: max(0, canary)]
    rest = ordered[len(first) :]
    planned = [tuple(first)] if first else []
    planned.extend(tuple(rest[i : i + size]) for i in range(0, len(rest), size))
    return tuple(planned)


def halted_wave(
    planned: Sequence[Sequence[str]], *, failed: Callable[[str], bool], max_failures: int
) -> int:
    """1-based index of the first wave with more than `max_failures` failed targets; 0: none."""
    return next(
        (i + 1 for i, wave in enumerate(planned) if sum(failed(n) for n in wave) > max_failures),
        0,
    )


def current_wave(
    planned: Sequence[Sequence[str]], *, settled: Callable[[str], bool], halted: int
) -> int:
    """1-based index of the open wave: the first not settled (the last once all are), never
    beyond a halted one."""
    current = next(
        (i + 1 for i, wave in enumerate(planned) if not all(settled(n) for n in wave)),
        len(planned),
    )
    return min(current, halted) if halted else current
