"""Pre-pull (`rollout.prePull`) on a real node: the new digest is on the node before the switch.

One K3s target on edge-2's real node (its containerd really pulls; the operator reaches the site
with the token of `manifests/edge/`, so its DaemonSet rights are what a site grants). Three
busybox server images, built together and unique per run (a cold pull each time): `one` is
written first (nothing to pre-pull), the switch to `two` is pre-pulled, and `three` is admitted
and pushed, then its manifest is deleted from the registry, so its pre-pull fails with the
registry's "manifest unknown" while the Deployment keeps running `two`.

The bound (`maxConcurrentNodes`) is shown on kwok nodes the test adds to edge-2 for itself:
three the target may use, one with a taint it does not tolerate, one cordoned.
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch

from edgeferry_testbed import clusters, handles, layout, operator_process, procs, pytest_plugin
from tests.integration import _resources as res

pytestmark = pytest.mark.integration

REAL = {layout.REAL_NODE_LABEL: "real"}
TOLERATE_REAL = [{**layout.REAL_NODE_TAINT, "operator": "Equal"}]
PREPULL = "iris-prepull"
"""The pre-pull DaemonSet's name at the target (`target_objects.prepull_name("iris")`)."""


@pytest.fixture(scope="module")
def site(operator: procs.Managed | None, testbed_handle: handles.Testbed) -> Iterator[str]:
    """A namespace with EdgeTarget `real-edge` (edge-2's real node) and three admitted images."""
    hub, edge = testbed_handle.hub, testbed_handle.cluster("edge-2")
    namespace = f"prepull-{uuid.uuid4().hex[:6]}"
    pytest_plugin.make_namespace(hub, namespace)
    operator_process.grant_namespace(testbed_handle.env, namespace)
    base = testbed_handle.env.base_images["busybox"]
    names = ("one", "two", "three")
    try:
        for name in names:
            images = res.server_image(
                name, base=base, registry=testbed_handle.registry, variant=namespace
            )
            res.create_model_image(hub, namespace, images)
        pytest_plugin.make_namespace(edge, namespace)
        target = res.edge_target(
            "real-edge",
            workload_namespace=namespace,
            labels={"site": "real"},
            secret="edge-2-kubeconfig",
        )
        target["spec"]["k3s"] |= {"nodeSelector": REAL, "tolerations": TOLERATE_REAL}
        secret = res.kubeconfig_secret(
            "edge-2-kubeconfig", Path(edge.target_kubeconfig).read_text()
        )
        res.apply(hub, namespace, secret, target)
        res.wait_targets_ready(hub, namespace, ["real-edge"])
        for name in names:
            res.wait_model_image(hub, namespace, name, phase="Ready")
        yield namespace
    finally:
        hub.kubectl("-n", namespace, "delete", "modeldeployments", "--all", check=False)
        hub.kubectl("-n", namespace, "delete", "edgetargets", "--all", check=False)
        edge.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        hub.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _delete_manifest(registry: str, reference: str) -> None:
    """Delete `repository@sha256:...` from the testbed registry (deletes are enabled there)."""
    repository = reference.split("/", 1)[1].rsplit("@", 1)[0]
    digest = reference.rsplit("@", 1)[1]
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{digest}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202, response.status


def _daemonset(edge: handles.Cluster, namespace: str) -> dict[str, Any] | None:
    with edge.api_client() as api:
        found = k8s_client.AppsV1Api(api).list_namespaced_daemon_set(namespace).items
        docs = [api.sanitize_for_serialization(d) for d in found]
    return next((d for d in docs if d["metadata"]["name"] == PREPULL), None)


def _pods(edge: handles.Cluster, namespace: str) -> list[Any]:
    with edge.api_client() as api:
        return list(
            k8s_client.CoreV1Api(api)
            .list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=iris")
            .items
        )


def _pulled_events(edge: handles.Cluster, namespace: str, pod: str) -> list[str]:
    with edge.api_client() as api:
        items = (
            k8s_client.CoreV1Api(api)
            .list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={pod},reason=Pulled"
            )
            .items
        )
    return [e.message or "" for e in items]


