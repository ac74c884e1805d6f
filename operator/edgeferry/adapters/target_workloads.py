"""What edgeferry does at a target cluster: apply, observe and remove a model workload, and probe.

These are the only requests the operator sends to targets, kept in one module so the RBAC a site
must grant is easy to read off: get/list nodes and `/version`; get the `kube-system` namespace
(its UID names the cluster); get/list pods; get/list/patch/delete Deployments and Services,
and DaemonSets for the pre-pull of `rollout.prePull`; patch (create) Namespaces.
(`target_watch` also watches Deployments and Pods.)

- **Apply** is server-side apply with edgeferry's field manager and `force`: every field we
  render is ours, a hand edit to one of them (replicas, image) is put back on the next apply, and
  a field we stop rendering (say, a rollback annotation) is removed. Before the first apply the
  names are checked: a Deployment or Service of that name that edgeferry did not create is never
  taken over.
- **Observe** reads our Deployment and its Pods (only the Deployment when it is not ours);
  `decisions.workload_health` turns them into the facts the rollout decides on.
- **Remove** deletes what one ModelDeployment created, found by its labels, nothing else.
- **List managed / delete found** serve a deleted EdgeTarget: list everything edgeferry manages
  in the target's namespace, let `decisions.target_cleanup` pick what belongs to the EdgeTarget's
  namespace, and delete exactly those.
- **Probe** reads `/version`, the `kube-system` namespace's UID (which cluster this is, so two
  EdgeTargets that reach one cluster are known as one place, `decisions.same_place`) and the
  nodes matching the placement's node selector; `decisions.nodes` decides which of them our
  Pods could land on.

Everything here blocks (the official client is synchronous); handlers run it through
`clusters.Runner`. Every request goes through `_request`: raw JSON (no model deserialisation),
bounded by `timeout`; a 404 is "absent", not an error, where the caller says so. This module
knows the models (names, labels, the record), never the decisions.
"""

from __future__ import annotations

import dataclasses
import http
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry.adapters import clusters
from edgeferry.models import edgetarget as et
from edgeferry.models import reasons, target_objects

APPLY_PATCH = "application/apply-patch+yaml"


class ForeignObjectError(Exception):
    """An object with our name exists at the target but was not created by edgeferry."""


