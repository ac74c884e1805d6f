"""Which nodes of a target our Pods could land on: Kubernetes' taint and selector rules."""

from __future__ import annotations

from typing import Any

from edgeferry.decisions import nodes
from edgeferry.models import edgetarget as et


def node(
    arch: str = "amd64",
    *,
    ready: bool = True,
    taints: list[dict[str, str]] | None = None,
    labels: dict[str, str] | None = None,
    unschedulable: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"kubernetes.io/arch": arch, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def placement(**doc: Any) -> et.Placement:
    spec = et.EdgeTargetSpec.model_validate({"type": "Cloud", "namespace": "m", "cloud": doc})
    return spec.placement


def k3s_placement(**doc: Any) -> et.Placement:
    section = {"kubeconfigSecretRef": {"name": "site"}, **doc}
    spec = et.EdgeTargetSpec.model_validate({"type": "K3s", "namespace": "m", "k3s": section})
    return spec.placement


GPU = {"key": "gpu", "value": "true", "effect": "NoSchedule"}


def test_exists_without_a_key_tolerates_every_taint() -> None:
    assert nodes.tolerates([et.Toleration(operator="Exists")], GPU)


def test_equal_needs_key_and_value() -> None:
    assert nodes.tolerates([et.Toleration(key="gpu", value="true")], GPU)
    assert not nodes.tolerates([et.Toleration(key="gpu", value="false")], GPU)


def test_a_toleration_for_another_effect_does_not_count() -> None:
    assert not nodes.tolerates([et.Toleration(key="gpu", value="true", effect="NoExecute")], GPU)


def test_prefer_no_schedule_does_not_keep_pods_away() -> None:
    soft = {"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}
    assert nodes.schedulable_for(node(taints=[soft]), [])
    assert not nodes.schedulable_for(node(taints=[GPU]), [])


def test_only_ready_schedulable_matching_nodes_count() -> None:
    found = [
        node("amd64", labels={"pool": "cpu"}),
        node("arm64", labels={"pool": "cpu"}),
        node("arm64", labels={"pool": "cpu"}, ready=False),
        node("amd64", labels={"pool": "cpu"}, unschedulable=True),
        node("amd64", labels={"pool": "gpu"}),
        node("amd64", labels={"pool": "cpu"}, taints=[GPU]),
    ]
    summary = nodes.summarize("v1.31.0", found, placement=placement(nodeSelector={"pool": "cpu"}))
    assert summary == nodes.ProbeResult(
        kubernetes_version="v1.31.0", ready_nodes=2, total_nodes=4, architectures=("amd64", "arm64")
    )


REAL = {"key": "edgeferry.io/real-node", "value": "true", "effect": "NoSchedule"}


def test_a_k3s_target_counts_only_the_site_nodes_its_selector_and_tolerations_allow() -> None:
    found = [
        node("amd64", labels={"edgeferry.io/node-kind": "real"}, taints=[REAL]),
        node("arm64", labels={"edgeferry.io/node-kind": "real"}, taints=[REAL], ready=False),
        node("arm64", labels={"type": "kwok"}),
        node("amd64", labels={"edgeferry.io/node-kind": "real"}, taints=[REAL, GPU]),
    ]
    real = k3s_placement(
        nodeSelector={"edgeferry.io/node-kind": "real"},
        tolerations=[{"key": "edgeferry.io/real-node", "value": "true", "effect": "NoSchedule"}],
    )
    assert nodes.summarize_nodes(found, placement=real) == (1, 2, ("amd64",))


def test_a_k3s_target_without_placement_counts_every_untainted_node() -> None:
    found = [node("amd64", taints=[REAL]), node("arm64"), node("amd64")]
    assert nodes.summarize_nodes(found, placement=k3s_placement()) == (2, 2, ("amd64", "arm64"))
