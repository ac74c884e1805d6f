"""Which objects at a target go when the EdgeTarget that points there is deleted.

An EdgeTarget lives in one namespace of the hub, and only that namespace's ModelDeployments may
write through it. So its deletion removes, at the target's namespace, the Deployments, Services
and pre-pull DaemonSets that edgeferry created for ModelDeployments of that namespace, and
nothing else: not a
neighbour namespace's models (another hub namespace may point an EdgeTarget at the same place),
and never an object without our `managed-by` label.

Ownership is read off the `edgeferry.io/deployment` label, `<namespace>.<name>`. Namespaces
hold no dots, so the part before the first dot is the owner's namespace even for a ModelDeployment
that is already gone. A label too long for 63 characters is cut and hashed; when the cut removes
the dot, only the namespace's current ModelDeployments can be recognised (by recomputing their
labels), so such a leftover of a deleted ModelDeployment stays and the event says so.

Another live EdgeTarget of the same namespace may stand for the same place (two Cloud targets
with different node pools, same workload namespace; two Secrets for one cluster: see
`decisions.same_place`). A ModelDeployment that still selects such a sibling keeps its
workload: deleting one EdgeTarget must not take down what another still runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from edgeferry.decisions import rollout_types as rt
from edgeferry.models import conditions, reasons, target_objects
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to delete at the target, and what is kept on purpose."""

    remove: tuple[target_objects.Found, ...]
    kept_for_siblings: tuple[target_objects.Found, ...]
    """Ours, but a ModelDeployment still puts it here through another EdgeTarget."""


def owner_namespace(labels: Mapping[str, str] | None) -> str | None:
    """The hub namespace whose ModelDeployment made the object, or None if unknown or not ours."""
    found = labels or {}
    if found.get(target_objects.MANAGED_BY_LABEL) != target_objects.MANAGED_BY:
        return None
    owner = found.get(target_objects.DEPLOYMENT_LABEL, "")
    namespace, dot, _ = owner.partition(".")
    return namespace if dot and namespace else None


def decide(
    found: Iterable[target_objects.Found],
    *,
    namespace: str,
    deployments: Mapping[str, md.LabelSelector | None],
    siblings: Sequence[Mapping[str, str]] = (),
) -> Verdict:
    """Split what is at the target into what to remove and what to keep.

    `deployments`: the namespace's ModelDeployments by name, with their selector (None when the
    spec does not parse: such a one is treated as selecting nothing). `siblings`: labels of the
    other live EdgeTargets of the namespace that stand for the same place.
    """
    owners = {target_objects.owner_label(namespace, name): name for name in deployments}
    still_here = {
        target_objects.owner_label(namespace, name)
        for name, selector in deployments.items()
        if selector is not None and any(selector.matches(labels) for labels in siblings)
    }
    remove: list[target_objects.Found] = []
    kept: list[target_objects.Found] = []
    for item in found:
        if item.labels.get(target_objects.MANAGED_BY_LABEL) != target_objects.MANAGED_BY:
            continue
        owner = item.labels.get(target_objects.DEPLOYMENT_LABEL, "")
        if owner not in owners and owner_namespace(item.labels) != namespace:
            continue
        (kept if owner in still_here else remove).append(item)
    return Verdict(remove=tuple(remove), kept_for_siblings=tuple(kept))


def writers(
    deployments: Mapping[str, md.LabelSelector | None], labels: Mapping[str, str]
) -> list[str]:
    """The ModelDeployments whose selector picks a target with these labels: whose workloads
    may be there, to name when they cannot be removed."""
    return sorted(n for n, sel in deployments.items() if sel is not None and sel.matches(labels))


# --- what the deletion reports -------------------------------------------------------------------
def place(spec: et.EdgeTargetSpec, name: str) -> str:
    """Where the workloads are, in words: `namespace models at the hub` (or at the site)."""
    return f"namespace {spec.namespace} at " + ("the hub" if spec.type == "Cloud" else name)


def pass_events(removed: Sequence[str], kept: Sequence[str], where: str) -> list[rt.Event]:
    """What one or more passes removed, and what they kept for a sibling EdgeTarget."""
    events = []
    if kept:
        events.append(
            rt.Event(
                "Normal",
                reasons.WORKLOADS_KEPT,
                f"kept {', '.join(kept)} in {where}: a ModelDeployment still puts them there "
                "through another EdgeTarget of this namespace",
            )
        )
    if removed:
        events.append(
            rt.Event(
                "Normal", reasons.WORKLOADS_REMOVED, f"removed {', '.join(removed)} from {where}"
            )
        )
    return events


def pending(
    where: str, *, cause: str, left_seconds: float
) -> tuple[str, tuple[conditions.Condition, ...]] | None:
    """While the deadline lasts: the message and conditions of a deletion that waits for the
    target; None once it is over (then the EdgeTarget is released, see `left_behind`)."""
    if left_seconds <= 0:
        return None
    message = (
        f"deleting: could not remove edgeferry's workloads in {where} yet ({cause}); "
        f"retrying for {left_seconds:.0f}s more, then the EdgeTarget is released and what is "
        "left is named in a CleanupIncomplete event"
    )
    ready, reconciling, _ = conditions.kstatus(
        ready=False, reason=reasons.CLEANUP_PENDING, message=message, reconciling=True
    )
    return message, (ready, reconciling)


def left_behind(
    *,
    namespace: str,
    spec: et.EdgeTargetSpec,
    labels: Mapping[str, str],
    deployments: Mapping[str, md.LabelSelector | None],
    deadline_seconds: float,
    cause: str,
) -> rt.Event:
    """The Warning of a release after the deadline: what may be left where, and how to remove
    it by hand. `labels` are the deleted EdgeTarget's own."""
    names = writers(deployments, labels)
    managed = f"{target_objects.MANAGED_BY_LABEL}={target_objects.MANAGED_BY}"
    if names:
        what = "the Deployments and Services of ModelDeployment(s) " + ", ".join(
            f"{n} ({target_objects.workload_name(n)})" for n in names
        )
        owners = ",".join(target_objects.owner_label(namespace, n) for n in names)
        how = (
            f"`kubectl -n {spec.namespace} delete deploy,svc -l "
            f"'{managed},{target_objects.DEPLOYMENT_LABEL} in ({owners})'`"
        )
    else:
        what = f"Deployments and Services of ModelDeployments of namespace {namespace}"
        how = (
            f"`kubectl -n {spec.namespace} get deploy,svc -l {managed} -L "
            f"{target_objects.DEPLOYMENT_LABEL}` and delete those whose owner starts with "
            f"{namespace}."
        )
    return rt.Event(
        "Warning",
        reasons.CLEANUP_INCOMPLETE,
        f"gave up after {deadline_seconds:.0f}s and released the EdgeTarget: {what} may be left "
        f"in namespace {spec.namespace} at the target. Remove them there by hand: {how}. "
        f"Cause: {cause}",
    )
