"""What a finished ModelImage step means: the status it records and the event it posts.

`pipeline.next_step` decides which step runs; the runner (`edgeferry.runners.image_pipeline`)
runs it against hadolint, Docker, syft/grype or the registry and hands the tool's result here.
These functions decide everything the user sees from that result: which conditions flip and
why, what the messages say, which event is posted, whether the smoke test is skipped (a
scan's result is `scan_step`'s). Pure, so the unit tests drive a ModelImage's whole life
through the very code the operator runs, with made-up tool results instead of tools.

Every function records the stage's key (`status.stageInputs`) whether the stage passed or
failed, as `pipeline` requires; conditions carry the generation they were observed at.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from edgeferry.decisions import lint_verdict, pipeline, smoke_platforms, stages
from edgeferry.models import conditions, modelimage, reasons

Stage = Literal["lint", "smoke_test", "scan", "push"]
_SMOKE_MESSAGE_LIMIT = 1200


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes event to post on the ModelImage."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Recorded:
    """The status after a step, and the event that tells the user about it (None: no event)."""

    status: modelimage.ModelImageStatus
    event: Event | None = None


@dataclasses.dataclass(frozen=True)
class SmokeOutcome:
    """What one platform's smoke test container did, as the smoke-test adapter observed it."""

    run: smoke_platforms.Run
    """Which platform's image ran, and whether emulated."""
    passed: bool
    reason: str
    """`Passed`, or why not (`ContainerExited`, `HealthTimeout`, ...): the condition's reason."""
    message: str
    log_tail: tuple[str, ...] = ()
    startup_ms: float | None = None
    health_latency_ms: float | None = None
    prediction_latency_ms: float | None = None
    """None when no prediction was asked for or none was answered."""
    prediction: str | None = None


# --- every step ---------------------------------------------------------------------------------


def starting(
    plan: pipeline.Plan,
    status: modelimage.ModelImageStatus,
    *,
    inputs_digest: str,
    generation: int,
) -> modelimage.ModelImageStatus:
    """The status to write before running the plan's step (or at rest): new run, kstatus, phase."""
    if plan.new_run:
        status = stages.begin_run(status, inputs_digest=inputs_digest)
    return record(
        status, pipeline.progress_conditions(plan), generation=generation, phase=plan.phase
    )


def stalled(
    status: modelimage.ModelImageStatus, reason: str, message: str, *, generation: int
) -> Recorded:
    """The spec or its inputs cannot be used: say so in Ready/Stalled and rest as `Failed`."""
    updates = conditions.kstatus(ready=False, reason=reason, message=message, stalled=True)
    return Recorded(
        record(status, updates, generation=generation, phase="Failed"),
        Event("Warning", reason, message[:900]),
    )


# --- lint ---------------------------------------------------------------------------------------


def linted(
    status: modelimage.ModelImageStatus,
    spec: modelimage.ModelImageSpec,
    verdict: lint_verdict.Verdict,
    *,
    generation: int,
) -> Recorded:
    fields = {"lint": verdict.status, "stage_inputs": stage_inputs(status, spec, "lint")}
    recorded = record(status, [verdict.condition], generation=generation, fields=fields)
    event = (
        None if verdict.passed else Event("Warning", reasons.LINT_FAILED, verdict.condition.message)
    )
    return Recorded(recorded, event)


# --- build --------------------------------------------------------------------------------------


def built(
    status: modelimage.ModelImageStatus,
    images: Sequence[modelimage.PlatformImage],
    *,
    seconds: float,
    tag: str,
    generation: int,
) -> Recorded:
    """Every platform built: the first platform's image also fills the single-image fields."""
    first = images[0]
    image = modelimage.ImageStatus(
        id=first.id,
        size=first.size,
        layers=first.layers,
        platform=first.platform,
        platforms=list(images),
    )
    what = ", ".join(
        f"{p.platform} {p.id[:19]} ({p.layers} layers, {(p.size or 0) / 1e6:.1f} MB)"
        for p in images
    )
    condition = conditions.Condition(
        reasons.BUILT, "True", reasons.BUILD_SUCCEEDED, f"built {what} in {seconds:.1f}s"
    )
    return Recorded(
        record(status, [condition], generation=generation, fields={"image": image}),
        Event("Normal", reasons.BUILD_SUCCEEDED, f"built {what}; local tag {tag}"[:900]),
    )


