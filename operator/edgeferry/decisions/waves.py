"""The next step of a rollout: one pure function of what was observed, composing the others.

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
  no writes: targets keep what they run, drift is not even corrected, since a write could only
  be of a digest nobody vouched for. The one exception is `spec.onBlocked: RollBack` for a
  digest blocked after admission (`on_blocked`).
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
- With `rollout.analysis`, a target also needs its metric analysis passed to count Ready; a
  failing analysis fails it like a health failure (rolled back when allowed). The analysis
  rules are in `analysis`.
- Once a target was Ready on the digest, later unavailability is reported but never rolled
  back: the digest was proven there, and an outage is not a bad release.
- Unreachable targets are `Deferred`: not failures, they hold their wave for at most
  `offlineGraceSeconds`, and they catch up when they are back (unless the rollout halted).
- `paused` holds everything where it is: no new wave, no catch-up, no rollback, no drift
  correction. Failures are still reported, and acted upon after resuming.
- With `rollout.prePull`, an open wave's switch of a push target to a new digest waits until
  the digest is on the target's nodes (at most `maxConcurrentNodes` pulling at a time); a
  pre-pull that fails makes the target `Failed` with nothing switched (`prepull`).
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

Where each rule lives: the types in `rollout_types`, waves in `wave_plan`, one target's verdict
(when it counts as failed, what is written there) in `target_verdict`, the deployment's
phase, conditions and status block in `rollout_status`, its events in `rollout_events`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Mapping, Sequence

from edgeferry.decisions import (
    analysis,
    compat,
    rollout_events,
    rollout_status,
    target_verdict,
    wave_plan,
)
from edgeferry.decisions import on_blocked as on_blocked_plan
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons


def next_actions(
    targets: Sequence[rt.TargetState],
    *,
    image: rt.Image,
    rollout: md.RolloutStrategy,
    generation: int,
    now: datetime.datetime,
    recorded: md.ModelDeploymentStatus | None = None,
    template: str | None = None,
    name: str = "",
    measured: Sequence[md.AnalysisTally] = (),
    on_blocked: md.OnBlocked = "Keep",
    images: Sequence[rt.Image] = (),
) -> rt.Plan:
    """Decide this reconcile's writes, target phases and deployment phase.

    `targets` are all EdgeTargets the selector matches, in any order. `recorded` is the status
    the previous reconcile wrote: the deployment phase, digest and template hash (to emit
    events on change only), and per listed target its phase, `availableSince` and last known
    digest. `template` is the spec's pod template as `workload.template_document` renders it;
    together with the admitted digest it is the release being rolled out. `name` is the
    ModelDeployment's; `measured` the analysis tallies of the measurements so far (those of
    other releases are ignored). Queries due now are in `Plan.queries`. `images` are the
    namespace's ModelImages, for `onBlocked: RollBack` (`on_blocked.rollback_check`).
    """
    ordered = sorted(targets, key=lambda t: t.name)
    previous = recorded or md.ModelDeploymentStatus()
    lines = {line.name: line for line in previous.targets}
    if not image.admitted or not image.digest:
        return on_blocked_plan.plan(
            ordered,
            image=image,
            policy=on_blocked,
            paused=rollout.paused,
            now=now,
            lines=lines,
            previous=previous,
            images=images,
        )

    desired = image.digest
    desired_hash = rt.template_hash(template)
    sizes = dict(image.sizes)
    fits = {
        t.name: compat.check_size(
            compat.check(image.platforms, t.architectures),
            sizes,
            budget_bytes=t.size_budget_bytes,
        )
        for t in ordered
    }
    planned = wave_plan.plan_waves(
        [t.name for t in ordered if fits[t.name].status != "Incompatible"],
        canary=rollout.canary,
        max_per_wave=rollout.max_per_wave,
    )
    wave_of = {name: i + 1 for i, wave in enumerate(planned) for name in wave}
    same_release = previous.digest == desired and previous.template_hash == desired_hash
    target = target_verdict.Release(
        digest=desired,
        template=template,
        rollout=rollout,
        generation=generation,
        now=now,
        name=name,
    )
    mine = analysis.of_release(measured, digest=desired, template_hash=desired_hash)
    assessed = {
        t.name: target_verdict.assess(
            t,
            verdict=fits[t.name],
            wave=wave_of.get(t.name),
            target=target,
            line=lines.get(t.name) if same_release else None,
            last_known=lines.get(t.name),
            measured=tuple(m for m in mine if m.target == t.name),
        )
        for t in ordered
    }
    halted = wave_plan.halted_wave(
        planned, failed=lambda n: assessed[n].failed, max_failures=rollout.max_failures
    )
    current = wave_plan.current_wave(planned, settled=lambda n: assessed[n].settled, halted=halted)
    verdicts = [
        target_verdict.open_wave(
            v, current=current, halted_wave=halted, rollout=rollout, target=target
        )
        for v in assessed.values()
    ]

    events: list[rt.Event] = []
    if same_release and not halted:
        events += rollout_events.waves_succeeded(
            previous_wave=previous.current_wave, current=current, total=len(planned), digest=desired
        )
    events += rollout_events.writes(verdicts, planned=planned, digest=desired)
    events += [event for v in verdicts for event in v.events]
    outcomes = tuple(rollout_status.outcome(v, now=now, lines=lines) for v in verdicts)
    events += rollout_events.transitions(outcomes, lines)
    phase, conds, message = rollout_status.deployment_state(
        verdicts,
        image=image,
        rollout=rollout,
        total_waves=len(planned),
        current=current,
        halted_wave=halted,
    )
    if phase != previous.phase or not same_release:
        events += rollout_events.phase(phase, message)
    rechecks = [v.recheck for v in verdicts if v.recheck is not None]
    return rt.Plan(
        phase=phase,
        digest=desired,
        template_hash=desired_hash,
        waves=planned,
        current_wave=current if planned else 0,
        targets=outcomes,
        writes=tuple(v.write for v in verdicts if v.write is not None),
        conditions=conds,
        message=message,
        events=tuple(events),
        recheck_after_seconds=min(rechecks) if rechecks and not rollout.paused else None,
        queries=tuple(q for v in verdicts for q in v.queries),
        analysis=analysis.kept(
            mine, measuring={v.name for v in verdicts if v.phase not in ("Ready", "RolledBack")}
        ),
        prepulls=tuple(v.prepull for v in verdicts if v.prepull is not None),
    )


def with_errors(
    plan: rt.Plan,
    errors: Mapping[str, str],
    *,
    reachable: Collection[str],
    recorded: md.ModelDeploymentStatus | None = None,
) -> rt.Plan:
    """The plan once carried out: what went wrong at each target (unreachable, a write that
    failed) in its outcome, and a `TargetWriteFailed` Warning for a reachable target whose
    error is new since the last status."""
    lines = {line.name: line for line in (recorded or md.ModelDeploymentStatus()).targets}
    outcomes = []
    events = list(plan.events)
    for planned in plan.targets:
        error = errors.get(planned.name)
        outcome = planned
        if error and error not in (planned.error or ""):
            outcome = dataclasses.replace(planned, error=error)
        line = lines.get(outcome.name)
        if (
            error
            and outcome.name in reachable
            and (line is None or line.last_error != outcome.error)
        ):
            events.append(
                rt.Event("Warning", reasons.TARGET_WRITE_FAILED, f"{outcome.name}: {error}")
            )
        outcomes.append(outcome)
    return dataclasses.replace(plan, targets=tuple(outcomes), events=tuple(events))
