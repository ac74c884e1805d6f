"""Pre-pull (`rollout.prePull`): the new digest onto a target's nodes before its Deployment moves.

A cutover to a new digest normally waits for every new Pod's node to pull the image: for a
model image that is most of the time to Ready (the iris image, 95 MB unpacked, pulls in 2-3 s on
the testbed's real node; a real model over a thin link takes minutes, while the old Pods are
already being replaced). With pre-pull, the wave first puts a short-lived DaemonSet at the
target, with the new image, the target's node selector, affinity and tolerations (those of the
Deployment it will write, so exactly the nodes its Pods may land on), and switches the
Deployment only once every one of those nodes has the image. Then the switch only starts
containers. What is decided here, without I/O:

- **The DaemonSet** (`render`): one container, the model image by digest, running `sleep` as
  user 65534 with no privileges, tiny requests, a memory limit but no CPU limit (with a 10m
  CPU limit the kubelet took 3.9 s besides the pull to start it on the testbed's real node;
  without, 0.4-0.6 s), and a 1 s grace. The model server is never started.
  An image without `sleep` is fine: the container then fails to start, but only after the
  image was pulled, and a node counts as done as soon as the kubelet reports the image
  (`imageID`) or the container ran at all. Not Pods one by one: the DaemonSet controller finds
  the nodes, including one added while pulling, and one object is one thing to clean up.
  There is no concurrency knob: each node pulls once, on its own.
- **What the DaemonSet says** (`observe`): which digest and generation it is for, when it was
  created, how many nodes should run it, how many have the image, and the pull errors its Pods
  report (ErrImagePull, ImagePullBackOff...). Only Pods the DaemonSet owns count.
- **What to do next** (`next_step`): start one; wait; switch (write the Deployment, then delete
  the DaemonSet); restart (delete one for another digest); or fail. Pull errors that persist
  for `target_verdict.STUCK_GRACE_SECONDS` (the grace a Deployment's Pods get too), or a pull
  not done on every node within `deadlineSeconds`, fail the target: `Failed`, counted against
  `maxFailures`, and nothing is switched, so there is nothing to roll back. The failure is
  remembered at the target, where the rollout memory lives: the DaemonSet stays, marked failed
  and with a node selector that matches no node (no Pod, no more pulls), until a spec edit
  (`metadata.generation`) or a new digest retries, or the ModelDeployment, the target or the
  selection goes (cleanup removes it like our Deployment).
- A target that cannot be reached is `Deferred` as always; its pre-pull resumes when it is back.
- Only a switch of a running Deployment to another digest is pre-pulled: a first write has no
  running Pods to keep serving, and a template edit on the same digest pulls nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from edgeferry.models import target_objects, timestamps

DIGEST_ANNOTATION = target_objects.PREFIX + "prepull-digest"
GENERATION_ANNOTATION = target_objects.PREFIX + "prepull-generation"
FAILED_ANNOTATION = target_objects.PREFIX + "prepull-failed"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "prepull"
CONTAINER_NAME = "prepull"
NO_NODE = {target_objects.PREFIX + "prepull": "failed"}
"""The node selector of a failed pre-pull's DaemonSet: no node has it, so no Pod runs."""
COMMAND = ["sleep", "2147483647"]
"""What the pre-pull container runs: nothing of the model, only long enough to be deleted."""
PULL_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "RegistryUnavailable",
        "SignatureValidationFailed",
    }
)
"""Container waiting reasons that mean the image could not be pulled."""
STUCK_GRACE_SECONDS = 60
"""How long pull errors may persist before the pre-pull fails (the kubelet retries a pull that a
registry blip broke); the same grace `target_verdict` gives a Deployment's stuck Pods."""
_MAX_ERROR_TEXT = 300
NOTHING_SWITCHED = (
    "; nothing was switched: publish a fixed image, or fix the cause and edit the "
    "ModelDeployment spec to retry"
)

Action = Literal["start", "wait", "switch", "restart", "fail"]


@dataclasses.dataclass(frozen=True)
class Observed:
    """Our pre-pull DaemonSet at one target, as read."""

    digest: str | None
    """The `repository@sha256:...` it pulls (its annotation)."""
    generation: int | None
    """The ModelDeployment's generation it was started at."""
    started_at: datetime.datetime | None
    failed: str | None = None
    """Why it failed, when it was marked failed."""
    desired: int | None = None
    """Nodes that should run it; None until the DaemonSet controller has counted them."""
    pulled: int = 0
    """Nodes whose Pod reports the image."""
    errors: tuple[str, ...] = ()
    """`node: reason: message` of each Pod that cannot pull."""


@dataclasses.dataclass(frozen=True)
class Step:
    """What to do next about one target's pre-pull."""

    action: Action
    message: str
    error: str | None = None
    recheck: float | None = None


