"""Two EdgeTargets in the same place (one cluster, one namespace) on the testbed (issue 10 item 4).

Besides the test fleet (`cloud`, `edge-1`, `edge-2`), each test adds targets that reach a place
the fleet already uses: `cloud-gpu` (another Cloud pool writing to the same hub namespace, as in
`make demo`), and `edge-2-spare` and `edge-2b` (the edge-2 cluster through second and third
kubeconfig Secrets). The ModelDeployment selects `cloud`, `edge-2` and `edge-2b`: `edge-2b`
collides with `edge-2` and must never be written; `cloud-gpu` and `edge-2-spare` are unselected,
and releasing them must not remove what `cloud` and `edge-2` serve there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from edgeferry_testbed import handles, operator_process, testbed
from tests.integration import _resources as res
from tests.integration.conftest import Fleet, operator_metric
from tests.integration.test_rollout import AMD64, apply_deployment, build_images

pytestmark = pytest.mark.integration

EXTRA = ("cloud-gpu", "edge-2-spare", "edge-2b")


def _add_same_place_targets(fleet: Fleet) -> None:
    kubeconfig = Path(fleet.cluster_of("edge-2").target_kubeconfig).read_text()
    res.apply(
        fleet.hub,
        fleet.namespace,
        res.edge_target(
            "cloud-gpu",
            workload_namespace=fleet.namespace,
            labels={"tier": "cloud", "hardware": "gpu"},
            node_selector={"edgeferry.io/pool": "cpu"},
        ),
        res.kubeconfig_secret("edge-2-spare-kubeconfig", kubeconfig),
        res.edge_target(
            "edge-2-spare",
            workload_namespace=fleet.namespace,
            labels={"tier": "edge", "arch": "spare"},
            secret="edge-2-spare-kubeconfig",
        ),
        res.kubeconfig_secret("edge-2b-kubeconfig", kubeconfig),
        res.edge_target(
            "edge-2b",
            workload_namespace=fleet.namespace,
            labels={"tier": "edge", "arch": "amd64"},
            secret="edge-2b-kubeconfig",
        ),
    )
    res.wait_targets_ready(fleet.hub, fleet.namespace, list(EXTRA))


def _cluster_ids(fleet: Fleet) -> dict[str, str | None]:
    ids = {}
    for name in ("cloud", "edge-1", "edge-2", *EXTRA):
        obj = res.get_object(fleet.hub, fleet.namespace, "edgetargets", name) or {}
        ids[name] = obj.get("status", {}).get("clusterID")
    return ids


def _snapshot(fleet: Fleet) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """Every Deployment and Service in the test namespace at each cluster: what changes when
    edgeferry writes (generation, labels, annotations, its managed fields) or deletes (uid)."""
    found: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for cluster in (fleet.hub, *fleet.bed.edges):
        with cluster.api_client() as api:
            apps, core = k8s_client.AppsV1Api(api), k8s_client.CoreV1Api(api)
            for kind, items in (
                ("Deployment", apps.list_namespaced_deployment(fleet.namespace).items),
                ("Service", core.list_namespaced_service(fleet.namespace).items),
            ):
                for item in items:
                    meta = item.metadata
                    ours = [
                        (m.operation, m.subresource, str(m.time))
                        for m in meta.managed_fields or []
                        if m.manager == "edgeferry"
                    ]
                    version = meta.resource_version if kind == "Service" else meta.generation
                    found[(cluster.name, kind, meta.name)] = (
                        meta.uid,
                        version,
                        dict(meta.labels or {}),
                        dict(meta.annotations or {}),
                        ours,
                    )
    return found


def _converged(fleet: Fleet) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """Wait until nothing changes at any target for a whole resync (20 s), and return that."""
    before = _snapshot(fleet)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(25)
        now = _snapshot(fleet)
        if now == before:
            return now
        before = now
    pytest.fail(f"the fleet never converged: {before}")


def _roll_out(fleet: Fleet) -> dict[str, Any]:
    build_images(fleet, server="server")
    _add_same_place_targets(fleet)
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=AMD64))
    return res.wait_deployment_phase(
        fleet.hub,
        fleet.namespace,
        "model",
        phase="Ready",
        check=lambda o: (
            {t["name"] for t in o["status"]["targets"]} == {"cloud", "edge-2", "edge-2b"}
        ),
    )


def test_targets_reaching_one_cluster_record_one_cluster_id(fleet: Fleet) -> None:
    _add_same_place_targets(fleet)

    def recorded() -> dict[str, str | None] | None:
        ids = _cluster_ids(fleet)
        return ids if all(ids.values()) else None

    ids = res.wait_until("every EdgeTarget to record its cluster", recorded, timeout=30)
    assert ids["cloud"] == ids["cloud-gpu"]
    assert ids["edge-2"] == ids["edge-2-spare"] == ids["edge-2b"]
    assert len({ids["cloud"], ids["edge-1"], ids["edge-2"]}) == 3, ids


def test_an_operator_restart_on_a_converged_fleet_writes_and_deletes_nothing_at_any_target(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    _roll_out(fleet)
    before = _converged(fleet)
    for cluster, target in ((fleet.hub, "cloud"), (fleet.cluster_of("edge-2"), "edge-2")):
        assert (cluster.name, "Deployment", "model") in before, target
        assert (cluster.name, "Service", "model") in before, target

    bed = testbed.Testbed()
    assert bed.sup.kill("operator")
    operator_process.start(bed, testbed_handle.env)
    res.wait_until(
        "two reconciles of the ModelDeployment after the restart",
        lambda: (
            (
                operator_metric(
                    testbed_handle,
                    "edgeferry_reconciles_total",
                    kind="ModelDeployment",
                    outcome="succeeded",
                )
                or 0
            )
            >= 2
        ),
        timeout=90,
        interval=1,
    )

    assert _snapshot(fleet) == before
    events = res.events(fleet.hub, fleet.namespace, "model")
    assert "TargetReleased" not in {r for _, r, _ in events}

    # edge-2b reaches edge-2's place through another Secret: reported once, never written.
    obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
    collided = res.target_line(obj, "edge-2b")
    assert collided["phase"] == "Incompatible"
    assert "same place as EdgeTarget edge-2" in collided["lastError"]
    assert res.target_line(obj, "edge-2")["phase"] == "Ready"
    placed = [m for _, r, m in events if r == "PlaceTaken"]
    assert len(placed) == 1 and placed[0].startswith("edge-2b: not written"), placed


def test_deleting_a_target_keeps_what_another_target_serves_in_the_same_place(
    fleet: Fleet,
) -> None:
    _roll_out(fleet)
    before = _converged(fleet)

    fleet.hub.kubectl(
        "-n",
        fleet.namespace,
        "delete",
        "edgetarget/edge-2b",
        "edgetarget/cloud-gpu",
        "--wait=false",
    )

    def released() -> bool:
        return all(
            res.get_object(fleet.hub, fleet.namespace, "edgetargets", name) is None
            for name in ("edge-2b", "cloud-gpu")
        )

    res.wait_until("edge-2b and cloud-gpu to be released", released, timeout=60, interval=1)

    assert _snapshot(fleet) == before
    events = res.wait_events(fleet.hub, fleet.namespace, "edge-2b", "WorkloadsKept")
    kept = [m for _, r, m in events if r == "WorkloadsKept"]
    assert kept and "Deployment/model" in kept[0], kept
