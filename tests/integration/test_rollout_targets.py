"""EdgeTargets on the testbed: probes, credentials problems, selection changes, bounded deletion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from edgeferry_testbed import handles, operator_process, testbed
from tests.integration import _resources as res
from tests.integration.conftest import Fleet, operator_metric
from tests.integration.test_rollout import AMD64, apply_deployment, build_images, expect_events

MANAGED = {"app.kubernetes.io/managed-by": "edgeferry"}

pytestmark = pytest.mark.integration


def test_probes_report_version_nodes_and_architectures(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    expected = {
        "cloud": ("Cloud", ["amd64"]),
        "edge-1": ("K3s", ["arm64"]),
        "edge-2": ("K3s", ["amd64"]),
    }
    for name, (kind, arches) in expected.items():
        obj = res.get_object(fleet.hub, fleet.namespace, "edgetargets", name)
        assert obj is not None
        status = obj["status"]
        assert status["reachable"] is True
        assert status["kubernetesVersion"].startswith("v1.")
        assert status["architectures"] == arches
        assert status["readyNodes"] == status["totalNodes"] == 2, status
        assert status["nodes"] == "2/2"
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        assert res.condition(obj, "Ready")["reason"] == "TargetReachable"
        assert res.condition(obj, "Stalled") == {}, "Stalled is written only while True (kstatus)"
        up = operator_metric(
            testbed_handle, "edgeferry_target_up", namespace=fleet.namespace, name=name, type=kind
        )
        assert up == 1, name
        expect_events(fleet, name, "TargetUp")


def test_missing_kubeconfig_secret_stalls_the_target_with_the_fix(fleet: Fleet) -> None:
    res.apply(
        fleet.hub,
        fleet.namespace,
        res.edge_target("lost", workload_namespace=fleet.namespace, labels={}, secret="nowhere"),
    )

    def reported() -> dict[str, object] | None:
        obj = res.get_object(fleet.hub, fleet.namespace, "edgetargets", "lost")
        return obj if res.condition(obj, "Ready").get("reason") == "SecretNotFound" else None

    obj = res.wait_until("EdgeTarget lost to report its Secret", reported, timeout=30)
    ready = res.condition(obj, "Ready")
    assert ready["status"] == "False"
    assert f"kubectl -n {fleet.namespace} create secret generic nowhere" in ready["message"]
    assert res.condition(obj, "Stalled")["status"] == "True"
    expect_events(fleet, "lost", "TargetDown")


def test_kubeconfig_that_would_run_a_command_is_refused(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    config = yaml.safe_load(Path(testbed_handle.cluster("edge-1").target_kubeconfig).read_text())
    config["users"][0]["user"] = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh"}
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sneaky"},
        "stringData": {"kubeconfig": yaml.safe_dump(config)},
    }
    target = res.edge_target(
        "sneaky", workload_namespace=fleet.namespace, labels={}, secret="sneaky"
    )
    res.apply(fleet.hub, fleet.namespace, secret, target)

    def reported() -> dict[str, object] | None:
        obj = res.get_object(fleet.hub, fleet.namespace, "edgetargets", "sneaky")
        return obj if res.condition(obj, "Ready").get("reason") == "KubeconfigRefused" else None

    obj = res.wait_until("EdgeTarget sneaky to refuse its kubeconfig", reported, timeout=30)
    assert "exec" in res.condition(obj, "Ready")["message"]
    assert res.condition(obj, "Stalled")["status"] == "True"


def test_target_leaving_the_selector_loses_its_workload(fleet: Fleet) -> None:
    refs = build_images(fleet, server="server")
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=AMD64))
    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
    edge2 = fleet.cluster_of("edge-2")
    assert res.deployment_at(edge2, fleet.namespace, "model") is not None

    fleet.hub.kubectl(
        "-n", fleet.namespace, "label", "edgetarget", "edge-2", "arch=retired", "--overwrite"
    )

    res.wait_until(
        "edge-2 to lose the workload",
        lambda: res.deployment_at(edge2, fleet.namespace, "model") is None,
        timeout=60,
    )
    obj = res.wait_deployment_phase(
        fleet.hub,
        fleet.namespace,
        "model",
        phase="Ready",
        check=lambda o: o["status"]["counts"]["total"] == 1,
    )
    assert [line["name"] for line in obj["status"]["targets"]] == ["cloud"]
    assert res.deployment_at(fleet.hub, fleet.namespace, "model") is not None
    expect_events(fleet, "model", "TargetReleased")
    assert refs["server"] == obj["status"]["digest"]


@pytest.mark.slow
def test_deletion_does_not_hang_on_an_unreachable_target(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    build_images(fleet, server="server")
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=AMD64))
    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")

    # A site that never answers (a closed port), in the same namespace.
    dead = Path(testbed_handle.cluster("edge-1").target_kubeconfig).read_text()
    dead = dead.replace(testbed_handle.cluster("edge-1").info.api_url, "https://127.0.0.1:31499")
    res.apply(
        fleet.hub,
        fleet.namespace,
        res.kubeconfig_secret("dead-kubeconfig", dead),
        res.edge_target(
            "dead", workload_namespace=fleet.namespace, labels={}, secret="dead-kubeconfig"
        ),
    )
    fleet.hub.kubectl("-n", fleet.namespace, "delete", "modeldeployment", "model", "--wait=false")
    res.wait_until(
        "the ModelDeployment to be gone despite the dead site",
        lambda: res.get_object(fleet.hub, fleet.namespace, "modeldeployments", "model") is None,
        timeout=240,
        interval=2,
    )
    events = res.wait_events(fleet.hub, fleet.namespace, "model", "CleanupIncomplete")
    incomplete = [m for _, reason, m in events if reason == "CleanupIncomplete"]
    assert incomplete and "dead" in incomplete[0], events
    for target in ("cloud", "edge-2"):
        assert res.deployment_at(fleet.cluster_of(target), fleet.namespace, "model") is None


def test_edge_target_column_arch_reads_as_plain_words(fleet: Fleet) -> None:
    out = fleet.hub.kubectl("-n", fleet.namespace, "get", "edgetargets").stdout.splitlines()
    header = out[0].split()
    rows = {line.split()[0]: dict(zip(header, line.split(), strict=True)) for line in out[1:]}
    assert header[:6] == ["NAME", "TYPE", "REACHABLE", "VERSION", "NODES", "ARCH"], out
    assert {name: row["ARCH"] for name, row in rows.items()} == {
        "cloud": "amd64",
        "edge-1": "arm64",
        "edge-2": "amd64",
    }, out


def _service(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"ports": [{"port": 80}], "selector": {"app": name}},
    }


def _services_at(cluster: handles.Cluster, namespace: str) -> set[str]:
    with cluster.api_client() as api:
        found = k8s_client.CoreV1Api(api).list_namespaced_service(namespace)
    return {item.metadata.name for item in found.items}


def _roll_out_to_cloud_and_edge2(fleet: Fleet) -> None:
    build_images(fleet, server="server")
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=AMD64))
    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
    for target in ("cloud", "edge-2"):
        assert res.deployment_at(fleet.cluster_of(target), fleet.namespace, "model") is not None


def _wait_gone(fleet: Fleet, name: str, *, timeout: float) -> None:
    res.wait_until(
        f"EdgeTarget {name} to be released",
        lambda: res.get_object(fleet.hub, fleet.namespace, "edgetargets", name) is None,
        timeout=timeout,
        interval=1,
    )


def test_deleting_an_edge_target_removes_only_its_namespaces_workloads_there(
    fleet: Fleet,
) -> None:
    _roll_out_to_cloud_and_edge2(fleet)
    edge2 = fleet.cluster_of("edge-2")
    neighbour = _service("neighbour", MANAGED | {"edgeferry.io/deployment": "other-team.model"})
    res.apply(edge2, fleet.namespace, neighbour, _service("hand-made", {"app": "hand-made"}))

    # As `kubectl delete -f` of a file holding both: the kubeconfig Secret goes first.
    fleet.hub.kubectl(
        "-n",
        fleet.namespace,
        "delete",
        "secret/edge-2-kubeconfig",
        "edgetarget/edge-2",
        "--wait=false",
    )
    _wait_gone(fleet, "edge-2", timeout=60)

    assert res.deployment_at(edge2, fleet.namespace, "model") is None
    assert _services_at(edge2, fleet.namespace) == {"neighbour", "hand-made"}
    assert res.deployment_at(fleet.hub, fleet.namespace, "model") is not None
    assert "model" in _services_at(fleet.hub, fleet.namespace)
    events = res.wait_events(fleet.hub, fleet.namespace, "edge-2", "WorkloadsRemoved")
    removed = [m for _, r, m in events if r == "WorkloadsRemoved"]
    assert removed and "Deployment/model" in removed[0] and "Service/model" in removed[0], removed
    obj = res.wait_deployment_phase(
        fleet.hub,
        fleet.namespace,
        "model",
        phase="Ready",
        check=lambda o: [line["name"] for line in o["status"]["targets"]] == ["cloud"],
    )
    assert obj["status"]["counts"]["total"] == 1


@pytest.mark.slow
def test_deleting_an_edge_target_whose_site_is_down_is_released_after_the_deadline(
    fleet: Fleet,
) -> None:
    _roll_out_to_cloud_and_edge2(fleet)
    bed = testbed.Testbed()
    deadline = operator_process.CLEANUP_DEADLINE_SECONDS
    bed.stop_apiserver("edge-2")
    try:
        started = time.monotonic()
        fleet.hub.kubectl("-n", fleet.namespace, "delete", "edgetarget", "edge-2", "--wait=false")
        pending = res.wait_until(
            "edge-2 to say why its deletion waits",
            lambda: (
                (o := res.get_object(fleet.hub, fleet.namespace, "edgetargets", "edge-2"))
                and res.condition(o, "Reconciling").get("reason") == "CleanupPending"
                and o
            ),
            timeout=deadline,
        )
        assert "retrying for" in res.condition(pending, "Ready")["message"]
        _wait_gone(fleet, "edge-2", timeout=deadline + 60)
        waited = time.monotonic() - started
    finally:
        bed.start_apiserver("edge-2")

    assert waited >= deadline - 2, f"released after {waited:.0f}s, before the deadline"
    events = res.wait_events(fleet.hub, fleet.namespace, "edge-2", "CleanupIncomplete")
    incomplete = [m for t, r, m in events if r == "CleanupIncomplete" and t == "Warning"]
    assert incomplete, events
    assert "ModelDeployment(s) model (model)" in incomplete[0]
    assert f"kubectl -n {fleet.namespace} delete deploy,svc" in incomplete[0]
    # Left behind, as the event says; the fleet's teardown removes the namespace.
    edge2 = fleet.cluster_of("edge-2")
    assert res.wait_until(
        "edge-2's API server to answer again",
        lambda: res.deployment_at(edge2, fleet.namespace, "model") is not None,
        timeout=60,
    )
