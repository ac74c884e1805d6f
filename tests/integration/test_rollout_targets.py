"""EdgeTargets on the testbed: probes, credentials problems, selection changes, bounded deletion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeferry_testbed import handles
from tests.integration import _resources as res
from tests.integration.conftest import Fleet, operator_metric
from tests.integration.test_rollout import AMD64, apply_deployment, build_images, event_reasons

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
        assert res.condition(obj, "Stalled")["status"] == "False"
        up = operator_metric(
            testbed_handle, "edgeferry_target_up", namespace=fleet.namespace, name=name, type=kind
        )
        assert up == 1, name
        assert "TargetUp" in event_reasons(fleet, name)


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
    assert "TargetDown" in event_reasons(fleet, "lost")


def test_kubeconfig_that_would_run_a_command_is_refused(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    config = yaml.safe_load(Path(testbed_handle.cluster("edge-1").kubeconfig).read_text())
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
    assert "TargetReleased" in event_reasons(fleet, "model")
    assert refs["server"] == obj["status"]["digest"]


@pytest.mark.slow
def test_deletion_does_not_hang_on_an_unreachable_target(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    build_images(fleet, server="server")
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=AMD64))
    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")

    # A site that never answers (a closed port), in the same namespace.
    dead = Path(testbed_handle.cluster("edge-1").kubeconfig).read_text()
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
    events = res.events(fleet.hub, fleet.namespace, "model")
    incomplete = [m for _, reason, m in events if reason == "CleanupIncomplete"]
    assert incomplete and "dead" in incomplete[0], events
    for target in ("cloud", "edge-2"):
        assert res.deployment_at(fleet.cluster_of(target), fleet.namespace, "model") is None
