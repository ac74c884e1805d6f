"""Metric analysis of a wave, measured on real traffic by the testbed's Prometheus.

One wave of two targets: `real-cloud` (the hub's real node) and `real-edge` (a K3s target on
edge-2's real node). containerd pulls the digest at both, the sklearn-http server really serves
it; the testbed's one Prometheus scrapes every model Pod's `/metrics` (Debian's Prometheus has
no Kubernetes discovery, so this test lists the Pods it reads from both clusters' API servers in
a `file_sd` file, labelled with their namespace, image and `target`, the EdgeTarget they belong
to, as a central Prometheus fed by each site would label them); this test sends /predict
traffic to the Pods (edge-2's real-node Pod IPs are on a bridge of the host); the operator sends
each target's analysis query, rendered with `{{ target }}`, to Prometheus. Two releases of an
iris classifier get the same traffic, half of whose rows lack a feature (NaN):

- the good one is a Pipeline that imputes missing features, so every call answers 200 and its
  analysis passes;
- the bad one is a bare LogisticRegression, which really raises on NaN ("Input X contains
  NaN"): half of its /predict calls answer 400 while /healthz stays green, so only the analysis
  can tell, and it rolls the target back to the good release.

No test-only switch in the server: the failure is a real model's, of the kind a release that
dropped a preprocessing step ships. The operator is restarted while the good release's analysis
is under way: it goes on from `status.analysis` (the tallies are never dropped).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client as k8s_client

from edgeferry_testbed import (
    handles,
    images,
    operator_process,
    procs,
    pytest_plugin,
    services,
    testbed,
)
from tests.integration import _resources
from tests.integration.test_real_nodes import REAL, TOLERATE_REAL

pytestmark = pytest.mark.integration

TRAIN = """
import base64, pickle, sys
from sklearn.datasets import load_iris
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
features, labels = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000)
if sys.argv[1] == "imputing":
    model = make_pipeline(SimpleImputer(), model)
sys.stdout.write(base64.b64encode(pickle.dumps(model.fit(features, labels))).decode())
"""
ROWS = ([5.1, 3.5, 1.4, 0.2], [6.7, float("nan"), 5.2, 2.3])
"""Every other request carries a row with a missing feature (JSON `NaN`, which the server's
json module reads as a float)."""
ERROR_RATE = (
    '(sum(rate(edgeferry_model_request_errors_total{target="{{ target }}",'
    'namespace="{{ namespace }}",endpoint="/predict",image=~".*@{{ digest }}"}[30s])) or vector(0))'
    ' / sum(rate(edgeferry_model_requests_total{target="{{ target }}",namespace="{{ namespace }}",'
    'endpoint="/predict",image=~".*@{{ digest }}"}[30s]))'
)
TARGETS = {"hub": "real-cloud", "edge-2": "real-edge"}
"""The EdgeTarget on each cluster's real node."""
ANALYSIS = {
    "intervalSeconds": 5,
    "count": 3,
    "failureLimit": 0,
    "inconclusiveLimit": 4,
    "metrics": [{"name": "error-rate", "query": ERROR_RATE, "successCondition": {"max": 0.1}}],
}


def _train(bed: handles.Testbed, kind: str) -> bytes:
    client = docker.DockerClient(base_url=bed.env.docker_host, timeout=600)
    try:
        script = f"import sys; sys.argv = ['train', {kind!r}]\n{TRAIN}"
        return images.make_sklearn_model(
            client, bed.env.base_images["pythonSklearn"], script=script
        )
    finally:
        client.close()


def _sklearn_image(bed: handles.Testbed, namespace: str, name: str, model: bytes) -> list[Any]:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-model"},
        "binaryData": {"model.pkl": base64.b64encode(model).decode()},
    }
    image = {
        "apiVersion": f"{_resources.GROUP}/{_resources.VERSION}",
        "kind": "ModelImage",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "format": "sklearn",
                "source": {"configMap": {"name": f"{name}-model", "key": "model.pkl"}},
                "sha256": hashlib.sha256(model).hexdigest(),
            },
            "build": {
                "runtime": {
                    "template": "sklearn-http",
                    "baseImage": bed.env.base_images["pythonSklearn"],
                },
                "platform": "linux/amd64",
            },
            "smokeTest": {
                "predict": {"path": "/predict", "body": json.dumps({"instances": [ROWS[0]]})}
            },
            "scan": {"failOn": "high"},
            "push": {"repository": f"{bed.registry}/analysis/{namespace}-{name}", "tags": ["v1"]},
        },
    }
    return [config_map, image]


