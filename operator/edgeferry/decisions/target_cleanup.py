"""Which objects at a target go when the EdgeTarget that points there is deleted.

An EdgeTarget lives in one namespace of the hub, and only that namespace's ModelDeployments may
write through it. So its deletion removes, at the target's namespace, the Deployments and
Services that edgeferry created for ModelDeployments of that namespace, and nothing else: not a
neighbour namespace's models (another hub namespace may point an EdgeTarget at the same place),
and never an object without our `managed-by` label.

Ownership is read off the `edgeferry.io/deployment` label, `<namespace>.<name>`. Namespaces
hold no dots, so the part before the first dot is the owner's namespace even for a ModelDeployment
that is already gone. A label too long for 63 characters is cut and hashed; when the cut removes
the dot, only the namespace's current ModelDeployments can be recognised (by recomputing their
labels), so such a leftover of a deleted ModelDeployment stays and the event says so.

Another live EdgeTarget of the same namespace may stand for the same place (two Cloud targets
with different node pools, same workload namespace). A ModelDeployment that still selects such
a sibling keeps its workload: deleting one EdgeTarget must not take down what another still runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import target_objects


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


def same_place(a: et.EdgeTargetSpec, b: et.EdgeTargetSpec) -> bool:
    """Whether two EdgeTargets of one namespace put workloads in the same place.

    Cloud targets share the hub; K3s targets are taken as the same cluster when they use the same
    kubeconfig Secret (two Secrets for one cluster are not detected).
    """
    if a.namespace != b.namespace or a.type != b.type:
        return False
    if a.k3s is None or b.k3s is None:
        return a.k3s is None and b.k3s is None
    return a.k3s.kubeconfig_secret_ref == b.k3s.kubeconfig_secret_ref


def writers(
    deployments: Mapping[str, md.LabelSelector | None], labels: Mapping[str, str]
) -> list[str]:
    """The ModelDeployments whose selector picks a target with these labels: whose workloads
    may be there, to name when they cannot be removed."""
    return sorted(n for n, sel in deployments.items() if sel is not None and sel.matches(labels))
