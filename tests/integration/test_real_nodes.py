"""The testbed's real nodes: a kubelet with containerd in the hub and in each edge cluster.

On kwok nodes a Pod's image is never pulled and its probe never called, so "the Pods run the
digest" only reads back what the operator wrote. Here the model's Pods land on the real nodes
(by node selector and toleration, as users pick node pools), containerd pulls the admitted
digest from the registry, the model server starts, the kubelet's readiness probe calls
/healthz, and a request through the edge API server's service proxy gets a real prediction.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client

from edgeferry_testbed import handles, layout, operator_process, procs, pytest_plugin, samples
from edgeferry_testbed import testbed as testbed_module
from tests.integration import _resources

pytestmark = pytest.mark.integration

REAL = {layout.REAL_NODE_LABEL: "real"}
TOLERATE_REAL = [{**layout.REAL_NODE_TAINT, "operator": "Equal"}]
IRIS_INSTANCES = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def test_every_cluster_has_a_ready_real_node(testbed_handle: handles.Testbed) -> None:
    for cluster in [testbed_handle.hub, *testbed_handle.edges]:
        names = cluster.info.real_nodes
        assert names, f"{cluster.name}: no real node in the testbed description"
        with cluster.api_client() as api:
            node = k8s_client.CoreV1Api(api).read_node(names[0]).to_dict()
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert ready.get("Ready") == "True", f"{cluster.name}: {names[0]} not Ready: {ready}"
        info = node["status"]["node_info"]
        assert info["container_runtime_version"].startswith("containerd://"), info
        assert info["kubelet_version"] == layout.KUBERNETES_VERSION, info
        assert node["metadata"]["labels"][layout.REAL_NODE_LABEL] == "real"
        taints = [
            {"key": t["key"], "value": t["value"], "effect": t["effect"]}
            for t in node["spec"]["taints"] or []
        ]
        assert layout.REAL_NODE_TAINT in taints, taints


@pytest.fixture
def real_targets(
    operator: procs.Managed | None, testbed_handle: handles.Testbed, unique_name: str
) -> Iterator[str]:
    """A namespace with two EdgeTargets on real nodes: `real-cloud` (the hub's real node) and
    `real-edge` (edge-2's real node), and the sample iris model's ConfigMap."""
    hub = testbed_handle.hub
    namespace = unique_name
    pytest_plugin.make_namespace(hub, namespace)
    operator_process.grant_namespace(testbed_handle.env, namespace, workloads=True)
    edge = testbed_handle.cluster("edge-2")
    secret = "edge-2-kubeconfig"
    cloud = _resources.edge_target(
        "real-cloud",
        workload_namespace=namespace,
        labels={"edgeferry.io/nodes": "real"},
        node_selector=REAL,
    )
    cloud["spec"]["cloud"]["tolerations"] = TOLERATE_REAL
    k3s = _resources.edge_target(
        "real-edge",
        workload_namespace=namespace,
        labels={"edgeferry.io/nodes": "real"},
        secret=secret,
    )
    k3s["spec"]["k3s"] |= {"nodeSelector": REAL, "tolerations": TOLERATE_REAL}
    pytest_plugin.make_namespace(edge, namespace)
    try:
        with hub.api_client() as api:
            bed = testbed_module.Testbed()
            samples.install_inputs(api, namespace, bed.layout, testbed_handle.env)
        _resources.apply(
            hub,
            namespace,
            _resources.kubeconfig_secret(
                secret, _read(edge.info.target_kubeconfig or edge.kubeconfig)
            ),
            cloud,
            k3s,
        )
        _resources.wait_targets_ready(hub, namespace, ["real-cloud", "real-edge"])
        yield namespace
    finally:
        hub.kubectl("-n", namespace, "delete", "modeldeployments", "--all", check=False)
        edge.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        hub.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _post_through_service_proxy(api: k8s_client.ApiClient, path: str) -> dict[str, Any]:
    """POST the iris instances through the API server's service proxy, as the edge's admin."""
    conf = api.configuration
    context = ssl.create_default_context(cafile=conf.ssl_ca_cert)
    request = urllib.request.Request(
        f"{conf.host}{path}",
        data=json.dumps({"instances": IRIS_INSTANCES}).encode(),
        headers={
            "Authorization": conf.auth_settings()["BearerToken"]["value"],
            "Content-Type": "application/json",
        },
        method="POST",
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _iris_image(bed: handles.Testbed, namespace: str) -> dict[str, Any]:
    lay = testbed_module.Testbed().layout
    values = samples.placeholders(lay, bed.env)
    (image,) = samples.render(samples.SAMPLES / "modelimage-iris.yaml", values)
    image["spec"]["push"]["repository"] = f"{bed.registry}/real-nodes/{namespace}"
    return image


def test_admitted_digest_runs_on_real_nodes_and_answers(
    testbed_handle: handles.Testbed, real_targets: str
) -> None:
    namespace = real_targets
    hub = testbed_handle.hub
    _resources.apply(hub, namespace, _iris_image(testbed_handle, namespace))
    image = _resources.wait_model_image(hub, namespace, "iris", phase="Ready", timeout=900)
    reference = _resources.image_reference(image)
    digest = reference.rsplit("@", 1)[1]

    started = time.monotonic()
    deployment = _resources.model_deployment(
        "iris", image="iris", selector={"matchLabels": {"edgeferry.io/nodes": "real"}}, replicas=1
    )
    _resources.apply(hub, namespace, deployment)
    _resources.wait_deployment_phase(hub, namespace, "iris", phase="Ready", timeout=300)
    print(f"real nodes: ModelDeployment Ready {time.monotonic() - started:.1f} s after apply")

    for cluster in (hub, testbed_handle.cluster("edge-2")):
        with cluster.api_client() as api:
            pods = k8s_client.CoreV1Api(api).list_namespaced_pod(namespace).items
        running = [p for p in pods if p.status.phase == "Running"]
        assert running, f"{cluster.name}: no running Pod: {[p.status.phase for p in pods]}"
        for pod in running:
            assert pod.spec.node_name in cluster.info.real_nodes, pod.spec.node_name
            (status,) = pod.status.container_statuses
            # What containerd pulled and runs, as the kubelet reports it: not what we wrote.
            assert status.image_id.endswith(digest), (status.image_id, digest)
            assert status.ready, f"{cluster.name}: readiness probe has not passed"

    edge = testbed_handle.cluster("edge-2")
    with edge.api_client() as api:
        prediction = _post_through_service_proxy(
            api, f"/api/v1/namespaces/{namespace}/services/iris:http/proxy/predict"
        )
    assert len(prediction["predictions"]) == len(IRIS_INSTANCES), prediction
    assert prediction["predictions"][0] != prediction["predictions"][1], prediction
