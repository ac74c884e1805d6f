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
  (`imageID`) or the container ran at all. One DaemonSet, not Pods one by one: the DaemonSet
  controller creates and removes the Pods, and one object is one thing to clean up.
- **Which nodes, how many at a time** (`eligible`, `admits`, `narrow`, `advance`):
  `rollout.prePull.maxConcurrentNodes` bounds the nodes pulling at once (a site behind one thin
  link should not fetch a model N times in parallel). Each round the operator lists the target's
  nodes (one request, only while a pre-pull runs) and keeps those the Deployment's Pods may use
  (`nodes.usable_by`: ready, not cordoned, taints tolerated, selector and affinity matched; a
  DaemonSet's Pods would tolerate cordons and pressure on their own, so its controller is not
  asked). Nodes that have the image are done and drop out; free places go to the next nodes
  by name. The DaemonSet's required node affinity is narrowed to exactly the admitted nodes:
  one node selector term per node (terms are ORed; the API server allows a single value in a
  `metadata.name` field requirement), each with the Deployment's own expressions. A node's
  place is free only once its Pod is gone, so at most that many Pods exist at a time.
  Progress lives in the DaemonSet's annotations (`prepull-done`, `prepull-pulling`,
  `prepull-waiting`: node names), so a restarted operator goes on where it was; a node added
  while pulling is admitted in a later round.
- **What the DaemonSet says** (`observe`): which digest and generation it is for, when it was
  created, which nodes are done, pulling, waiting or still have a Pod, and the pull errors its
  Pods report (ErrImagePull, ImagePullBackOff...). Only Pods the DaemonSet owns count.
- **What to do next** (`next_step`): start one; wait; switch (write the Deployment, then delete
  the DaemonSet) once no node pulls or waits; restart (delete one for another digest); or
  fail. Pull errors that persist on a Pod for `target_verdict.STUCK_GRACE_SECONDS` (the grace
  a Deployment's Pods get too; counted from that Pod's creation), or a pull
  not done on every node within `deadlineSeconds` (the whole pre-pull, every batch of nodes),
  fail the target: `Failed`, counted against
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

import copy
import dataclasses
import datetime
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

from edgeferry.decisions import nodes as nodes_rules
from edgeferry.models import target_objects, timestamps

DIGEST_ANNOTATION = target_objects.PREFIX + "prepull-digest"
GENERATION_ANNOTATION = target_objects.PREFIX + "prepull-generation"
FAILED_ANNOTATION = target_objects.PREFIX + "prepull-failed"
DONE_ANNOTATION = target_objects.PREFIX + "prepull-done"
"""Nodes that have the image (comma-separated names, like the two below)."""
PULLING_ANNOTATION = target_objects.PREFIX + "prepull-pulling"
"""Nodes admitted to pull: the DaemonSet's node affinity names exactly these."""
WAITING_ANNOTATION = target_objects.PREFIX + "prepull-waiting"
"""Usable nodes not admitted yet."""
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "prepull"
CONTAINER_NAME = "prepull"
NO_NODE = {target_objects.PREFIX + "prepull": "failed"}
"""The node selector of a failed pre-pull's DaemonSet: no node has it, so no Pod runs."""
NONE_ADMITTED = {target_objects.PREFIX + "prepull": "none-admitted"}
"""Added to the node selector while no node is admitted (every place waits for a Pod to go)."""
NAME_FIELD = "metadata.name"
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
    planned: bool = False
    """It carries our progress annotations (one without is narrowed at the next apply)."""
    done: tuple[str, ...] = ()
    """Nodes that have the image: remembered in its annotation, or reported by a Pod now."""
    pulling: tuple[str, ...] = ()
    """Nodes admitted to pull that do not have it yet."""
    waiting: tuple[str, ...] = ()
    """Usable nodes not admitted yet, as of the last apply."""
    holding: tuple[str, ...] = ()
    """Nodes where a Pod of it still is (pulling, or going after it pulled)."""
    errors: tuple[str, ...] = ()
    """`node: reason: message` of each Pod that cannot pull."""
    errors_since: datetime.datetime | None = None
    """When the oldest Pod that cannot pull was created (None: unknown, since `started_at`)."""


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