# --- requests ------------------------------------------------------------------------------------
def _request(call: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any) -> dict[str, Any]:
    """One request to a target: the raw JSON body as a dict, within `timeout` seconds.

    Raw because the rollout reads a few fields and the client's models would deserialise (and
    sometimes reject) everything; errors are left to the caller, and to `clusters.classify`.
    """
    response = call(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
    data = response.data
    return dict(json.loads(data)) if data else {}


def _request_or_none(
    call: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any
) -> dict[str, Any] | None:
    """`_request`, with a 404 read as "not there" (None)."""
    try:
        return _request(call, *args, timeout=timeout, **kwargs)
    except k8s_exceptions.ApiException as exc:
        if _not_found(exc):
            return None
        raise


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
        _request(
            core.create_namespace,
            body,
            field_manager=target_objects.FIELD_MANAGER,
            timeout=timeout,
        )
    except k8s_exceptions.ApiException as exc:
        if exc.status == 409:
            return
        if exc.status == http.HTTPStatus.FORBIDDEN:
            raise clusters.TargetAccessError(
                f"namespace {name} does not exist at the target and edgeferry may not create "
                "it: create the namespace there (and grant edgeferry's workload role in it)",
                reason=reasons.NAMESPACE_MISSING,
            ) from exc
        raise


def _refuse_foreign(
    api: k8s_client.ApiClient,
    wl: target_objects.Workload,
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
        found = _request_or_none(read, name, namespace, timeout=timeout)
        if found is None:
            continue
        if not target_objects.is_ours(_labels(found), namespace=md_namespace, name=md_name):
            raise ForeignObjectError(
                f"a {kind} {namespace}/{name} that edgeferry did not create exists at the "
                "target; edgeferry never takes over other objects: rename the ModelDeployment, "
                "or delete or rename that object"
            )


def apply(
    api: k8s_client.ApiClient,
    wl: target_objects.Workload,
    *,
    md_namespace: str,
    md_name: str,
    timeout: float,
    creating: bool = False,
    create_namespace: bool = True,
    field_manager: str = target_objects.FIELD_MANAGER,
) -> None:
    """Server-side apply the Deployment, then the Service (creating the namespace if missing).

    `creating`: the Deployment was not there when last observed; check that neither name is
    taken by an object edgeferry did not create (raises ForeignObjectError).
    `create_namespace`: False for the hub (Cloud targets), where the operator may create agent
    namespaces but a target namespace is the platform team's to create.
    """
    apps = k8s_client.AppsV1Api(api)
    core = k8s_client.CoreV1Api(api)
    namespace = wl.deployment["metadata"]["namespace"]
    if creating:
        _refuse_foreign(api, wl, md_namespace=md_namespace, md_name=md_name, timeout=timeout)

    def server_side_apply(patch: Callable[..., Any], obj: Mapping[str, Any]) -> None:
        _request(
            patch,
            obj["metadata"]["name"],
            namespace,
            obj,
            field_manager=field_manager,
            force=True,
            _content_type=APPLY_PATCH,
            timeout=timeout,
        )

    try:
        server_side_apply(apps.patch_namespaced_deployment, wl.deployment)
    except k8s_exceptions.ApiException as exc:
        if not _not_found(exc):
            raise
        if not create_namespace:
            raise clusters.TargetAccessError(
                f"namespace {namespace} does not exist: create it (and grant edgeferry's "
                "workload role in it)",
                reason=reasons.NAMESPACE_MISSING,
            ) from exc
        _ensure_namespace(core, namespace, timeout=timeout)
        server_side_apply(apps.patch_namespaced_deployment, wl.deployment)
    server_side_apply(core.patch_namespaced_service, wl.service)


# --- observe -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Reading:
    """Our Deployment at one target and its Pods, as read (`decisions.workload_health` judges)."""

    deployment: dict[str, Any] | None
    """None: no Deployment of our name there."""
    pods: tuple[dict[str, Any], ...] = ()
    """Pods matching our selector; not read when the Deployment is missing or not ours."""
    prepull: dict[str, Any] | None = None
    """Our pre-pull DaemonSet, when asked for and there is one."""
    prepull_pods: tuple[dict[str, Any], ...] = ()
    """Its Pods (by its labels; `decisions.prepull` keeps those it owns)."""


def observe(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    md_namespace: str,
    md_name: str,
    timeout: float,
    prepull: bool = False,
) -> Reading:
    """Read our Deployment (and its Pods) for ModelDeployment `md_namespace/md_name`; with
    `prepull` (the rollout pre-pulls) also our pre-pull DaemonSet and its Pods."""
    reading = _observe_deployment(
        api, namespace=namespace, md_namespace=md_namespace, md_name=md_name, timeout=timeout
    )
    if not prepull or reading.deployment is None:
        return reading
    daemonset = _request_or_none(
        k8s_client.AppsV1Api(api).read_namespaced_daemon_set,
        target_objects.prepull_name(md_name),
        namespace,
        timeout=timeout,
    )
    if daemonset is None or not target_objects.is_ours(
        _labels(daemonset), namespace=md_namespace, name=md_name
    ):
        return reading
    pods = _request(
        k8s_client.CoreV1Api(api).list_namespaced_pod,
        namespace,
        label_selector=_selector(
            {target_objects.PREPULL_LABEL: target_objects.workload_name(md_name)}
            | {target_objects.DEPLOYMENT_LABEL: target_objects.owner_label(md_namespace, md_name)}
        ),
        timeout=timeout,
    ).get("items", [])
    return dataclasses.replace(reading, prepull=daemonset, prepull_pods=tuple(pods))


def apply_prepull(
    api: k8s_client.ApiClient,
    daemonset: Mapping[str, Any],
    *,
    md_namespace: str,
    md_name: str,
    timeout: float,
    field_manager: str = target_objects.FIELD_MANAGER,
) -> dict[str, Any]:
    """Server-side apply a pre-pull DaemonSet (`decisions.prepull.render`) and return it as
    applied; one of that name that edgeferry did not create is never taken over
    (ForeignObjectError)."""
    apps = k8s_client.AppsV1Api(api)
    meta = daemonset["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    found = _request_or_none(apps.read_namespaced_daemon_set, name, namespace, timeout=timeout)
    if found is not None and not target_objects.is_ours(
        _labels(found), namespace=md_namespace, name=md_name
    ):
        raise ForeignObjectError(
            f"a DaemonSet {namespace}/{name} that edgeferry did not create exists at the "
            "target; edgeferry never takes over other objects: rename or delete it, or turn "
            "rollout.prePull off"
        )
    return _request(
        apps.patch_namespaced_daemon_set,
        name,
        namespace,
        daemonset,
        field_manager=field_manager,
        force=True,
        _content_type=APPLY_PATCH,
        timeout=timeout,
    )


def delete_prepull(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    md_namespace: str,
    md_name: str,
    timeout: float,
) -> bool:
    """Delete our pre-pull DaemonSet (its Pods go with it); False when there was none."""
    apps = k8s_client.AppsV1Api(api)
    name = target_objects.prepull_name(md_name)
    found = _request_or_none(apps.read_namespaced_daemon_set, name, namespace, timeout=timeout)
    if found is None or not target_objects.is_ours(
        _labels(found), namespace=md_namespace, name=md_name
    ):
        return False
    body = {
        "propagationPolicy": "Background",
        "preconditions": {"uid": found["metadata"]["uid"]},
    }
    return (
        _request_or_none(
            apps.delete_namespaced_daemon_set, name, namespace, body=body, timeout=timeout
        )
        is not None
    )


def _observe_deployment(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    md_namespace: str,
    md_name: str,
    timeout: float,
) -> Reading:
    deployment = _request_or_none(
        k8s_client.AppsV1Api(api).read_namespaced_deployment,
        target_objects.workload_name(md_name),
        namespace,
        timeout=timeout,
    )
    if deployment is None or not target_objects.is_ours(
        _labels(deployment), namespace=md_namespace, name=md_name
    ):
        return Reading(deployment)
    pods = _request(
        k8s_client.CoreV1Api(api).list_namespaced_pod,
        namespace,
        label_selector=_selector(target_objects.selector_labels(md_namespace, md_name)),
        timeout=timeout,
    ).get("items", [])
    return Reading(deployment, tuple(pods))


# --- remove --------------------------------------------------------------------------------------
def remove(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    md_namespace: str,
    md_name: str,
    timeout: float,
) -> list[str]:
    """Delete the Deployments, Services and pre-pull DaemonSets ModelDeployment
    `md_namespace/md_name` created.

    Found by our labels and checked again with `target_objects.is_ours` before each delete.
    Returns `Kind/name` of what was deleted; a missing namespace means nothing to do.
    """
    apps = k8s_client.AppsV1Api(api)
    core = k8s_client.CoreV1Api(api)
    selector = target_objects.label_selector(md_namespace, md_name)
    kinds = (
        ("Deployment", apps.list_namespaced_deployment, apps.delete_namespaced_deployment),
        ("Service", core.list_namespaced_service, core.delete_namespaced_service),
        ("DaemonSet", apps.list_namespaced_daemon_set, apps.delete_namespaced_daemon_set),
    )
    removed: list[str] = []
    for kind, lister, deleter in kinds:
        items = _request(lister, namespace, label_selector=selector, timeout=timeout).get(
            "items", []
        )
        for item in items:
            if not target_objects.is_ours(_labels(item), namespace=md_namespace, name=md_name):
                continue
            name = item["metadata"]["name"]
            _request_or_none(
                deleter, name, namespace, body={"propagationPolicy": "Background"}, timeout=timeout
            )
            removed.append(f"{kind}/{name}")
    return removed


def _namespace_going(core: k8s_client.CoreV1Api, namespace: str, *, timeout: float) -> bool:
    """Whether `namespace` is gone or terminating (Kubernetes then deletes what is in it)."""
    try:
        found = _request(core.read_namespace, namespace, timeout=timeout)
    except k8s_exceptions.ApiException as exc:
        return _not_found(exc)
    return bool(found.get("status", {}).get("phase") == "Terminating")


def list_managed(
    api: k8s_client.ApiClient, *, namespace: str, timeout: float
) -> list[target_objects.Found]:
    """Every Deployment, Service and pre-pull DaemonSet edgeferry manages in `namespace` at
    the target.

    A namespace that is gone or terminating holds nothing to remove, also when its deletion
    already took our access with it (a 403 from a RoleBinding deleted with the namespace).
    """
    apps = k8s_client.AppsV1Api(api)
    core = k8s_client.CoreV1Api(api)
    selector = f"{target_objects.MANAGED_BY_LABEL}={target_objects.MANAGED_BY}"
    found: list[target_objects.Found] = []
    for kind, lister in (
        ("Deployment", apps.list_namespaced_deployment),
        ("Service", core.list_namespaced_service),
        ("DaemonSet", apps.list_namespaced_daemon_set),
    ):
        try:
            items = _request(lister, namespace, label_selector=selector, timeout=timeout).get(
                "items", []
            )
        except k8s_exceptions.ApiException as exc:
            if exc.status == http.HTTPStatus.FORBIDDEN and _namespace_going(
                core, namespace, timeout=timeout
            ):
                return []
            raise
        found.extend(
            target_objects.Found(
                kind, item["metadata"]["name"], _labels(item), uid=item["metadata"].get("uid", "")
            )
            for item in items
        )
    return found


@dataclasses.dataclass(frozen=True)
class SiteReading:
    """What is in one namespace at a target, read in four lists however many ModelDeployments
    it serves (an agent's round; per ModelDeployment, `observe` would cost two reads each)."""

    deployments: Mapping[str, dict[str, Any]]
    """Every Deployment there, by name (also those not ours: a name taken is seen)."""
    daemonsets: Mapping[str, dict[str, Any]]
    """Every DaemonSet there, by name."""
    services: tuple[dict[str, Any], ...]
    """The Services edgeferry manages there."""
    pods: tuple[dict[str, Any], ...]
    """The Pods of what edgeferry manages there."""

    def reading(self, *, md_namespace: str, md_name: str, prepull: bool = False) -> Reading:
        """What `observe` would read for ModelDeployment `md_namespace/md_name`."""
        deployment = self.deployments.get(target_objects.workload_name(md_name))
        if deployment is None or not target_objects.is_ours(
            _labels(deployment), namespace=md_namespace, name=md_name
        ):
            return Reading(deployment)
        reading = Reading(
            deployment, self._pods(target_objects.selector_labels(md_namespace, md_name))
        )
        daemonset = self.daemonsets.get(target_objects.prepull_name(md_name))
        if (
            not prepull
            or daemonset is None
            or not target_objects.is_ours(_labels(daemonset), namespace=md_namespace, name=md_name)
        ):
            return reading
        pulling = {
            target_objects.PREPULL_LABEL: target_objects.workload_name(md_name),
            target_objects.DEPLOYMENT_LABEL: target_objects.owner_label(md_namespace, md_name),
        }
        return dataclasses.replace(reading, prepull=daemonset, prepull_pods=self._pods(pulling))

    def _pods(self, wanted: Mapping[str, str]) -> tuple[dict[str, Any], ...]:
        return tuple(p for p in self.pods if all(_labels(p).get(k) == v for k, v in wanted.items()))

    def managed(self) -> list[target_objects.Found]:
        """What `list_managed` would list."""
        found: list[target_objects.Found] = []
        for kind, items in (
            ("Deployment", self.deployments.values()),
            ("Service", self.services),
            ("DaemonSet", self.daemonsets.values()),
        ):
            found.extend(
                target_objects.Found(
                    kind,
                    item["metadata"]["name"],
                    _labels(item),
                    uid=item["metadata"].get("uid", ""),
                )
                for item in items
                if _labels(item).get(target_objects.MANAGED_BY_LABEL) == target_objects.MANAGED_BY
            )
        return found


def read_namespace(api: k8s_client.ApiClient, *, namespace: str, timeout: float) -> SiteReading:
    """Read `namespace` at the target in four lists (see `SiteReading`); a namespace that is
    gone or terminating holds nothing (as in `list_managed`)."""
    apps = k8s_client.AppsV1Api(api)
    core = k8s_client.CoreV1Api(api)
    managed = f"{target_objects.MANAGED_BY_LABEL}={target_objects.MANAGED_BY}"
    try:
        lists = [
            _request(call, namespace, timeout=timeout, **query).get("items", [])
            for call, query in (
                (apps.list_namespaced_deployment, {}),
                (apps.list_namespaced_daemon_set, {}),
                (core.list_namespaced_service, {"label_selector": managed}),
                (core.list_namespaced_pod, {"label_selector": managed}),
            )
        ]
    except k8s_exceptions.ApiException as exc:
        if exc.status == http.HTTPStatus.FORBIDDEN and _namespace_going(
            core, namespace, timeout=timeout
        ):
            return SiteReading({}, {}, (), ())
        raise
    deployments, daemonsets, services, pods = lists
    return SiteReading(
        {d["metadata"]["name"]: d for d in deployments},
        {d["metadata"]["name"]: d for d in daemonsets},
        tuple(services),
        tuple(pods),
    )


def delete_found(
    api: k8s_client.ApiClient,
    found: Iterable[target_objects.Found],
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
        "DaemonSet": k8s_client.AppsV1Api(api).delete_namespaced_daemon_set,
    }
    removed: list[str] = []
    for item in found:
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if item.uid:
            body["preconditions"] = {"uid": item.uid}
        try:
            _request_or_none(deleters[item.kind], item.name, namespace, body=body, timeout=timeout)
        except k8s_exceptions.ApiException as exc:
            if exc.status == http.HTTPStatus.CONFLICT:
                continue
            raise
        removed.append(item.ref)
    return removed


# --- probe ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NodesRead:
    """What a probe read at a target (`decisions.nodes` decides which nodes are usable)."""

    kubernetes_version: str
    nodes: tuple[dict[str, Any], ...]
    """The nodes matching the placement's node selector."""
    cluster_id: str | None = None
    """UID of the `kube-system` namespace; None when the site does not let us read it."""


def probe(api: k8s_client.ApiClient, *, placement: et.Placement, timeout: float) -> NodesRead:
    """The target's Kubernetes version, cluster identity and the nodes matching the
    placement's node selector."""
    core = k8s_client.CoreV1Api(api)
    version = _request(k8s_client.VersionApi(api).get_code, timeout=timeout)
    return NodesRead(
        kubernetes_version=str(version.get("gitVersion", "unknown")),
        nodes=list_nodes(api, labels=placement.node_selector, timeout=timeout),
        cluster_id=_cluster_id(core, timeout=timeout),
    )


def list_nodes(
    api: k8s_client.ApiClient, *, labels: Mapping[str, str], timeout: float
) -> tuple[dict[str, Any], ...]:
    """The target's nodes carrying these labels (the probe's, and a pre-pull's each round)."""
    found = _request(
        k8s_client.CoreV1Api(api).list_node,
        label_selector=_selector(labels) or None,
        timeout=timeout,
    )
    return tuple(found.get("items", []))


def _cluster_id(core: k8s_client.CoreV1Api, *, timeout: float) -> str | None:
    """The `kube-system` namespace's UID: created with the cluster and never renamed, so it
    names the cluster whatever Secret, address or CA reaches it. A site that does not grant
    `get` on it is not an error: the place is then known by its Secret only."""
    try:
        found = _request_or_none(core.read_namespace, "kube-system", timeout=timeout)
    except k8s_exceptions.ApiException as exc:
        if exc.status == http.HTTPStatus.FORBIDDEN:
            return None
        raise
    uid = (found or {}).get("metadata", {}).get("uid")
    return str(uid) if uid else None
