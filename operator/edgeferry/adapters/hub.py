"""The hub cluster as the operator sees it: its own credentials, ConfigMaps, Secrets, status.

One API client per process (in-cluster ServiceAccount, else `KUBECONFIG`). Reads stay inside the
namespace of the resource being reconciled: that is the promise the RBAC and the docs make
("credentials Secret in the same namespace only").
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

GROUP = "edgeferry.io"
VERSION = "v1alpha1"


class MissingInputError(LookupError):
    """A ConfigMap, Secret or key the spec names does not exist (yet)."""


@functools.cache
def api_client() -> k8s_client.ApiClient:
    """The operator's own client: in-cluster if there, else the kubeconfig."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s_client.ApiClient()


def config_map_files(namespace: str, name: str) -> dict[str, bytes]:
    """Every key of a ConfigMap as file content (`data` as UTF-8, `binaryData` decoded)."""
    try:
        cm = k8s_client.CoreV1Api(api_client()).read_namespaced_config_map(name, namespace)
    except k8s_exceptions.ApiException as exc:
        if exc.status == 404:
            raise MissingInputError(f"ConfigMap {namespace}/{name} not found") from exc
        raise
    files = {k: v.encode() for k, v in (cm.data or {}).items()}
    files.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
    return files


def config_map_key(namespace: str, name: str, key: str) -> bytes:
    files = config_map_files(namespace, name)
    if key not in files:
        raise MissingInputError(
            f"ConfigMap {namespace}/{name} has no key {key!r} (keys: {sorted(files)})"
        )
    return files[key]


def secret_data(namespace: str, name: str) -> dict[str, bytes]:
    """A Secret's data, decoded; only ever read in the namespace of the resource asking."""
    try:
        secret = k8s_client.CoreV1Api(api_client()).read_namespaced_secret(name, namespace)
    except k8s_exceptions.ApiException as exc:
        if exc.status == 404:
            raise MissingInputError(f"Secret {namespace}/{name} not found") from exc
        raise
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def registry_credentials(namespace: str, name: str, *, registry_host: str) -> tuple[str, str]:
    """Username and password from a `kubernetes.io/basic-auth` or dockerconfigjson Secret."""
    data = secret_data(namespace, name)
    if "username" in data and "password" in data:
        return data["username"].decode(), data["password"].decode()
    raw = data.get(".dockerconfigjson")
    if raw is not None:
        auths: Mapping[str, Any] = json.loads(raw).get("auths", {})
        entry = auths.get(registry_host) or auths.get(f"https://{registry_host}")
        if entry:
            if "username" in entry:
                return str(entry["username"]), str(entry["password"])
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
        raise MissingInputError(f"Secret {namespace}/{name} has no auth for {registry_host}")
    raise MissingInputError(
        f"Secret {namespace}/{name} needs keys username/password or .dockerconfigjson"
    )


def patch_status(plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource (never the spec)."""
    k8s_client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": dict(status)}
    )


def patch_status_of(
    api: k8s_client.ApiClient,
    plural: str,
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    *,
    timeout: float,
) -> None:
    """Merge-patch the status subresource through a given client, with a request timeout.

    An object deleted meanwhile is not an error: there is nothing left to report on.
    """
    try:
        k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _preload_content=False,
            _request_timeout=timeout,
        )
    except k8s_exceptions.ApiException as exc:
        if exc.status != 404:
            raise


def get_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One of our resources as a dict, or None if it does not exist."""
    try:
        obj = k8s_client.CustomObjectsApi(api_client()).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except k8s_exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(obj)


def list_objects(
    api: k8s_client.ApiClient, plural: str, namespace: str, *, timeout: float
) -> list[dict[str, Any]]:
    """Every object of one of our kinds in a namespace, as dicts, through a given client."""
    response = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        plural,
        _preload_content=False,
        _request_timeout=timeout,
    )
    return list(json.loads(response.data).get("items", []))