def _switch(hub: handles.Cluster, namespace: str, image: str) -> None:
    patch = f'{{"spec":{{"imageRef":{{"name":"{image}"}}}}}}'
    hub.kubectl("-n", namespace, "patch", "modeldeployments", "iris", "--type=merge", "-p", patch)


def test_a_pre_pulled_switch_finds_the_image_on_the_node_and_a_failed_pull_switches_nothing(
    testbed_handle: handles.Testbed, site: str
) -> None:
    namespace, hub = site, testbed_handle.hub
    edge = testbed_handle.cluster("edge-2")
    refs = {
        name: res.image_reference(res.get_object(hub, namespace, "modelimages", name) or {})
        for name in ("one", "two", "three")
    }
    deployment = res.model_deployment(
        "iris",
        image="one",
        selector={"matchLabels": {"site": "real"}},
        replicas=1,
        rollout={"prePull": {"enabled": True, "deadlineSeconds": 20}},
    )
    res.apply(hub, namespace, deployment)
    res.wait_deployment_phase(hub, namespace, "iris", phase="Ready", timeout=120)
    assert _daemonset(edge, namespace) is None, "a first write is not pre-pulled"

    # The switch to `two`: a DaemonSet pulls it onto the real node, then the Deployment moves.
    _switch(hub, namespace, "two")
    seen_daemonset = res.wait_until(
        "the pre-pull DaemonSet at edge-2",
        lambda: _daemonset(edge, namespace),
        timeout=30,
        interval=0.5,
    )
    (container,) = seen_daemonset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == refs["two"], container["image"]
    assert seen_daemonset["spec"]["template"]["spec"]["nodeSelector"]["edgeferry.io/node-kind"] == (
        "real"
    )
    ready = res.wait_deployment_phase(
        hub,
        namespace,
        "iris",
        phase="Ready",
        check=lambda o: res.target_line(o, "real-edge").get("digest") == refs["two"],
        timeout=120,
    )
    reasons = [r for _, r, _ in res.wait_events(hub, namespace, "iris", "PrePulling", "PrePulled")]
    assert "PrePulling" in reasons and "PrePulled" in reasons, reasons
    assert reasons.index("PrePulling") < reasons.index("PrePulled")
    (pod,) = [p for p in _pods(edge, namespace) if p.metadata.deletion_timestamp is None]
    assert pod.spec.node_name in edge.info.real_nodes, pod.spec.node_name
    assert pod.status.container_statuses[0].image_id.endswith(refs["two"].rsplit("@")[1])
    # The kubelet found the image there when it started the new Pod: nothing pulled at cutover.
    pulled = _pulled_events(edge, namespace, pod.metadata.name)
    assert pulled and all("already present on machine" in m for m in pulled), pulled
    res.wait_until(
        "the pre-pull DaemonSet to be deleted after the switch",
        lambda: _daemonset(edge, namespace) is None,
        timeout=30,
    )
    assert res.target_line(ready, "real-edge")["phase"] == "Ready"
    done = [m for _, r, m in res.events(hub, namespace, "iris") if r == "PrePulled"]
    assert done and "pulled on 1 node(s)" in done[0], done

    # `three` cannot be pulled: the target fails, the Deployment keeps running `two`.
    before = res.deployment_at(edge, namespace, "iris")
    assert before is not None
    _delete_manifest(testbed_handle.registry, refs["three"])
    _switch(hub, namespace, "three")
    failed = res.wait_deployment_phase(
        hub,
        namespace,
        "iris",
        phase="Degraded",
        check=lambda o: res.target_line(o, "real-edge").get("phase") == "Failed",
        timeout=90,
    )
    line = res.target_line(failed, "real-edge")
    assert line["digest"] == refs["two"], line
    assert "pre-pull" in line["message"] and "nothing was switched" in line["message"], line
    assert "ErrImagePull" in line["lastError"] or "ImagePullBackOff" in line["lastError"], line
    after = res.deployment_at(edge, namespace, "iris")
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    (image,) = {c["image"] for c in after["spec"]["template"]["spec"]["containers"]}
    assert image == refs["two"]
    assert res.pod_images(edge, namespace, "iris") == {refs["two"]}
    events = res.wait_events(hub, namespace, "iris", "PrePullFailed")
    warnings = [t for t, r, _ in events if r == "PrePullFailed"]
    assert warnings == ["Warning"], warnings
    marked = _daemonset(edge, namespace)
    assert marked is not None, "the failure is remembered at the target"
    assert marked["spec"]["template"]["spec"]["nodeSelector"] == {"edgeferry.io/prepull": "failed"}

    # Deleting the ModelDeployment takes the failed pre-pull's DaemonSet with it.
    hub.kubectl("-n", namespace, "delete", "modeldeployments", "iris", "--wait=true")
    res.wait_until(
        "nothing of ours left at edge-2",
        lambda: (
            _daemonset(edge, namespace) is None
            and res.deployment_at(edge, namespace, "iris") is None
        ),
        timeout=60,
    )


