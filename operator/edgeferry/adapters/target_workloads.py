"""What edgeferry does at a target cluster: apply, observe and remove a model workload, and probe.

These are the only requests the operator sends to targets, kept in one module so the RBAC a site
must grant is easy to read off: get/list nodes and `/version`; get/list pods; get/list/patch/
delete Deployments and Services; patch (create) Namespaces.

- **Apply** is server-side apply with edgeferry's field manager and `force`: every field we
  render is ours, a hand edit to one of them (replicas, image) is put back on the next apply, and
  a field we stop rendering (say, a rollback annotation) is removed. Before the first apply the
  names are checked: a Deployment or Service of that name that edgeferry did not create is never
  taken over.
- **Observe** turns the Deployment and its Pods into the facts the rollout decides on
  (`waves.TargetState`): the record in our annotations, whether it is Available, and whether it
  is *failing*: Pods of the current template in a crash loop, with image pull errors, or in phase
  `Failed`, or the Deployment's own `ProgressDeadlineExceeded`. Pods of an older template are
  ignored: a rollout must not be blamed for the Pods it is replacing.
- **Remove** deletes what one ModelDeployment created, found by its labels, nothing else.
- **List managed / delete found** serve a deleted EdgeTarget: list everything edgeferry manages
  in the target's namespace, let `decisions.target_cleanup` pick what belongs to the EdgeTarget's
  namespace, and delete exactly those.
- **Probe** reads `/version` and the nodes our Pods could land on: for a Cloud target the
  nodes matching its node selector whose taints it tolerates; for a K3s target every node whose
  taints allow ordinary Pods.

Everything here blocks (the official client is synchronous); handlers run it through
`clusters.Runner`, and each request carries `timeout`.
"""

from __future__ import annotations

import dataclasses
import http
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry.adapters import clusters
from edgeferry.decisions import target_cleanup, waves, workload
from edgeferry.models import edgetarget as et

APPLY_PATCH = "application/apply-patch+yaml"

