"""What a rollout decision takes and gives: the image, each target as observed, and the plan.

These types are the contract between the handler, which observes and carries out, and the pure
rollout decision (`waves.next_actions`), kept apart from the logic so a reader of either side
finds every field and its meaning in one short file.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from typing import Literal

from edgeferry.decisions import analysis, prepull
from edgeferry.models import conditions, release
from edgeferry.models import modeldeployment as md

WriteReason = Literal["rollout", "rollback", "maintain"]
EventType = Literal["Normal", "Warning"]


# --- inputs --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Image:
    """The ModelImage as the gate left it: admitted or not, and the digest to roll out."""

    name: str
    admitted: bool
    digest: str | None = None
    """`repository@sha256:...`; rolled out only when `admitted`."""
    platforms: tuple[str, ...] = ()
    """Platforms the image was built for (`linux/arm64`); empty when unknown."""
    sizes: tuple[tuple[str, int], ...] = ()
    """Unpacked size in bytes per architecture (`("arm64", 248_000_000)`), where known."""
    credentials_secret: str | None = None
    """The ModelImage's `push.credentialsSecret`: what a copy to a mirror reads the image with."""
    reason: str = ""
    """Why it is not admitted, as a CamelCase reason (e.g. `VulnerabilitiesFound`)."""
    message: str = ""
    """What the ModelImage says about it, for the `Blocked` condition."""
    blocked_digest: str | None = None
    """The pushed digest the gate now blocks (it was admitted and pushed, then a rescan found
    blocking vulnerabilities): targets running it follow `spec.onBlocked`."""
    scan_db: str | None = None
    """Which vulnerability DB the gate's last verdict used (its build time and checksum, from
    `status.scan`); a rollback goes only to a release admitted under the DB that blocked this
    one (`on_blocked.rollback_check`)."""


@dataclasses.dataclass(frozen=True)
class TargetState:
    """What the handler observed about one selected target in this reconcile."""

    name: str
    cluster_type: md.ClusterType = "Cloud"
    namespace: str = ""
    """Where the model runs at the target (the EdgeTarget's `namespace`)."""
    reachable: bool = True
    """Whether the target's API answered (this reconcile or the EdgeTarget's last probe)."""
    unreachable_since: datetime.datetime | None = None
    """When it went unreachable (the EdgeTarget's Ready condition transition); None: unknown,
    and the offline grace counts as spent."""
    architectures: tuple[str, ...] = ()
    """Architectures of the target's ready nodes, from the EdgeTarget status."""
    size_budget_bytes: int | None = None
    """The EdgeTarget's `imageSizeBudgetBytes`: larger images are not attempted there."""
    record: release.TargetRecord | None = None
    """Our Deployment's annotations at the target; None when there is none (or unreachable)."""
    available: bool = False
    """The Deployment is rolled out: current generation observed, all replicas updated and
    available (Kubernetes already applies `minReadySeconds` per pod)."""
    ready_replicas: int = 0
    replicas: int = 0
    failing: bool = False
    """Pods fail (crash loop, image pull error) or the Deployment reports
    `ProgressDeadlineExceeded`."""
    failure: str | None = None
    """What fails, in words, e.g. `CrashLoopBackOff: container model exited 1`."""
    crashing: bool = False
    """Pods clearly fail (Failed Pods or restarts over `workload_health`'s limits): the target
    fails without waiting for the progress deadline."""
    stuck: bool = False
    """A container waits for CrashLoopBackOff, ImagePullBackOff and the like: the target fails
    once `target_verdict.STUCK_GRACE_SECONDS` have passed since the write."""
    prepull: prepull.Observed | None = None
    """Our pre-pull DaemonSet there, when `rollout.prePull` is on and there is one."""


# --- outputs -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Write:
    """One server-side apply to do now: render the workload for this record and apply it."""

    target: str
    reason: WriteReason
    record: release.TargetRecord


PrePullAction = Literal["apply", "delete", "mark-failed"]


@dataclasses.dataclass(frozen=True)
class PrePull:
    """What to do with a target's pre-pull DaemonSet in this round (`decisions.prepull`):
    `apply` it for `record`'s digest; `delete` it (after the round's write there, when there is
    one); `mark-failed` it with `error`."""

    target: str
    action: PrePullAction
    record: release.TargetRecord
    """The release the pre-pull is for (rendered like the Deployment it precedes)."""
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes event worth emitting on the ModelDeployment."""

    type: EventType
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class TargetOutcome:
    """Where one target stands after this reconcile (its status line)."""

    name: str
    cluster_type: md.ClusterType
    phase: md.TargetPhase
    wave: int | None
    digest: str | None
    previous_digest: str | None
    template_hash: str | None
    """Hash of the pod template running there (see `template_hash`)."""
    ready_replicas: int
    available_since: datetime.datetime | None
    last_transition_time: datetime.datetime
    message: str | None
    """What is going on there, e.g. `waits for wave 2 (wave 1 in progress)`."""
    error: str | None
    """What went wrong there, if anything (failing pods, unreachable, why it was rolled back)."""
    record: release.TargetRecord | None
    """The record the target carries after this reconcile's writes."""
    became_ready: bool = False
    """It counted Ready for the first time in this reconcile (the time-to-ready metric)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything one reconcile decided."""

    phase: md.DeploymentPhase
    digest: str | None
    template_hash: str | None
    """Short hash of the pod template being rolled out (see `template_hash`)."""
    waves: tuple[tuple[str, ...], ...]
    current_wave: int
    """1-based index of the wave in progress (the last one once done); 0 when nothing moves."""
    targets: tuple[TargetOutcome, ...]
    writes: tuple[Write, ...]
    conditions: tuple[conditions.Condition, ...]
    message: str
    events: tuple[Event, ...]
    recheck_after_seconds: float | None
    """When time alone changes a decision (soak over, deadline, grace); None: only on events."""
    queries: tuple[analysis.Query, ...] = ()
    """Analysis queries to measure now; the handler measures them and plans again."""
    running_blocked: tuple[str, ...] = ()
    """Targets that still run the digest the gate now blocks (`Image.blocked_digest`)."""
    analysis: tuple[md.AnalysisTally, ...] = ()
    """The analysis tallies to keep in status (`analysis.kept`), so a restart goes on."""
    prepulls: tuple[PrePull, ...] = ()
    """Pre-pull DaemonSets to apply or delete (`rollout.prePull`)."""


def template_hash(template: str | None) -> str | None:
    """12 hex characters naming a pod template in status and messages (None: not recorded)."""
    if template is None:
        return None
    return hashlib.sha256(template.encode()).hexdigest()[:12]
