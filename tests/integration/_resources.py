"""Resources rollout tests put on the testbed: real ModelImages, EdgeTargets, ModelDeployments.

The ModelImages are real: the operator lints, builds, smoke-tests, scans and pushes them, and the
rollout then deploys the digest it recorded. They are kept tiny so a test pays seconds, not
minutes, for its image:

- `server_image`: the testbed's pinned busybox base serving `busybox httpd` with a `/healthz`
  file; the model is a small JSON document whose content makes each image (and so each digest)
  unique to its test and variant.
- `scratch_image`: `FROM scratch` plus a `COPY`, for the platforms asked (`linux/arm64` only,
  or amd64 + arm64 as one OCI index). Nothing in it runs on the amd64 build host, so it has no
  `RUN` and no smoke test.
- `vulnerable_image`: the busybox server plus the installed-package metadata of requests 2.19.1
  (GHSA-x84v-xcm2-53pg, High, in the offline advisory fixtures), which the gate blocks.

EdgeTargets stand for the three clusters of the testbed: the hub's CPU pool (`Cloud`) and the two
edge sites (`K3s`, each reached through a kubeconfig Secret holding the token of the shipped edge
RBAC, `manifests/edge/`, with its CA inline; the admin kubeconfig is only for assertions).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import handles

GROUP, VERSION = "edgeferry.io", "v1alpha1"
MODEL_KEY = "model.json"

TARGET_LABELS: Mapping[str, Mapping[str, str]] = {
    "cloud": {"region": "cloud-eu-1", "tier": "cloud", "arch": "amd64", "hardware": "cpu"},
    "edge-1": {"region": "edge-site-1", "tier": "edge", "arch": "arm64", "hardware": "cpu"},
    "edge-2": {"region": "edge-site-2", "tier": "edge", "arch": "amd64", "hardware": "cpu"},
}
"""The labels deployments select on, per EdgeTarget name (sorted: `cloud` is the canary)."""
TARGET_CLUSTERS: Mapping[str, str] = {"cloud": "hub", "edge-1": "edge-1", "edge-2": "edge-2"}
"""Which testbed cluster each EdgeTarget stands for."""


# --- generic helpers -----------------------------------------------------------------------------
def wait_until(
    what: str, probe: Callable[[], Any], *, timeout: float, interval: float = 0.5
) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def get_object(
    cluster: handles.Cluster, namespace: str, plural: str, name: str
) -> dict[str, Any] | None:
    """One of edgeferry's resources as a dict, or None when it does not exist."""
    with cluster.api_client() as api:
        try:
            obj = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except k8s_exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
    return dict(obj)


def apply(cluster: handles.Cluster, namespace: str, *docs: Mapping[str, Any]) -> None:
    """`kubectl apply` documents into a namespace (server-side, like a GitOps tool would)."""
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "--server-side",
        "--field-manager=edgeferry-tests",
        "-f",
        "-",
        stdin=yaml.safe_dump_all([dict(d) for d in docs]),
    )


def refused_at_apply(cluster: handles.Cluster, doc: Mapping[str, Any]) -> str | None:
    """Send `doc` with a server-side dry run: the API server's refusal (stderr), or None."""
    result = cluster.kubectl(
        "-n",
        "default",
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        stdin=yaml.safe_dump(dict(doc)),
        check=False,
    )
    return result.stderr if result.returncode != 0 else None


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition of that type in an object's status, or {}."""
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def events(cluster: handles.Cluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the events about an object, oldest first."""
    with cluster.api_client() as api:
        items = (
            k8s_client.CoreV1Api(api)
            .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
            .items
        )
    items.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return [(e.type, e.reason, e.message or "") for e in items]


def wait_events(
    cluster: handles.Cluster,
    namespace: str,
    name: str,
    *reasons: str,
    where: Callable[[str, str, str], bool] | None = None,
    timeout: float = 30.0,
) -> list[tuple[str, str, str]]:
    """The object's events (as `events` gives them) once each of `reasons` is among them, and
    one event `where(type, reason, message)` accepts, when given.

    The operator posts its events after the status write a test waits for: read once right
    after that status, an event can still be on its way.
    """

    def probe() -> list[tuple[str, str, str]] | None:
        found = events(cluster, namespace, name)
        if not set(reasons) <= {reason for _, reason, _ in found}:
            return None
        if where is not None and not any(where(*event) for event in found):
            return None
        return found

    wanted = ", ".join(reasons) + (" and a matching one" if where is not None else "")
    result: list[tuple[str, str, str]] = wait_until(
        f"events {wanted} about {namespace}/{name}", probe, timeout=timeout
    )
    return result


# --- ModelImages ---------------------------------------------------------------------------------
def _model_document(text: str) -> str:
    return json.dumps({"model": "edgeferry-test", "variant": text}, sort_keys=True) + "\n"


def model_image(
    name: str,
    *,
    dockerfile: str,
    model_text: str,
    repository: str,
    platform: str = "linux/amd64",
    platforms: Sequence[str] = (),
    smoke_test: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ModelImage with an inline Dockerfile and the ConfigMap holding its model; built for
    `platforms` when given (an image index), else for `platform`."""
    content = _model_document(model_text)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-model"},
        "data": {MODEL_KEY: content},
    }
    image: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelImage",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "format": "custom",
                "source": {"configMap": {"name": f"{name}-model", "key": MODEL_KEY}},
                "sha256": hashlib.sha256(content.encode()).hexdigest(),
            },
            "build": (
                {"dockerfile": dockerfile, "platforms": list(platforms)}
                if platforms
                else {"dockerfile": dockerfile, "platform": platform}
            ),
            "smokeTest": (
                {"enabled": True, "port": 8080, "healthPath": "/healthz", "timeoutSeconds": 30}
                if smoke_test
                else {"enabled": False}
            ),
            "scan": {"failOn": "high"},
            "push": {"repository": repository, "tags": ["v1"]},
        },
    }
    return config_map, image