def build_failed(
    status: modelimage.ModelImageStatus,
    *,
    platform: str,
    error: str,
    log_tail: Sequence[str],
    generation: int,
) -> Recorded:
    """One platform's build failed, which fails the stage; the message names the platform."""
    tail = "\n".join(log_tail[-15:])
    message = f"{platform}: {error}; log tail:\n{tail}"[-1500:]
    if len(message) == 1500:  # keep the platform in view when the tail is cut
        message = f"{platform}: ...{message[len(platform) + 5 :]}"
    condition = conditions.Condition(reasons.BUILT, "False", reasons.BUILD_FAILED, message)
    return Recorded(
        record(status, [condition], generation=generation),
        Event("Warning", reasons.BUILD_FAILED, message[-900:]),
    )


def build_tag(tag: str, platform: str, *, platforms: int) -> str:
    """One platform's local tag: the run's tag itself when it is the only platform."""
    return tag if platforms == 1 else f"{tag}-{platform.replace('/', '-')}"


def pull_references(image: modelimage.ImageStatus) -> list[tuple[str, str | None]]:
    """(reference, platform) to pull an image back: every platform by its manifest digest (an
    index gives the daemon only its own platform); a single image by its reference."""
    assert image.reference and image.repository
    platforms = image.platform_images
    if len(platforms) > 1:
        return [(f"{image.repository}@{p.digest}", p.platform) for p in platforms]
    return [(image.reference, platforms[0].platform if platforms else None)]


# --- smoke test ---------------------------------------------------------------------------------


def smoke_test_skip(
    spec: modelimage.ModelImageSpec, plan: smoke_platforms.Plan, *, daemon_platform: str
) -> str | None:
    """Why the smoke test is skipped (disabled, or every platform emulated and left out by the
    operator's settings); None: run `plan`."""
    if not spec.smoke_test.enabled:
        return "spec.smokeTest.enabled is false"
    return smoke_platforms.nothing_runs(plan, daemon_platform=daemon_platform)


def smoke_test_skipped(
    status: modelimage.ModelImageStatus,
    spec: modelimage.ModelImageSpec,
    why: str,
    *,
    generation: int,
) -> Recorded:
    """A skipped smoke test counts as passed (`SmokeTested=True`, reason `Skipped`)."""
    fields = {
        "smoke_test": modelimage.SmokeTestStatus(result="Skipped", message=why),
        "stage_inputs": stage_inputs(status, spec, "smoke_test"),
    }
    condition = conditions.Condition(reasons.SMOKE_TESTED, "True", reasons.SMOKE_TEST_SKIPPED, why)
    return Recorded(record(status, [condition], generation=generation, fields=fields))


def smoke_tested(
    status: modelimage.ModelImageStatus,
    spec: modelimage.ModelImageSpec,
    outcomes: Sequence[SmokeOutcome],
    *,
    skipped: Sequence[str] = (),
    generation: int,
) -> Recorded:
    """The smoke test ran on each platform of `outcomes` (in that order, up to the first that
    failed); `skipped` emulated platforms were left out. A failure names its platform first and
    withdraws admission."""
    assert status.image is not None and outcomes
    failed = next((o for o in outcomes if not o.passed), None)
    parts = [
        smoke_platforms.passed(
            o.run, startup_ms=o.startup_ms, prediction_latency_ms=o.prediction_latency_ms
        )
        for o in outcomes
        if o.passed
    ]
    if skipped:
        parts.append(smoke_platforms.skipped(skipped))
    reason = reasons.SMOKE_TEST_PASSED
    if failed is None:
        message = "; ".join(parts)
    else:
        reason, first = smoke_platforms.failure(
            failed.run, reason=failed.reason, message=failed.message, log_tail=failed.log_tail
        )
        head = "; ".join([first, *parts])
        header = f"; container log tail ({failed.run.platform}):\n"
        # Cut the log's start, then the head's end: the platform and the log's end stay in view.
        tail = "\n".join(failed.log_tail[-10:])[-(_SMOKE_MESSAGE_LIMIT - 300 - len(header)) :]
        message = head[: _SMOKE_MESSAGE_LIMIT - len(header) - len(tail)] + header + tail
    shown = failed or outcomes[0]
    fields = {
        "smoke_test": modelimage.SmokeTestStatus(
            result="Passed" if failed is None else "Failed",
            health_latency_ms=shown.health_latency_ms,
            prediction_latency_ms=shown.prediction_latency_ms,
            prediction=shown.prediction[:512] if shown.prediction is not None else None,
            message=message,
        ),
        "stage_inputs": stage_inputs(status, spec, "smoke_test"),
    }
    if failed is None:
        passed = conditions.Condition(
            reasons.SMOKE_TESTED, "True", reasons.SMOKE_TEST_PASSED, message
        )
        return Recorded(record(status, [passed], generation=generation, fields=fields))
    updates = [
        conditions.Condition(reasons.SMOKE_TESTED, "False", reason, message),
        conditions.Condition(
            reasons.ADMITTED,
            "False",
            reasons.SMOKE_TEST_FAILED,
            f"not admitted: the smoke test failed: {message}",
        ),
    ]
    return Recorded(
        record(status, updates, generation=generation, fields=fields),
        Event("Warning", reasons.SMOKE_TEST_FAILED, message[:900]),
    )


