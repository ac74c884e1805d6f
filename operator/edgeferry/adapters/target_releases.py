"""Requests to the hub API about pull-mode targets: agent namespaces, TargetReleases, Leases.

The operator and the site's agent both talk to the hub only, each with its own rights, so the
requests either may send are in one module (the RBAC each needs is read off here):

- the operator creates an Agent target's namespace, its `edgeferry-agent` ServiceAccount and a
  RoleBinding to the shipped `edgeferry-agent` ClusterRole in that namespace only (create is
  idempotent: a 409 is "already there"); it server-side applies and deletes TargetReleases,
  sets and clears their `spec.prePull`, and reads the agent's Lease;
- the agent lists the TargetReleases of its namespace, patches their status and renews its
  Lease (coordination.k8s.io, the heartbeat nodes and klusterlets use).

Raw JSON like `target_workloads`, every request bounded by `timeout`; errors are left to the
caller. Blocking (the official client is synchronous).
"""

from __future__ import annotations

import http
import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry.models import target_objects
from edgeferry.models import target_release as tr

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def _request(call: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any) -> dict[str, Any]:
    response = call(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
    data = response.data
    return dict(json.loads(data)) if data else {}


def _generation(written: Mapping[str, Any]) -> int:
    return int((written.get("metadata") or {}).get("generation") or 0)


def _absent(exc: k8s_exceptions.ApiException) -> bool:
    return bool(exc.status == http.HTTPStatus.NOT_FOUND)


def _create(call: Callable[..., Any], *args: Any, timeout: float) -> None:
    """Create, with "already exists" as success (never patched: the site admin may add to it)."""
    try:
        _request(call, *args, field_manager=target_objects.FIELD_MANAGER, timeout=timeout)
    except k8s_exceptions.ApiException as exc:
        if exc.status != http.HTTPStatus.CONFLICT:
            raise


def _namespace(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


# --- operator: registration ---------------------------------------------------------------------
def ensure_agent_access(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    target_label: str,
    timeout: float,
    role: str = tr.AGENT_ROLE,
) -> None:
    """The agent namespace, its ServiceAccount and its RoleBinding, created when missing."""
    core = k8s_client.CoreV1Api(api)
    labels = {
        target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY,
        tr.TARGET_LABEL: target_label,
    }
    _create(
        core.create_namespace,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": labels},
        },
        timeout=timeout,
    )
    meta = {"name": tr.SERVICE_ACCOUNT, "namespace": namespace, "labels": labels}
    _create(
        core.create_namespaced_service_account,
        namespace,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        timeout=timeout,
    )
    _create(
        k8s_client.RbacAuthorizationV1Api(api).create_namespaced_role_binding,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": tr.SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
        timeout=timeout,
    )


def delete_agent_namespace(
    api: k8s_client.ApiClient, namespace: str, *, target_label: str, timeout: float
) -> None:
    """Delete an agent namespace (its releases, ServiceAccount and token go with it), only if
    it is labelled as this target's: the operator may delete namespaces, so it checks first."""
    core = k8s_client.CoreV1Api(api)
    try:
        found = _request(core.read_namespace, namespace, timeout=timeout)
    except k8s_exceptions.ApiException as exc:
        if _absent(exc):
            return
        raise
    meta = found.get("metadata", {})
    labels = meta.get("labels") or {}
    if labels.get(tr.TARGET_LABEL) != target_label:
        return
    body = {"preconditions": {"uid": meta.get("uid")}}
    try:
        _request(core.delete_namespace, namespace, body=body, timeout=timeout)
    except k8s_exceptions.ApiException as exc:
        if not _absent(exc):
            raise


def read_lease(api: k8s_client.ApiClient, namespace: str, *, timeout: float) -> dict[str, str]:
    """The annotations of the agent's Lease; empty when there is none yet."""
    try:
        lease = _request(
            k8s_client.CoordinationV1Api(api).read_namespaced_lease,
            tr.LEASE,
            namespace,
            timeout=timeout,
        )
    except k8s_exceptions.ApiException as exc:
        if _absent(exc):
            return {}
        raise
    return dict(lease.get("metadata", {}).get("annotations") or {})


# --- operator: releases -------------------------------------------------------------------------
def _custom(api: k8s_client.ApiClient) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(api)


def read_release(
    api: k8s_client.ApiClient, namespace: str, name: str, *, timeout: float
) -> dict[str, Any] | None:
    """One TargetRelease, or None if it (or its namespace) does not exist."""
    try:
        return _request(
            _custom(api).get_namespaced_custom_object,
            tr.GROUP,
            tr.VERSION,
            namespace,
            tr.PLURAL,
            name,
            timeout=timeout,
        )
    except k8s_exceptions.ApiException as exc:
        if _absent(exc):
            return None
        raise


def write_release(
    api: k8s_client.ApiClient,
    namespace: str,
    name: str,
    *,
    labels: Mapping[str, str],
    spec: tr.TargetReleaseSpec,
    timeout: float,
) -> int:
    """Server-side apply a TargetRelease's spec (the status stays the agent's); returns the
    release's generation after it."""
    body = {
        "apiVersion": f"{tr.GROUP}/{tr.VERSION}",
        "kind": tr.KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }
    written = _request(
        _custom(api).patch_namespaced_custom_object,
        tr.GROUP,
        tr.VERSION,
        namespace,
        tr.PLURAL,
        name,
        body,
        field_manager=target_objects.FIELD_MANAGER,
        force=True,
        _content_type=APPLY_PATCH,
        timeout=timeout,
    )
    return _generation(written)


def write_prepull(
    api: k8s_client.ApiClient,
    namespace: str,
    name: str,
    intent: tr.PrePullIntent,
    *,
    timeout: float,
) -> int:
    """Set a TargetRelease's `spec.prePull` whole (a JSON patch `add` replaces the value, so
    nothing of an earlier ask lingers), as its own field manager: the release's apply, which
    leaves the field out, then never removes it. Returns the generation after it."""
    written = _request(
        _custom(api).patch_namespaced_custom_object,
        tr.GROUP,
        tr.VERSION,
        namespace,
        tr.PLURAL,
        name,
        [{"op": "add", "path": "/spec/prePull", "value": intent.to_status()}],
        field_manager=tr.PREPULL_FIELD_MANAGER,
        _content_type=JSON_PATCH,
        timeout=timeout,
    )
    return _generation(written)


def clear_prepull(
    api: k8s_client.ApiClient, namespace: str, name: str, *, timeout: float
) -> int | None:
    """Remove a TargetRelease's `spec.prePull` (a merge patch: no-op when there is none); a
    release that is gone has nothing to clear (None). Returns the generation after it."""
    try:
        written = _request(
            _custom(api).patch_namespaced_custom_object,
            tr.GROUP,
            tr.VERSION,
            namespace,
            tr.PLURAL,
            name,
            {"spec": {"prePull": None}},
            field_manager=tr.PREPULL_FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            timeout=timeout,
        )
    except k8s_exceptions.ApiException as exc:
        if not _absent(exc):
            raise
        return None
    return _generation(written)


def delete_release(api: k8s_client.ApiClient, namespace: str, name: str, *, timeout: float) -> bool:
    """Delete a TargetRelease; False when there was none."""
    try:
        _request(
            _custom(api).delete_namespaced_custom_object,
            tr.GROUP,
            tr.VERSION,
            namespace,
            tr.PLURAL,
            name,
            timeout=timeout,
        )
    except k8s_exceptions.ApiException as exc:
        if _absent(exc):
            return False
        raise
    return True


# --- agent --------------------------------------------------------------------------------------
def list_releases(
    api: k8s_client.ApiClient, namespace: str, *, timeout: float
) -> list[dict[str, Any]]:
    """Every TargetRelease in the agent's namespace."""
    found = _request(
        _custom(api).list_namespaced_custom_object,
        tr.GROUP,
        tr.VERSION,
        namespace,
        tr.PLURAL,
        timeout=timeout,
    )
    return list(found.get("items") or [])


def patch_release_status(
    api: k8s_client.ApiClient,
    namespace: str,
    name: str,
    status: tr.TargetReleaseStatus,
    *,
    timeout: float,
) -> None:
    """Replace a TargetRelease's status subresource (the agent's only write to it).

    A JSON patch that sets `/status` whole, not a merge patch: a merge patch keeps map keys it
    does not name, so an annotation gone from the site's Deployment (`edgeferry.io/ready-at`
    of the release before) would linger in `status.record` and the hub would read it back.
    """
    _request(
        _custom(api).patch_namespaced_custom_object_status,
        tr.GROUP,
        tr.VERSION,
        namespace,
        tr.PLURAL,
        name,
        [{"op": "add", "path": "/status", "value": status.to_status()}],
        _content_type=JSON_PATCH,
        timeout=timeout,
    )


def renew_lease(
    api: k8s_client.ApiClient,
    namespace: str,
    *,
    annotations: Mapping[str, str],
    renew_time: str,
    timeout: float,
) -> None:
    """Create or update the agent's Lease with this round's heartbeat and site facts."""
    coordination = k8s_client.CoordinationV1Api(api)
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": tr.LEASE, "namespace": namespace, "annotations": dict(annotations)},
        "spec": {"holderIdentity": tr.SERVICE_ACCOUNT, "renewTime": renew_time},
    }
    try:
        _request(
            coordination.patch_namespaced_lease,
            tr.LEASE,
            namespace,
            body,
            _content_type=MERGE_PATCH,
            timeout=timeout,
        )
    except k8s_exceptions.ApiException as exc:
        if not _absent(exc):
            raise
        _request(coordination.create_namespaced_lease, namespace, body, timeout=timeout)
