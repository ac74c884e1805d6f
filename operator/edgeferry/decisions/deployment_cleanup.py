"""What a ModelDeployment's deletion reports, and whether it waits longer for a dead site.

Deletion removes our workloads at every EdgeTarget of the namespace. A target that cannot be
reached holds the deletion until `cleanupDeadlineSeconds` after it was requested, retried every
few seconds; then the ModelDeployment goes anyway, and a Warning names the targets where
workloads may be left and the command that removes them by hand. Without the deadline a dead
site could keep a ModelDeployment forever; without the Warning nobody would know what is left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from edgeferry.decisions import rollout_types as rt
from edgeferry.models import reasons, target_objects


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The events of one cleanup pass, and whether to try again."""

    events: tuple[rt.Event, ...]
    retry_after_seconds: float | None = None
    """Not None: some targets could not be reached and the deadline is not over yet."""
    retry_message: str = ""


def after_pass(
    removed: Mapping[str, Sequence[str]],
    left: Mapping[str, str],
    *,
    namespace: str,
    name: str,
    waited_seconds: float,
    deadline_seconds: float,
    retry_seconds: float,
) -> Outcome:
    """`removed`: `Kind/name` per target where something went; `left`: why per target that
    could not be reached."""
    events: list[rt.Event] = []
    done = {n: r for n, r in removed.items() if r}
    if done:
        where = "; ".join(f"{n}: {', '.join(r)}" for n, r in sorted(done.items()))
        events.append(
            rt.Event(
                "Normal",
                reasons.WORKLOADS_REMOVED,
                f"removed at {len(done)} target(s): {where}",
            )
        )
    if not left:
        return Outcome(tuple(events))
    names = ", ".join(sorted(left))
    if waited_seconds < deadline_seconds:
        more = deadline_seconds - waited_seconds
        return Outcome(
            tuple(events),
            retry_after_seconds=min(retry_seconds, max(1.0, more)),
            retry_message=f"could not reach {names} yet; retrying for {more:.0f}s more",
        )
    events.append(
        rt.Event(
            "Warning",
            reasons.CLEANUP_INCOMPLETE,
            f"gave up after {deadline_seconds:.0f}s: workloads left behind at "
            f"{names}. Delete them there by hand: `kubectl delete deploy,svc -l "
            f"{target_objects.label_selector(namespace, name)}` in each target's namespace. "
            "Causes: " + "; ".join(left[n] for n in sorted(left)),
        )
    )
    return Outcome(tuple(events))
