"""One target on its own: its phase, whether it failed, and what to write there.

This is where "when does a target count as failed" is answered. A target that runs the release
being rolled out is:

- `Ready` once Available for `minReadySeconds` (or once it was Ready on it before: a later
  outage is reported, never rolled back, since the digest was proven there);
- still `Progressing` while within `progressDeadlineSeconds`, and also past it as long as no
  pod is failing (a big image over a thin link is slow, not bad);
- *failed* past the deadline with failing pods (crash loops, image pull errors, the
  Deployment's own `ProgressDeadlineExceeded`): `RolledBack` to the last proven release when
  `autoRollback` allows and there is one, else `Failed`;
- *failed* (rolled back like a health failure) when its metric analysis fails
  (`decisions.analysis`); with `rollout.analysis` set, Ready also needs the analysis passed;
- *failed* before the deadline when its Pods clearly fail: at once when they are `crashing`
  (Failed Pods or restarts over `workload_health`'s limits), after `STUCK_GRACE_SECONDS` when a
  container is `stuck` (CrashLoopBackOff, ErrImagePull, ImagePullBackOff...). Waiting out the
  deadline would only keep a broken canary up longer; the deadline stays for slow starts;
- `RolledBack` (and failed) while its record says this very digest was rolled back at this
  generation: a retry takes a spec edit or a new digest.

An unreachable target is `Deferred`, not failed: it holds its wave for `offlineGraceSeconds`
(except that a target last seen failed stays failed). An incompatible one is never attempted.

`assess` gives a frozen `Verdict` that already carries its write intent: the rollback to do,
or the release to write once its wave is open (`pending`). `open_wave` is the only later step:
the wave gate either carries the pending write out or leaves the target waiting, saying why,
and re-applies what every other reachable target runs (drift correction).
"""

from __future__ import annotations

import dataclasses
import datetime
import math

from edgeferry.decisions import analysis, compat, prepull
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons, release, timestamps

STUCK_GRACE_SECONDS = 60
"""How long after a write a container may wait for CrashLoopBackOff, ErrImagePull and the
like before the target fails: kubelet retries a pull that a registry blip broke, and a model
server may crash once while a dependency comes up; a minute covers both, while a release that
cannot start fails minutes before `progressDeadlineSeconds` (300 s by default)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Where one target stands, and what this reconcile writes there."""

    state: rt.TargetState
    wave: int | None
    phase: md.TargetPhase = "Pending"
    message: str | None = None
    error: str | None = None
    record: release.TargetRecord | None = None
    """The record the target carries once `write` is done."""
    digest: str | None = None
    previous_digest: str | None = None
    available_since: datetime.datetime | None = None
    settled: bool = False
    """Counts as done for its wave (Ready, proven before, failed, or offline beyond the grace)."""
    up_to_date: bool = False
    """Runs the desired release (for unreachable targets: was seen Available on it)."""
    failed: bool = False
    recheck: float | None = None
    """Seconds until time alone changes this verdict."""
    write: rt.Write | None = None
    """What to apply there now (a rollback, or a re-apply of what it runs)."""
    pending: rt.Write | None = None
    """The release to write once its wave is open: it does not run it yet."""
    became_ready: bool = False
    queries: tuple[analysis.Query, ...] = ()
    """Analysis queries to measure now for this target."""
    no_clean_release: bool = False
    """While the image is blocked (`onBlocked: RollBack`): the release it ran before is not
    admitted under the current DB, so it keeps the blocked one (`on_blocked.rollback_check`)."""
    prepull: rt.PrePull | None = None
    """What to do with its pre-pull DaemonSet (`rollout.prePull`)."""
    events: tuple[rt.Event, ...] = ()
    """Events of its pre-pull (started, done, failed)."""

    @property
    def name(self) -> str:
        return self.state.name


