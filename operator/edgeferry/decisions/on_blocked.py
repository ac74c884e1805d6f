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
  and pod template, `TargetRecord.previous_digest`), but only when that release is itself
  admitted under the DB that blocked this one (`rollback_check`): some ModelImage of the
  namespace has it as its pushed image, `Admitted=True`, scanned with the same DB. A release
  that DB blocks too is not rolled back to, nor is one no ModelImage vouches for any more (an
  earlier build of the same ModelImage: nothing re-matched it); the target keeps the blocked
  digest, is counted as running it, and a Warning (`NoCleanReleaseToRollBackTo`) says why.
  While the earlier release's ModelImage is still being re-matched (a new DB reaches every
  image within one watch interval, not at once) the rollback waits a few seconds rather than
  trust a verdict of the old DB. A target with no earlier release keeps the blocked one too.
  `rollout.paused` holds the rollback until resumed, as it holds every other write.

The rollback is not a failed release: it does not mark the digest rolled back at this
generation, so once the image is admitted again (an exception, a fixed DB) it rolls out anew.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Literal

from edgeferry.decisions import rollout_status, target_verdict
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons, release, timestamps

RECHECK_SECONDS = 5.0
"""How soon to look again while the earlier release's ModelImage is re-matched to the new DB."""

RollbackCheck = Literal["Clean", "Blocked", "Pending", "Unknown"]


def rollback_check(
    digest: str, *, image: rt.Image, images: Sequence[rt.Image]
) -> tuple[RollbackCheck, str]:
    """May a target running `image`'s blocked digest go back to `digest`? With why, in words.

    `images` are the namespace's ModelImages as the gate left them. `Clean`: one admits
    `digest` under the DB that blocked `image` (or either DB is unknown to us, as for a scan
    recorded before DB identities were). `Blocked`: one blocks it. `Pending`: one admits it,
    but under another DB (its re-match is still to come). `Unknown`: none has it.
    """
    shown = timestamps.short_reference(digest)
    for other in images:
        if other.blocked_digest == digest:
            return "Blocked", (
                f"the release it ran before, {shown} (ModelImage {other.name}), is blocked too: "
                f"{other.message}"
            )
    admitting = [o for o in images if o.admitted and o.digest == digest]
    for other in admitting:
        if image.scan_db is None or other.scan_db is None or other.scan_db == image.scan_db:
            return "Clean", f"{shown} (ModelImage {other.name}) is admitted under the current DB"
    if admitting:
        return "Pending", (
            f"waits for ModelImage {admitting[0].name} ({shown}, the release it ran before) to "
            "be re-matched against the new vulnerability DB"
        )
    return "Unknown", (
        f"no ModelImage in this namespace has the release it ran before, {shown}, as its image "
        "any more, so nothing vouches for it under the current vulnerability DB"
    )


def plan(
    ordered: Sequence[rt.TargetState],
    *,
    image: rt.Image,
    policy: md.OnBlocked,
    paused: bool,
    now: datetime.datetime,
    lines: Mapping[str, md.TargetStatus],
    previous: md.ModelDeploymentStatus,
    images: Sequence[rt.Image] = (),
) -> rt.Plan:
    """Report what runs where; write only the rollbacks `RollBack` asks for (to releases
    `images`, the namespace's ModelImages, still admit: `rollback_check`)."""
    verdicts = [
        verdict(
            t,
            image=image,
            policy=policy,
            paused=paused,
            now=now,
            line=lines.get(t.name),
            images=images,
        )
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
        recheck_after_seconds=RECHECK_SECONDS
        if any(v.recheck is not None for v in verdicts)
        else None,
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
    images: Sequence[rt.Image] = (),
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
    check, why = rollback_check(record.previous_digest, image=image, images=images)
    if check == "Pending":
        return dataclasses.replace(
            running, message=f"runs {shown}, which the gate now blocks; {why}", recheck=0.0
        )
    if check != "Clean":
        return dataclasses.replace(
            running,
            message=f"keeps running {shown}, which the gate now blocks: not rolled back, {why}",
            no_clean_release=True,
        )
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
    refused = {v.name: v.message for v in verdicts if v.no_clean_release}
    said = {line.name: line.message for line in previous.targets if previous.phase == "Blocked"}
    events += [
        rt.Event("Warning", reasons.NO_CLEAN_RELEASE, f"{name}: {message}"[:1000])
        for name, message in refused.items()
        if said.get(name) != rollout_status.cut(message)
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
