"""Cutover time on a real node with and without `rollout.prePull`, for the iris image. Prints JSON.

A cutover is what a wave does at a target: the running Deployment is switched to the new digest
and the time until its new Pod is Ready is taken (readiness probe /healthz every second; the
old Pod keeps serving meanwhile, maxSurge 1). The Deployment first runs the busybox base image
(`busybox httpd`), which shares no layer with iris, so the node's containerd has nothing of the
iris image; every run starts from a cold node (`realnode_pull_bench.drop_from_node`: every image
but the pause image removed, their content too).

- **without**: the Deployment is switched at once; its new Pod pulls iris, then starts.
- **with**: the operator's own pre-pull code puts the DaemonSet at the target
  (`decisions.prepull.render`, `adapters.target_workloads.apply_prepull`), waits until
  `decisions.prepull.next_step` says `switch` (every node reports the image), then switches and
  deletes the DaemonSet. Reported: the pre-pull time and the cutover after it.

It runs on edge-1's real node, where nothing else runs (a layer in use stays, and the pull would
not be cold). Needs a running testbed and an iris image in the registry, e.g. the one
tests/integration/test_real_nodes.py or tests/integration/test_incluster.py pushes:
`.venv/bin/python bench/prepull_bench.py [REFERENCE] [runs]` (default: the newest
`real-nodes/*` or `incluster/iris` repository in the registry, 3 runs of each).
"""

from __future__ import annotations

import datetime
import json
import pathlib
import statistics
import sys
import time
import urllib.request
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import realnode_pull_bench as pull_bench

from edgeferry.adapters import target_workloads
from edgeferry.decisions import prepull
from edgeferry.models import target_objects
from edgeferry_testbed import env, layout

NAMESPACE = "bench-prepull"
MD_NAMESPACE, MD_NAME = "bench", "iris"
TIMEOUT = 300.0


def newest_iris(described: env.TestbedEnv) -> str:
    """`repo:tag` of an iris image the tests pushed (real-nodes/* or incluster/iris)."""
    with urllib.request.urlopen(f"http://{described.registry}/v2/_catalog?n=1000") as response:
        repositories = json.loads(response.read())["repositories"]
    found = [r for r in repositories if r.startswith("real-nodes/") or r == "incluster/iris"]
    if not found:
        raise SystemExit("no iris image in the registry: run tests/integration/test_real_nodes.py")
    repository = found[-1]
    with urllib.request.urlopen(f"http://{described.registry}/v2/{repository}/tags/list") as r:
        tags = json.loads(r.read())["tags"]
    return f"{described.pod_registry}/{repository}:{sorted(tags)[0]}"