@dataclasses.dataclass(frozen=True)
class Release:
    """What is being rolled out, and the rules for this reconcile."""

    digest: str
    template: str | None
    rollout: md.RolloutStrategy
    generation: int
    now: datetime.datetime
    name: str = ""
    """The ModelDeployment's name (the `{{ name }}` of analysis queries)."""


def assess(
    t: rt.TargetState,
    *,
    verdict: compat.Verdict,
    wave: int | None,
    target: Release,
    line: md.TargetStatus | None,
    last_known: md.TargetStatus | None,
    measured: tuple[md.AnalysisTally, ...] = (),
) -> Verdict:
    """One target on its own, before the waves gate it.

    `line` is its status line from the previous reconcile of the same release (None after a
    release change), `last_known` the line whatever the release (the last digest seen there);
    `measured` the analysis tallies of this release at this target so far.
    """
    desired, rollout, now = target.digest, target.rollout, target.now
    record = t.record
    base = Verdict(state=t, wave=wave, record=record)
    if record is not None:
        base = dataclasses.replace(
            base, digest=record.digest, previous_digest=record.previous_digest
        )
    elif not t.reachable and last_known is not None:
        base = dataclasses.replace(
            base, digest=last_known.digest, previous_digest=last_known.previous_digest
        )

    if verdict.status == "Incompatible":
        return dataclasses.replace(
            base, phase="Incompatible", message=f"not attempted: {verdict.message}"
        )

    if (
        record is not None
        and record.rolled_back_from == desired
        and record.rolled_back_generation == target.generation
    ):
        return dataclasses.replace(
            base,
            phase="RolledBack",
            failed=True,
            settled=True,
            message=_settled_rollback(record, desired=desired),
            error=line.last_error if line is not None else None,
        )

    if not t.reachable or verdict.status == "Unknown":
        return _deferred(
            base, verdict=verdict, desired=desired, rollout=rollout, now=now, line=line
        )

    if record is None or not record.runs(desired, target.template):
        if needs_prepull(t, rollout=rollout, digest=desired) and t.prepull is not None:
            step = prepull.next_step(
                t.prepull,
                digest=desired,
                generation=target.generation,
                deadline_seconds=rollout.pre_pull.deadline_seconds,
                now=now,
            )
            if step.action == "fail" and t.prepull.failed is not None:  # remembered there
                return dataclasses.replace(
                    base,
                    phase="Failed",
                    failed=True,
                    settled=True,
                    message=step.message,
                    error=step.error,
                )
        return dataclasses.replace(
            base,
            pending=rt.Write(t.name, "rollout", rollout_record(t, target=target, verdict=verdict)),
        )

    base = dataclasses.replace(base, up_to_date=True)
    started = record.started_at or now
    if record.started_at is None:
        record = dataclasses.replace(record, started_at=now)
        base = dataclasses.replace(base, record=record)
    replicas = f"{t.ready_replicas}/{t.replicas} replicas ready"

    if t.available:
        since = line.available_since if line and line.available_since else now
        soaked_for = (now - since).total_seconds()
        base = dataclasses.replace(base, available_since=since)
        checked: analysis.Decision | None = None
        if rollout.analysis is not None and record.ready_at is None:
            checked = analysis.decide(
                rollout.analysis,
                measured,
                target=t.name,
                namespace=t.namespace,
                name=target.name,
                digest=desired,
                template_hash=rt.template_hash(target.template),
                wave=wave or 0,
                available_since=since,
                now=now,
            )
            if checked.outcome == "Failed":
                return _failed(
                    base, record=record, target=target, why=checked.message, error=checked.error
                )
        if checked is not None and checked.outcome == "Measuring":
            remaining = rollout.min_ready_seconds - soaked_for
            soak = (
                f"; counts Ready in {math.ceil(remaining)}s at the earliest"
                if remaining > 0
                else ""
            )
            return dataclasses.replace(
                base,
                phase="Progressing",
                recheck=checked.recheck,
                message=f"available; {checked.message}{soak}",
                queries=checked.queries,
            )
        if record.ready_at is not None or soaked_for >= rollout.min_ready_seconds:
            first = record.ready_at is None
            return dataclasses.replace(
                base,
                phase="Ready",
                settled=True,
                message=f"runs {timestamps.short_reference(desired)}"
                + (f"; {checked.message}" if checked is not None else ""),
                record=dataclasses.replace(record, ready_at=now) if first else record,
                became_ready=first,
            )
        remaining = rollout.min_ready_seconds - soaked_for
        return dataclasses.replace(
            base,
            phase="Progressing",
            recheck=max(1.0, remaining),
            message=f"available; counts Ready in {math.ceil(remaining)}s (minReadySeconds)",
        )

    base = dataclasses.replace(base, error=t.failure if t.failing else None)
    if record.ready_at is not None:
        return dataclasses.replace(
            base,
            phase="Progressing",
            settled=True,
            message=f"was Ready, now {replicas}; Kubernetes is restoring it (no rollback)",
        )

    elapsed = (now - started).total_seconds()
    left = rollout.progress_deadline_seconds - elapsed
    if t.failing and (t.crashing or (t.stuck and elapsed >= STUCK_GRACE_SECONDS)):
        why = (
            f"pods clearly fail {math.floor(elapsed)}s after the write, before its "
            f"{rollout.progress_deadline_seconds}s progress deadline"
        )
        return _failed(base, record=record, target=target, why=why)
    if left >= 0 or not t.failing:
        if t.failing:
            message = f"pods failing, {replicas}; deadline in {math.ceil(left)}s"
        elif left < 0:
            message = f"past the progress deadline but no pod is failing ({replicas}); waits"
        else:
            message = f"{replicas}; deadline in {math.ceil(left)}s"
        recheck = max(1.0, left) if left >= 0 else None
        if t.stuck and elapsed < STUCK_GRACE_SECONDS:
            recheck = max(1.0, min(left, STUCK_GRACE_SECONDS - elapsed))
        return dataclasses.replace(base, phase="Progressing", recheck=recheck, message=message)
    missed = f"missed its {rollout.progress_deadline_seconds}s progress deadline"
    return _failed(base, record=record, target=target, why=missed)


