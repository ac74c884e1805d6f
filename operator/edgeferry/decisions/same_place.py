"""Which EdgeTargets put workloads in the same place, and what that forbids.

A place is a namespace of one cluster. Two EdgeTargets can stand for one place: two Cloud
targets with different node pools (both write to the hub), or two K3s targets whose two Secrets
reach one cluster. Our workloads are named after the ModelDeployment, not the target, so in one
place they are one Deployment and one Service, whichever target wrote them. Hence three rules:

- Releasing a target the selector no longer picks, or deleting an EdgeTarget, must not remove
  what a selected target in the same place still serves (the restart that deleted `iris`).
- Two selected targets of one ModelDeployment in the same place would write one Deployment
  twice per round, each with its own record: the later by name is reported and never written,
  the first keeps working.
- When the place cannot be known yet, deletion is the cautious side: a target whose cluster
  has not been identified may share a place with any target of the same namespace name, so
  nothing of ours is removed through it until a probe has identified it.

The cluster is known by the `kube-system` namespace's UID, which a probe records as
`status.clusterID` (it does not change with the address, the CA or the Secret that reaches the
cluster). Until then, and where a site does not let us read it, Cloud targets are known to
share the hub, and K3s targets that use one Secret to share its cluster. An Agent target's
cluster id is the one its agent reports.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping

from edgeferry.decisions import rollout_types as rt
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a target's workloads go, as far as it is known."""

    namespace: str
    cluster: str | None
    """The cluster's `kube-system` UID (`status.clusterID`); None until a probe read it."""
    access: str
    """How it is reached: `hub` for Cloud, the kubeconfig Secret and key for K3s."""
    cloud: bool


AGENT_ACCESS = "agent"
"""An Agent target's site is reached by its own agent only: two Agent targets are the same place
only by cluster id, never because both say "agent"."""


def of(spec: et.EdgeTargetSpec, status: et.EdgeTargetStatus) -> Place:
    """The place of one EdgeTarget."""
    if spec.type == "Agent":
        access = AGENT_ACCESS
    elif spec.k3s is None:
        access = "hub"
    else:
        ref = spec.k3s.kubeconfig_secret_ref
        access = f"secret {ref.name}/{ref.key}"
    return Place(spec.namespace, status.cluster_id, access, cloud=spec.type == "Cloud")


def same(a: Place, b: Place) -> bool:
    """Known to be the same place: one namespace, and one Secret (or both the hub) or one
    cluster UID."""
    if a.namespace != b.namespace:
        return False
    same_access = a.access == b.access and a.access != AGENT_ACCESS
    return same_access or (a.cluster is not None and a.cluster == b.cluster)


def may_share(a: Place, b: Place) -> bool:
    """Perhaps the same place: `same`, or one of them has no cluster identity yet. What
    deletions ask, because deleting a workload someone serves costs more than keeping one."""
    if a.namespace != b.namespace:
        return False
    return same(a, b) or a.cluster is None or b.cluster is None


def describe(place: Place) -> str:
    """The place in words: `namespace models at the hub`, `... of cluster 1a2b3c4d (...)`."""
    if place.cloud:
        return f"namespace {place.namespace} at the hub"
    if place.cluster:
        return f"namespace {place.namespace} of cluster {place.cluster[:8]} (kube-system UID)"
    return f"namespace {place.namespace} of the cluster {place.access} reaches"


def collisions(placed: Iterable[tuple[str, Place]]) -> dict[str, str]:
    """Later target -> the first one in the same place, by name order. A later target is
    compared with the ones that keep working only, so the first of each place always writes."""
    first: list[tuple[str, Place]] = []
    later: dict[str, str] = {}
    for name, place in sorted(placed, key=lambda item: item[0]):
        taken = next((n for n, p in first if same(p, place)), None)
        if taken is None:
            first.append((name, place))
        else:
            later[name] = taken
    return later


def held_by(place: Place, selected: Iterable[tuple[str, Place]]) -> str | None:
    """A selected target that may share `place` (its workloads must stay), or None."""
    return next((n for n, p in sorted(selected, key=lambda i: i[0]) if may_share(p, place)), None)


def with_collisions(
    plan: rt.Plan,
    taken: Mapping[str, str],
    places: Mapping[str, Place],
    *,
    now: datetime.datetime,
    recorded: md.ModelDeploymentStatus | None = None,
) -> rt.Plan:
    """The plan with a status line, never written, for each target whose place another selected
    target of this ModelDeployment already takes, and a `PlaceTaken` Warning when that is new.

    `taken`: later target -> the first in its place (`collisions`); `places`: by target.
    """
    if not taken:
        return plan
    lines = {line.name: line for line in (recorded or md.ModelDeploymentStatus()).targets}
    outcomes = list(plan.targets)
    events = list(plan.events)
    for name, first in sorted(taken.items()):
        place = places[name]
        message = f"not attempted: same place as {first}"
        error = (
            f"not written: same place as EdgeTarget {first} ({describe(place)}), which "
            f"this ModelDeployment writes. Select only one of them (targets.selector or the "
            f"EdgeTargets' labels), or point {name} at another namespace"
        )
        line = lines.get(name)
        told = line is not None and line.phase == "Incompatible" and line.message == message
        since = line.last_transition_time if line is not None and told else None
        outcomes.append(
            rt.TargetOutcome(
                name=name,
                cluster_type="Cloud" if place.cloud else "K3s",
                phase="Incompatible",
                wave=None,
                digest=None,
                previous_digest=None,
                template_hash=None,
                ready_replicas=0,
                available_since=None,
                last_transition_time=since or now,
                message=message,
                error=error,
                record=None,
            )
        )
        if not told:
            events.append(rt.Event("Warning", reasons.PLACE_TAKEN, f"{name}: {error}"))
    return dataclasses.replace(plan, targets=tuple(outcomes), events=tuple(events))
