"""The testbed itself: real control planes, real controllers, kwok nodes, Docker and registry."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from edgeferry_testbed import clusters, handles, layout, procs, pytest_plugin, testbed

pytestmark = pytest.mark.integration


def _deployment(
    name: str, *, replicas: int, labels: dict[str, str] | None = None
) -> dict[str, object]:
    pod_labels = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "model", "image": "example.invalid/model:1"}]},
            },
        },
    }


@pytest.mark.parametrize("cluster_name", ["edge-1", "edge-2"])
def test_deployment_on_edge_becomes_available_on_nodes_of_its_arch(
    testbed_handle: handles.Testbed, cluster_name: str, unique_name: str
) -> None:
    cluster = testbed_handle.cluster(cluster_name)
    pytest_plugin.make_namespace(cluster, unique_name)
    try:
        with cluster.api_client() as api:
            k8s_client.AppsV1Api(api).create_namespaced_deployment(
                unique_name, _deployment("model", replicas=3)
            )
        deployment = cluster.wait_deployment_available(unique_name, "model", timeout=120)
        assert deployment["status"]["readyReplicas"] == 3
        with cluster.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            pods = core.list_namespaced_pod(unique_name, label_selector="app=model").items
            nodes = {n.metadata.name: n for n in core.list_node().items}
        assert len(pods) == 3
        expected_arch = cluster.info.architectures
        for pod in pods:
            assert pod.status.phase == "Running"
            node = nodes[pod.spec.node_name]
            assert node.metadata.labels["kubernetes.io/arch"] in expected_arch
            assert pod.spec.node_name in cluster.info.nodes
    finally:
        pytest_plugin.delete_namespace(cluster, unique_name)


def test_pod_with_chaos_label_is_driven_to_failed(
    testbed_handle: handles.Testbed, unique_name: str
) -> None:
    cluster = testbed_handle.cluster("edge-2")
    pytest_plugin.make_namespace(cluster, unique_name)
    try:
        with cluster.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            core.create_namespaced_pod(
                unique_name,
                {
                    "metadata": {"name": "doomed", "labels": {clusters.CHAOS_LABEL: "true"}},
                    "spec": {"containers": [{"name": "model", "image": "example.invalid/m:1"}]},
                },
            )
            procs.wait_until(
                lambda: core.read_namespaced_pod("doomed", unique_name).status.phase == "Failed",
                timeout=60,
                what="chaos pod to fail",
            )
            pod = core.read_namespaced_pod("doomed", unique_name)
        assert pod.status.container_statuses[0].state.terminated.exit_code == 1
    finally:
        pytest_plugin.delete_namespace(cluster, unique_name)


def test_dockerfile_from_local_base_builds_pushes_and_digest_reads_back(
    testbed_handle: handles.Testbed, unique_name: str
) -> None:
    base = testbed_handle.env.base_images["busybox"]
    assert "@sha256:" in base
    dockerfile = f'FROM {base}\nCOPY hello.txt /hello.txt\nCMD ["cat", "/hello.txt"]\n'
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {
            "Dockerfile": dockerfile.encode(),
            "hello.txt": unique_name.encode(),
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    repo = f"{testbed_handle.registry}/testbed/{unique_name}"
    client = testbed_handle.docker()
    try:
        client.images.build(
            fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=f"{repo}:v1", rm=True
        )
        pushed_digest = None
        for line in client.api.push(repo, tag="v1", stream=True, decode=True):
            assert "error" not in line, line
            pushed_digest = line.get("aux", {}).get("Digest", pushed_digest)
        assert pushed_digest and pushed_digest.startswith("sha256:")
        req = urllib.request.Request(
            f"http://{testbed_handle.registry}/v2/testbed/{unique_name}/manifests/v1",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Docker-Content-Digest"] == pushed_digest
        assert run_and_read_output(client, f"{repo}:v1") == unique_name
    finally:
        client.images.remove(f"{repo}:v1", force=True)
        client.close()


def run_and_read_output(client: Any, image: str) -> str:
    """What a short-lived container printed, read from its log once it has exited.

    Attached to a container that exits at once, docker-py can read nothing; the json-file
    log keeps it, and may take a moment to hold the last line.
    """
    container = client.containers.run(image, detach=True)
    try:
        container.wait(timeout=60)
        deadline = time.monotonic() + 10
        output = b""
        while not output and time.monotonic() < deadline:
            output = container.logs(stdout=True, stderr=True)
            if not output:
                time.sleep(0.2)
        return str(output.decode())
    finally:
        container.remove(force=True)


def test_down_stops_every_process_it_started(tmp_path: Path) -> None:
    """A second, one-cluster testbed on other ports: up, then down, and nothing it ran is left."""
    main = layout.default_layout()
    small = dataclasses.replace(
        main,
        state_dir=tmp_path / "state",
        clusters=(layout.ClusterLayout("solo", "hub", 7, main.clusters[2].nodes[:1]),),
        etcd_client_port=31389,
        etcd_peer_port=31390,
        prometheus_port=31091,
    )
    bed = testbed.Testbed(small)
    try:
        bed.up(base_images=False)
        running = bed.sup.all()
        names = {m.name for m in running}
        assert {
            "etcd",
            "apiserver-solo",
            "controller-manager-solo",
            "scheduler-solo",
            "kwok-solo",
            "prometheus",
        } <= names
        pids = [m.pid for m in running]
        ports = [31389, 31390, 31091, 31450, 31460, 31470, 31480]
    finally:
        stopped = bed.down()
    assert set(stopped) >= names
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie_or_other(pid, running)
    for port in ports:
        assert procs.port_is_free(port), f"port {port} still listens after down"
    env_doc = json.loads((tmp_path / "state" / "env.json").read_text())
    assert env_doc["clusters"][0]["name"] == "solo"
    assert os.environ.get("KUBECONFIG") != env_doc["clusters"][0]["kubeconfig"]


def _is_zombie_or_other(pid: int, running: list[procs.Managed]) -> bool:
    """A pid may be reused by an unrelated process; ours is gone if the executable differs."""
    exe = next(m.exe for m in running if m.pid == pid)
    try:
        return os.readlink(f"/proc/{pid}/exe") != exe
    except OSError:
        return True
