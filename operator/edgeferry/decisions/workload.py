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
  target's node selector and tolerations (`cloud.` or `k3s.`).
- The rollout memory (`release.TargetRecord`) is carried as `edgeferry.io/` annotations on the
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

import json
import re
from typing import Any

from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import release, target_objects

PORT_NAME = "http"
REVISION_HISTORY_LIMIT = 3
TMP_SIZE_LIMIT = "512Mi"

_DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")


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
        "name": target_objects.CONTAINER_NAME,
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
    record: release.TargetRecord,
) -> target_objects.Workload:
    """The Deployment and Service of ModelDeployment `namespace/name` at one target.

    `record.digest` is what runs, `record.template` how (the spec's template when the record
    has none); `record.architectures` pins the nodes. Raises ValueError when the digest is not
    a `repository@sha256:...` reference.
    """
    template = template_from_document(record.template, fallback=spec.template)
    wl_name = target_objects.workload_name(name)
    selector = target_objects.selector_labels(namespace, name)
    labels = {**selector, target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY}
    pod_labels = {
        k: v for k, v in template.labels.items() if not k.startswith(target_objects.PREFIX)
    } | labels
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
            "annotations": release.record_annotations(record),
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
    return target_objects.Workload(deployment=deployment, service=service)
