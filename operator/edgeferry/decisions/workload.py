"""The Deployment and Service one ModelDeployment puts at one target, rendered as plain dicts.

Rendering is pure so the exact object edgeferry applies can be tested without a cluster, and so
the same render serves every write: a rollout, a rollback and the re-apply that corrects drift.
The handler server-side applies the result with edgeferry's field manager; fields we render are
ours, fields we stop rendering (an annotation of a rollback that is over) are removed by the
apply, and anything a person changed by hand in our fields is put back on the next reconcile.

What edgeferry decides and the template cannot override, on purpose:

- The image is `repository@sha256:...`, never a tag, with the target's registry mirror host
  substituted for air-gapped sites. A reference without a digest is refused here.
- Pods run non-root, without privilege escalation, with a read-only root filesystem (an
  `emptyDir` at `/tmp` for scratch) and all capabilities dropped. Images must declare a numeric
  `USER`, which the kubelet needs to verify `runAsNonRoot`.
- Pods are pinned to Linux nodes of the architectures the image was checked against, plus the
  Cloud target's node selector and tolerations.
- The rollout memory (`waves.TargetRecord`) is carried as `edgeferry.io/` annotations on the
  Deployment's own metadata, so a restarted operator knows what ran before; they are not on
  the pod template, so changing them never restarts Pods. The record includes the pod template
  it was written with (and the one before), and `render` takes the template from the record:
  a target waiting for its wave keeps its template, and a rollback restores the old one.
  Only `replicas` always comes from the spec.
- `minReadySeconds` and `progressDeadlineSeconds` come from the rollout: Kubernetes counts a
  Pod available only after it stayed ready that long, and marks `ProgressDeadlineExceeded`
  when a rollout stops progressing, which the handler reads as "failing". The wave gate then
  asks the whole target to stay Available for `minReadySeconds` again: up to twice the wait,
  in exchange for never trusting one lucky observation.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from edgeferry.decisions import waves
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md

FIELD_MANAGER = "edgeferry"
"""The server-side apply field manager for everything edgeferry writes at targets."""

PREFIX = "edgeferry.io/"
DEPLOYMENT_LABEL = PREFIX + "deployment"
"""Label naming the owning ModelDeployment as `<namespace>.<name>` (hashed when too long)."""
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "edgeferry"

DIGEST = PREFIX + "digest"
PREVIOUS_DIGEST = PREFIX + "previous-digest"
STARTED_AT = PREFIX + "started-at"
READY_AT = PREFIX + "ready-at"
ROLLED_BACK_FROM = PREFIX + "rolled-back-from"
ROLLED_BACK_GENERATION = PREFIX + "rolled-back-generation"
ARCHITECTURES = PREFIX + "architectures"
PREVIOUS_ARCHITECTURES = PREFIX + "previous-architectures"
TEMPLATE = PREFIX + "template"
PREVIOUS_TEMPLATE = PREFIX + "previous-template"

CONTAINER_NAME = "model"
PORT_NAME = "http"
REVISION_HISTORY_LIMIT = 3
TMP_SIZE_LIMIT = "512Mi"

_MAX_NAME = 63
_DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")


@dataclasses.dataclass(frozen=True)
class Workload:
    """The two objects to apply at a target, in apply order."""

    deployment: dict[str, Any]
    service: dict[str, Any]


# --- names and labels ----------------------------------------------------------------------------
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


# --- image ---------------------------------------------------------------------------------------
def _registry_host(first: str) -> bool:
    """Docker's rule: the first path component is a registry host if it looks like one."""
    return "." in first or ":" in first or first == "localhost"


def image_reference(digest_ref: str, *, registry_mirror: str | None = None) -> str:
    """`repository@sha256:...`, with the registry host replaced by the mirror when given.

    A reference without a registry host (Docker Hub) keeps its path under the mirror, with
    `library/` for official images, as Docker Hub mirrors serve them.
    """
    match = _DIGEST_REF.match(digest_ref.strip())
    if match is None:
        raise ValueError(
            f"not a digest reference (want repository@sha256:<64 hex>): {digest_ref!r}"
        )
    repo, digest = match["repo"], match["digest"]
    if not registry_mirror:
        return f"{repo}@{digest}"
    first, _, rest = repo.partition("/")
    if rest and _registry_host(first):
        return f"{registry_mirror.rstrip('/')}/{rest}@{digest}"
    path = repo if "/" in repo else f"library/{repo}"
    return f"{registry_mirror.rstrip('/')}/{path}@{digest}"


