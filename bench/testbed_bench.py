"""Testbed figures: warm `up`, idle memory of every testbed process, and how long a 3-replica
Deployment takes to become Available on an edge cluster. Prints one JSON document.

Run on a testbed that is already up (`make testbed-up`): `.venv/bin/python bench/testbed_bench.py`.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from kubernetes import client as k8s_client

from edgeferry_testbed import env, handles, testbed


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def deployment_seconds(cluster: handles.Cluster, replicas: int) -> float:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    with cluster.api_client() as api:
        k8s_client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        started = time.monotonic()
        k8s_client.AppsV1Api(api).create_namespaced_deployment(
            ns,
            {
                "metadata": {"name": "model"},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": "m"}},
                    "template": {
                        "metadata": {"labels": {"app": "m"}},
                        "spec": {"containers": [{"name": "m", "image": "x/m:1"}]},
                    },
                },
            },
        )
        cluster.wait_deployment_available(ns, "model", timeout=120)
        elapsed = time.monotonic() - started
        k8s_client.CoreV1Api(api).delete_namespace(ns)
    return elapsed


def main() -> None:
    bed = testbed.Testbed()
    started = time.monotonic()
    described = bed.up()
    warm_up = time.monotonic() - started
    rss = {m.name: round(rss_mib(m.pid), 1) for m in bed.sup.all()}
    handle = handles.Testbed(env.load(bed.layout.env_file))
    runs = [deployment_seconds(handle.cluster("edge-1"), 3) for _ in range(3)]
    print(
        json.dumps(
            {
                "warm_up_seconds": round(warm_up, 2),
                "clusters": [c.name for c in described.clusters],
                "rss_mib_total": round(sum(rss.values()), 1),
                "rss_mib_by_process": rss,
                "edge1_3_replica_available_seconds": [round(r, 2) for r in runs],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