def _failed(
    v: Verdict,
    *,
    record: release.TargetRecord,
    target: Release,
    why: str,
    error: str | None = None,
) -> Verdict:
    """Failed (past the deadline, early since its pods clearly fail, or by its analysis): roll
    back if allowed and possible, else stay Failed. `why` starts each message; `error` is what
    failed (default: the pods' failure)."""
    rollout, desired = target.rollout, target.digest
    error = error or v.state.failure or "pods failing"
    v = dataclasses.replace(v, failed=True, settled=True, error=error)
    if not rollout.auto_rollback:
        message = f"{why}; autoRollback is off, so it keeps {timestamps.short_reference(desired)}"
        return dataclasses.replace(v, phase="Failed", message=message)
    if record.previous_digest is None:
        message = f"{why}; no earlier digest ran here to roll back to"
        return dataclasses.replace(v, phase="Failed", message=message)
    if rollout.paused:
        back_to = timestamps.short_reference(record.previous_digest)
        message = f"{why}; rolls back to {back_to} when resumed"
        return dataclasses.replace(v, phase="Failed", message=message)
    back = release.TargetRecord(
        digest=record.previous_digest,
        started_at=target.now,
        ready_at=target.now,
        rolled_back_from=desired,
        rolled_back_generation=target.generation,
        rolled_back_because=release.bounded_reason(why),
        architectures=record.previous_architectures,
        template=record.previous_template,
    )
    return dataclasses.replace(
        v,
        phase="RolledBack",
        message=f"{why}; rolled back to {timestamps.short_reference(record.previous_digest)}",
        write=rt.Write(v.name, "rollback", back),
        record=back,
        digest=back.digest,
        previous_digest=None,
    )