def deployment(old_image: str) -> dict[str, Any]:
    """Our Deployment at the target, running the busybox base (labels as edgeferry writes)."""
    labels = target_objects.selector_labels(MD_NAMESPACE, MD_NAME)
    return {
        "metadata": {
            "name": target_objects.workload_name(MD_NAME),
            "namespace": NAMESPACE,
            "labels": {**labels, target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {layout.REAL_NODE_LABEL: "real"},
                    "tolerations": [{**layout.REAL_NODE_TAINT, "operator": "Equal"}],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": target_objects.CONTAINER_NAME,
                            "image": old_image,
                            "command": ["busybox", "httpd", "-f", "-p", "8080"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }


def wait_ready(core: k8s_client.CoreV1Api, image: str) -> None:
    """Until a live Pod of ours with `image` is Ready."""
    started = time.monotonic()
    selector = f"{target_objects.NAME_LABEL}={target_objects.workload_name(MD_NAME)}"
    while time.monotonic() - started < TIMEOUT:
        for pod in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items:
            if pod.metadata.deletion_timestamp or pod.spec.containers[0].image != image:
                continue
            if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                return
        time.sleep(0.1)
    raise RuntimeError(f"no Ready Pod of {image} within {TIMEOUT:.0f}s")


def switch(apps: k8s_client.AppsV1Api, image: str) -> None:
    """Switch the Deployment's one container to `image` (the model's own entrypoint)."""
    name = target_objects.workload_name(MD_NAME)
    body = apps.read_namespaced_deployment(name, NAMESPACE)
    container = body.spec.template.spec.containers[0]
    container.image, container.command = image, None
    container.readiness_probe = k8s_client.V1Probe(
        http_get=k8s_client.V1HTTPGetAction(path="/healthz", port=8080), period_seconds=1
    )
    apps.replace_namespaced_deployment(name, NAMESPACE, body)


def pre_pull(api: k8s_client.ApiClient, image: str, digest: str) -> float:
    """Pre-pull `image` with the operator's code; seconds until `next_step` says switch."""
    rendered = deployment(image)
    rendered["spec"]["template"]["spec"]["containers"][0]["image"] = image
    daemonset = prepull.render(
        rendered, md_namespace=MD_NAMESPACE, md_name=MD_NAME, digest=digest, generation=1
    )
    started = time.monotonic()
    target_workloads.apply_prepull(
        api, daemonset, md_namespace=MD_NAMESPACE, md_name=MD_NAME, timeout=10
    )
    while time.monotonic() - started < TIMEOUT:
        reading = target_workloads.observe(
            api,
            namespace=NAMESPACE,
            md_namespace=MD_NAMESPACE,
            md_name=MD_NAME,
            timeout=10,
            prepull=True,
        )
        seen = prepull.observe(reading.prepull, reading.prepull_pods)
        step = prepull.next_step(
            seen,
            digest=digest,
            generation=1,
            deadline_seconds=int(TIMEOUT),
            now=datetime.datetime.now(datetime.UTC),
        )
        if step.action == "switch":
            return time.monotonic() - started
        if step.action == "fail":
            raise RuntimeError(step.message)
        time.sleep(0.1)
    raise RuntimeError(f"pre-pull not done within {TIMEOUT:.0f}s")


def one_run(
    api: k8s_client.ApiClient, lay: layout.Layout, old: str, new: str, *, with_pp: bool
) -> dict[str, Any]:
    apps, core = k8s_client.AppsV1Api(api), k8s_client.CoreV1Api(api)
    pull_bench.drop_from_node(lay)
    apps.create_namespaced_deployment(NAMESPACE, deployment(old))
    try:
        wait_ready(core, old)
        row: dict[str, Any] = {}
        if with_pp:
            row["prePullSeconds"] = round(pre_pull(api, new, new), 2)
        started = time.monotonic()
        switch(apps, new)
        wait_ready(core, new)
        row["cutoverSeconds"] = round(time.monotonic() - started, 2)
        if with_pp:
            target_workloads.delete_prepull(
                api, namespace=NAMESPACE, md_namespace=MD_NAMESPACE, md_name=MD_NAME, timeout=10
            )
        return row
    finally:
        apps.delete_namespaced_deployment(
            target_objects.workload_name(MD_NAME), NAMESPACE, propagation_policy="Foreground"
        )
        target_workloads.delete_prepull(
            api, namespace=NAMESPACE, md_namespace=MD_NAMESPACE, md_name=MD_NAME, timeout=10
        )
        while core.list_namespaced_pod(NAMESPACE).items:
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    lay = layout.default_layout()
    described = env.load(lay.env_file)
    new = pull_bench.resolve(described, argv[0] if argv else newest_iris(described))
    runs = int(argv[1]) if len(argv) > 1 else 3
    old = described.base_images["busybox"].replace(described.registry, described.pod_registry)
    api = k8s_config.new_client_from_config(
        config_file=described.cluster(pull_bench.CLUSTER).kubeconfig
    )
    core = k8s_client.CoreV1Api(api)
    if not core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    results: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for _ in range(runs):
        results["without"].append(one_run(api, lay, old, new, with_pp=False))
        results["with"].append(one_run(api, lay, old, new, with_pp=True))
    summary = {
        "cutoverWithout": statistics.median(r["cutoverSeconds"] for r in results["without"]),
        "cutoverWith": statistics.median(r["cutoverSeconds"] for r in results["with"]),
        "prePull": statistics.median(r["prePullSeconds"] for r in results["with"]),
    }
    print(json.dumps({"image": new, "old": old, "median": summary, **results}, indent=1))
    api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
