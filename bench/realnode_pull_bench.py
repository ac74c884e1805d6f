"""Pull-to-Ready time of a model image on a real node, cold and warm. Prints JSON.

A Pod with the image (by digest), the real node's selector and toleration and a readiness probe
on /healthz is created, and the time until its Ready condition is True is taken; "cold" removes
every image but the pause image from the node's containerd first (`ctr images rm --sync`: the
layers a model image shares with its base go too, so the kubelet pulls and unpacks every layer
from the registry), "warm" leaves it there. The kubelet's own pull time (its `Pulled` event) is
reported beside it. It runs on edge-1's real node, where nothing else runs (a layer in use by a
running container would stay, and the pull would not be cold).

Needs a running testbed and an iris image in the registry, e.g. the one
tests/integration/test_incluster.py pushes: `.venv/bin/python bench/realnode_pull_bench.py
[REFERENCE] [runs]` (default `<pod registry>/incluster/iris:v1`, 3 runs of each).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from edgeferry_testbed import env, layout, realnodes

NAMESPACE = "bench-pull"


def resolve(described: env.TestbedEnv, reference: str) -> str:
    """`repo@sha256:...` of `repo:tag` (the index digest, as a ModelDeployment pins it)."""
    if "@" in reference:
        return reference
    name, _, tag = reference.rpartition(":")
    registry, _, repository = name.partition("/")
    request = urllib.request.Request(
        f"http://{described.registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": "application/vnd.oci.image.index.v1+json, "
            "application/vnd.docker.distribution.manifest.list.v2+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return f"{registry}/{repository}@{response.headers['Docker-Content-Digest']}"


CLUSTER = "edge-1"


def drop_from_node(lay: layout.Layout) -> None:
    """Remove every image but the pause image from the node's containerd, and their content.

    The kubelet removes a deleted Pod's containers lazily (its container GC), and while they
    exist their layers stay; so the node's leftover containers go first (nothing else runs
    there)."""
    realnodes.remove_pod_containers(lay, lay.cluster(CLUSTER))
    files = realnodes.NodeFiles(lay, lay.cluster(CLUSTER))
    ctr = ["ctr", f"--address={files.containerd_socket}", "--namespace=k8s.io"]
    listed = subprocess.run(
        [*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True
    )
    names = [name for name in listed.stdout.split() if "pause" not in name]
    if names:
        subprocess.run([*ctr, "images", "rm", "--sync", *names], capture_output=True, check=True)


def pod(name: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {layout.REAL_NODE_LABEL: "real"},
            "tolerations": [{**layout.REAL_NODE_TAINT, "operator": "Equal"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "model",
                    "image": image,
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8080},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def pull_to_ready(core: k8s_client.CoreV1Api, image: str, run: str) -> dict[str, Any]:
    name = f"pull-{run}"
    started = time.monotonic()
    core.create_namespaced_pod(NAMESPACE, pod(name, image))
    try:
        while True:
            status = core.read_namespaced_pod(name, NAMESPACE).status
            ready = [c for c in status.conditions or [] if c.type == "Ready"]
            if ready and ready[0].status == "True":
                seconds = time.monotonic() - started
                break
            if time.monotonic() - started > 300:
                raise RuntimeError(f"{name} not Ready in 300 s: {status.phase}")
            time.sleep(0.1)
        events = core.list_namespaced_event(
            NAMESPACE, field_selector=f"involvedObject.name={name},reason=Pulled"
        ).items
        return {"readySeconds": round(seconds, 2), "kubelet": [e.message for e in events]}
    finally:
        core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
        while core.list_namespaced_pod(NAMESPACE, field_selector=f"metadata.name={name}").items:
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    lay = layout.default_layout()
    described = env.load(lay.env_file)
    reference = resolve(
        described, argv[0] if argv else f"{described.pod_registry}/incluster/iris:v1"
    )
    runs = int(argv[1]) if len(argv) > 1 else 3
    api = k8s_config.new_client_from_config(config_file=described.cluster(CLUSTER).kubeconfig)
    core = k8s_client.CoreV1Api(api)
    if not core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    results: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    for i in range(runs):
        drop_from_node(lay)
        results["cold"].append(pull_to_ready(core, reference, f"cold-{i}"))
        results["warm"].append(pull_to_ready(core, reference, f"warm-{i}"))
    summary = {
        kind: statistics.median(r["readySeconds"] for r in rows) for kind, rows in results.items()
    }
    print(json.dumps({"image": reference, "medianReadySeconds": summary, **results}, indent=1))
    api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