def _settled_rollback(record: release.TargetRecord, *, desired: str) -> str:
    """The line of a target that stays rolled back. It starts with the `why` of the rollback
    round, kept in the record, so it says the same reason in every later round, and first: a
    status line keeps 256 characters, and the advice is also in the `Degraded` condition.
    A record written before the reason was kept gives the line without it."""
    back = (
        f"rolled back from {timestamps.short_reference(desired)} to "
        f"{timestamps.short_reference(record.digest)}; publish a fixed image, or fix the cause "
        "and edit the ModelDeployment spec to retry"
    )
    return f"{record.rolled_back_because}; {back}" if record.rolled_back_because else back


def _deferred(
    v: Verdict,
    *,
    verdict: compat.Verdict,
    desired: str,
    rollout: md.RolloutStrategy,
    now: datetime.datetime,
    line: md.TargetStatus | None,
) -> Verdict:
    """An unreachable target (or one never probed): deferred, holding its wave a while."""
    t = v.state
    seen_available = line.available_since if line is not None else None
    up_to_date = v.digest == desired and seen_available is not None
    v = dataclasses.replace(
        v, up_to_date=up_to_date, available_since=seen_available if up_to_date else None
    )
    if not t.reachable and line is not None and line.phase in ("RolledBack", "Failed"):
        return dataclasses.replace(
            v,
            phase=line.phase,
            failed=True,
            settled=True,
            message=f"unreachable; last seen {line.phase}",
            error=line.last_error,
        )
    since = t.unreachable_since
    left = rollout.offline_grace_seconds - (now - since).total_seconds() if since else -1.0
    held = (
        f"holds wave {v.wave} for {math.ceil(left)}s more"
        if left >= 0
        else f"wave {v.wave} goes on without it"
    )
    after = "was running the digest when last seen" if up_to_date else "catches up when back"
    return dataclasses.replace(
        v,
        phase="Deferred",
        error="unreachable" if not t.reachable else verdict.message,
        settled=left < 0,
        recheck=max(1.0, left) if left >= 0 else None,
        message=f"deferred: {held}; {after}",
    )


def rollout_record(
    t: rt.TargetState, *, target: Release, verdict: compat.Verdict
) -> release.TargetRecord:
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
    return release.TargetRecord(
        digest=target.digest,
        previous_digest=previous,
        started_at=target.now,
        architectures=verdict.architectures,
        previous_architectures=previous_arch,
        template=target.template,
        previous_template=previous_template,
    )


def needs_prepull(t: rt.TargetState, *, rollout: md.RolloutStrategy, digest: str) -> bool:
    """Whether a switch of this target to `digest` is pre-pulled first: `rollout.prePull` is on
    and our Deployment there runs another digest (a first write has no running Pods to keep
    serving; a template edit pulls nothing new). At an Agent target the agent does the pulling
    (`agent_release`); what is decided here is the same."""
    return rollout.pre_pull.enabled and t.record is not None and t.record.digest != digest


