"""The operator as users install it: `helm install` on the hub, the operator Pod on a real node.

One install per module (`incluster.install`, reused when the demo left it running): the chart's
Deployment, ServiceAccount and RBAC, the operator image built from `operator/Dockerfile` and
pulled by the real node's containerd, the `dind` build backend as a sidecar, grype's database
from the mirror the chart's `scan.dbUpdateUrl` names (the Pod has no internet). Through it the
headline flows: the admitted iris sample is built, smoke-tested, scanned and pushed by the Pod,
the blocked sample is refused, a ModelDeployment rolls the admitted digest onto the real nodes
of the hub and of edge-2, the edge's Service answers a real prediction, and the testbed's
Prometheus finds and scrapes the operator Pod. Last, the release is upgraded to the
`hostSocket` backend on a dockerd of the testbed's own (`host_socket`: the node's Docker socket,
mounted into the Pod), and a second copy of the iris sample is built, smoke-tested, scanned
and pushed through it. The rest of the suite runs the host-process
operator, which serves every namespace: it is stopped while this module runs and started again
after (a few seconds), so the two never reconcile one object.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client as k8s_client

from edgeferry_testbed import handles, host_socket, incluster, operator_process, samples
from edgeferry_testbed import testbed as testbed_module
from tests.integration import _resources
from tests.integration.test_real_nodes import (
    IRIS_INSTANCES,
    REAL,
    TOLERATE_REAL,
    _post_through_service_proxy,
)

pytestmark = pytest.mark.integration

NAMESPACE = "edgeferry-incluster"
"""The test's namespace: watched by the in-cluster operator, its Cloud target's workloads too."""
assert NAMESPACE in incluster.WATCHED and NAMESPACE in incluster.WORKLOADS


def _operator_pod(hub: handles.Cluster) -> k8s_client.V1Pod:
    with hub.api_client() as api:
        pods = (
            k8s_client.CoreV1Api(api)
            .list_namespaced_pod(
                incluster.NAMESPACE, label_selector="app.kubernetes.io/component=operator"
            )
            .items
        )
    (pod,) = [p for p in pods if p.metadata.deletion_timestamp is None]
    return pod


def _rss_kib(hub: handles.Cluster) -> dict[str, int]:
    """VmRSS and VmHWM of the operator process, read from the host's /proc (the Pod's
    processes are the host's, in the container's cgroup)."""
    (status,) = [s for s in _operator_pod(hub).status.container_statuses if s.name == "operator"]
    container_id = status.container_id.rpartition("/")[2]
    for proc in Path("/proc").iterdir():
        try:
            if container_id not in (proc / "cgroup").read_text():
                continue
            if b"edgeferry" not in (proc / "cmdline").read_bytes():
                continue
            text = (proc / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        found = {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}
        # The container's peak with grype's and syft's processes (cgroup v1 memory controller).
        memory = next(
            line.split(":", 2)[2]
            for line in (proc / "cgroup").read_text().splitlines()
            if line.split(":", 2)[1] == "memory"
        )
        peak = Path("/sys/fs/cgroup/memory") / memory.lstrip("/") / "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            found["containerPeak"] = int(peak.read_text()) // 1024
        return found
    raise AssertionError(f"no operator process in container {container_id}")


@pytest.fixture(scope="module")
def release_before(testbed_handle: handles.Testbed) -> bool:
    """Whether the release was there before this module (the demo's): then it is left as found."""
    return incluster.installed(testbed_handle.env)


@pytest.fixture(scope="module")
def installed(testbed_handle: handles.Testbed, release_before: bool) -> Iterator[dict[str, Any]]:
    bed = testbed_module.Testbed()
    host_operator = bed.sup.find("operator") is not None
    if host_operator:
        operator_process.stop(bed)
    try:
        started = time.monotonic()
        chosen = incluster.install(bed, testbed_handle.env)
        print(f"incluster: install took {time.monotonic() - started:.0f} s")
        yield chosen
        if not release_before:
            incluster.uninstall(bed.layout, testbed_handle.env)
    finally:
        if host_operator:
            started = time.monotonic()
            operator_process.start(bed, testbed_handle.env)
            print(f"incluster: host operator back in {time.monotonic() - started:.0f} s")


def _sample_docs(testbed_handle: handles.Testbed, *files: str) -> list[dict[str, Any]]:
    """Samples as the Pod sees them: images from the Pods' registry, pushes to `incluster/`."""
    bed = testbed_module.Testbed()
    values = {
        k: incluster.for_pods(v, testbed_handle.env)
        for k, v in samples.placeholders(bed.layout, testbed_handle.env).items()
    }
    docs = [doc for name in files for doc in samples.render(samples.SAMPLES / name, values)]
    for doc in docs:
        repository = doc["spec"]["push"]["repository"].rsplit("/", 1)[1]
        doc["spec"]["push"]["repository"] = (
            f"{testbed_handle.env.pod_registry}/incluster/{repository}"
        )
    return docs


def _registry_serves(testbed_handle: handles.Testbed, reference: str) -> dict[str, Any]:
    """The image index the registry serves for `<pod registry>/<repository>@<digest>`."""
    repository, digest = reference.split("/", 1)[1].split("@")
    request = urllib.request.Request(
        f"http://{testbed_handle.env.registry}/v2/{repository}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Docker-Content-Digest"] == digest
        index: dict[str, Any] = json.loads(response.read())
    return index


@pytest.fixture(scope="module")
def samples_applied(
    testbed_handle: handles.Testbed, installed: dict[str, Any]
) -> Iterator[dict[str, dict[str, Any]]]:
    """The iris and legacy-scorer samples in the test namespace, both settled."""
    hub = testbed_handle.hub
    bed = testbed_module.Testbed()
    with hub.api_client() as api:
        samples.install_inputs(api, NAMESPACE, bed.layout, testbed_handle.env)
    docs = _sample_docs(testbed_handle, "modelimage-iris.yaml", "modelimage-vulnerable.yaml")
    at_rest = _rss_kib(hub)
    started = time.monotonic()
    try:
        _resources.apply(hub, NAMESPACE, *docs)
        iris = _resources.wait_model_image(hub, NAMESPACE, "iris", phase="Ready", timeout=900)
        print(f"incluster: iris Ready {time.monotonic() - started:.0f} s after apply")
        blocked = _resources.wait_model_image(
            hub, NAMESPACE, "legacy-scorer", phase="Blocked", timeout=600
        )
        after = _rss_kib(hub)
        print(
            f"incluster: operator RSS at rest {at_rest['VmRSS'] / 1024:.0f} MiB, after the "
            f"builds {after['VmRSS'] / 1024:.0f} MiB (peak {after['VmHWM'] / 1024:.0f} MiB; "
            f"container peak with grype and syft {after.get('containerPeak', 0) / 1024:.0f} MiB)"
        )
        yield {"iris": iris, "legacy-scorer": blocked}
    finally:
        hub.kubectl("-n", NAMESPACE, "delete", "modeldeployments", "--all", check=False)
        hub.kubectl("-n", NAMESPACE, "delete", "modelimages", "--all", check=False)


def test_operator_pod_runs_on_the_hubs_real_node_with_the_charts_identity(
    testbed_handle: handles.Testbed, installed: dict[str, Any]
) -> None:
    pod = _operator_pod(testbed_handle.hub)
    assert pod.spec.node_name in testbed_handle.hub.info.real_nodes, pod.spec.node_name
    assert pod.spec.service_account_name == incluster.RELEASE
    statuses = {s.name: s for s in pod.status.container_statuses}
    assert set(statuses) == {"operator", "dind"}
    assert all(s.ready for s in statuses.values()), statuses
    # What containerd pulled and runs, as the kubelet reports it.
    assert statuses["operator"].image_id.endswith(installed["image"]["digest"])
    can_i = testbed_handle.hub.kubectl(
        "auth", "can-i", "patch", "modelimages.edgeferry.io/status", "-n", NAMESPACE,
        f"--as=system:serviceaccount:{incluster.NAMESPACE}:{incluster.RELEASE}", check=False,
    )  # fmt: skip
    assert can_i.stdout.strip() == "yes", can_i.stderr


def test_admitted_sample_is_built_smoke_tested_scanned_and_pushed_by_the_pod(
    testbed_handle: handles.Testbed, samples_applied: dict[str, dict[str, Any]]
) -> None:
    iris = samples_applied["iris"]
    for type_ in ("Built", "SmokeTested", "Scanned", "Admitted", "Pushed"):
        assert _resources.condition(iris, type_).get("status") == "True", (type_, iris["status"])
    reference = _resources.image_reference(iris)
    assert reference.startswith(f"{testbed_handle.env.pod_registry}/incluster/iris@sha256:")
    _registry_serves(testbed_handle, reference)


def test_blocked_sample_is_refused_with_its_findings(
    samples_applied: dict[str, dict[str, Any]],
) -> None:
    """Scanned in the Pod with the mirror's database: the advisory the fixtures carry."""
    blocked = samples_applied["legacy-scorer"]
    admitted = _resources.condition(blocked, "Admitted")
    assert admitted["status"] == "False" and admitted["reason"] == "VulnerabilitiesFound"
    assert "GHSA-x84v-xcm2-53pg" in admitted["message"]
    assert _resources.condition(blocked, "Pushed") == {}


@pytest.fixture(scope="module")
def real_targets(
    testbed_handle: handles.Testbed, samples_applied: dict[str, dict[str, Any]]
) -> Iterator[None]:
    """EdgeTargets on the hub's real node (Cloud) and edge-2's (K3s), from the Pod's view."""
    hub, edge = testbed_handle.hub, testbed_handle.cluster("edge-2")
    secret = "edge-2-kubeconfig"
    cloud = _resources.edge_target(
        "real-cloud", workload_namespace=NAMESPACE, labels={"edgeferry.io/nodes": "real"},
        node_selector=REAL,
    )  # fmt: skip
    cloud["spec"]["cloud"]["tolerations"] = TOLERATE_REAL
    k3s = _resources.edge_target(
        "real-edge", workload_namespace=NAMESPACE, labels={"edgeferry.io/nodes": "real"},
        secret=secret,
    )  # fmt: skip
    k3s["spec"]["k3s"] |= {"nodeSelector": REAL, "tolerations": TOLERATE_REAL}
    edge.kubectl("create", "namespace", NAMESPACE, check=False)
    with open(edge.info.target_kubeconfig or edge.kubeconfig) as f:
        kubeconfig = f.read()
    try:
        _resources.apply(
            hub, NAMESPACE, _resources.kubeconfig_secret(secret, kubeconfig), cloud, k3s
        )
        _resources.wait_targets_ready(hub, NAMESPACE, ["real-cloud", "real-edge"])
        yield
    finally:
        hub.kubectl("-n", NAMESPACE, "delete", "modeldeployments", "--all", check=False)
        hub.kubectl("-n", NAMESPACE, "delete", "edgetargets", "--all", check=False)
        edge.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_model_deployment_rolls_the_digest_to_real_nodes_and_the_edge_answers(
    testbed_handle: handles.Testbed,
    samples_applied: dict[str, dict[str, Any]],
    real_targets: None,
) -> None:
    hub, edge = testbed_handle.hub, testbed_handle.cluster("edge-2")
    digest = _resources.image_reference(samples_applied["iris"]).rsplit("@", 1)[1]
    started = time.monotonic()
    deployment = _resources.model_deployment(
        "iris", image="iris", selector={"matchLabels": {"edgeferry.io/nodes": "real"}}, replicas=1
    )
    _resources.apply(hub, NAMESPACE, deployment)
    _resources.wait_deployment_phase(hub, NAMESPACE, "iris", phase="Ready", timeout=300)
    print(f"incluster: ModelDeployment Ready {time.monotonic() - started:.1f} s after apply")
    for cluster in (hub, edge):
        with cluster.api_client() as api:
            pods = (
                k8s_client.CoreV1Api(api)
                .list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=iris")
                .items
            )
        running = [p for p in pods if p.status.phase == "Running"]
        assert running, f"{cluster.name}: no running model Pod: {[p.status.phase for p in pods]}"
        for pod in running:
            assert pod.spec.node_name in cluster.info.real_nodes, pod.spec.node_name
            (status,) = pod.status.container_statuses
            assert status.image_id.endswith(digest), (status.image_id, digest)
            assert status.ready, f"{cluster.name}: readiness probe has not passed"
    with edge.api_client() as api:
        prediction = _post_through_service_proxy(
            api, f"/api/v1/namespaces/{NAMESPACE}/services/iris:http/proxy/predict"
        )
    assert len(prediction["predictions"]) == len(IRIS_INSTANCES), prediction
    assert prediction["predictions"][0] != prediction["predictions"][1], prediction


def test_prometheus_scrapes_the_operator_pod(
    testbed_handle: handles.Testbed, installed: dict[str, Any]
) -> None:
    """Scraped at the Pod's IP (`incluster.publish_to_prometheus` lists it for Prometheus)."""
    pod = _operator_pod(testbed_handle.hub)
    query = (
        'edgeferry_scan_db_stale_threshold_seconds{job="edgeferry-operator-pods",'
        f'pod="{pod.metadata.name}"}}'
    )
    url = f"{testbed_handle.env.prometheus_url}/api/v1/query?" + urllib.parse.urlencode(
        {"query": query}
    )

    def scraped() -> list[dict[str, Any]] | None:
        with urllib.request.urlopen(url, timeout=10) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
        return result or None

    (sample,) = _resources.wait_until("Prometheus to scrape the operator Pod", scraped, timeout=90)
    assert sample["metric"]["node"] in testbed_handle.hub.info.real_nodes
    assert sample["metric"]["instance"].startswith(f"{pod.status.pod_ip}:")
    assert float(sample["value"][1]) == 172800.0, "the chart's default scan.dbStaleSeconds"


@pytest.fixture(scope="module")
def host_socket_release(
    testbed_handle: handles.Testbed, installed: dict[str, Any], release_before: bool
) -> Iterator[host_socket.HostSocket]:
    """The release upgraded to `build.backend=hostSocket` on the testbed's host-socket dockerd.

    Last in the module (its tests are last in the file): the other tests see the dind Pod. A
    release this module found (the demo's) is put back on dind after; one it installed is
    uninstalled by `installed` anyway."""
    bed = testbed_module.Testbed()
    started = time.monotonic()
    had_docker0 = Path("/sys/class/net/docker0").exists()
    daemon = host_socket.ensure(bed, testbed_handle.env)
    # A second dockerd must leave the main one's bridge alone (`--bridge=none` deletes docker0,
    # and every later build of the main daemon then fails).
    assert Path("/sys/class/net/docker0").exists() == had_docker0
    try:
        incluster.install(bed, testbed_handle.env, host_socket=daemon)
        print(f"incluster: upgrade to hostSocket took {time.monotonic() - started:.0f} s")
        yield daemon
    finally:
        if release_before:
            incluster.install(bed, testbed_handle.env)
        host_socket.stop(bed)


def test_host_socket_backend_builds_smoke_tests_scans_and_pushes_from_the_pod(
    testbed_handle: handles.Testbed, host_socket_release: host_socket.HostSocket
) -> None:
    """The node's Docker socket mounted into the operator Pod, group-readable only: the Pod's
    non-root operator reaches it through the chart's socketGroup, and the image it builds is
    in that daemon, not in a sidecar's."""
    hub, daemon = testbed_handle.hub, host_socket_release
    pod = _operator_pod(hub)
    assert [c.name for c in pod.spec.containers] == ["operator"]
    (volume,) = [v for v in pod.spec.volumes if v.name == "docker-socket"]
    assert volume.host_path.path == str(daemon.path) and volume.host_path.type == "Socket"
    assert pod.spec.security_context.supplemental_groups == [daemon.group]
    assert daemon.path.stat().st_mode & 0o777 == 0o660, "only the socket's group may use it"

    with hub.api_client() as k8s:
        samples.install_inputs(k8s, NAMESPACE, testbed_module.Testbed().layout, testbed_handle.env)
    (doc,) = _sample_docs(testbed_handle, "modelimage-iris.yaml")
    doc["metadata"]["name"] = "iris-host-socket"
    repository = doc["spec"]["push"]["repository"] = (
        f"{testbed_handle.env.pod_registry}/incluster/iris-host-socket"
    )
    started = time.monotonic()
    try:
        _resources.apply(hub, NAMESPACE, doc)
        built = _resources.wait_model_image(
            hub, NAMESPACE, "iris-host-socket", phase="Ready", timeout=900
        )
        print(
            f"incluster: hostSocket: iris-host-socket built, smoke-tested (amd64, emulated "
            f"arm64), scanned and pushed {time.monotonic() - started:.0f} s after apply"
        )
    finally:
        hub.kubectl("-n", NAMESPACE, "delete", "modelimage", "iris-host-socket", check=False)
    for type_ in ("Built", "SmokeTested", "Scanned", "Admitted", "Pushed"):
        assert _resources.condition(built, type_).get("status") == "True", (type_, built["status"])
    reference = _resources.image_reference(built)
    assert reference.startswith(f"{repository}@sha256:"), reference
    index = _registry_serves(testbed_handle, reference)
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}, index
    api = docker.APIClient(base_url=daemon.docker_host, timeout=30)
    try:
        tags = [tag for image in api.images() for tag in image.get("RepoTags") or []]
    finally:
        api.close()
    assert any(tag.startswith(f"{repository}:") for tag in tags), tags