# --- push ---------------------------------------------------------------------------------------


def pushes_index(image: modelimage.ImageStatus) -> bool:
    """Several platforms are pushed as one OCI image index; one stays a plain manifest."""
    return len(image.platform_images) > 1


def pushed(
    status: modelimage.ModelImageStatus,
    spec: modelimage.ModelImageSpec,
    *,
    digest: str,
    children: Sequence[str],
    generation: int,
) -> Recorded:
    """The image is in the registry: `digest` is what deployments use, `children` the manifest
    digest of each platform (the same digest for a single platform)."""
    image = status.image
    assert image is not None
    platforms = image.platform_images
    repository = spec.push.repository
    fields = {
        "image": image.model_copy(
            update={
                "repository": repository,
                "tags": list(spec.push.tags),
                "digest": digest,
                "platforms": [
                    p.model_copy(update={"digest": d})
                    for p, d in zip(platforms, children, strict=True)
                ],
            }
        ),
        "stage_inputs": stage_inputs(status, spec, "push"),
    }
    reference = f"{repository}@{digest}"
    what = (
        f"an image index of {', '.join(p.platform for p in platforms)}"
        if len(platforms) > 1
        else platforms[0].platform
    )
    condition = conditions.Condition(
        reasons.PUSHED, "True", reasons.PUSH_SUCCEEDED, f"pushed {what} as {reference}"
    )
    return Recorded(
        record(status, [condition], generation=generation, fields=fields),
        Event(
            "Normal",
            reasons.PUSH_SUCCEEDED,
            f"pushed {what} as {reference} (tags {', '.join(spec.push.tags)})",
        ),
    )


def push_failed(
    status: modelimage.ModelImageStatus,
    spec: modelimage.ModelImageSpec,
    error: str,
    *,
    generation: int,
) -> Recorded:
    condition = conditions.Condition(reasons.PUSHED, "False", reasons.PUSH_FAILED, error[-1200:])
    fields = {"stage_inputs": stage_inputs(status, spec, "push")}
    return Recorded(
        record(status, [condition], generation=generation, fields=fields),
        Event("Warning", reasons.PUSH_FAILED, error[-900:]),
    )


# --- helpers ------------------------------------------------------------------------------------


def stage_inputs(
    status: modelimage.ModelImageStatus, spec: modelimage.ModelImageSpec, stage: Stage
) -> modelimage.StageInputs:
    """`status.stageInputs` with one stage's key updated to what it just ran with."""
    image_ids = status.image.image_ids if status.image else ()
    keys = stages.stage_keys(spec, image_ids=image_ids)
    return status.stage_inputs.model_copy(update={stage: getattr(keys, stage)})


def record(
    status: modelimage.ModelImageStatus,
    updates: Iterable[conditions.Condition],
    *,
    generation: int,
    phase: modelimage.Phase | None = None,
    fields: Mapping[str, Any] | None = None,
) -> modelimage.ModelImageStatus:
    """Status fields replaced, then conditions merged and the generation observed."""
    status = status.model_copy(update=dict(fields or {})).with_conditions(
        updates, generation=generation
    )
    update: dict[str, Any] = {"observed_generation": generation}
    if phase is not None:
        update["phase"] = phase
    return status.model_copy(update=update)
