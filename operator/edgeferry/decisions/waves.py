"""Wave planning and the next step of a rollout: pure functions of what was observed.

A rollout moves one admitted digest to many targets, a wave at a time: first a canary wave,
then waves of at most `maxPerWave` targets (a count, or a percentage of the compatible targets,
rounded up, at least one). Targets are ordered by name, so the plan is the same on every
reconcile and after a restart, without storing it.

`next_actions` is called on every reconcile with what the handler saw at each target and
answers: what to write where (roll out, roll back, or re-apply what is there to correct drift),
what phase each target is in, and the deployment's phase and conditions. It keeps no state of
its own; everything it needs to resume is either observed at the target or persisted by the
caller:

- At each target, the annotations of our Deployment (a `TargetRecord`): which digest we wrote,
  which proven digest ran before it, when it was written (the progress-deadline clock), when it
  became Ready, and whether it was rolled back. This memory lives where the workload lives, so
  it scales with the fleet and survives an operator restart. Every `Write` carries the record
  to render; re-applying (`maintain`) is also how an updated record reaches the target.
- In the ModelDeployment status: the phase and `availableSince` of listed targets (the soak
  timer, restarted conservatively when lost) and the last known state of unreachable targets.

Rules, and the trade-offs chosen:

- Only an admitted digest moves. A blocked or not yet admitted image gives phase `Blocked` and
  no writes at all: targets keep what they run, drift is not even corrected, since a write
  could only be of a digest nobody vouched for.
- A wave starts only when every earlier wave is settled: each target Ready (Available for
  `minReadySeconds`), failed within `maxFailures`, or unreachable for longer than
  `offlineGraceSeconds`. The current wave is written all at once.
- A target that is past `progressDeadlineSeconds` with failing pods is rolled back to the
  last digest that was proven there (if `autoRollback`, else it stays `Failed`). More than
  `maxFailures` failures in a wave halt the rollout: no later wave starts, nothing more of that
  digest is written anywhere, and the deployment is `Degraded`. A rolled-back target is not
  retried with the same digest until the spec changes (any edit bumps `metadata.generation`)
  or a new digest arrives; that makes a retry a deliberate human act.
- "Failing" is the handler's observation: crash loops, image pull errors, or the Deployment's
  own `ProgressDeadlineExceeded`. A target past the deadline whose pods are merely slow (a big
  image over a thin link) keeps waiting; Kubernetes flags it once it stops progressing.
- Once a target was Ready on the digest, later unavailability is reported but never rolled
  back: the digest was proven there, and an outage is not a bad release.
- Unreachable targets are `Deferred`: not failures, they hold their wave for at most
  `offlineGraceSeconds`, and they catch up when they are back (unless the rollout halted).
- `paused` holds everything where it is: no new wave, no catch-up, no rollback, no drift
  correction. Failures are still reported, and acted upon after resuming.
- When the admitted digest changes, the rollout starts again from wave one; targets that
  already run the new digest stay and count.
- What moves is a *release*: the digest together with the pod template (everything but
  `replicas`, as a canonical JSON document). A template edit is a rollout like a new digest:
  canary first, health-gated waves, rollback on failure. Targets waiting for their wave keep
  the release they run, template included, because the record at each target carries the
  template it was written with (and the one proven before it), and every write renders from
  the record, not from the spec. A rollback therefore restores digest *and* template.
  `replicas` is not part of a release: scaling reaches every target at once, as in a
  Deployment, where it is not a new revision either.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from edgeferry.decisions import compat
from edgeferry.models import conditions
from edgeferry.models import modeldeployment as md

WriteReason = Literal["rollout", "rollback", "maintain"]
EventType = Literal["Normal", "Warning"]

_MAX_NAMES_IN_MESSAGE = 5


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
    reason: str = ""
    """Why it is not admitted, as a CamelCase reason (e.g. `VulnerabilitiesFound`)."""
    message: str = ""
    """What the ModelImage says about it, for the `Blocked` condition."""


@dataclasses.dataclass(frozen=True)
class TargetRecord:
    """What edgeferry remembers at a target, in `edgeferry.io/` annotations of its Deployment."""

    digest: str
    """The digest edgeferry applied there."""
    previous_digest: str | None = None
    """The last digest proven Ready there before `digest`: where a rollback goes."""
    started_at: datetime.datetime | None = None
    """When `digest` was first written: the progress-deadline clock."""
    ready_at: datetime.datetime | None = None
    """When `digest` first counted Ready; never rolled back after that."""
    rolled_back_from: str | None = None
    """The digest that failed here and was rolled back."""
    rolled_back_generation: int | None = None
    """The ModelDeployment generation of that rollback; a spec change allows a retry."""
    architectures: tuple[str, ...] = ()
    """Node architectures `digest` is pinned to (empty: not pinned)."""
    previous_architectures: tuple[str, ...] = ()
    """Node architectures `previous_digest` was pinned to."""
    template: str | None = None
    """The pod template written with `digest` (canonical JSON, see `workload.template_document`);
    None for records written before templates were remembered."""
    previous_template: str | None = None
    """The pod template that ran with `previous_digest`: what a rollback restores."""

    def runs(self, digest: str, template: str | None) -> bool:
        """Whether this record is the release `digest` + `template`."""
        return self.digest == digest and self.template == template


@dataclasses.dataclass(frozen=True)
class TargetState:
    """What the handler observed about one selected target in this reconcile."""

    name: str
    cluster_type: md.ClusterType = "Cloud"
    reachable: bool = True
    """Whether the target's API answered (this reconcile or the EdgeTarget's last probe)."""
    unreachable_since: datetime.datetime | None = None
    """When it went unreachable (the EdgeTarget's Ready condition transition); None: unknown,
    and the offline grace counts as spent."""
    architectures: tuple[str, ...] = ()
    """Architectures of the target's ready nodes, from the EdgeTarget status."""
    size_budget_bytes: int | None = None
    """The EdgeTarget's `imageSizeBudgetBytes`: larger images are not attempted there."""
    record: TargetRecord | None = None
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


# --- outputs -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Write:
    """One server-side apply to do now: render the workload for this record and apply it."""

    target: str
    reason: WriteReason
    record: TargetRecord


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
    record: TargetRecord | None
    """The record the target carries after this reconcile's writes."""


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


def template_hash(template: str | None) -> str | None:
    """12 hex characters naming a pod template in status and messages (None: not recorded)."""
    if template is None:
        return None
    return hashlib.sha256(template.encode()).hexdigest()[:12]


# --- wave planning -------------------------------------------------------------------------------
def wave_size(max_per_wave: md.MaxPerWave, *, total: int) -> int:
    """Targets per wave: an integer as is, a percentage of `total` rounded up; at least 1."""
    if isinstance(max_per_wave, int):
        return max(1, max_per_wave)
    percent = int(max_per_wave.rstrip("%"))
    return max(1, (total * percent + 99) // 100)


def plan_waves(
    names: Iterable[str], *, canary: int, max_per_wave: md.MaxPerWave
) -> tuple[tuple[str, ...], ...]:
    """Split targets into waves: `canary` targets first, then chunks of `wave_size`.

    Names are sorted, so the plan is deterministic and needs no storage.
    """
    ordered = sorted(set(names))
    if not ordered:
        return ()
    size = wave_size(max_per_wave, total=len(ordered))
    first = ordered[: max(0, canary)]
    rest = ordered[len(first) :]
    planned = [tuple(first)] if first else []
    planned.extend(tuple(rest[i : i + size]) for i in range(0, len(rest), size))
    return tuple(planned)


# --- next actions --------------------------------------------------------------------------------
@dataclasses.dataclass
class _Assessment:
    """Working state of one target while the plan is computed."""

    state: TargetState
    wave: int | None
    phase: md.TargetPhase = "Pending"
    message: str | None = None
    error: str | None = None
    record: TargetRecord | None = None
    digest: str | None = None
    previous_digest: str | None = None
    available_since: datetime.datetime | None = None
    needs_digest: bool = False
    """Not on the desired digest and eligible to receive it in its wave."""
    settled: bool = False
    """Counts as done for its wave (Ready, proven before, failed, or offline beyond the grace)."""
    up_to_date: bool = False
    """Runs the desired digest (for unreachable targets: was seen Available on it)."""
    failed: bool = False
    rollback: TargetRecord | None = None
    recheck: float | None = None

    @property
    def name(self) -> str:
        return self.state.name


def next_actions(
    targets: Sequence[TargetState],
    *,
    image: Image,
    rollout: md.RolloutStrategy,
    generation: int,
    now: datetime.datetime,
    recorded: md.ModelDeploymentStatus | None = None,
    template: str | None = None,
) -> Plan:
    """Decide this reconcile's writes, target phases and deployment phase.

    `targets` are all EdgeTargets the selector matches, in any order. `recorded` is the status
    the previous reconcile wrote: the deployment phase, digest and template hash (to emit
    events on change only), and per listed target its phase, `availableSince` and last known
    digest. `template` is the spec's pod template as `workload.template_document` renders it;
    together with the admitted digest it is the release being rolled out.
    """
    ordered = sorted(targets, key=lambda t: t.name)
    previous = recorded or md.ModelDeploymentStatus()
    lines = {line.name: line for line in previous.targets}
    if not image.admitted or not image.digest:
        return _blocked(ordered, image=image, now=now, lines=lines, previous=previous)

    desired = image.digest
    desired_hash = template_hash(template)
    sizes = dict(image.sizes)
    verdicts = {
        t.name: compat.check_size(
            compat.check(image.platforms, t.architectures),
            sizes,
            budget_bytes=t.size_budget_bytes,
        )
        for t in ordered
    }
    planned = plan_waves(
        [t.name for t in ordered if verdicts[t.name].status != "Incompatible"],
        canary=rollout.canary,
        max_per_wave=rollout.max_per_wave,
    )
    wave_of = {name: i + 1 for i, wave in enumerate(planned) for name in wave}
    same_digest = previous.digest == desired and previous.template_hash == desired_hash
    assessed = {
        t.name: _assess(
            t,
            verdict=verdicts[t.name],
            wave=wave_of.get(t.name),
            desired=desired,
            template=template,
            rollout=rollout,
            generation=generation,
            now=now,
            line=lines.get(t.name) if same_digest else None,
            last_known=lines.get(t.name),
        )
        for t in ordered
    }

    halted_wave = next(
        (
            i + 1
            for i, wave in enumerate(planned)
            if sum(assessed[n].failed for n in wave) > rollout.max_failures
        ),
        0,
    )
    current = next(
        (i + 1 for i, wave in enumerate(planned) if not all(assessed[n].settled for n in wave)),
        len(planned),
    )
    if halted_wave:
        current = min(current, halted_wave)

    events: list[Event] = []
    if same_digest and 0 < previous.current_wave < current and not halted_wave:
        done = (
            f"wave {previous.current_wave}"
            if current - previous.current_wave == 1
            else f"waves {previous.current_wave}-{current - 1}"
        )
        events.append(
            Event(
                "Normal",
                "WaveSucceeded",
                f"{done} of {len(planned)} succeeded with {_short(desired)}",
            )
        )
    writes, write_events = _writes(
        assessed,
        desired=desired,
        template=template,
        rollout=rollout,
        verdicts=verdicts,
        planned=planned,
        current=current,
        halted_wave=halted_wave,
        now=now,
    )
    events.extend(write_events)
    outcomes = tuple(_outcome(a, now=now, lines=lines) for a in assessed.values())
    events.extend(_transition_events(outcomes, lines))
    phase, conds, message = _deployment_state(
        assessed,
        image=image,
        rollout=rollout,
        total_waves=len(planned),
        current=current,
        halted_wave=halted_wave,
    )
    if phase != previous.phase or not same_digest:
        events.extend(_phase_event(phase, message))
    rechecks = [a.recheck for a in assessed.values() if a.recheck is not None]
    return Plan(
        phase=phase,
        digest=desired,
        template_hash=desired_hash,
        waves=planned,
        current_wave=current if planned else 0,
        targets=outcomes,
        writes=tuple(writes),
        conditions=conds,
        message=message,
        events=tuple(events),
        recheck_after_seconds=min(rechecks) if rechecks and not rollout.paused else None,
    )


def _assess(
    t: TargetState,
    *,
    verdict: compat.Verdict,
    wave: int | None,
    desired: str,
    template: str | None,
    rollout: md.RolloutStrategy,
    generation: int,
    now: datetime.datetime,
    line: md.TargetStatus | None,
    last_known: md.TargetStatus | None,
) -> _Assessment:
    """One target on its own, before the waves gate it."""
    record = t.record
    a = _Assessment(state=t, wave=wave, record=record)
    if record is not None:
        a.digest, a.previous_digest = record.digest, record.previous_digest
    elif not t.reachable and last_known is not None:
        a.digest, a.previous_digest = last_known.digest, last_known.previous_digest

    if verdict.status == "Incompatible":
        a.phase, a.message = "Incompatible", f"not attempted: {verdict.message}"
        return a

    if (
        record is not None
        and record.rolled_back_from == desired
        and record.rolled_back_generation == generation
    ):
        a.phase, a.failed, a.settled = "RolledBack", True, True
        a.message = (
            f"rolled back from {_short(desired)} to {_short(record.digest)}; publish a fixed "
            "image, or fix the cause and edit the ModelDeployment spec to retry"
        )
        a.error = line.last_error if line is not None else None
        return a

    if not t.reachable or verdict.status == "Unknown":
        return _deferred(a, verdict=verdict, desired=desired, rollout=rollout, now=now, line=line)

    if record is None or not record.runs(desired, template):
        a.needs_digest = True
        return a

    a.up_to_date = True
    started = record.started_at or now
    if record.started_at is None:
        record = a.record = dataclasses.replace(record, started_at=now)
    replicas = f"{t.ready_replicas}/{t.replicas} replicas ready"

    if t.available:
        since = line.available_since if line and line.available_since else now
        a.available_since = since
        soaked_for = (now - since).total_seconds()
        if record.ready_at is not None or soaked_for >= rollout.min_ready_seconds:
            a.phase, a.settled, a.message = "Ready", True, f"runs {_short(desired)}"
            if record.ready_at is None:
                a.record = dataclasses.replace(record, ready_at=now)
            return a
        remaining = rollout.min_ready_seconds - soaked_for
        a.phase, a.recheck = "Progressing", max(1.0, remaining)
        a.message = f"available; counts Ready in {math.ceil(remaining)}s (minReadySeconds)"
        return a

    a.error = t.failure if t.failing else None
    if record.ready_at is not None:
        a.phase, a.settled = "Progressing", True
        a.message = f"was Ready, now {replicas}; Kubernetes is restoring it (no rollback)"
        return a

    left = rollout.progress_deadline_seconds - (now - started).total_seconds()
    if left >= 0 or not t.failing:
        a.phase = "Progressing"
        a.recheck = max(1.0, left) if left >= 0 else None
        if t.failing:
            a.message = f"pods failing, {replicas}; deadline in {math.ceil(left)}s"
        elif left < 0:
            a.message = f"past the progress deadline but no pod is failing ({replicas}); waits"
        else:
            a.message = f"{replicas}; deadline in {math.ceil(left)}s"
        return a

    a.failed, a.settled = True, True
    a.error = t.failure or "pods failing"
    missed = f"missed its {rollout.progress_deadline_seconds}s progress deadline"
    if not rollout.auto_rollback:
        a.phase = "Failed"
        a.message = f"{missed}; autoRollback is off, so it keeps {_short(desired)}"
    elif record.previous_digest is None:
        a.phase = "Failed"
        a.message = f"{missed}; no earlier digest ran here to roll back to"
    elif rollout.paused:
        a.phase = "Failed"
        a.message = f"{missed}; rolls back to {_short(record.previous_digest)} when resumed"
    else:
        a.phase = "RolledBack"
        a.message = f"{missed}; rolled back to {_short(record.previous_digest)}"
        a.rollback = TargetRecord(
            digest=record.previous_digest,
            started_at=now,
            ready_at=now,
            rolled_back_from=desired,
            rolled_back_generation=generation,
            architectures=record.previous_architectures,
            template=record.previous_template,
        )
    return a


def _deferred(
    a: _Assessment,
    *,
    verdict: compat.Verdict,
    desired: str,
    rollout: md.RolloutStrategy,
    now: datetime.datetime,
    line: md.TargetStatus | None,
) -> _Assessment:
    """An unreachable target (or one never probed): deferred, holding its wave a while."""
    t = a.state
    seen_available = line.available_since if line is not None else None
    a.up_to_date = a.digest == desired and seen_available is not None
    a.available_since = seen_available if a.up_to_date else None
    if not t.reachable and line is not None and line.phase in ("RolledBack", "Failed"):
        a.phase, a.failed, a.settled = line.phase, True, True
        a.message = f"unreachable; last seen {line.phase}"
        a.error = line.last_error
        return a
    a.phase = "Deferred"
    a.error = "unreachable" if not t.reachable else verdict.message
    since = t.unreachable_since
    left = rollout.offline_grace_seconds - (now - since).total_seconds() if since else -1.0
    a.settled = left < 0
    a.recheck = max(1.0, left) if left >= 0 else None
    held = (
        f"holds wave {a.wave} for {math.ceil(left)}s more"
        if left >= 0
        else f"wave {a.wave} goes on without it"
    )
    after = "was running the digest when last seen" if a.up_to_date else "catches up when back"
    a.message = f"deferred: {held}; {after}"
    return a


def _writes(
    assessed: Mapping[str, _Assessment],
    *,
    desired: str,
    template: str | None,
    rollout: md.RolloutStrategy,
    verdicts: Mapping[str, compat.Verdict],
    planned: Sequence[Sequence[str]],
    current: int,
    halted_wave: int,
    now: datetime.datetime,
) -> tuple[list[Write], list[Event]]:
    """Rollbacks, the current wave (and catch-ups), and re-applies of everything else."""
    writes: list[Write] = []
    events: list[Event] = []
    rollout_by_wave: dict[int, list[str]] = {}
    for a in assessed.values():
        if a.needs_digest:
            a.message = (
                f"waits for wave {a.wave}; the rollout is paused"
                if rollout.paused
                else f"not started: the rollout halted after failures in wave {halted_wave}"
                if halted_wave
                else f"waits for wave {a.wave} (wave {current} in progress)"
            )
        if rollout.paused:
            continue
        if a.rollback is not None:
            writes.append(Write(a.name, "rollback", a.rollback))
            events.append(
                Event(
                    "Warning", "RolledBack", f"{a.name}: {_short(desired)} {a.message} ({a.error})"
                )
            )
            a.record, a.digest, a.previous_digest = a.rollback, a.rollback.digest, None
            continue
        if a.needs_digest and not halted_wave and a.wave is not None and a.wave <= current:
            record = _rollout_record(
                a.state, desired=desired, template=template, now=now, verdict=verdicts[a.name]
            )
            writes.append(Write(a.name, "rollout", record))
            rollout_by_wave.setdefault(a.wave, []).append(a.name)
            a.record, a.digest, a.previous_digest = record, desired, record.previous_digest
            a.phase, a.up_to_date = "Progressing", True
            a.message = f"{_short(desired)} written in wave {a.wave}"
            a.recheck = float(rollout.progress_deadline_seconds)
            continue
        if a.state.reachable and a.record is not None:
            writes.append(Write(a.name, "maintain", a.record))

    for wave_index, names in sorted(rollout_by_wave.items()):
        others = [n for n in planned[wave_index - 1] if n not in names]
        begun = any(assessed[n].up_to_date or assessed[n].failed for n in others)
        events.append(
            Event(
                "Normal",
                "CatchingUp" if begun else "WaveStarted",
                f"wave {wave_index}/{len(planned)}: rolling out {_short(desired)} to "
                f"{_names(names)}",
            )
        )
    return writes, events


def _rollout_record(
    t: TargetState,
    *,
    desired: str,
    template: str | None,
    now: datetime.datetime,
    verdict: compat.Verdict,
) -> TargetRecord:
    """The record written with the desired release: remembers the last proven one."""
    old = t.record
    previous: str | None = None
    previous_arch: tuple[str, ...] = ()
    previous_template: str | None = None
    if old is not None:
        if t.available or old.ready_at is not None:
            previous, previous_arch = old.digest, old.architectures
            previous_template = old.template
        else:
            previous, previous_arch = old.previous_digest, old.previous_architectures
            previous_template = old.previous_template
    return TargetRecord(
        digest=desired,
        previous_digest=previous,
        started_at=now,
        architectures=verdict.architectures,
        previous_architectures=previous_arch,
        template=template,
        previous_template=previous_template,
    )


def _outcome(
    a: _Assessment, *, now: datetime.datetime, lines: Mapping[str, md.TargetStatus]
) -> TargetOutcome:
    line = lines.get(a.name)
    transition = line.last_transition_time if line and line.phase == a.phase else None
    if a.record is not None:
        running_template = template_hash(a.record.template)
    else:
        running_template = line.template_hash if line is not None else None
    return TargetOutcome(
        name=a.name,
        cluster_type=a.state.cluster_type,
        phase=a.phase,
        wave=a.wave,
        digest=a.digest,
        previous_digest=a.previous_digest,
        template_hash=running_template,
        ready_replicas=a.state.ready_replicas if a.state.reachable else 0,
        available_since=a.available_since,
        last_transition_time=transition or now,
        message=a.message,
        error=a.error,
        record=a.record,
    )


def _blocked(
    ordered: Sequence[TargetState],
    *,
    image: Image,
    now: datetime.datetime,
    lines: Mapping[str, md.TargetStatus],
    previous: md.ModelDeploymentStatus,
) -> Plan:
    """Image not admitted: report what runs where, write nothing."""
    outcomes = []
    for t in ordered:
        last = lines.get(t.name)
        a = _Assessment(state=t, wave=None, record=t.record)
        if t.record is not None:
            a.digest, a.previous_digest = t.record.digest, t.record.previous_digest
        elif last is not None:
            a.digest, a.previous_digest = last.digest, last.previous_digest
        if not t.reachable:
            a.phase, a.error = "Deferred", "unreachable"
            a.message = "deferred: unreachable; nothing is rolled out while the image is blocked"
        elif t.record is not None and t.available:
            a.phase, a.message = "Ready", f"keeps running {_short(t.record.digest)}"
        else:
            a.message = "waits for an admitted image"
        outcomes.append(_outcome(a, now=now, lines=lines))
    why = image.message or "the gate has not admitted it yet"
    message = (
        f"ModelImage {image.name} is not admitted ({why}); nothing is rolled out and targets "
        "keep what they run. Fix the image, or record a justified exception in its scan "
        "policy; it rolls out once admitted."
    )
    conds = (
        conditions.Condition("Blocked", "True", image.reason or "ImageNotAdmitted", message),
        conditions.Condition("Ready", "False", "ImageBlocked", message),
        conditions.Condition("Progressing", "False", "ImageBlocked", message),
        conditions.Condition("Degraded", "False", "ImageBlocked", "no rollout is running"),
        conditions.Condition("Reconciling", "False", "ImageBlocked", message),
        conditions.Condition("Stalled", "True", "ImageBlocked", message),
    )
    events = (Event("Warning", "ImageBlocked", message),) if previous.phase != "Blocked" else ()
    return Plan(
        phase="Blocked",
        digest=None,
        template_hash=None,
        waves=(),
        current_wave=0,
        targets=tuple(outcomes),
        writes=(),
        conditions=conds,
        message=message,
        events=events,
        recheck_after_seconds=None,
    )


def _deployment_state(
    assessed: Mapping[str, _Assessment],
    *,
    image: Image,
    rollout: md.RolloutStrategy,
    total_waves: int,
    current: int,
    halted_wave: int,
) -> tuple[md.DeploymentPhase, tuple[conditions.Condition, ...], str]:
    """The deployment's phase, its conditions and a one-line message."""
    items = list(assessed.values())
    failed = [a for a in items if a.failed]
    incompatible = [a for a in items if a.phase == "Incompatible"]
    plannable = [a for a in items if a.phase != "Incompatible"]
    ready = [a for a in plannable if a.phase == "Ready"]
    behind = [a for a in plannable if a.phase == "Deferred" and a.up_to_date]
    open_work = [a for a in plannable if not a.failed and a.phase != "Ready" and a not in behind]
    digest = _short(image.digest or "")
    runs = f"{len(ready)}/{len(items)} targets run {digest}"
    note = ""
    if incompatible:
        note = f" Skipped as incompatible: {_detail(incompatible, 'message')}."

    if failed:
        tail = (
            f" Wave {halted_wave} exceeded maxFailures={rollout.max_failures}, so later waves "
            "do not start. Publish a fixed image, or fix the cause and edit the spec to retry."
            if halted_wave
            else f" Within maxFailures={rollout.max_failures} per wave; the rollout goes on."
        )
        degraded = conditions.Condition(
            "Degraded",
            "True",
            "RolloutHalted" if halted_wave else "TargetsFailed",
            f"{len(failed)} target(s) failed with {digest}: {_detail(failed, 'error')}.{tail}",
        )
    else:
        degraded = conditions.Condition("Degraded", "False", "NoFailures", "no target failed")

    phase: md.DeploymentPhase
    if halted_wave:
        phase, reason, message = "Degraded", "RolloutHalted", degraded.message
    elif not items:
        phase, reason = "Ready", "NoTargetsSelected"
        message = (
            "targets.selector matches no EdgeTarget in this namespace; nothing to roll out. "
            "Compare it with `kubectl get edgetargets --show-labels`."
        )
    elif not plannable:
        phase, reason = "Degraded", "NoCompatibleTargets"
        message = f"no selected target can run {digest}.{note}"
    elif not open_work:
        phase, reason = ("Degraded" if failed else "Ready"), "RolloutComplete"
        message = f"{runs}."
        if behind:
            message += f" Unreachable, last seen on it: {_names(behind)}."
        if failed:
            message += f" {degraded.message}"
        message += note
    elif rollout.paused:
        phase, reason = "Paused", "RolloutPaused"
        message = (
            f"paused at wave {current}/{total_waves}; {runs}. "
            f"Set spec.rollout.paused to false to continue.{note}"
        )
    else:
        phase = "Progressing"
        busy = [a for a in open_work if a.wave == current and a.phase != "Deferred"]
        others = [a for a in open_work if a.phase != "Deferred"]
        away = [a for a in open_work if a.phase == "Deferred"]
        if busy or others:
            reason = "WaveInProgress"
            message = f"wave {current}/{total_waves}: {runs}; waiting for {_names(busy or others)}."
        else:
            reason = "WaitingForDeferredTargets"
            message = f"{runs}; unreachable, updated when back: {_names(away)}."
        message += note

    stalled = reason in ("RolloutHalted", "NoCompatibleTargets")
    progressing = phase == "Progressing"
    conds = (
        conditions.Condition(
            "Blocked", "False", "ImageAdmitted", f"ModelImage {image.name} is admitted: {digest}"
        ),
        conditions.Condition("Ready", "True" if phase == "Ready" else "False", reason, message),
        conditions.Condition("Progressing", "True" if progressing else "False", reason, message),
        degraded,
        conditions.Condition("Reconciling", "True" if progressing else "False", reason, message),
        conditions.Condition(
            "Stalled",
            "True" if stalled else "False",
            reason if stalled else "NotStalled",
            message if stalled else "",
        ),
    )
    return phase, conds, message


def _transition_events(
    outcomes: Sequence[TargetOutcome], lines: Mapping[str, md.TargetStatus]
) -> list[Event]:
    """Events for targets entering a phase a person wants to hear about."""
    kinds: Mapping[md.TargetPhase, str] = {
        "Incompatible": "IncompatibleTarget",
        "Deferred": "TargetDeferred",
        "Failed": "TargetFailed",
    }
    events = []
    for o in outcomes:
        line = lines.get(o.name)
        if o.phase in kinds and (line is None or line.phase != o.phase):
            detail = f" ({o.error})" if o.error and o.error not in (o.message or "") else ""
            events.append(Event("Warning", kinds[o.phase], f"{o.name}: {o.message}{detail}"))
    return events


def _phase_event(phase: md.DeploymentPhase, message: str) -> list[Event]:
    if phase == "Degraded":
        return [Event("Warning", "RolloutHalted", message)]
    if phase == "Ready":
        return [Event("Normal", "RolloutComplete", message)]
    if phase == "Paused":
        return [Event("Normal", "RolloutPaused", message)]
    return []


def _short(digest: str) -> str:
    """`repo@sha256:` and 12 hex characters: enough for a person, short enough for a message."""
    repo, sep, rest = digest.partition("@sha256:")
    return f"{repo}{sep}{rest[:12]}" if sep else digest


def _names(items: Iterable[_Assessment | str]) -> str:
    names = [i if isinstance(i, str) else i.name for i in items]
    shown = ", ".join(names[:_MAX_NAMES_IN_MESSAGE])
    more = len(names) - _MAX_NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


def _detail(items: Sequence[_Assessment], field: Literal["message", "error"]) -> str:
    def one(a: _Assessment) -> str:
        text = a.error if field == "error" else a.message
        return f"{a.name} ({text or a.message})"

    shown = "; ".join(one(a) for a in items[:_MAX_NAMES_IN_MESSAGE])
    more = len(items) - _MAX_NAMES_IN_MESSAGE
    return shown + (f"; and {more} more" if more > 0 else "")