FAILING_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Container waiting reasons that mean the Pod will not become ready without a change."""

_MAX_FAILURE_TEXT = 300


class ForeignObjectError(Exception):
    """An object with our name exists at the target but was not created by edgeferry."""


# --- reading responses ---------------------------------------------------------------------------
def _json(response: Any) -> dict[str, Any]:
    """The body of a `_preload_content=False` response as a dict."""
    return dict(json.loads(response.data))


def _not_found(exc: k8s_exceptions.ApiException) -> bool:
    return bool(exc.status == http.HTTPStatus.NOT_FOUND)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# --- apply ---------------------------------------------------------------------------------------
def _ensure_namespace(core: k8s_client.CoreV1Api, name: str, *, timeout: float) -> None:
    """Create a missing target namespace (never patch an existing one: its labels, e.g. Pod
    Security, belong to the site's owners). Without the right to create it, say what to do."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    try:
        core.create_namespace(body, field_manager=workload.FIELD_MANAGER, _request_timeout=timeout)
    except k8s_exceptions.ApiException as exc:
        if exc.status == 409:
            return
        if exc.status == http.HTTPStatus.FORBIDDEN:
            raise clusters.TargetAccessError(
                f"namespace {name} does not exist at the target and edgeferry may not create "
                "it: create the namespace there (and grant edgeferry's workload role in it)",
                reason="NamespaceMissing",
            ) from exc
        raise


def _refuse_foreign(
    api: k8s_client.ApiClient,
    wl: workload.Workload,
    *,
    md_namespace: str,
    md_name: str,
    timeout: float,
) -> None:
    """Raise ForeignObjectError if our Deployment's or Service's name is taken by someone else."""
    namespace = wl.deployment["metadata"]["namespace"]
    name = wl.deployment["metadata"]["name"]
    readers = (
        ("Deployment", k8s_client.AppsV1Api(api).read_namespaced_deployment),
        ("Service", k8s_client.CoreV1Api(api).read_namespaced_service),
    )
    for kind, read in readers:
        try:
            found = _json(read(name, namespace, _preload_content=False, _request_timeout=timeout))
        except k8s_exceptions.ApiException as exc:
            if _not_found(exc):
                continue
            raise
        if not workload.is_ours(_labels(found), namespace=md_namespace, name=md_name):
            raise ForeignObjectError(
                f"a {kind} {namespace}/{name} that edgeferry did not create exists at the "
                "target; edgeferry never takes over other objects: rename the ModelDeployment, "
                "or delete or rename that object"
            )


def apply(
    api: k8s_client.ApiClient,
    wl: workload.Workload,
    *,
    md_namespace: str,
    md_name: str,
    timeout: float,
    creating: bool = False,
) -> None:
    """Server-side apply the Deployment, then the Service (creating the namespace if missing).

    `creating`: the Deployment was not there when last observed; check that neither name is
    taken by an object edgeferry did not create (raises ForeignObjectError).
    """
    apps = k8s_client.AppsV1Api(api)
    core = k8s_client.CoreV1Api(api)
    namespace = wl.deployment["metadata"]["namespace"]
    name = wl.deployment["metadata"]["name"]
    if creating:
        _refuse_foreign(api, wl, md_namespace=md_namespace, md_name=md_name, timeout=timeout)

    def deployment() -> None:
        apps.patch_namespaced_deployment(
            name,
            namespace,
            wl.deployment,
            field_manager=workload.FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
            _preload_content=False,
            _request_timeout=timeout,
        )

    try:
        deployment()
    except k8s_exceptions.ApiException as exc:
        if not _not_found(exc):
            raise
        _ensure_namespace(core, namespace, timeout=timeout)
        deployment()
    core.patch_namespaced_service(
        wl.service["metadata"]["name"],
        namespace,
        wl.service,
        field_manager=workload.FIELD_MANAGER,
        force=True,
        _content_type=APPLY_PATCH,
        _preload_content=False,
        _request_timeout=timeout,
    )


# --- observe -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Observation:
    """Our Deployment at one target, as the rollout needs to see it."""

    exists: bool
    """A Deployment of our name exists (ours or not)."""
    foreign: bool = False
    """It exists but edgeferry did not create it: never touched."""
    record: waves.TargetRecord | None = None
    available: bool = False
    ready_replicas: int = 0
    replicas: int = 0
    failing: bool = False
    failure: str | None = None
    image: str | None = None
    """The image of the Deployment's current pod template."""


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _template_image(deployment: Mapping[str, Any]) -> str | None:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        if container.get("name") == workload.CONTAINER_NAME:
            return str(container.get("image"))
    return None


def _pod_image(pod: Mapping[str, Any]) -> str | None:
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") == workload.CONTAINER_NAME:
            return str(container.get("image"))
    return None


def _pod_failure(pod: Mapping[str, Any]) -> str | None:
    """Why this Pod will not become ready on its own, or None."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status", {})
    statuses = list(status.get("containerStatuses") or []) + list(
        status.get("initContainerStatuses") or []
    )
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_WAITING_REASONS:
            detail = waiting.get("message") or ""
            return f"pod {name}: {waiting['reason']}" + (f" ({detail})" if detail else "")
    if status.get("phase") == "Failed":
        for cs in statuses:
            done = (cs.get("state") or {}).get("terminated") or {}
            if done:
                return (
                    f"pod {name} failed: container {cs.get('name')} exited "
                    f"{done.get('exitCode')} ({done.get('reason') or 'Error'})"
                )
        return f"pod {name} failed: {status.get('reason') or status.get('message') or 'Failed'}"
    return None


def summarize_failures(failures: Sequence[str]) -> str | None:
    """One line naming the first failure and how many there are."""
    if not failures:
        return None
    others = len(failures) - 1
    more = f" (and {others} more failing pod{'s' if others > 1 else ''})" if others else ""
    return (failures[0] + more)[:_MAX_FAILURE_TEXT]


def assess(
    deployment: Mapping[str, Any] | None,
    pods: Iterable[Mapping[str, Any]],
    *,
    md_namespace: str,
    md_name: str,
) -> Observation:
    """The facts about one target, from its Deployment and Pods (pure; exposed for tests)."""
    if deployment is None:
        return Observation(exists=False)
    if not workload.is_ours(_labels(deployment), namespace=md_namespace, name=md_name):
        return Observation(exists=True, foreign=True)
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    wanted = int(spec.get("replicas", 1))
    image = _template_image(deployment)
    progressing = _condition(deployment, "Progressing")
    deadline_exceeded = bool(
        progressing
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    )
    available = (
        int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
        and int(status.get("updatedReplicas", 0)) == wanted
        and int(status.get("availableReplicas", 0)) == wanted
        and int(status.get("replicas", 0)) == wanted
        and not deadline_exceeded
    )
    failures = [
        reason
        for pod in pods
        if not pod.get("metadata", {}).get("deletionTimestamp") and _pod_image(pod) == image
        for reason in [_pod_failure(pod)]
        if reason is not None
    ]
    failing = deadline_exceeded or (not available and bool(failures))
    failure: str | None = None
    if deadline_exceeded:
        message = (progressing or {}).get("message") or "no progress"
        failure = f"ProgressDeadlineExceeded: {message}"
        if failures:
            failure += f"; {summarize_failures(failures)}"
    elif failing:
        failure = summarize_failures(failures)
    return Observation(
        exists=True,
        record=workload.record_from_annotations(meta.get("annotations")),
        available=available,
        ready_replicas=int(status.get("readyReplicas", 0)),
        replicas=wanted,
        failing=failing,
        failure=failure[:_MAX_FAILURE_TEXT] if failure else None,
        image=image,
    )


def observe(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    md_namespace: str,
    md_name: str,
    timeout: float,
) -> Observation:
    """Read our Deployment (and its Pods) for ModelDeployment `md_namespace/md_name`."""
    name = workload.workload_name(md_name)
    try:
        deployment = _json(
            k8s_client.AppsV1Api(api).read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=timeout
            )
        )
    except k8s_exceptions.ApiException as exc:
        if _not_found(exc):
            return Observation(exists=False)
        raise
    if not workload.is_ours(_labels(deployment), namespace=md_namespace, name=md_name):
        return Observation(exists=True, foreign=True)
    pods = _json(
        k8s_client.CoreV1Api(api).list_namespaced_pod(
            namespace,
            label_selector=_selector(workload.selector_labels(md_namespace, md_name)),
            _preload_content=False,
            _request_timeout=timeout,
        )
    ).get("items", [])
    return assess(deployment, pods, md_namespace=md_namespace, md_name=md_name)


# --- remove --------------------------------------------------------------------------------------
def remove(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    md_namespace: str,
    md_name: str,
    timeout: float,
) -> list[str]:
    """Delete the Deployments and Services ModelDeployment `md_namespace/md_name` created.

    Found by our labels and checked again with `workload.is_ours` before each delete. Returns
    `Kind/name` of what was deleted; a missing namespace means nothing to do.
    """
    apps = k8s_client.AppsV1Api(api)
    core = k8s_client.CoreV1Api(api)
    selector = workload.label_selector(md_namespace, md_name)
    kinds = (
        ("Deployment", apps.list_namespaced_deployment, apps.delete_namespaced_deployment),
        ("Service", core.list_namespaced_service, core.delete_namespaced_service),
    )
    removed: list[str] = []
    for kind, lister, deleter in kinds:
        items = _json(
            lister(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=timeout,
            )
        ).get("items", [])
        for item in items:
            if not workload.is_ours(_labels(item), namespace=md_namespace, name=md_name):
                continue
            name = item["metadata"]["name"]
            try:
                deleter(
                    name,
                    namespace,
                    body={"propagationPolicy": "Background"},
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            except k8s_exceptions.ApiException as exc:
                if not _not_found(exc):
                    raise
            removed.append(f"{kind}/{name}")
    return removed


def _namespace_going(core: k8s_client.CoreV1Api, namespace: str, *, timeout: float) -> bool:
    """Whether `namespace` is gone or terminating (Kubernetes then deletes what is in it)."""
    try:
        found = _json(
            core.read_namespace(namespace, _preload_content=False, _request_timeout=timeout)
        )
    except k8s_exceptions.ApiException as exc:
        return _not_found(exc)
    return bool(found.get("status", {}).get("phase") == "Terminating")


def list_managed(
    api: k8s_client.ApiClient, *, namespace: str, timeout: float
) -> list[target_cleanup.Found]:
    """Every Deployment and Service edgeferry manages in `namespace` at the target.

    A namespace that is gone or terminating holds nothing to remove, also when its deletion
    already took our access with it (a 403 from a RoleBinding deleted with the namespace).
    """
    apps = k8s_client.AppsV1Api(api)
    core = k8s_client.CoreV1Api(api)
    selector = f"{workload.MANAGED_BY_LABEL}={workload.MANAGED_BY}"
    found: list[target_cleanup.Found] = []
    for kind, lister in (
        ("Deployment", apps.list_namespaced_deployment),
        ("Service", core.list_namespaced_service),
    ):
        try:
            items = _json(
                lister(
                    namespace,
                    label_selector=selector,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            ).get("items", [])
        except k8s_exceptions.ApiException as exc:
            if exc.status == http.HTTPStatus.FORBIDDEN and _namespace_going(
                core, namespace, timeout=timeout
            ):
                return []
            raise
        found.extend(
            target_cleanup.Found(
                kind, item["metadata"]["name"], _labels(item), uid=item["metadata"].get("uid", "")
            )
            for item in items
        )
    return found


def delete_found(
    api: k8s_client.ApiClient,
    found: Iterable[target_cleanup.Found],
    *,
    namespace: str,
    timeout: float,
) -> list[str]:
    """Delete the given objects; returns the `Kind/name` of those gone now.

    Each delete carries the uid that was listed as a precondition, so an object replaced in the
    meantime (by someone else, under the same name) is left alone.
    """
    deleters = {
        "Deployment": k8s_client.AppsV1Api(api).delete_namespaced_deployment,
        "Service": k8s_client.CoreV1Api(api).delete_namespaced_service,
    }
    removed: list[str] = []
    for item in found:
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if item.uid:
            body["preconditions"] = {"uid": item.uid}
        try:
            deleters[item.kind](
                item.name,
                namespace,
                body=body,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except k8s_exceptions.ApiException as exc:
            if exc.status == http.HTTPStatus.CONFLICT:
                continue
            if not _not_found(exc):
                raise
        removed.append(item.ref)
    return removed


# --- probe ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What a probe of a target found."""

    kubernetes_version: str
    ready_nodes: int
    total_nodes: int
    architectures: tuple[str, ...]
    """`kubernetes.io/arch` of the ready nodes, sorted, without duplicates."""


def tolerates(tolerations: Sequence[et.Toleration], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' rule: whether one of the tolerations tolerates the taint."""
    for tol in tolerations:
        if tol.effect and tol.effect != taint.get("effect"):
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == taint.get("key"):
                return True
        elif tol.key == taint.get("key") and (tol.value or "") == (taint.get("value") or ""):
            return True
    return False


def schedulable_for(node: Mapping[str, Any], tolerations: Sequence[et.Toleration]) -> bool:
    """Whether ordinary Pods with these tolerations may be scheduled on the node at all."""
    for taint in node.get("spec", {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return True


def _node_ready(node: Mapping[str, Any]) -> bool:
    if node.get("spec", {}).get("unschedulable"):
        return False
    ready = _condition(node, "Ready")
    return bool(ready and ready.get("status") == "True")


def summarize_nodes(
    nodes: Iterable[Mapping[str, Any]], *, placement: et.CloudPlacement
) -> tuple[int, int, tuple[str, ...]]:
    """(ready, total, architectures of the ready) among the nodes the placement can use."""
    usable = [
        n
        for n in nodes
        if all(_labels(n).get(k) == v for k, v in placement.node_selector.items())
        and schedulable_for(n, placement.tolerations)
    ]
    ready = [n for n in usable if _node_ready(n)]
    arches = sorted({a for n in ready if (a := _labels(n).get("kubernetes.io/arch"))})
    return len(ready), len(usable), tuple(arches)


def probe(
    api: k8s_client.ApiClient, *, placement: et.CloudPlacement, timeout: float
) -> ProbeResult:
    """The target's Kubernetes version and the nodes the placement can use."""
    version = _json(
        k8s_client.VersionApi(api).get_code(_preload_content=False, _request_timeout=timeout)
    )
    nodes = _json(
        k8s_client.CoreV1Api(api).list_node(
            label_selector=_selector(placement.node_selector) or None,
            _preload_content=False,
            _request_timeout=timeout,
        )
    ).get("items", [])
    ready, total, arches = summarize_nodes(nodes, placement=placement)
    return ProbeResult(
        kubernetes_version=str(version.get("gitVersion", "unknown")),
        ready_nodes=ready,
        total_nodes=total,
        architectures=arches,
    )