class Traffic:
    """/predict calls to every ready Pod of the namespace on both clusters' real nodes, from a
    thread, which also keeps the Pods listed for Prometheus to scrape."""

    def __init__(self, clusters: list[handles.Cluster], namespace: str) -> None:
        self.clusters, self.namespace = clusters, namespace
        self.layout = testbed.Testbed().layout
        self.stop = threading.Event()
        self.answers: dict[int, int] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _pods(self) -> list[str]:
        """The ready Pods' addresses; every running Pod on a real node is listed for scraping
        (a Pod being replaced still has samples to give)."""
        scraped, ready = [], []
        for cluster in self.clusters:
            with cluster.api_client() as api:
                pods = k8s_client.CoreV1Api(api).list_namespaced_pod(self.namespace).items
            mine = [
                p for p in pods if p.status.pod_ip and p.spec.node_name in cluster.info.real_nodes
            ]
            scraped += [
                (
                    f"{p.status.pod_ip}:8080",
                    {
                        "cluster": cluster.name,
                        "target": TARGETS[cluster.name],
                        "namespace": p.metadata.namespace,
                        "pod": p.metadata.name,
                        "image": p.spec.containers[0].image,
                    },
                )
                for p in mine
            ]
            ready += [
                p.status.pod_ip
                for p in mine
                if p.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
        services.write_model_pods(self.layout, self.namespace, scraped)
        return ready

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                addresses = self._pods()
            except Exception:  # the API server is asked again in a moment
                addresses = []
            for _ in range(10):
                for address in addresses:  # each Pod gets both rows: half its calls have NaN
                    for row in ROWS:
                        self._post(address, json.dumps({"instances": [row]}).encode())
                if self.stop.wait(0.1):
                    return

    def _post(self, address: str, body: bytes) -> None:
        request = urllib.request.Request(
            f"http://{address}:8080/predict",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=5) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except OSError:
            code = 0
        self.answers[code] = self.answers.get(code, 0) + 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        services.forget_model_pods(self.layout, self.namespace)


@pytest.fixture
def real_targets(
    operator: procs.Managed | None, testbed_handle: handles.Testbed, unique_name: str
) -> Iterator[str]:
    """A namespace with two EdgeTargets on real nodes: `real-cloud` (the hub's) and `real-edge`
    (edge-2's, a K3s target)."""
    hub, edge = testbed_handle.hub, testbed_handle.cluster("edge-2")
    namespace = unique_name
    pytest_plugin.make_namespace(hub, namespace)
    pytest_plugin.make_namespace(edge, namespace)
    operator_process.grant_namespace(testbed_handle.env, namespace, workloads=True)
    labels = {"edgeferry.io/nodes": "real"}
    cloud = _resources.edge_target(
        "real-cloud", workload_namespace=namespace, labels=labels, node_selector=REAL
    )
    cloud["spec"]["cloud"]["tolerations"] = TOLERATE_REAL
    k3s = _resources.edge_target(
        "real-edge", workload_namespace=namespace, labels=labels, secret="edge-2-kubeconfig"
    )
    k3s["spec"]["k3s"] |= {"nodeSelector": REAL, "tolerations": TOLERATE_REAL}
    kubeconfig = Path(edge.info.target_kubeconfig or edge.kubeconfig).read_text()
    try:
        _resources.apply(
            hub,
            namespace,
            _resources.kubeconfig_secret("edge-2-kubeconfig", kubeconfig),
            cloud,
            k3s,
        )
        _resources.wait_targets_ready(hub, namespace, list(TARGETS.values()))
        yield namespace
    finally:
        hub.kubectl("-n", namespace, "delete", "modeldeployments", "--all", check=False)
        edge.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        hub.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _tallies(hub: handles.Cluster, namespace: str) -> list[dict[str, Any]]:
    obj = _resources.get_object(hub, namespace, "modeldeployments", "iris") or {}
    return list(obj.get("status", {}).get("analysis") or [])


def test_a_good_release_passes_and_one_failing_half_its_calls_is_rolled_back(
    testbed_handle: handles.Testbed, real_targets: str
) -> None:
    namespace, hub = real_targets, testbed_handle.hub
    edge = testbed_handle.cluster("edge-2")
    _resources.apply(
        hub,
        namespace,
        *_sklearn_image(testbed_handle, namespace, "good", _train(testbed_handle, "imputing")),
        *_sklearn_image(testbed_handle, namespace, "bad", _train(testbed_handle, "plain")),
    )
    good = _resources.image_reference(
        _resources.wait_model_image(hub, namespace, "good", phase="Ready", timeout=600)
    )
    bad = _resources.image_reference(
        _resources.wait_model_image(hub, namespace, "bad", phase="Ready", timeout=600)
    )
    deployment = _resources.model_deployment(
        "iris",
        image="good",
        selector={"matchLabels": {"edgeferry.io/nodes": "real"}},
        replicas=1,
        # One wave of both targets: each is analysed with its own query.
        rollout={"analysis": ANALYSIS, "progressDeadlineSeconds": 120, "canary": 2},
    )

    with Traffic([hub, edge], namespace) as traffic:
        _resources.apply(hub, namespace, deployment)
        # Restart the operator once a measurement is tallied in status: it goes on from there.
        before = _resources.wait_until(
            "a tallied measurement in status.analysis",
            lambda: [t for t in _tallies(hub, namespace) if t.get("passed")],
            timeout=300,
            interval=0.2,
        )
        bed = testbed.Testbed()
        operator_process.stop(bed)
        kept = _tallies(hub, namespace)
        operator_process.start(bed, testbed_handle.env)
        seen: list[list[dict[str, Any]]] = []
        passed: set[str] = set()

        def ready_after_restart() -> dict[str, Any] | None:
            obj = _resources.get_object(hub, namespace, "modeldeployments", "iris") or {}
            status = obj.get("status", {})
            for line in status.get("targets") or []:  # a Ready line says so once, then "runs"
                if "analysis passed (error-rate: 3 measurements)" in (line.get("message") or ""):
                    passed.add(line["name"])
            if status.get("phase") == "Ready":
                return obj
            seen.append(list(status.get("analysis") or []))
            return None

        ready = _resources.wait_until(
            "iris Ready after the restart", ready_after_restart, timeout=300, interval=0.2
        )
        shown = [(t["target"], t.get("passed", 0), t.get("inconclusive", 0)) for t in kept]
        print(f"analysis: restarted with tallies (target, passed, inconclusive) {shown}")
        assert kept and {t["target"] for t in before} <= {t["target"] for t in kept}
        for tallies in seen:  # never started again: no target's count went back
            counts = {t["target"]: t.get("passed", 0) for t in tallies}
            for t in before:
                assert counts.get(t["target"], t["passed"]) >= t["passed"], (before, tallies)
        assert passed == set(TARGETS.values()), ready["status"]["targets"]
        for target in TARGETS.values():
            assert _resources.target_line(ready, target)["digest"] == good, ready
        assert ready["status"].get("analysis", []) == [], "tallies of Ready targets are dropped"

        deployment["spec"]["imageRef"]["name"] = "bad"
        _resources.apply(hub, namespace, deployment)

        first: dict[str, dict[str, Any]] = {}

        def rolled_back() -> dict[str, dict[str, Any]] | None:
            """Each target's line as it first says RolledBack (later reconciles shorten it)."""
            obj = _resources.get_object(hub, namespace, "modeldeployments", "iris") or {}
            for target in TARGETS.values():
                found = _resources.target_line(obj, target)
                if target not in first and found.get("phase") == "RolledBack":
                    first[target] = found
            return first if len(first) == len(TARGETS) else None

        _resources.wait_until("both targets rolled back", rolled_back, timeout=300, interval=0.2)
    print(f"analysis: /predict answers by status code: {traffic.answers}")
    for target, line in first.items():
        assert f'target="{target}"' in line["lastError"], line
        assert "analysis failed: error-rate = " in line["message"], line
    line = first["real-edge"]

    # The status names the metric, the value, the threshold and the query as sent.
    assert line["digest"] == good, line
    assert "analysis failed: error-rate = " in line["message"], line
    assert "needs <= 0.1" in line["message"], line
    bare = bad.rsplit("@", 1)[1]
    assert f'image=~".*@{bare}"' in line["lastError"], line
    assert f'namespace="{namespace}"' in line["lastError"], line
    value = float(line["message"].split("error-rate = ", 1)[1].split(",", 1)[0])
    assert 0.3 < value < 0.7, line  # half the calls failed, give or take a scrape
    # So does the event.
    events = _resources.wait_events(hub, namespace, "iris", "RolledBack")
    rollbacks = [m for _, reason, m in events if reason == "RolledBack"]
    assert rollbacks and "analysis failed: error-rate" in rollbacks[-1], events
    assert "query '" in rollbacks[-1], rollbacks
    # The health probe never saw anything wrong: both releases answered /healthz.
    assert traffic.answers.get(400), traffic.answers
    _resources.wait_until(
        "the good release serving again",
        lambda: all(_resources.pod_images(c, namespace, "iris") == {good} for c in (hub, edge)),
        timeout=120,
    )
