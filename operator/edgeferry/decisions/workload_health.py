"""What our Deployment and its Pods at a target say: available, failing, or on its way.

The rollout decides on facts, not on raw objects: whether the Deployment is Available (current
generation observed, every replica updated and available), and whether it is *failing*: Pods of
the current template in a crash loop, with image pull errors, or in phase `Failed`, or the
Deployment's own `ProgressDeadlineExceeded`. Pods of an older template are ignored: a rollout
must not be blamed for the Pods it is replacing. `target_verdict` then decides what a failing
target past its deadline means.

Some failures are clear long before the deadline, and waiting it out only prolongs a broken
canary: `crashing` (at least `FAILED_PODS_LIMIT` Pods of the current template Failed, or one of
its containers restarted `RESTARTS_LIMIT` times) and `stuck` (a container waits for one of
`FAILING_WAITING_REASONS`, such as CrashLoopBackOff or ImagePullBackOff). `target_verdict` fails
a crashing target at once and a stuck one after a short grace; slow starts (a big image over a
thin link: Pending, ContainerCreating, not ready yet) are neither, and keep the deadline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgeferry.models import release, target_objects

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

FAILED_PODS_LIMIT = 3
"""Failed Pods of the current template that make a target clearly failing: one Failed Pod can
be a node going away, three replaced Pods that fail again are the release."""

RESTARTS_LIMIT = 3
"""Restarts of one container of the current template that make a target clearly failing: a
container that crashed three times will not start on the fourth attempt."""

_MAX_FAILURE_TEXT = 300


@dataclasses.dataclass(frozen=True)
class Observation:
    """Our Deployment at one target, as the rollout needs to see it."""

    exists: bool
    """A Deployment of our name exists (ours or not)."""
    foreign: bool = False
    """It exists but edgeferry did not create it: never touched."""
    record: release.TargetRecord | None = None
    available: bool = False
    ready_replicas: int = 0
    replicas: int = 0
    failing: bool = False
    failure: str | None = None
    crashing: bool = False
    """At least `FAILED_PODS_LIMIT` Failed Pods or `RESTARTS_LIMIT` restarts of one container
    (current template only): failing, whatever the deadline."""
    stuck: bool = False
    """A container of the current template waits for a `FAILING_WAITING_REASONS` reason."""
    image: str | None = None
    """The image of the Deployment's current pod template."""


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """An object's labels (none: empty)."""
    return dict(obj.get("metadata", {}).get("labels") or {})


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The status condition of that type on a Deployment or Node, if any."""
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _template_image(deployment: Mapping[str, Any]) -> str | None:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        if container.get("name") == target_objects.CONTAINER_NAME:
            return str(container.get("image"))
    return None


def _pod_image(pod: Mapping[str, Any]) -> str | None:
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") == target_objects.CONTAINER_NAME:
            return str(container.get("image"))
    return None


def _statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The container statuses of a Pod, init containers included."""
    status = pod.get("status", {})
    return list(status.get("containerStatuses") or []) + list(
        status.get("initContainerStatuses") or []
    )


def _pod_failure(pod: Mapping[str, Any]) -> str | None:
    """Why this Pod will not become ready on its own, or None."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status", {})
    statuses = _statuses(pod)
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


def _restarts(pod: Mapping[str, Any]) -> int:
    """The highest restart count of one container of this Pod."""
    return max((int(cs.get("restartCount") or 0) for cs in _statuses(pod)), default=0)


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
    """The facts about one target, from its Deployment and Pods."""
    if deployment is None:
        return Observation(exists=False)
    if not target_objects.is_ours(labels_of(deployment), namespace=md_namespace, name=md_name):
        return Observation(exists=True, foreign=True)
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    wanted = int(spec.get("replicas", 1))
    image = _template_image(deployment)
    progressing = condition(deployment, "Progressing")
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
    current = [
        pod
        for pod in pods
        if not pod.get("metadata", {}).get("deletionTimestamp") and _pod_image(pod) == image
    ]
    failures = [reason for pod in current for reason in [_pod_failure(pod)] if reason is not None]
    failed_pods = sum(pod.get("status", {}).get("phase") == "Failed" for pod in current)
    restarts = max((_restarts(pod) for pod in current), default=0)
    crashing = not available and (failed_pods >= FAILED_PODS_LIMIT or restarts >= RESTARTS_LIMIT)
    if crashing and not failures:
        failures = [f"a container of the current template restarted {restarts} times"]
    failing = deadline_exceeded or (not available and bool(failures))
    stuck = not available and any(
        ((cs.get("state") or {}).get("waiting") or {}).get("reason") in FAILING_WAITING_REASONS
        for pod in current
        for cs in _statuses(pod)
    )
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
        record=release.record_from_annotations(meta.get("annotations")),
        available=available,
        ready_replicas=int(status.get("readyReplicas", 0)),
        replicas=wanted,
        failing=failing,
        failure=failure[:_MAX_FAILURE_TEXT] if failure else None,
        crashing=crashing,
        stuck=stuck,
        image=image,
    )
