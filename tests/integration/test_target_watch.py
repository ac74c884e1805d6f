"""The target watch (`adapters/target_watch.py`) against a real edge API server.

The watch runs with the operator's edge identity (the EdgeTarget kubeconfig the testbed makes,
limited to `manifests/edge/`), so it also proves the shipped edge role grants what it needs. It
must hear edgeferry's Deployments and Pods (and nothing else), lose its connection when the
edge's kube-apiserver is stopped, resume when it is back, and leave no task behind when closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client

from edgeferry.adapters import clusters, target_watch
from edgeferry.models import target_objects
from edgeferry_testbed import handles, pytest_plugin, testbed

OWNER = target_objects.owner_label("team-a", "model")


@dataclasses.dataclass
class Heard:
    """Everything the watch reported, with monotonic timestamps."""

    changes: list[tuple[float, str | None]] = dataclasses.field(default_factory=list)
    resyncs: list[float] = dataclasses.field(default_factory=list)
    connections: list[tuple[float, str, bool, str | None]] = dataclasses.field(default_factory=list)

    def changed(self, key: Any, owner: str | None) -> None:
        self.changes.append((time.monotonic(), owner))

    def resync(self, key: Any) -> None:
        self.resyncs.append(time.monotonic())

    def connection(self, key: Any, resource: str, *, up: bool, reason: str | None) -> None:
        self.connections.append((time.monotonic(), resource, up, reason))


async def until(what: str, check: Callable[[], bool], *, timeout: float) -> float:
    """Wait (polling the event loop) until `check()`; the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic()


def deployment(name: str, labels: dict[str, str], replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **labels}},
                "spec": {"containers": [{"name": "m", "image": "x/m:1"}]},
            },
        },
    }


def ready_pods(edge: handles.Cluster, namespace: str) -> int:
    with edge.api_client() as api:
        pods = k8s_client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=ours")
    return sum(
        1
        for pod in pods.items
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    )


def test_the_watch_hears_our_objects_only_and_resumes_after_the_edge_api_server_restarts(
    testbed_handle: handles.Testbed, unique_name: str
) -> None:
    edge = testbed_handle.cluster("edge-1")
    namespace = unique_name
    pytest_plugin.make_namespace(edge, namespace)
    try:
        asyncio.run(_scenario(edge, namespace))
    finally:
        pytest_plugin.delete_namespace(edge, namespace)


async def _scenario(edge: handles.Cluster, namespace: str) -> None:
    api = clusters.client_from_kubeconfig(
        Path(edge.target_kubeconfig).read_text(), source="the testbed's edge kubeconfig"
    )
    heard = Heard()
    watches = target_watch.Watches(heard)

    async def connect() -> k8s_client.ApiClient:
        return api

    watches.start("edge-1", namespace=namespace, connect=connect)
    await until("both watches open", lambda: watches.is_up("edge-1"), timeout=20)
    assert heard.changes == [], "a fresh watch replayed existing objects"

    ours = {target_objects.MANAGED_BY_LABEL: "edgeferry", target_objects.DEPLOYMENT_LABEL: OWNER}
    with edge.api_client() as admin:
        apps = k8s_client.AppsV1Api(admin)
        apps.create_namespaced_deployment(namespace, deployment("foreign", {"app": "foreign"}))
        apps.create_namespaced_deployment(namespace, deployment("ours", ours))
        await until("our Deployment heard", lambda: bool(heard.changes), timeout=10)
        ready_at = await until(
            "our Pod Ready at the edge", lambda: ready_pods(edge, namespace) == 1, timeout=60
        )
        await asyncio.sleep(1.5)  # the Pod's Ready update and the Deployment's status follow
        owners = {owner for _, owner in heard.changes}
        assert owners == {OWNER}, f"the watch reported objects that are not ours: {owners}"
        assert any(at >= ready_at - 1.0 for at, _ in heard.changes), (
            "no change heard around the time the Pod became Ready"
        )

        bed = testbed.Testbed()
        await asyncio.to_thread(bed.stop_apiserver, "edge-1")
        try:
            await until(
                "the watch to notice the API server is gone",
                lambda: not watches.is_up("edge-1"),
                timeout=30,
            )
            lost = [c for c in heard.connections if not c[2]]
            assert lost and all(reason == "error" for _, _, _, reason in lost), heard.connections
        finally:
            await asyncio.to_thread(bed.start_apiserver, "edge-1")
        back = await until("the watch to resume", lambda: watches.is_up("edge-1"), timeout=60)
        assert any(at <= back + 1 for at in heard.resyncs), "no resync after the reconnect"

        before = len(heard.changes)
        scaled = time.monotonic()
        apps.patch_namespaced_deployment_scale(
            namespace=namespace, name="ours", body={"spec": {"replicas": 2}}
        )
        heard_at = await until(
            "a change after the restart", lambda: len(heard.changes) > before, timeout=10
        )
        assert heard_at - scaled < 2.0, f"heard {heard_at - scaled:.1f}s after the change"

    await watches.close()
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if t.get_name().startswith("watch ")]
    assert left == [], f"tasks left after close: {left}"
    assert not watches.keys()
    opened = sum(1 for c in heard.connections if c[2])
    closed = sum(1 for c in heard.connections if not c[2])
    assert opened == closed, json.dumps(heard.connections)
