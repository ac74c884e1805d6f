"""The ModelDeployment's summary: its phase, conditions and status block (complete counts,
bounded detail).

A ModelDeployment may select thousands of targets; a status that lists them all grows with the
fleet, pushes the object toward etcd's size limit, and makes every status write expensive.
Fleet truncates its messages to a few entries for the same reason. So the status keeps:

- counts per target phase, always complete, so `kubectl get md` ("3/4") and the metrics are
  exact at any scale; plus `serving`, the targets with a ready Pod whatever release they run,
  so "rolled back, serving the previous release" reads apart from "down";
- at most `limit` targets in detail, the ones that need attention first (Failed, RolledBack,
  Progressing, Deferred, Pending, Incompatible, then Ready), by name within a phase, plus how
  many were left out. A healthy fleet therefore shows its first targets by name, a troubled
  one shows its troubles;
- per-target messages cut to a bounded length.

The detail that must survive a restart beyond that bound lives on the targets themselves (see
`waves`): this block is a summary, not the rollout's memory, except for the not-ready targets
it always lists first.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgeferry.decisions import messages, target_verdict
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import conditions, reasons, timestamps
from edgeferry.models import modeldeployment as md

DEFAULT_LIMIT = 50
"""Targets listed in detail; the rest are only counted."""

MAX_MESSAGE = 256
"""Characters of a per-target error kept in status."""

_ATTENTION: Mapping[md.TargetPhase, int] = {
    "Failed": 0,
    "RolledBack": 1,
    "Progressing": 2,
    "Deferred": 3,
    "Pending": 4,
    "Incompatible": 5,
    "Ready": 6,
}


def count(phases: Iterable[md.TargetPhase]) -> md.PhaseCounts:
    """Targets per phase, and the total."""
    tally = collections.Counter(phases)
    return md.PhaseCounts(
        total=sum(tally.values()),
        pending=tally["Pending"],
        progressing=tally["Progressing"],
        ready=tally["Ready"],
        failed=tally["Failed"],
        rolled_back=tally["RolledBack"],
        deferred=tally["Deferred"],
        incompatible=tally["Incompatible"],
    )


MAX_SUMMARY = 1024
"""Characters of the deployment's own message kept in status."""


def cut(text: str | None, limit: int = MAX_MESSAGE) -> str | None:
    """`text` as a status line keeps it (at most `limit` characters)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def target_lines(
    outcomes: Sequence[rt.TargetOutcome], *, limit: int = DEFAULT_LIMIT
) -> tuple[tuple[md.TargetStatus, ...], int]:
    """The targets to list (attention first, at most `limit`) and how many were left out."""
    ordered = sorted(outcomes, key=lambda o: (_ATTENTION[o.phase], o.name))
    shown = ordered[: max(0, limit)]
    lines = tuple(
        md.TargetStatus(
            name=o.name,
            cluster_type=o.cluster_type,
            phase=o.phase,
            digest=o.digest,
            previous_digest=o.previous_digest,
            template_hash=o.template_hash,
            ready_replicas=o.ready_replicas,
            wave=o.wave,
            available_since=o.available_since,
            last_transition_time=o.last_transition_time,
            message=cut(o.message),
            last_error=cut(o.error),
        )
        for o in shown
    )
    return lines, len(ordered) - len(shown)


def build(
    plan: rt.Plan,
    *,
    generation: int | None,
    existing_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: datetime.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> md.ModelDeploymentStatus:
    """The status to write after a reconcile that produced `plan`.

    Conditions are merged with the existing ones so `lastTransitionTime` only moves when a
    condition really flips. Write it with `.to_status()`.
    """
    stamp = now or datetime.datetime.now(datetime.UTC)
    lines, left_out = target_lines(plan.targets, limit=limit)
    merged = conditions.merge(
        existing_conditions,
        plan.conditions,
        generation=generation,
        now=timestamps.format_rfc3339(stamp),
    )
    return md.ModelDeploymentStatus(
        observed_generation=generation,
        phase=plan.phase,
        digest=plan.digest,
        template_hash=plan.template_hash,
        current_wave=plan.current_wave,
        total_waves=len(plan.waves),
        counts=count(o.phase for o in plan.targets).model_copy(
            update={"serving": sum(o.ready_replicas > 0 for o in plan.targets)}
        ),
        targets=lines,
        targets_not_listed=left_out,
        analysis=plan.analysis,
        message=cut(plan.message, MAX_SUMMARY),
        conditions=tuple(merged),
    )


# --- the summary of one reconcile ----------------------------------------------------------------
def outcome(
    v: target_verdict.Verdict, *, now: datetime.datetime, lines: Mapping[str, md.TargetStatus]
) -> rt.TargetOutcome:
    """A target's status line from its verdict; the transition time moves only on a new phase."""
    line = lines.get(v.name)
    transition = line.last_transition_time if line and line.phase == v.phase else None
    if v.record is not None:
        running_template = rt.template_hash(v.record.template)
    else:
        running_template = line.template_hash if line is not None else None
    return rt.TargetOutcome(
        name=v.name,
        cluster_type=v.state.cluster_type,
        phase=v.phase,
        wave=v.wave,
        digest=v.digest,
        previous_digest=v.previous_digest,
        template_hash=running_template,
        ready_replicas=v.state.ready_replicas if v.state.reachable else 0,
        available_since=v.available_since,
        last_transition_time=transition or now,
        message=v.message,
        error=v.error,
        record=v.record,
        became_ready=v.became_ready,
    )


