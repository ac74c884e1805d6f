"""An agent reads its site namespace in four lists; each release's share of it must be what
`observe` would have read for that ModelDeployment alone."""

from __future__ import annotations

from typing import Any

from edgeferry.adapters import target_workloads
from edgeferry.models import target_objects as to


def _labelled(kind: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels}}


def _ours(md: str) -> dict[str, str]:
    return {**to.selector_labels("ml", md), to.MANAGED_BY_LABEL: to.MANAGED_BY}


def _prepull_labels(md: str) -> dict[str, str]:
    return {
        to.DEPLOYMENT_LABEL: to.owner_label("ml", md),
        to.MANAGED_BY_LABEL: to.MANAGED_BY,
        to.PREPULL_LABEL: to.workload_name(md),
    }


IRIS, WINE = to.workload_name("iris"), to.workload_name("wine")
SITE = target_workloads.SiteReading(
    deployments={
        IRIS: _labelled("Deployment", IRIS, _ours("iris")),
        WINE: _labelled("Deployment", WINE, {"app": "someone-elses"}),
    },
    daemonsets={
        to.prepull_name("iris"): _labelled(
            "DaemonSet", to.prepull_name("iris"), _prepull_labels("iris")
        )
    },
    services=(_labelled("Service", IRIS, _ours("iris")),),
    pods=(
        _labelled("Pod", "iris-1", _ours("iris")),
        _labelled("Pod", "iris-2", _ours("iris")),
        _labelled("Pod", "iris-pull-1", _prepull_labels("iris")),
        _labelled("Pod", "other-1", _ours("other")),
    ),
)


def _names(items: tuple[dict[str, Any], ...]) -> list[str]:
    return [i["metadata"]["name"] for i in items]


def test_each_release_gets_its_own_deployment_and_pods() -> None:
    reading = SITE.reading(md_namespace="ml", md_name="iris")
    assert reading.deployment is SITE.deployments[IRIS]
    assert _names(reading.pods) == ["iris-1", "iris-2"]
    assert reading.prepull is None and reading.prepull_pods == ()


def test_a_pre_pull_is_read_only_while_asked_for_with_its_own_pods() -> None:
    reading = SITE.reading(md_namespace="ml", md_name="iris", prepull=True)
    assert reading.prepull is SITE.daemonsets[to.prepull_name("iris")]
    assert _names(reading.prepull_pods) == ["iris-pull-1"]


def test_a_name_taken_by_someone_else_is_seen_without_its_pods() -> None:
    reading = SITE.reading(md_namespace="ml", md_name="wine")
    assert reading.deployment is SITE.deployments[WINE]
    assert reading.pods == ()
    assert SITE.reading(md_namespace="ml", md_name="absent").deployment is None


def test_what_the_agent_may_remove_is_only_what_edgeferry_manages() -> None:
    refs = sorted(f.ref for f in SITE.managed())
    assert refs == [f"DaemonSet/{to.prepull_name('iris')}", f"Deployment/{IRIS}", f"Service/{IRIS}"]