_SERVE = (
    'USER 10001:10001\nEXPOSE 8080\nCMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/srv"]\n'
)


def server_image(
    name: str, *, base: str, registry: str, variant: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """busybox httpd serving /healthz and the model; `variant` makes the digest unique."""
    dockerfile = (
        f"FROM {base}\n"
        "RUN mkdir -p /srv && echo ok > /srv/healthz\n"
        f"COPY model/{MODEL_KEY} /srv/{MODEL_KEY}\n" + _SERVE
    )
    return model_image(
        name,
        dockerfile=dockerfile,
        model_text=variant,
        repository=f"{registry}/rollout-tests/{name}",
    )


def scratch_image(
    name: str, *, registry: str, variant: str, platforms: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`FROM scratch` and a COPY, built for `platforms` (several: an OCI index), no smoke test.

    Building it runs nothing, so any platform builds here without emulation; kwok's Pods never
    execute it either.
    """
    dockerfile = (
        "FROM scratch\n"
        f"COPY model/{MODEL_KEY} /srv/{MODEL_KEY}\n"
        "USER 10001:10001\n"
        "EXPOSE 8080\n"
        'ENTRYPOINT ["/srv/serve"]\n'
    )
    return model_image(
        name,
        dockerfile=dockerfile,
        model_text=variant,
        repository=f"{registry}/rollout-tests/{name}",
        platforms=platforms,
        smoke_test=False,
    )


def vulnerable_image(
    name: str, *, base: str, registry: str, variant: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The busybox server with requests 2.19.1's installed metadata: blocked at the gate."""
    site = "/opt/app/site-packages/requests-2.19.1.dist-info"
    dockerfile = (
        f"FROM {base}\n"
        f"RUN mkdir -p {site} /srv \\\n"
        " && printf 'Metadata-Version: 2.1\\nName: requests\\nVersion: 2.19.1\\n'"
        f" > {site}/METADATA \\\n"
        " && echo ok > /srv/healthz\n"
        f"COPY model/{MODEL_KEY} /srv/{MODEL_KEY}\n" + _SERVE
    )
    return model_image(
        name,
        dockerfile=dockerfile,
        model_text=variant,
        repository=f"{registry}/rollout-tests/{name}",
    )


def create_model_image(
    hub: handles.Cluster, namespace: str, manifests: tuple[Mapping[str, Any], Mapping[str, Any]]
) -> None:
    """Apply the model ConfigMap, then the ModelImage."""
    config_map, image = manifests
    apply(hub, namespace, config_map, image)


def wait_model_image(
    hub: handles.Cluster, namespace: str, name: str, *, phase: str, timeout: float = 300
) -> dict[str, Any]:
    """Wait until the operator settles the ModelImage in `phase` (Ready or Blocked)."""
    final = {"Ready", "Blocked", "Failed"}

    def settled() -> dict[str, Any] | None:
        obj = get_object(hub, namespace, "modelimages", name)
        current = (obj or {}).get("status", {}).get("phase")
        if current in final and current != phase:
            raise AssertionError(
                f"ModelImage {namespace}/{name} settled as {current}, not {phase}: "
                f"{(obj or {}).get('status')}"
            )
        return obj if current == phase else None

    obj: dict[str, Any] = wait_until(
        f"ModelImage {namespace}/{name} to be {phase}", settled, timeout=timeout, interval=1
    )
    return obj


def image_reference(obj: Mapping[str, Any]) -> str:
    """`repository@sha256:...` of a Ready ModelImage."""
    image = obj["status"]["image"]
    return f"{image['repository']}@{image['digest']}"


# --- EdgeTargets ---------------------------------------------------------------------------------
def kubeconfig_secret(name: str, kubeconfig: str) -> dict[str, Any]:
    """A Secret holding a kubeconfig (YAML text) under the default key."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {"kubeconfig": kubeconfig},
    }


def edge_target(
    name: str,
    *,
    workload_namespace: str,
    labels: Mapping[str, str],
    secret: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    probe_interval_seconds: int = 5,
) -> dict[str, Any]:
    """An EdgeTarget: `K3s` when `secret` names a kubeconfig Secret, else `Cloud`."""
    spec: dict[str, Any] = {
        "namespace": workload_namespace,
        "probeIntervalSeconds": probe_interval_seconds,
    }
    if secret is not None:
        spec |= {"type": "K3s", "k3s": {"kubeconfigSecretRef": {"name": secret}}}
    else:
        spec |= {"type": "Cloud", "cloud": {"nodeSelector": dict(node_selector or {})}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeTarget",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": spec,
    }


def testbed_targets(
    bed: handles.Testbed, *, workload_namespace: str, names: Collection[str] = TARGET_CLUSTERS
) -> list[dict[str, Any]]:
    """Secrets and EdgeTargets for the hub's CPU pool and both edge clusters (those in `names`)."""
    docs: list[dict[str, Any]] = []
    for target, cluster in TARGET_CLUSTERS.items():
        if target not in names:
            continue
        if cluster == "hub":
            docs.append(
                edge_target(
                    target,
                    workload_namespace=workload_namespace,
                    labels=TARGET_LABELS[target],
                    node_selector={"edgeferry.io/pool": "cpu"},
                )
            )
            continue
        secret = f"{target}-kubeconfig"
        docs.append(
            kubeconfig_secret(secret, Path(bed.cluster(cluster).target_kubeconfig).read_text())
        )
        docs.append(
            edge_target(
                target,
                workload_namespace=workload_namespace,
                labels=TARGET_LABELS[target],
                secret=secret,
            )
        )
    return docs


def wait_targets_ready(
    hub: handles.Cluster, namespace: str, names: Sequence[str], *, timeout: float = 60
) -> None:
    """Wait until every named EdgeTarget reports `Ready=True`."""

    def all_ready() -> bool:
        return all(
            condition(get_object(hub, namespace, "edgetargets", n), "Ready").get("status") == "True"
            for n in names
        )

    wait_until(f"EdgeTargets {', '.join(names)} to be Ready", all_ready, timeout=timeout)


# --- ModelDeployments ----------------------------------------------------------------------------
def model_deployment(
    name: str,
    *,
    image: str,
    selector: Mapping[str, Any],
    replicas: int = 2,
    rollout: Mapping[str, Any] | None = None,
    pod_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ModelDeployment of ModelImage `image` to the targets `selector` picks."""
    template: dict[str, Any] = {
        "replicas": replicas,
        "port": 8080,
        "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 2},
    }
    if pod_labels:
        template["labels"] = dict(pod_labels)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "imageRef": {"name": image},
            "targets": {"selector": dict(selector)},
            "template": template,
            "rollout": {
                "canary": 1,
                "maxPerWave": "100%",
                "minReadySeconds": 2,
                "progressDeadlineSeconds": 60,
                **(rollout or {}),
            },
        },
    }


def wait_deployment_phase(
    hub: handles.Cluster,
    namespace: str,
    name: str,
    *,
    phase: str,
    check: Callable[[Mapping[str, Any]], bool] | None = None,
    timeout: float = 180,
) -> dict[str, Any]:
    """Wait until the ModelDeployment's status has `phase` (and `check` holds) for its spec."""

    def reached() -> dict[str, Any] | None:
        obj = get_object(hub, namespace, "modeldeployments", name)
        status = (obj or {}).get("status", {})
        if (
            obj is not None
            and status.get("phase") == phase
            and status.get("observedGeneration") == obj["metadata"]["generation"]
            and (check is None or check(obj))
        ):
            return obj
        return None

    obj: dict[str, Any] = wait_until(
        f"ModelDeployment {namespace}/{name} to be {phase}", reached, timeout=timeout
    )
    return obj


def target_line(obj: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The status line of one target in a ModelDeployment, or {}."""
    for line in obj.get("status", {}).get("targets") or []:
        if line.get("name") == target:
            return dict(line)
    return {}


def deployment_at(cluster: handles.Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment at a target cluster, as a dict, or None."""
    with cluster.api_client() as api:
        try:
            found = k8s_client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
        except k8s_exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(api.sanitize_for_serialization(found))


def pod_images(cluster: handles.Cluster, namespace: str, name: str) -> set[str]:
    """Images of the running, ready Pods of a workload at a target cluster."""
    with cluster.api_client() as api:
        pods = k8s_client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/name={name}"
        )
    images: set[str] = set()
    for pod in pods.items:
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        if pod.metadata.deletion_timestamp is None and ready:
            images.update(c.image for c in pod.spec.containers)
    return images