def blocked(image: rt.Image) -> tuple[str, tuple[conditions.Condition, ...]]:
    """The message and conditions of a deployment whose image is not admitted."""
    why = image.message or "the gate has not admitted it yet"
    message = (
        f"ModelImage {image.name} is not admitted ({why}); nothing is rolled out and targets "
        "keep what they run. Fix the image, or record a justified exception in its scan "
        "policy; it rolls out once admitted."
    )
    conds = (
        conditions.Condition(
            reasons.BLOCKED, "True", image.reason or reasons.IMAGE_NOT_ADMITTED, message
        ),
        conditions.Condition(reasons.PROGRESSING, "False", reasons.IMAGE_BLOCKED, message),
        conditions.Condition(
            reasons.DEGRADED, "False", reasons.IMAGE_BLOCKED, "no rollout is running"
        ),
        *conditions.kstatus(
            ready=False, reason=reasons.IMAGE_BLOCKED, message=message, stalled=True
        ),
    )
    return message, conds


def deployment_state(
    verdicts: Sequence[target_verdict.Verdict],
    *,
    image: rt.Image,
    rollout: md.RolloutStrategy,
    total_waves: int,
    current: int,
    halted_wave: int,
) -> tuple[md.DeploymentPhase, tuple[conditions.Condition, ...], str]:
    """The deployment's phase, its conditions and a one-line message."""
    items = list(verdicts)
    failed = [v for v in items if v.failed]
    incompatible = [v for v in items if v.phase == "Incompatible"]
    plannable = [v for v in items if v.phase != "Incompatible"]
    ready = [v for v in plannable if v.phase == "Ready"]
    behind = [v for v in plannable if v.phase == "Deferred" and v.up_to_date]
    open_work = [v for v in plannable if not v.failed and v.phase != "Ready" and v not in behind]
    digest = timestamps.short_reference(image.digest or "")
    runs = f"{len(ready)}/{len(items)} targets run {digest}"
    note = ""
    if incompatible:
        note = f" Skipped as incompatible: {_detail(incompatible, errors=False)}."

    if failed:
        tail = (
            f" Wave {halted_wave} exceeded maxFailures={rollout.max_failures}, so later waves "
            "do not start. Publish a fixed image, or fix the cause and edit the spec to retry."
            if halted_wave
            else f" Within maxFailures={rollout.max_failures} per wave; the rollout goes on."
        )
        degraded = conditions.Condition(
            reasons.DEGRADED,
            "True",
            reasons.ROLLOUT_HALTED if halted_wave else reasons.TARGETS_FAILED,
            f"{len(failed)} target(s) failed with {digest}: {_detail(failed, errors=True)}.{tail}",
        )
    else:
        degraded = conditions.Condition(
            reasons.DEGRADED, "False", reasons.NO_FAILURES, "no target failed"
        )

    phase: md.DeploymentPhase
    if halted_wave:
        phase, reason, message = "Degraded", reasons.ROLLOUT_HALTED, degraded.message
    elif not items:
        # Not Ready: nothing runs the model anywhere, which is what a selector typo looks like.
        # Stalled, as for no compatible target: only a label or selector change can move it.
        phase, reason = "Degraded", reasons.NO_TARGETS_SELECTED
        message = (
            "targets.selector matches no EdgeTarget in this namespace, so the model runs "
            "nowhere. Compare it with `kubectl get edgetargets --show-labels`, then fix the "
            "selector or label the targets."
        )
    elif not plannable:
        phase, reason = "Degraded", reasons.NO_COMPATIBLE_TARGETS
        message = f"no selected target can run {digest}.{note}"
    elif not open_work:
        phase, reason = ("Degraded" if failed else "Ready"), reasons.ROLLOUT_COMPLETE
        message = f"{runs}."
        if behind:
            message += f" Unreachable, last seen on it: {_names(behind)}."
        if failed:
            message += f" {degraded.message}"
        message += note
    elif rollout.paused:
        phase, reason = "Paused", reasons.ROLLOUT_PAUSED
        message = (
            f"paused at wave {current}/{total_waves}; {runs}. "
            f"Set spec.rollout.paused to false to continue.{note}"
        )
    else:
        phase = "Progressing"
        busy = [v for v in open_work if v.wave == current and v.phase != "Deferred"]
        others = [v for v in open_work if v.phase != "Deferred"]
        away = [v for v in open_work if v.phase == "Deferred"]
        if busy or others:
            reason = reasons.WAVE_IN_PROGRESS
            message = f"wave {current}/{total_waves}: {runs}; waiting for {_names(busy or others)}."
        else:
            reason = reasons.WAITING_FOR_DEFERRED_TARGETS
            message = f"{runs}; unreachable, updated when back: {_names(away)}."
        message += note

    progressing = phase == "Progressing"
    conds = (
        conditions.Condition(
            reasons.BLOCKED,
            "False",
            reasons.IMAGE_ADMITTED,
            f"ModelImage {image.name} is admitted: {digest}",
        ),
        conditions.Condition(
            reasons.PROGRESSING, "True" if progressing else "False", reason, message
        ),
        degraded,
        *conditions.kstatus(
            ready=phase == "Ready",
            reason=reason,
            message=message,
            reconciling=progressing,
            stalled=reason
            in (reasons.ROLLOUT_HALTED, reasons.NO_COMPATIBLE_TARGETS, reasons.NO_TARGETS_SELECTED),
        ),
    )
    return phase, conds, message