def _prepull_gate(
    v: Verdict, pending: rt.Write, *, target: Release
) -> tuple[prepull.Action, Verdict] | None:
    """The pending write held back for its pre-pull (None: write it now, the pre-pull is done
    or not needed). A finished pre-pull's DaemonSet is deleted after the write (`prepull`)."""
    record, rollout = pending.record, target.rollout
    if not needs_prepull(v.state, rollout=rollout, digest=record.digest):
        return None
    step = prepull.next_step(
        v.state.prepull,
        digest=record.digest,
        generation=target.generation,
        deadline_seconds=rollout.pre_pull.deadline_seconds,
        now=target.now,
    )
    name, short = v.name, timestamps.short_reference(record.digest)
    if step.action == "switch":
        event = rt.Event("Normal", reasons.PRE_PULLED, f"{name}: {step.message}; switching")
        done = dataclasses.replace(
            v, prepull=rt.PrePull(name, "delete", record), events=(event,), message=step.message
        )
        return step.action, done
    if step.action == "fail":
        mark = rt.PrePull(name, "mark-failed", record, error=step.error)
        warning = rt.Event(
            "Warning", reasons.PRE_PULL_FAILED, f"{name}: {step.message} ({step.error})"
        )
        failed = dataclasses.replace(
            v,
            phase="Failed",
            failed=True,
            settled=True,
            message=step.message,
            error=step.error,
            prepull=mark,
            events=(warning,),
        )
        return step.action, failed
    action: rt.PrePullAction = "delete" if step.action == "restart" else "apply"
    events: tuple[rt.Event, ...] = ()
    if step.action == "start":
        message = f"{name}: pulling {short} onto its nodes before the switch (wave {v.wave})"
        events = (rt.Event("Normal", reasons.PRE_PULLING, message),)
    held = dataclasses.replace(
        v,
        phase="Progressing",
        message=step.message,
        recheck=step.recheck,
        prepull=rt.PrePull(name, action, record),
        events=events,
    )
    return step.action, held


def open_wave(
    v: Verdict,
    *,
    current: int,
    halted_wave: int,
    rollout: md.RolloutStrategy,
    target: Release | None = None,
) -> Verdict:
    """The wave gate: write a pending release if its wave is open, else say what it waits for;
    any other reachable target gets what it runs re-applied (drift correction). Paused: no
    write at all. With `rollout.prePull` (and `target`, the release's rules), the write of an
    open wave waits until the new digest is on the target's nodes (`prepull`)."""
    pending = v.pending
    if pending is not None:
        if rollout.paused or halted_wave or v.wave is None or v.wave > current:
            message = (
                f"waits for wave {v.wave}; the rollout is paused"
                if rollout.paused
                else f"not started: the rollout halted after failures in wave {halted_wave}"
                if halted_wave
                else f"waits for wave {v.wave} (wave {current} in progress)"
            )
            v = dataclasses.replace(v, message=message)
        else:
            gated = _prepull_gate(v, pending, target=target) if target is not None else None
            if gated is None:
                return _written(v, pending, rollout=rollout, note="")
            action, v = gated
            if action == "switch":  # on every node now: write, then remove the DaemonSet
                return _written(v, pending, rollout=rollout, note=f" after pre-pull ({v.message})")
    v = _leftover_prepull(v, halted=bool(halted_wave), paused=rollout.paused)
    if rollout.paused or v.write is not None or not v.state.reachable or v.record is None:
        return v
    return dataclasses.replace(v, write=rt.Write(v.name, "maintain", v.record))


def _leftover_prepull(v: Verdict, *, halted: bool, paused: bool) -> Verdict:
    """A pre-pull DaemonSet nothing waits for any more is deleted: its switch was written (and
    the delete then failed), the target became Incompatible or was rolled back, or the rollout
    halted before its switch. Kept: the one that remembers this target's failure, and any while
    paused (paused holds everything where it is)."""
    seen, pending = v.state.prepull, v.pending
    record = pending.record if pending is not None else v.record
    if v.prepull is not None or seen is None or paused or record is None:
        return v
    if (pending is not None and not halted) or (seen.failed is not None and v.failed):
        return v
    return dataclasses.replace(v, prepull=rt.PrePull(v.name, "delete", record))


def _written(v: Verdict, pending: rt.Write, *, rollout: md.RolloutStrategy, note: str) -> Verdict:
    """The verdict once `pending` is written in its open wave; `note` ends its message."""
    record = pending.record
    return dataclasses.replace(
        v,
        write=pending,
        record=record,
        digest=record.digest,
        previous_digest=record.previous_digest,
        phase="Progressing",
        up_to_date=True,
        message=f"{timestamps.short_reference(record.digest)} written in wave {v.wave}{note}",
        recheck=float(rollout.progress_deadline_seconds),
    )
