"""Which nodes of a target our Pods could land on, and what they run.

An EdgeTarget is only as useful as its nodes: those matching its node selector whose taints it
tolerates (`cloud` for a Cloud target, `k3s` for a K3s one; without either, every node whose
taints allow ordinary Pods). The probe reads the nodes; this module applies Kubernetes'
scheduling rules to them, so the rule a user meets in `kubectl get et` (`2/3` nodes, their
architectures) is tested without a cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgeferry.decisions import workload_health
from edgeferry.models import edgetarget as et


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What a probe of a target found."""

    kubernetes_version: str
    ready_nodes: int
    total_nodes: int
    architectures: tuple[str, ...]
    """`kubernetes.io/arch` of the ready nodes, sorted, without duplicates."""


def tolerates(tolerations: Sequence[et.Toleration], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' rule: whether one of the tolerations tolerates the taint."""
    for tol in tolerations:
        if tol.effect and tol.effect != taint.get("effect"):
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == taint.get("key"):
                return True
        elif tol.key == taint.get("key") and (tol.value or "") == (taint.get("value") or ""):
            return True
    return False


def schedulable_for(node: Mapping[str, Any], tolerations: Sequence[et.Toleration]) -> bool:
    """Whether ordinary Pods with these tolerations may be scheduled on the node at all."""
    for taint in node.get("spec", {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return True


def _node_ready(node: Mapping[str, Any]) -> bool:
    if node.get("spec", {}).get("unschedulable"):
        return False
    ready = workload_health.condition(node, "Ready")
    return bool(ready and ready.get("status") == "True")


def summarize_nodes(
    nodes: Iterable[Mapping[str, Any]], *, placement: et.Placement
) -> tuple[int, int, tuple[str, ...]]:
    """(ready, total, architectures of the ready) among the nodes the placement can use."""
    usable = [
        n
        for n in nodes
        if all(workload_health.labels_of(n).get(k) == v for k, v in placement.node_selector.items())
        and schedulable_for(n, placement.tolerations)
    ]
    ready = [n for n in usable if _node_ready(n)]
    arches = sorted(
        {a for n in ready if (a := workload_health.labels_of(n).get("kubernetes.io/arch"))}
    )
    return len(ready), len(usable), tuple(arches)


def summarize(
    kubernetes_version: str, nodes: Iterable[Mapping[str, Any]], *, placement: et.Placement
) -> ProbeResult:
    """What a probe found: the version, and ready/total usable nodes with their architectures."""
    ready, total, arches = summarize_nodes(nodes, placement=placement)
    return ProbeResult(
        kubernetes_version=kubernetes_version,
        ready_nodes=ready,
        total_nodes=total,
        architectures=arches,
    )


def _matches_requirement(node: Mapping[str, Any], requirement: Mapping[str, Any]) -> bool:
    """One `matchExpressions` requirement of a node selector term, against the node's labels."""
    labels = workload_health.labels_of(node)
    key, operator = requirement.get("key", ""), requirement.get("operator")
    values = [str(v) for v in requirement.get("values") or []]
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and values and labels.get(key, "").lstrip("-").isdigit():
        found, bound = int(labels[key]), int(values[0])
        return found > bound if operator == "Gt" else found < bound
    return False


def _matches_field(node: Mapping[str, Any], requirement: Mapping[str, Any]) -> bool:
    """One `matchFields` requirement (Kubernetes supports only `metadata.name`)."""
    if requirement.get("key") != "metadata.name":
        return False
    name = node.get("metadata", {}).get("name")
    values = requirement.get("values") or []
    return (name in values) == (requirement.get("operator") == "In")


def _required_affinity(node: Mapping[str, Any], affinity: Mapping[str, Any] | None) -> bool:
    """The required node affinity: its terms are ORed, a term's requirements ANDed."""
    required = ((affinity or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    return any(
        (term.get("matchExpressions") or term.get("matchFields"))
        and all(_matches_requirement(node, r) for r in term.get("matchExpressions") or [])
        and all(_matches_field(node, r) for r in term.get("matchFields") or [])
        for term in terms
    )


def usable_by(
    nodes: Iterable[Mapping[str, Any]],
    *,
    node_selector: Mapping[str, str],
    affinity: Mapping[str, Any] | None,
    tolerations: Sequence[Mapping[str, Any]],
) -> tuple[str, ...]:
    """Names of the nodes a Pod with this placement may be scheduled on now (sorted): ready,
    not cordoned, every NoSchedule/NoExecute taint tolerated, the selector and the required
    node affinity matched. Pods of a DaemonSet tolerate cordons and more on their own, so the
    pre-pull asks this, not its DaemonSet controller, which nodes its Deployment will use."""
    tols = [et.Toleration.model_validate(t) for t in tolerations]
    return tuple(
        sorted(
            str(n["metadata"]["name"])
            for n in nodes
            if _node_ready(n)
            and schedulable_for(n, tols)
            and all(workload_health.labels_of(n).get(k) == v for k, v in node_selector.items())
            and _required_affinity(n, affinity)
        )
    )