def _names(verdicts: Sequence[target_verdict.Verdict]) -> str:
    return messages.names([v.name for v in verdicts])


def _detail(verdicts: Sequence[target_verdict.Verdict], *, errors: bool) -> str:
    return messages.detail([(v.name, (v.error if errors else None) or v.message) for v in verdicts])


def invalid_spec(where: str, what: str) -> tuple[str, tuple[conditions.Condition, ...]]:
    """The message and conditions of a ModelDeployment whose spec does not parse."""
    message = (
        f"spec is not valid: {where}: {what}; fix the ModelDeployment (`kubectl "
        "explain modeldeployment.spec`). Nothing is rolled out until then."
    )
    return message, conditions.kstatus(
        ready=False, reason=reasons.INVALID_SPEC, message=message, stalled=True
    )


@dataclasses.dataclass(frozen=True)
class Gauges:
    """The rollout metrics of one ModelDeployment, read off its plan and status."""

    targets: Mapping[str, int]
    """Targets per phase, plus `Blocked`: every selected target while the image is blocked
    (the phases then count 0, so a blocked rollout is one number on a dashboard)."""
    wave: int
    degraded: bool
    """Phase `Degraded` with targets selected; with none, nothing failed: it is only stalled."""
    stalled: bool
    running_blocked: int = 0
    """Targets still running a digest the gate blocked after admission (`on_blocked`)."""


def gauges(plan: rt.Plan, status: md.ModelDeploymentStatus) -> Gauges:
    """What the rollout gauges show after this reconcile."""
    blocked = plan.phase == "Blocked"
    per_phase: dict[str, int] = {
        phase: 0 if blocked else status.counts.of(phase) for phase in md.TARGET_PHASES
    }
    return Gauges(
        targets={**per_phase, "Blocked": status.counts.total if blocked else 0},
        wave=plan.current_wave,
        degraded=plan.phase == "Degraded" and status.counts.total > 0,
        stalled=conditions.is_true(status.conditions, reasons.STALLED) or blocked,
        running_blocked=len(plan.running_blocked),
    )
