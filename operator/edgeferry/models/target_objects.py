"""What edgeferry's objects at a target are called, and how they are told apart from others.

A target cluster holds Deployments and Services that edgeferry wrote next to objects it must
never touch. The names, labels and field manager here are the whole contract between the code
that renders those objects (`decisions.workload`), the code that reads, applies and deletes them
(`adapters.target_workloads`) and the code that decides what a deleted EdgeTarget leaves behind
(`decisions.target_cleanup`); so they live below all three, in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

FIELD_MANAGER = "edgeferry"
"""The server-side apply field manager for everything edgeferry writes at targets."""

PREFIX = "edgeferry.io/"
DEPLOYMENT_LABEL = PREFIX + "deployment"
"""Label naming the owning ModelDeployment as `<namespace>.<name>` (hashed when too long)."""
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "edgeferry"

CONTAINER_NAME = "model"
"""The container serving the model in every Pod edgeferry renders."""

_MAX_NAME = 63


@dataclasses.dataclass(frozen=True)
class Workload:
    """The two objects to apply at a target, in apply order."""

    deployment: dict[str, Any]
    service: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Found:
    """A Deployment or Service seen at the target, as far as ownership goes."""

    kind: str
    name: str
    labels: Mapping[str, str]
    uid: str = ""
    """Deleted only if still this object (a delete precondition)."""

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def workload_name(name: str) -> str:
    """Name of the Deployment and Service: the ModelDeployment's name as a DNS-1035 label.

    Dots become dashes, a leading digit gets an `md-` prefix (Service names must start with a
    letter), and names over 63 characters are cut and suffixed with a hash so they stay unique.
    """
    base = name.lower().replace(".", "-")
    if not base[:1].isalpha():
        base = f"md-{base}"
    if len(base) > _MAX_NAME:
        base = f"{base[: _MAX_NAME - 11].rstrip('-')}-{_short_hash(name)}"
    return base


def owner_label(namespace: str, name: str) -> str:
    """Value of `edgeferry.io/deployment`: `<namespace>.<name>`, hashed to fit 63 characters."""
    value = f"{namespace}.{name}"
    if len(value) <= _MAX_NAME:
        return value
    return f"{value[: _MAX_NAME - 11]}-{_short_hash(value)}"


PREPULL_LABEL = PREFIX + "prepull"
"""Label on a pre-pull DaemonSet and its Pods (the workload name): never the Deployment's
selector, so the Deployment's Pods are never mixed up with them."""


def prepull_name(name: str) -> str:
    """Name of the pre-pull DaemonSet of ModelDeployment `name` (at most 63 characters)."""
    base = workload_name(name)
    if len(base) > _MAX_NAME - 8:
        base = f"{base[: _MAX_NAME - 19].rstrip('-')}-{_short_hash(name)}"
    return f"{base}-prepull"


def selector_labels(namespace: str, name: str) -> dict[str, str]:
    """The Deployment's immutable selector and the Service's selector."""
    return {NAME_LABEL: workload_name(name), DEPLOYMENT_LABEL: owner_label(namespace, name)}


def label_selector(namespace: str, name: str) -> str:
    """A `labelSelector` query finding everything one ModelDeployment made at a target."""
    return f"{DEPLOYMENT_LABEL}={owner_label(namespace, name)},{MANAGED_BY_LABEL}={MANAGED_BY}"


def is_ours(labels: Mapping[str, str] | None, *, namespace: str, name: str) -> bool:
    """Whether an object at a target belongs to this ModelDeployment (else: do not touch it)."""
    found = labels or {}
    return found.get(MANAGED_BY_LABEL) == MANAGED_BY and found.get(DEPLOYMENT_LABEL) == owner_label(
        namespace, name
    )
