"""Status conditions, the way kstatus and `kubectl wait` read them.

Every resource reports a list of conditions with a type, status, reason and a message a person
can act on. Keeping the merge logic here (pure, no I/O) means each reconcile rewrites the list
deterministically and `lastTransitionTime` only moves when the status really flips.

kstatus reads `Reconciling` and `Stalled` as "abnormal-true": their presence is the signal. So
`merge` writes them only while True, and an update that sets one of them False removes it. Code
computes the trio with `kstatus`, the one place that decides which of them a state shows.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from edgeferry.models import reasons, timestamps

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclasses.dataclass(frozen=True)
class Condition:
    """One observed aspect of a resource (e.g. `Admitted=False`, reason `VulnerabilitiesFound`)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def now_rfc3339() -> str:
    """Kubernetes' timestamp format (seconds, UTC, `Z`), for now."""
    return timestamps.format_rfc3339(datetime.datetime.now(datetime.UTC))


def kstatus(
    *, ready: bool, reason: str, message: str, reconciling: bool = False, stalled: bool = False
) -> tuple[Condition, Condition, Condition]:
    """`Ready`, `Reconciling` and `Stalled` for one state, with one reason and message.

    Reconciling/Stalled come back with status False when they do not hold; `merge` then removes
    them (abnormal-true), so callers never decide presence themselves.
    """
    if ready and (reconciling or stalled):
        raise ValueError("a Ready resource is neither Reconciling nor Stalled")
    return (
        Condition(reasons.READY, "True" if ready else "False", reason, message),
        Condition(reasons.RECONCILING, "True" if reconciling else "False", reason, message),
        Condition(reasons.STALLED, "True" if stalled else "False", reason, message),
    )


def merge(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return the new condition list: `updates` replace same-typed entries, others are kept.

    `lastTransitionTime` is kept when the status did not change, so alerts and humans see when
    a condition really flipped, not when the operator last looked. An update that sets an
    abnormal-true type (`Reconciling`, `Stalled`) to anything but True removes it.
    """
    stamp = now or now_rfc3339()
    by_type: dict[str, dict[str, Any]] = {str(c.get("type")): dict(c) for c in existing or []}
    for cond in updates:
        if cond.type in reasons.ABNORMAL_TRUE and cond.status != "True":
            by_type.pop(cond.type, None)
            continue
        previous = by_type.get(cond.type)
        transition = stamp
        if previous is not None and previous.get("status") == cond.status:
            transition = str(previous.get("lastTransitionTime") or stamp)
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[cond.type] = entry
    return sorted(by_type.values(), key=lambda c: str(c["type"]))


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, if the list has one."""
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    """Whether the condition of that type exists and is `True`."""
    cond = find(conditions, type_)
    return cond is not None and cond.get("status") == "True"
