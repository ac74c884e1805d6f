"""What a ModelImage needs next: lint, build, smoke test, scan, push, or nothing.

The handler calls `next_step` on every reconcile with the typed spec and status and a few facts
it looked up (the current inputs digest, the scanner DB's checksum, whether the image is still
in the local Docker daemon), runs the one step it returns, records the result in status, and
asks again until the answer is `Step.NONE`. Every decision is made from the status alone, never
from memory, so a restarted operator continues exactly where the last one stopped; and a
converged ModelImage (same inputs, same policy, scan not due) needs nothing at all.

How the status says what is done:

- `status.inputsDigest` names the *run*: the inputs whose image the status describes. Other
  inputs start a new run (`Plan.new_run`, then `stages.begin_run`), which clears the results of the
  old one.
- Each stage records in `status.stageInputs` a key of what it ran with (`stages.stage_keys`); a spec
  change re-runs exactly the stages whose key changed: a new exception re-gates without a
  rebuild, new push tags push again without a rescan. The smoke test's key includes the image id
  and the scan's key includes the smoke test's, so a stage that ran again is always followed by
  the stages after it. Record a stage's key whether it passed or failed.
- A failure that re-running cannot fix by itself (lint, gate, a failing `RUN`, a refused push)
  rests until the spec changes. A failure whose reason passes (`reasons.TRANSIENT_FAILURES`:
  the Docker daemon, the registry or the scanner unavailable) waits until `status.retry`
  says the next attempt is due (`decisions.retries`: capped exponential backoff), then runs
  the stage again, with no spec edit.
- A rescan is due when `rescanInterval` has passed since `scan.scannedAt`, when the scanner's
  DB checksum differs from `scan.dbChecksum`, or when an exception that admitted the image has
  expired. `Plan.recheck_after` says when to look again while at rest.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum

from edgeferry.decisions import stages
from edgeferry.models import conditions, modelimage, reasons, timestamps


class Step(enum.Enum):
    """The next thing to do; `NONE` means rest until something changes."""

    LINT = "Lint"
    BUILD = "Build"
    PULL = "Pull"
    """Get the already pushed image back from the registry (it left the local daemon)."""
    SMOKE_TEST = "SmokeTest"
    SCAN = "Scan"
    """Scan and gate; a cached scan of the same image with the same DB may be reused."""
    RESCAN = "Rescan"
    """Scan again, bypassing any cache: the DB changed or the interval passed."""
    PUSH = "Push"
    NONE = "None"


NEEDS_LOCAL_IMAGE = frozenset({Step.SMOKE_TEST, Step.SCAN, Step.RESCAN, Step.PUSH})
"""Steps that need the image in the local Docker daemon."""

_WORKING_PHASE: dict[Step, modelimage.Phase] = {
    Step.LINT: "Linting",
    Step.BUILD: "Building",
    Step.PULL: "Building",
    Step.SMOKE_TEST: "SmokeTesting",
    Step.SCAN: "Scanning",
    Step.RESCAN: "Scanning",
    Step.PUSH: "Pushing",
}
STAGE_CONDITION: dict[Step, str] = {
    Step.LINT: reasons.LINTED,
    Step.BUILD: reasons.BUILT,
    Step.PULL: reasons.BUILT,
    Step.SMOKE_TEST: reasons.SMOKE_TESTED,
    Step.SCAN: reasons.SCANNED,
    Step.RESCAN: reasons.SCANNED,
    Step.PUSH: reasons.PUSHED,
}
"""The condition that reports each step's result."""
_RESTING_PHASE: dict[str, modelimage.Phase] = {
    reasons.UP_TO_DATE: "Ready",
    reasons.BLOCKED_BY_GATE: "Blocked",
    reasons.SMOKE_TEST_FAILED: "Blocked",
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """The decision: a step, why (CamelCase, fit for conditions and events), and what it means."""

    step: Step
    reason: str
    message: str
    new_run: bool = False
    """The inputs changed: call `stages.begin_run` before running the step."""
    recheck_after: datetime.timedelta | None = None
    """At rest: when a rescan or an exception's expiry will need a new look (None: never)."""
    retrying: Step | None = None
    """At rest only until this step's next attempt is due (`status.retry`): still working."""

    @property
    def phase(self) -> modelimage.Phase:
        """`status.phase` while the step runs, or where the resource rests."""
        if self.step is not Step.NONE:
            return _WORKING_PHASE[self.step]
        if self.retrying is not None:
            return _WORKING_PHASE[self.retrying]
        return _RESTING_PHASE.get(self.reason, "Failed")

    @property
    def needs_local_image(self) -> bool:
        """Whether the step needs the image in the local Docker daemon."""
        return self.step in NEEDS_LOCAL_IMAGE


def next_step(
    spec: modelimage.ModelImageSpec,
    status: modelimage.ModelImageStatus,
    *,
    generation: int,
    inputs_digest: str,
    now: datetime.datetime,
    scan_db_checksum: str | None = None,
    image_present: bool = True,
) -> Plan:
    """Decide the next step from spec, status and the facts the handler looked up.

    `now` must be timezone-aware. `scan_db_checksum` is the scanner DB's current identity (None
    if unknown: no DB-change rescan then); `image_present` whether the local Docker daemon still
    has every platform's image (`status.image.platforms[*].id`).
    """
    if now.tzinfo is None:
        raise ValueError("next_step needs a timezone-aware `now`")
    if status.inputs_digest != inputs_digest:
        if status.inputs_digest is None:
            return Plan(
                Step.LINT, reasons.NEW_INPUTS, "first run: lint the Dockerfile", new_run=True
            )
        return Plan(
            Step.LINT,
            reasons.INPUTS_CHANGED,
            f"inputs changed ({_short(status.inputs_digest)} -> {_short(inputs_digest)}): "
            "lint and build again",
            new_run=True,
        )
    image_ids = status.image.image_ids if status.image is not None else ()
    keys = stages.stage_keys(spec, image_ids=image_ids)

    linted = status.condition(reasons.LINTED)
    if status.stage_inputs.lint != keys.lint or linted is None or linted.status == "Unknown":
        if status.stage_inputs.lint is not None and status.stage_inputs.lint != keys.lint:
            return Plan(Step.LINT, reasons.LINT_POLICY_CHANGED, "spec.lint changed: lint again")
        return Plan(Step.LINT, reasons.NOT_LINTED, "lint the Dockerfile")
    if linted.status != "True":
        return _rest(reasons.LINT_FAILED, linted.message or "hadolint findings fail the policy")
    waiting = _waiting_for_retry(status, generation=generation, now=now)
    if waiting is not None:
        return waiting

    if not image_ids:
        built = status.condition(reasons.BUILT)
        if _failed_for(built, generation):
            return _rest(reasons.BUILD_FAILED, _message(built, "the build failed"))
        if built is not None and built.status == "False":
            why = (
                f"build again after {built.reason}"
                if built.reason in reasons.TRANSIENT_FAILURES
                else "spec changed since the build failed: retry"
            )
            return Plan(Step.BUILD, reasons.RETRY_BUILD, why)
        return Plan(Step.BUILD, reasons.NOT_BUILT, "build the image")

    plan = _after_build(spec, status, keys, generation=generation, now=now, db=scan_db_checksum)
    if plan.needs_local_image and not image_present:
        built = status.condition(reasons.BUILT)
        if _failed_for(built, generation):
            return _rest(reasons.BUILD_FAILED, _message(built, "the build failed"))
        if status.image is not None and stages.pullable(status.image):
            return Plan(
                Step.PULL,
                reasons.IMAGE_MISSING,
                f"image left the local daemon: pull {status.image.reference}, then "
                f"{plan.step.value.lower()}",
            )
        return Plan(
            Step.BUILD,
            reasons.IMAGE_MISSING,
            f"image {', '.join(_short(i) for i in image_ids)} left the local daemon: "
            "build it again",
        )
    return plan


def _after_build(
    spec: modelimage.ModelImageSpec,
    status: modelimage.ModelImageStatus,
    keys: modelimage.StageInputs,
    *,
    generation: int,
    now: datetime.datetime,
    db: str | None,
) -> Plan:
    """Smoke test, scan, gate and push for the image of this run."""
    recorded = status.stage_inputs
    smoke = status.smoke_test
    if recorded.smoke_test != keys.smoke_test or smoke is None or smoke.result is None:
        if recorded.smoke_test is not None and recorded.smoke_test != keys.smoke_test:
            return Plan(Step.SMOKE_TEST, reasons.SMOKE_TEST_CHANGED, "smoke test or image changed")
        return Plan(
            Step.SMOKE_TEST, reasons.NOT_SMOKE_TESTED, "run the image once before admission"
        )
    if smoke.result == "Failed":
        tested = status.condition(reasons.SMOKE_TESTED)
        if _failed_for(tested, generation):
            return _rest(
                reasons.SMOKE_TEST_FAILED, smoke.message or _message(tested, "smoke test failed")
            )
        return Plan(
            Step.SMOKE_TEST, reasons.RETRY_SMOKE_TEST, "spec changed since the smoke test failed"
        )

    image_ids = status.image.image_ids if status.image is not None else ()
    scan = status.scan
    scanned = status.condition(reasons.SCANNED)
    if _failed_for(scanned, generation):
        return _rest(reasons.SCAN_FAILED, _message(scanned, "the scan failed"))
    if scan is None or scan.scanned_ids != image_ids or scan.scanned_at is None:
        if scanned is not None and scanned.status == "False":
            why = (
                "scan again after the scan failed"
                if scanned.reason in reasons.TRANSIENT_FAILURES
                else "spec changed since the scan failed: retry"
            )
            return Plan(Step.SCAN, reasons.RETRY_SCAN, why)
        return Plan(Step.SCAN, reasons.NOT_SCANNED, "scan the image and apply the gate")
    if db and scan.db_checksum and db != scan.db_checksum:
        return Plan(
            Step.RESCAN,
            reasons.SCAN_DATABASE_CHANGED,
            f"vulnerability database changed ({scan.db_checksum} -> {db}): scan again",
        )
    due = _utc(scan.scanned_at) + spec.scan.rescan_every
    if now >= due:
        return Plan(
            Step.RESCAN,
            reasons.RESCAN_DUE,
            f"last scan {scan.scanned_at.isoformat()}, rescanInterval "
            f"{spec.scan.rescan_interval}: scan again",
        )
    if recorded.scan != keys.scan:
        return Plan(
            Step.SCAN,
            reasons.SCAN_POLICY_CHANGED,
            "spec.scan or the smoke test changed: gate again",
        )
    today = now.astimezone(datetime.UTC).date()
    lapsed = [e.id for e in scan.excepted if not e.active_on(today)]
    if lapsed:
        return Plan(
            Step.SCAN,
            reasons.EXCEPTION_EXPIRED,
            f"exceptions that admitted the image expired ({', '.join(lapsed)}): gate again",
        )
    recheck = _recheck_after(spec, scan, now=now)
    admitted = status.condition(reasons.ADMITTED)
    if admitted is None or admitted.status == "Unknown":
        return Plan(Step.SCAN, reasons.NOT_GATED, "apply the gate to the scan")
    if admitted.status != "True":
        return _rest(
            reasons.BLOCKED_BY_GATE, admitted.message or "the gate blocked the image", recheck
        )

    image = status.image
    if recorded.push != keys.push or image is None or not image.digest:
        pushed = status.condition(reasons.PUSHED)
        if recorded.push == keys.push and _failed_for(pushed, generation):
            return _rest(reasons.PUSH_FAILED, _message(pushed, "the push failed"))
        if recorded.push is not None and recorded.push != keys.push:
            return Plan(Step.PUSH, reasons.PUSH_TARGET_CHANGED, "push repository or tags changed")
        if pushed is not None and pushed.reason in reasons.TRANSIENT_FAILURES:
            return Plan(
                Step.PUSH, reasons.RETRY_PUSH, f"push again after {pushed.reason}: {pushed.message}"
            )
        return Plan(
            Step.PUSH, reasons.NOT_PUSHED, f"push the admitted image to {spec.push.repository}"
        )
    return _rest(reasons.UP_TO_DATE, f"admitted and pushed as {image.reference}", recheck)


def progress_conditions(plan: Plan) -> tuple[conditions.Condition, ...]:
    """`Ready`, `Reconciling` and `Stalled` (kstatus) for a plan, to write before running it.

    A `RESCAN` leaves `Ready` alone: an admitted image stays ready while a routine rescan runs,
    so deployments watching it do not flap once a day.
    """
    if plan.step is Step.NONE and plan.retrying is not None:
        waiting = conditions.kstatus(
            ready=False, reason=plan.reason, message=plan.message, reconciling=True
        )
        if plan.retrying is Step.RESCAN:
            return tuple(c for c in waiting if c.type != reasons.READY)
        return waiting
    if plan.step is Step.NONE:
        ready = plan.reason == reasons.UP_TO_DATE
        reason = reasons.READY if ready else plan.reason
        return conditions.kstatus(
            ready=ready, reason=reason, message=plan.message, stalled=not ready
        )
    working = conditions.kstatus(
        ready=False, reason=plan.reason, message=plan.message, reconciling=True
    )
    if plan.step is Step.RESCAN:
        return tuple(c for c in working if c.type != reasons.READY)
    return working


def _rest(reason: str, message: str, recheck_after: datetime.timedelta | None = None) -> Plan:
    return Plan(Step.NONE, reason, message, recheck_after=recheck_after)


def _failed_for(cond: modelimage.StatusCondition | None, generation: int) -> bool:
    """A stage failed for this very generation: retrying without a change would fail again.

    Not so for a passing reason (`reasons.TRANSIENT_FAILURES`): `_waiting_for_retry` holds
    those back until their next attempt is due, then the stage simply runs again.
    """
    return (
        cond is not None
        and cond.status == "False"
        and cond.reason not in reasons.TRANSIENT_FAILURES
        and (cond.observed_generation is None or cond.observed_generation >= generation)
    )


def _waiting_for_retry(
    status: modelimage.ModelImageStatus, *, generation: int, now: datetime.datetime
) -> Plan | None:
    """Rest (still Reconciling) until a stage's next attempt after a passing failure is due."""
    retry = status.retry
    if retry is None or retry.generation != generation:
        return None
    due = _utc(retry.not_before)
    if now >= due:
        return None
    try:
        step = Step(retry.stage)
    except ValueError:
        return None  # a stage this operator does not know: plan afresh
    failed = status.condition(STAGE_CONDITION.get(step, ""))
    known = failed is not None and failed.reason in reasons.TRANSIENT_FAILURES
    reason = failed.reason if failed is not None and known else reasons.RETRYING
    message = failed.message if failed is not None and known else f"{step.value} failed"
    return Plan(Step.NONE, reason, message, recheck_after=due - now, retrying=step)


def _message(cond: modelimage.StatusCondition | None, fallback: str) -> str:
    return cond.message if cond is not None and cond.message else fallback


def _recheck_after(
    spec: modelimage.ModelImageSpec, scan: modelimage.ScanStatus, *, now: datetime.datetime
) -> datetime.timedelta | None:
    """Time until the next rescan or the first expiry of an exception that applies."""
    moments = []
    if scan.scanned_at is not None:
        moments.append(_utc(scan.scanned_at) + spec.scan.rescan_every)
    for exception in scan.excepted:
        expiry = datetime.datetime.combine(exception.expires, datetime.time(), datetime.UTC)
        moments.append(expiry)
    if not moments:
        return None
    return max(min(moments) - now, datetime.timedelta(0))


def _utc(moment: datetime.datetime) -> datetime.datetime:
    """Timestamps from status without a zone are UTC (Kubernetes writes them with `Z`)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


def _short(digest: str | None) -> str:
    return timestamps.short_digest(digest) or "none"
