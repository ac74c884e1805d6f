"""A rollout whose image the gate does not admit: nothing moves, except by `spec.onBlocked`.

While the image is not admitted (missing, not decided yet, refused) no wave starts and no
waiting target is written: a write could only be of a digest nobody vouches for. One case asks
more: a digest that was admitted, pushed and rolled out, and that a later scan blocks (a new
advisory in the vulnerability DB). Targets already running it then follow `spec.onBlocked`:

- `Keep` (the default): they keep running it. Taking a model off the fleet is a bigger act
  than leaving a known vulnerable one running for a while, so it stays a human decision; a
  Warning event names the targets and the `edgeferry_rollout_blocked_targets` gauge (and its
  alert) stays up until they run something else.
- `RollBack`: each returns to the release proven Ready there before the blocked one (digest
  and pod template, `TargetRecord.previous_digest`), the last admitted release it ran. That
  release is not re-matched against the new DB (the ModelImage keeps only its current image),
  so it may carry the same advisory; the event says what it went back to. A target with no
  earlier release keeps the blocked one and is counted as running it. `rollout.paused` holds
  the rollback until resumed, as it holds every other write.

The rollback is not a failed release: it does not mark the digest rolled back at this
generation, so once the image is admitted again (an exception, a fixed DB) it rolls out anew.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from edgeferry.decisions import rollout_status, target_verdict
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons, release, timestamps


def plan(
    ordered: Sequence[rt.TargetState],
    *,
    image: rt.Image,
    policy: md.OnBlocked,
    paused: bool,
    now: datetime.datetime,
    lines: Mapping[str, md.TargetStatus],
    previous: md.ModelDeploymentStatus,
) -> rt.Plan:
    """Report what runs where; write only the rollbacks `RollBack` asks for."""
    verdicts = [
        verdict(t, image=image, policy=policy, paused=paused, now=now, line=lines.get(t.name))
        for t in ordered
    ]
    outcomes = tuple(rollout_status.outcome(v, now=now, lines=lines) for v in verdicts)
    running = tuple(v.name for v in verdicts if runs_blocked(v, image))
    message, conds = rollout_status.blocked(image)
    events: list[rt.Event] = []
    if previous.phase != "Blocked":
        events.append(rt.Event("Warning", reasons.IMAGE_BLOCKED, message))
    events += _events(verdicts, image=image, running=running, previous=previous, policy=policy)
    return rt.Plan(
        phase="Blocked",
        digest=None,
        template_hash=None,
        waves=(),
        current_wave=0,
        targets=outcomes,
        writes=tuple(v.write for v in verdicts if v.write is not None),
        conditions=conds,
        message=message,
        events=tuple(events),
        recheck_after_seconds=None,
        running_blocked=running,
    )


def verdict(
    t: rt.TargetState,
    *,
    image: rt.Image,
    policy: md.OnBlocked,
    paused: bool,
    now: datetime.datetime,
    line: md.TargetStatus | None,
) -> target_verdict.Verdict:
    """One target while the image is blocked: its phase, and the rollback if it is due."""
    v = target_verdict.Verdict(state=t, wave=None, record=t.record)
    record = t.record
    if record is not None:
        v = dataclasses.replace(v, digest=record.digest, previous_digest=record.previous_digest)
    elif line is not None:
        v = dataclasses.replace(v, digest=line.digest, previous_digest=line.previous_digest)
    if not t.reachable:
        return dataclasses.replace(
            v,
            phase="Deferred",
            error="unreachable",
            message="deferred: unreachable; nothing is rolled out while the image is blocked",
        )
    if record is None:
        return dataclasses.replace(v, message="waits for an admitted image")
    blocked = image.blocked_digest is not None and record.digest == image.blocked_digest
    if not blocked:
        if t.available:
            shown = timestamps.short_reference(record.digest)
            return dataclasses.replace(v, phase="Ready", message=f"keeps running {shown}")
        return dataclasses.replace(v, message="waits for an admitted image")
    shown = timestamps.short_reference(record.digest)
    running = dataclasses.replace(v, phase="Ready" if t.available else "Progressing")
    if policy == "Keep":
        return dataclasses.replace(
            running, message=f"keeps running {shown}, which the gate now blocks (onBlocked: Keep)"
        )
    if record.previous_digest is None:
        return dataclasses.replace(
            running,
            message=f"keeps running {shown}, which the gate now blocks: no earlier release ran "
            "here to roll back to",
        )
    back_to = timestamps.short_reference(record.previous_digest)
    if paused:
        return dataclasses.replace(
            running,
            message=f"runs {shown}, which the gate now blocks; rolls back to {back_to} when "
            "resumed",
        )
    back = release.TargetRecord(
        digest=record.previous_digest,
        started_at=now,
        ready_at=now,
        architectures=record.previous_architectures,
        template=record.previous_template,
    )
    return dataclasses.replace(
        v,
        phase="RolledBack",
        message=f"rolled back to {back_to}: the gate now blocks {shown} (onBlocked: RollBack)",
        write=rt.Write(t.name, "rollback", back),
        record=back,
        digest=back.digest,
        previous_digest=None,
    )


def runs_blocked(v: target_verdict.Verdict, image: rt.Image) -> bool:
    """Whether the target still runs the blocked digest after this reconcile's writes."""
    return (
        image.blocked_digest is not None
        and v.write is None
        and v.state.reachable
        and v.digest == image.blocked_digest
    )


def _events(
    verdicts: Sequence[target_verdict.Verdict],
    *,
    image: rt.Image,
    running: Sequence[str],
    previous: md.ModelDeploymentStatus,
    policy: md.OnBlocked,
) -> list[rt.Event]:
    """A Warning per rollback, and one naming the targets that keep the blocked digest (when
    that set changed since the last status)."""
    events = [
        rt.Event("Warning", reasons.ROLLED_BACK_BLOCKED, f"{v.name}: {v.message}")
        for v in verdicts
        if v.write is not None
    ]
    if not running or image.blocked_digest is None:
        return events
    before = {
        line.name
        for line in previous.targets
        if previous.phase == "Blocked" and line.digest == image.blocked_digest
    }
    if set(running) != before:
        events.append(
            rt.Event(
                "Warning",
                reasons.BLOCKED_DIGEST_RUNNING,
                f"{', '.join(running)} keep running "
                f"{timestamps.short_reference(image.blocked_digest)}, which the gate now blocks "
                f"(onBlocked: {policy}): {image.message}"[:1000],
            )
        )
    return events