# --- at most maxConcurrentNodes at a time --------------------------------------------------------
TEST_TAINT = {"key": "edgeferry.io/prepull-test", "value": "true", "effect": "NoSchedule"}
"""On every node the test adds, so no other workload lands there; the target tolerates it."""
OTHER_TAINT = {"key": "edgeferry.io/prepull-other", "value": "true", "effect": "NoSchedule"}
ONE_NODE_AT_A_TIME = {"prePull": {"enabled": True, "deadlineSeconds": 300, "maxConcurrentNodes": 1}}
"""The rollout of the bounded pre-pull tests (push and Agent targets)."""
PREPULL_PODS = "edgeferry.io/prepull"
"""Label selector of every pre-pull Pod (`target_objects.PREPULL_LABEL`)."""


@pytest.fixture(scope="module")
def kwok_site(operator: procs.Managed | None, testbed_handle: handles.Testbed) -> Iterator[str]:
    """A namespace with EdgeTarget `pool-edge` on five kwok nodes of edge-2 made for it (three
    usable, one tainted, one cordoned, picked by a label of this namespace's name) and two
    admitted images."""
    hub, edge = testbed_handle.hub, testbed_handle.cluster("edge-2")
    namespace = f"prepull-bound-{uuid.uuid4().hex[:6]}"
    pool = {"edgeferry.io/prepull-test": namespace}
    usable = [f"{namespace}-{i}" for i in (1, 2, 3)]
    made = [*usable, f"{namespace}-tainted", f"{namespace}-cordoned"]
    pytest_plugin.make_namespace(hub, namespace)
    operator_process.grant_namespace(testbed_handle.env, namespace)
    try:
        with edge.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            for name in made:
                taints = (TEST_TAINT, OTHER_TAINT) if name.endswith("tainted") else (TEST_TAINT,)
                fake = layout.FakeNode(name, "amd64", pool, taints)
                doc: dict[str, Any] = dict(clusters.node_manifest(fake))
                if name.endswith("cordoned"):
                    doc["spec"] = {**doc["spec"], "unschedulable": True}
                core.create_node(doc)
        res.wait_until(
            "the test's kwok nodes to be Ready",
            lambda: _ready_nodes(edge) >= set(made),
            timeout=60,
        )
        base = testbed_handle.env.base_images["busybox"]
        for name in ("one", "two"):
            images = res.server_image(
                name, base=base, registry=testbed_handle.registry, variant=namespace
            )
            res.create_model_image(hub, namespace, images)
        pytest_plugin.make_namespace(edge, namespace)
        target = res.edge_target(
            "pool-edge",
            workload_namespace=namespace,
            labels={"site": "pool"},
            secret="edge-2-kubeconfig",
        )
        tolerate = [{**TEST_TAINT, "operator": "Equal"}]
        target["spec"]["k3s"] |= {"nodeSelector": pool, "tolerations": tolerate}
        secret = res.kubeconfig_secret(
            "edge-2-kubeconfig", Path(edge.target_kubeconfig).read_text()
        )
        res.apply(hub, namespace, secret, target)
        res.wait_targets_ready(hub, namespace, ["pool-edge"])
        for name in ("one", "two"):
            res.wait_model_image(hub, namespace, name, phase="Ready")
        yield namespace
    finally:
        hub.kubectl("-n", namespace, "delete", "modeldeployments", "--all", check=False)
        hub.kubectl("-n", namespace, "delete", "edgetargets", "--all", check=False)
        edge.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        hub.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        edge.kubectl("delete", "nodes", *made, "--wait=false", "--ignore-not-found", check=False)