# --- the record in annotations -------------------------------------------------------------------
def _stamp(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _parse_int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _parse_list(value: str | None) -> tuple[str, ...]:
    return tuple(v for v in (value or "").split(",") if v)


def record_annotations(record: waves.TargetRecord) -> dict[str, str]:
    """The record as Deployment annotations; unset fields are left out (and so removed)."""
    pairs: dict[str, str | None] = {
        DIGEST: record.digest,
        PREVIOUS_DIGEST: record.previous_digest,
        STARTED_AT: _stamp(record.started_at) if record.started_at else None,
        READY_AT: _stamp(record.ready_at) if record.ready_at else None,
        ROLLED_BACK_FROM: record.rolled_back_from,
        ROLLED_BACK_GENERATION: (
            str(record.rolled_back_generation)
            if record.rolled_back_generation is not None
            else None
        ),
        ARCHITECTURES: ",".join(record.architectures) or None,
        PREVIOUS_ARCHITECTURES: ",".join(record.previous_architectures) or None,
        TEMPLATE: record.template,
        PREVIOUS_TEMPLATE: record.previous_template,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def record_from_annotations(annotations: Mapping[str, str] | None) -> waves.TargetRecord | None:
    """Read the record back from a Deployment's annotations; None when it carries no digest.

    Malformed values (edited by hand) read as unset rather than failing the reconcile.
    """
    found = annotations or {}
    digest = found.get(DIGEST)
    if not digest:
        return None
    return waves.TargetRecord(
        digest=digest,
        previous_digest=found.get(PREVIOUS_DIGEST) or None,
        started_at=_parse_stamp(found.get(STARTED_AT)),
        ready_at=_parse_stamp(found.get(READY_AT)),
        rolled_back_from=found.get(ROLLED_BACK_FROM) or None,
        rolled_back_generation=_parse_int(found.get(ROLLED_BACK_GENERATION)),
        architectures=_parse_list(found.get(ARCHITECTURES)),
        previous_architectures=_parse_list(found.get(PREVIOUS_ARCHITECTURES)),
        template=found.get(TEMPLATE) or None,
        previous_template=found.get(PREVIOUS_TEMPLATE) or None,
    )


# --- the pod template as part of a release -------------------------------------------------------
def template_document(template: md.PodTemplate) -> str:
    """The pod template as canonical JSON, without `replicas`: one half of a release.

    Defaults are left out, so an operator upgrade that adds a defaulted field does not look
    like a template change to every running target.
    """
    data = template.model_dump(
        by_alias=True, mode="json", exclude={"replicas"}, exclude_defaults=True
    )
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def template_from_document(document: str | None, *, fallback: md.PodTemplate) -> md.PodTemplate:
    """The template a record carries, with `fallback`'s replicas; `fallback` when it carries
    none or it no longer parses (an annotation edited by hand)."""
    if document is None:
        return fallback
    try:
        stored = md.PodTemplate.model_validate_json(document)
    except ValueError:
        return fallback
    return stored.model_copy(update={"replicas": fallback.replicas})


# --- rendering -----------------------------------------------------------------------------------
def _placement(
    target: et.EdgeTargetSpec, architectures: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Node selector (and affinity when several architectures qualify)."""
    selector = dict(target.placement.node_selector)
    selector["kubernetes.io/os"] = "linux"
    affinity: dict[str, Any] | None = None
    if len(architectures) == 1:
        selector["kubernetes.io/arch"] = architectures[0]
    elif architectures:
        selector.pop("kubernetes.io/arch", None)
        term = {"key": "kubernetes.io/arch", "operator": "In", "values": list(architectures)}
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [term]}]
                }
            }
        }
    return selector, affinity


def _container(image: str, template: md.PodTemplate) -> dict[str, Any]:
    readiness = template.readiness_probe
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": PORT_NAME, "containerPort": template.port, "protocol": "TCP"}],
        "readinessProbe": (
            readiness.to_manifest(default_port=PORT_NAME)
            if readiness is not None
            else {"tcpSocket": {"port": PORT_NAME}, "periodSeconds": 5}
        ),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if template.liveness_probe is not None:
        container["livenessProbe"] = template.liveness_probe.to_manifest(default_port=PORT_NAME)
    if template.env:
        container["env"] = [e.to_manifest() for e in template.env]
    resources = template.resources.to_manifest()
    if resources:
        container["resources"] = resources
    return container


def render(
    *,
    namespace: str,
    name: str,
    spec: md.ModelDeploymentSpec,
    target: et.EdgeTargetSpec,
    record: waves.TargetRecord,
) -> Workload:
    """The Deployment and Service of ModelDeployment `namespace/name` at one target.

    `record.digest` is what runs, `record.template` how (the spec's template when the record
    has none); `record.architectures` pins the nodes. Raises ValueError when the digest is not
    a `repository@sha256:...` reference.
    """
    template = template_from_document(record.template, fallback=spec.template)
    wl_name = workload_name(name)
    selector = selector_labels(namespace, name)
    labels = {**selector, MANAGED_BY_LABEL: MANAGED_BY}
    pod_labels = {k: v for k, v in template.labels.items() if not k.startswith(PREFIX)} | labels
    image = image_reference(record.digest, registry_mirror=target.registry_mirror)
    node_selector, affinity = _placement(target, record.architectures)

    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": node_selector,
        "containers": [_container(image, template)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
    }
    if affinity is not None:
        pod_spec["affinity"] = affinity
    tolerations = [t.to_manifest() for t in target.placement.tolerations]
    if tolerations:
        pod_spec["tolerations"] = tolerations

    pod_metadata: dict[str, Any] = {"labels": pod_labels}
    if template.annotations:
        pod_metadata["annotations"] = dict(template.annotations)

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": wl_name,
            "namespace": target.namespace,
            "labels": labels,
            "annotations": record_annotations(record),
        },
        "spec": {
            "replicas": template.replicas,
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "minReadySeconds": spec.rollout.min_ready_seconds,
            "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
            "selector": {"matchLabels": selector},
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": wl_name,
            "namespace": target.namespace,
            "labels": labels,
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": template.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
    return Workload(deployment=deployment, service=service)