def render(
    deployment: Mapping[str, Any],
    *,
    md_namespace: str,
    md_name: str,
    digest: str,
    generation: int,
    failed: str | None = None,
) -> dict[str, Any]:
    """The pre-pull DaemonSet for the Deployment about to be written (rendered by `workload`):
    its image and placement. `failed`: the failed form (why, and a node selector of no node)."""
    pod = deployment["spec"]["template"]["spec"]
    (model,) = [c for c in pod["containers"] if c["name"] == target_objects.CONTAINER_NAME]
    name = target_objects.prepull_name(md_name)
    labels = {
        target_objects.DEPLOYMENT_LABEL: target_objects.owner_label(md_namespace, md_name),
        target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY,
        target_objects.PREPULL_LABEL: target_objects.workload_name(md_name),
    }
    annotations = {DIGEST_ANNOTATION: digest, GENERATION_ANNOTATION: str(generation)}
    if failed is not None:
        annotations[FAILED_ANNOTATION] = failed[:_MAX_ERROR_TEXT]
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 1,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": dict(NO_NODE) if failed is not None else dict(pod["nodeSelector"]),
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": model["image"],
                "imagePullPolicy": "IfNotPresent",
                "command": list(COMMAND),
                "resources": {
                    "requests": {"cpu": "1m", "memory": "8Mi"},
                    "limits": {"memory": "32Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    for key in ("affinity", "tolerations", "imagePullSecrets"):
        if key in pod and failed is None:
            spec[key] = pod[key]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "OnDelete"},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def _pod_state(pod: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(has the image, pull error) of one pre-pull Pod."""
    node = pod.get("spec", {}).get("nodeName") or "unscheduled"
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER_NAME:
            continue
        state = status.get("state") or {}
        if status.get("imageID") or "running" in state or "terminated" in state:
            return True, None
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in PULL_ERRORS:
            text = f"{node}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
            return False, text[:_MAX_ERROR_TEXT]
    return False, None


def observe(
    daemonset: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> Observed | None:
    """What our pre-pull DaemonSet says (None: there is none). Only Pods it owns count."""
    if daemonset is None:
        return None
    meta = daemonset.get("metadata", {})
    annotations = meta.get("annotations") or {}
    generation = annotations.get(GENERATION_ANNOTATION, "")
    status = daemonset.get("status") or {}
    counted = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 1)
    uid = meta.get("uid")
    pulled, errors = 0, []
    for pod in pods:
        owners = pod.get("metadata", {}).get("ownerReferences") or []
        if uid and not any(o.get("uid") == uid for o in owners):
            continue
        has_image, error = _pod_state(pod)
        pulled += has_image
        if error:
            errors.append(error)
    return Observed(
        digest=annotations.get(DIGEST_ANNOTATION),
        generation=int(generation) if generation.isdigit() else None,
        started_at=timestamps.parse_rfc3339(meta.get("creationTimestamp")),
        failed=annotations.get(FAILED_ANNOTATION),
        desired=int(status.get("desiredNumberScheduled") or 0) if counted else None,
        pulled=pulled,
        errors=tuple(sorted(errors)),
    )


def next_step(
    seen: Observed | None,
    *,
    digest: str,
    generation: int,
    deadline_seconds: int,
    now: datetime.datetime,
) -> Step:
    """What to do about a target's pre-pull of `digest` (the whole `repository@sha256:...`)."""
    short = timestamps.short_reference(digest)
    if seen is None:
        return Step("start", f"pre-pulling {short} onto the target's nodes", recheck=1.0)
    if seen.digest != digest or (seen.failed is not None and seen.generation != generation):
        return Step("restart", f"pre-pulling {short} onto the target's nodes", recheck=1.0)
    if seen.failed is not None:
        return Step("fail", f"pre-pull of {short} failed{NOTHING_SWITCHED}", error=seen.failed)
    started = seen.started_at or now
    elapsed = max(0.0, (now - started).total_seconds())
    if seen.desired is not None and seen.pulled >= seen.desired:
        return Step(
            "switch",
            f"{short} pulled on {seen.desired} node(s) in {elapsed:.0f}s",
        )
    have = f"{seen.pulled}/{seen.desired if seen.desired is not None else '?'} node(s) have it"
    errors = "; ".join(seen.errors)
    left = deadline_seconds - elapsed
    if left <= 0:
        why = f"not pulled on every node within {deadline_seconds}s ({have})"
        return Step(
            "fail", f"pre-pull of {short} failed: {why}{NOTHING_SWITCHED}", error=errors or why
        )
    if seen.errors and elapsed >= STUCK_GRACE_SECONDS:
        why = f"pull errors for {elapsed:.0f}s ({have})"
        return Step("fail", f"pre-pull of {short} failed: {why}{NOTHING_SWITCHED}", error=errors)
    recheck = min(left, 2.0)
    message = f"pre-pulling {short}: {have}; deadline in {math.ceil(left)}s"
    return Step("wait", message + (f"; pull errors: {errors}" if errors else ""), recheck=recheck)