def _ready_nodes(edge: handles.Cluster) -> set[str]:
    with edge.api_client() as api:
        items = k8s_client.CoreV1Api(api).list_node().items
    return {
        n.metadata.name
        for n in items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }


def assert_pre_pulled(hub: handles.Cluster, namespace: str, name: str, *, nodes: int) -> None:
    """The ModelDeployment's events say the pre-pull started, then finished on `nodes` nodes."""
    events = res.wait_events(hub, namespace, name, "PrePulling", "PrePulled")
    reasons = [r for _, r, _ in events]
    assert reasons.index("PrePulling") < reasons.index("PrePulled"), reasons
    done = [m for _, r, m in events if r == "PrePulled"]
    assert done and f"pulled on {nodes} node(s)" in done[0], done


class PodWatch:
    """Watches the pre-pull Pods of a namespace from a thread: how many exist at once (a Pod
    counts from its first event until it is deleted, terminating or not) and their nodes."""

    def __init__(self, edge: handles.Cluster, namespace: str) -> None:
        self.edge, self.namespace = edge, namespace
        self.present: set[str] = set()
        self.most = 0
        self.nodes: dict[str, str] = {}
        """Pod name -> the node it was bound to."""
        self.failure: BaseException | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        assert self.ready.wait(30), "the Pod watch did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _see(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if kind == "DELETED":
            self.present.discard(name)
        else:
            self.present.add(name)
        if pod.spec.node_name:
            self.nodes[name] = pod.spec.node_name
        self.most = max(self.most, len(self.present))

    def _run(self) -> None:
        try:
            with self.edge.api_client() as api:
                core = k8s_client.CoreV1Api(api)
                listed = core.list_namespaced_pod(self.namespace, label_selector=PREPULL_PODS)
                for pod in listed.items:
                    self._see("ADDED", pod)
                version = listed.metadata.resource_version
                self.ready.set()
                while not self._stop.is_set():
                    stream = k8s_watch.Watch().stream(
                        core.list_namespaced_pod,
                        self.namespace,
                        label_selector=PREPULL_PODS,
                        resource_version=version,
                        timeout_seconds=5,
                    )
                    for event in stream:
                        if event["type"] == "ERROR":
                            raise AssertionError(f"the Pod watch broke: {event['raw_object']}")
                        self._see(event["type"], event["object"])
                        version = event["object"].metadata.resource_version
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc
            self.ready.set()


def test_a_bounded_pre_pull_pulls_one_usable_node_at_a_time_then_switches(
    testbed_handle: handles.Testbed, kwok_site: str
) -> None:
    namespace, hub = kwok_site, testbed_handle.hub
    edge = testbed_handle.cluster("edge-2")
    usable = {f"{namespace}-{i}" for i in (1, 2, 3)}
    two = res.image_reference(res.get_object(hub, namespace, "modelimages", "two") or {})
    deployment = res.model_deployment(
        "iris",
        image="one",
        selector={"matchLabels": {"site": "pool"}},
        replicas=1,
        rollout=ONE_NODE_AT_A_TIME,
    )
    res.apply(hub, namespace, deployment)
    res.wait_deployment_phase(hub, namespace, "iris", phase="Ready", timeout=120)

    with PodWatch(edge, namespace) as pods:
        _switch(hub, namespace, "two")
        ready = res.wait_deployment_phase(
            hub,
            namespace,
            "iris",
            phase="Ready",
            check=lambda o: res.target_line(o, "pool-edge").get("digest") == two,
            timeout=240,
        )
        res.wait_until(
            "the pre-pull DaemonSet and its Pods to be gone after the switch",
            lambda: _daemonset(edge, namespace) is None and not pods.present,
            timeout=60,
        )
    assert pods.failure is None, pods.failure
    assert pods.most == 1, f"{pods.most} pre-pull Pods at once"
    assert sorted(pods.nodes.values()) == sorted(usable), pods.nodes
    assert_pre_pulled(hub, namespace, "iris", nodes=3)
    assert res.target_line(ready, "pool-edge")["phase"] == "Ready"
    res.wait_until(
        "only the new digest's Pods at the target",
        lambda: res.pod_images(edge, namespace, "iris") == {two},
        timeout=60,
    )
