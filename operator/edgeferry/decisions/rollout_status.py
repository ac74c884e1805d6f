"""The ModelDeployment status block: complete counts, bounded detail.

A ModelDeployment may select thousands of targets; a status that lists them all grows with the
fleet, pushes the object toward etcd's size limit, and makes every status write expensive.
Fleet truncates its messages to a few entries for the same reason. So the status keeps:

- counts per target phase, always complete, so `kubectl get md` ("3/4") and the metrics are
  exact at any scale;
- at most `limit` targets in detail, the ones that need attention first (Failed, RolledBack,
  Progressing, Deferred, Pending, Incompatible, then Ready), by name within a phase, plus how
  many were left out. A healthy fleet therefore shows its first targets by name, a troubled
  one shows its troubles;
- per-target messages cut to a bounded length.

The detail that must survive a restart beyond that bound lives on the targets themselves (see
`waves`): this block is a summary, not the rollout's memory, except for the not-ready targets
it always lists first.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgeferry.decisions import waves
from edgeferry.models import conditions
from edgeferry.models import modeldeployment as md

DEFAULT_LIMIT = 50
"""Targets listed in detail; the rest are only counted."""

MAX_MESSAGE = 256
"""Characters of a per-target error kept in status."""

_ATTENTION: Mapping[md.TargetPhase, int] = {
    "Failed": 0,
    "RolledBack": 1,
    "Progressing": 2,
    "Deferred": 3,
    "Pending": 4,
    "Incompatible": 5,
    "Ready": 6,
}


def count(phases: Iterable[md.TargetPhase]) -> md.PhaseCounts:
    """Targets per phase, and the total."""
    tally = collections.Counter(phases)
    return md.PhaseCounts(
        total=sum(tally.values()),
        pending=tally["Pending"],
        progressing=tally["Progressing"],
        ready=tally["Ready"],
        failed=tally["Failed"],
        rolled_back=tally["RolledBack"],
        deferred=tally["Deferred"],
        incompatible=tally["Incompatible"],
    )


MAX_SUMMARY = 1024
"""Characters of the deployment's own message kept in status."""


def _cut(text: str | None, limit: int = MAX_MESSAGE) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def target_lines(
    outcomes: Sequence[waves.TargetOutcome], *, limit: int = DEFAULT_LIMIT
) -> tuple[tuple[md.TargetStatus, ...], int]:
    """The targets to list (attention first, at most `limit`) and how many were left out."""
    ordered = sorted(outcomes, key=lambda o: (_ATTENTION[o.phase], o.name))
    shown = ordered[: max(0, limit)]
    lines = tuple(
        md.TargetStatus(
            name=o.name,
            cluster_type=o.cluster_type,
            phase=o.phase,
            digest=o.digest,
            previous_digest=o.previous_digest,
            template_hash=o.template_hash,
            ready_replicas=o.ready_replicas,
            wave=o.wave,
            available_since=o.available_since,
            last_transition_time=o.last_transition_time,
            message=_cut(o.message),
            last_error=_cut(o.error),
        )
        for o in shown
    )
    return lines, len(ordered) - len(shown)


def build(
    plan: waves.Plan,
    *,
    generation: int | None,
    existing_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: datetime.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> md.ModelDeploymentStatus:
    """The status to write after a reconcile that produced `plan`.

    Conditions are merged with the existing ones so `lastTransitionTime` only moves when a
    condition really flips. Write it with `.to_status()`.
    """
    stamp = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    lines, left_out = target_lines(plan.targets, limit=limit)
    merged = conditions.merge(
        existing_conditions,
        plan.conditions,
        generation=generation,
        now=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return md.ModelDeploymentStatus(
        observed_generation=generation,
        phase=plan.phase,
        digest=plan.digest,
        template_hash=plan.template_hash,
        current_wave=plan.current_wave,
        total_waves=len(plan.waves),
        counts=count(o.phase for o in plan.targets),
        targets=lines,
        targets_not_listed=left_out,
        message=_cut(plan.message, MAX_SUMMARY),
        conditions=tuple(merged),
    )