def _names(annotations: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(n for n in annotations.get(key, "").split(",") if n)


def observe(
    daemonset: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> Observed | None:
    """What our pre-pull DaemonSet says (None: there is none). Only Pods it owns count."""
    if daemonset is None:
        return None
    meta = daemonset.get("metadata", {})
    annotations = meta.get("annotations") or {}
    generation = annotations.get(GENERATION_ANNOTATION, "")
    uid = meta.get("uid")
    done, holding, errors = set(_names(annotations, DONE_ANNOTATION)), set(), []
    erring: list[datetime.datetime] = []
    for pod in pods:
        owners = pod.get("metadata", {}).get("ownerReferences") or []
        if uid and not any(o.get("uid") == uid for o in owners):
            continue
        node = pod.get("spec", {}).get("nodeName")
        holding.update([node] if node else [])
        has_image, error = _pod_state(pod)
        if has_image and node:
            done.add(node)
        if error:
            errors.append(error)
            created = timestamps.parse_rfc3339(pod.get("metadata", {}).get("creationTimestamp"))
            erring.extend([created] if created else [])
    return Observed(
        digest=annotations.get(DIGEST_ANNOTATION),
        generation=int(generation) if generation.isdigit() else None,
        started_at=timestamps.parse_rfc3339(meta.get("creationTimestamp")),
        failed=annotations.get(FAILED_ANNOTATION),
        planned=DONE_ANNOTATION in annotations and PULLING_ANNOTATION in annotations,
        done=tuple(sorted(done)),
        pulling=tuple(n for n in _names(annotations, PULLING_ANNOTATION) if n not in done),
        waiting=tuple(n for n in _names(annotations, WAITING_ANNOTATION) if n not in done),
        holding=tuple(sorted(holding)),
        errors=tuple(sorted(errors)),
        errors_since=min(erring) if erring else None,
    )


# --- which nodes pull now ------------------------------------------------------------------------
def eligible(nodes: Iterable[Mapping[str, Any]], deployment: Mapping[str, Any]) -> tuple[str, ...]:
    """The target's nodes the Deployment's Pods may use, by name: the ones to pre-pull."""
    pod = deployment["spec"]["template"]["spec"]
    return nodes_rules.usable_by(
        nodes,
        node_selector=pod.get("nodeSelector") or {},
        affinity=pod.get("affinity"),
        tolerations=pod.get("tolerations") or [],
    )


def admits(
    done: Collection[str],
    pulling: Collection[str],
    eligible: Sequence[str],
    bound: int,
    *,
    holding: Collection[str] = (),
) -> tuple[str, ...]:
    """The nodes that may pull now (sorted): those still pulling (and still usable), then the
    next usable ones not done, by name, so that at most `bound` nodes hold a Pod. A node in
    `holding` that is not admitted any more (done, or no longer usable) keeps its place until
    its Pod is gone; a bound lowered while pulling drops the extra nodes at once."""
    usable = set(eligible)
    keep = sorted(n for n in set(pulling) if n in usable and n not in done)[:bound]
    busy = set(keep) | set(holding)
    fresh = [n for n in sorted(usable) if n not in done and n not in busy]
    return tuple(sorted([*keep, *fresh[: max(0, bound - len(busy))]]))


def narrow(daemonset: Mapping[str, Any], admitted: Sequence[str]) -> dict[str, Any]:
    """The DaemonSet with its required node affinity naming exactly `admitted`: one term per
    node (the API server allows only one value in a `metadata.name` field requirement; terms
    are ORed), each with the expressions of every term it had (the Deployment's). No node
    admitted: a node selector no node has."""
    out = copy.deepcopy(dict(daemonset))
    pod = out["spec"]["template"]["spec"]
    if not admitted:
        pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **NONE_ADMITTED}
        return out
    node_affinity = pod.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    own = required.get("nodeSelectorTerms") or [{}]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {
                **(
                    {"matchExpressions": t["matchExpressions"]} if t.get("matchExpressions") else {}
                ),
                "matchFields": [
                    {"key": NAME_FIELD, "operator": "In", "values": [node]},
                    *(t.get("matchFields") or []),
                ],
            }
            for node in admitted
            for t in own
        ]
    }
    return out


def advance(
    daemonset: Mapping[str, Any],
    seen: Observed | None,
    *,
    eligible: Sequence[str],
    bound: int,
) -> dict[str, Any]:
    """The DaemonSet to apply this round (`render`ed, not failed): narrowed to the nodes
    admitted now, with the progress it carries (done nodes still usable, admitted, waiting)."""
    done = [n for n in (seen.done if seen else ()) if n in eligible]
    admitted = admits(
        done,
        seen.pulling if seen else (),
        eligible,
        bound,
        holding=seen.holding if seen else (),
    )
    waiting = [n for n in eligible if n not in done and n not in admitted]
    out = narrow(daemonset, admitted)
    out["metadata"]["annotations"] = {
        **out["metadata"].get("annotations", {}),
        DONE_ANNOTATION: ",".join(done),
        PULLING_ANNOTATION: ",".join(admitted),
        WAITING_ANNOTATION: ",".join(waiting),
    }
    return out


# --- what next -----------------------------------------------------------------------------------
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
    if seen.planned and not seen.pulling and not seen.waiting:
        return Step("switch", f"{short} pulled on {len(seen.done)} node(s) in {elapsed:.0f}s")
    total = len(seen.done) + len(seen.pulling) + len(seen.waiting)
    have = f"{len(seen.done)}/{total if seen.planned else '?'} node(s) have it"
    if seen.pulling:
        have += f", {len(seen.pulling)} pulling"
    errors = "; ".join(seen.errors)
    left = deadline_seconds - elapsed
    if left <= 0:
        why = f"not pulled on every node within {deadline_seconds}s ({have})"
        return Step(
            "fail", f"pre-pull of {short} failed: {why}{NOTHING_SWITCHED}", error=errors or why
        )
    erring = max(0.0, (now - (seen.errors_since or started)).total_seconds())
    if seen.errors and erring >= STUCK_GRACE_SECONDS:
        why = f"pull errors for {erring:.0f}s ({have})"
        return Step("fail", f"pre-pull of {short} failed: {why}{NOTHING_SWITCHED}", error=errors)
    recheck = min(left, 2.0)
    message = f"pre-pulling {short}: {have}; deadline in {math.ceil(left)}s"
    return Step("wait", message + (f"; pull errors: {errors}" if errors else ""), recheck=recheck)
