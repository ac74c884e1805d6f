"""What each pipeline stage ran with, and the status a new run starts from.

`status.stageInputs` holds, per stage, a digest of the spec sections (and image ids) the stage
last ran with; `pipeline.next_step` re-runs exactly the stages whose key changed. Kept apart
from `pipeline` so that the one file answering "what next?" stays short.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeferry.decisions import inputs
from edgeferry.models import modelimage


def stage_keys(
    spec: modelimage.ModelImageSpec, *, image_ids: Sequence[str]
) -> modelimage.StageInputs:
    """What each stage runs with, as digests to compare with `status.stageInputs`.

    `image_ids` are the local images of every platform (`ImageStatus.image_ids`): a rebuild of
    any one of them re-runs the smoke test, the scan and the push. One image is keyed by its id
    alone, as before multi-platform builds existed, so converged images do not re-run.
    """
    image: str | list[str] | None = (
        None if not image_ids else image_ids[0] if len(image_ids) == 1 else list(image_ids)
    )
    smoke = inputs.canonical_digest(
        {"smokeTest": spec.smoke_test.model_dump(by_alias=True, mode="json"), "image": image}
    )
    exceptions = sorted(
        (e.model_dump(by_alias=True, mode="json") for e in spec.scan.exceptions),
        key=lambda e: str(e["id"]),
    )
    scan = inputs.canonical_digest(
        {
            "failOn": spec.scan.fail_on,
            "onlyFixed": spec.scan.only_fixed,
            "exceptions": exceptions,
            "smokeTest": smoke,
        }
    )
    push = inputs.canonical_digest(
        {"repository": spec.push.repository, "tags": sorted(spec.push.tags), "image": image}
    )
    lint = inputs.canonical_digest({"lint": spec.lint.model_dump(by_alias=True, mode="json")})
    return modelimage.StageInputs(lint=lint, smoke_test=smoke, scan=scan, push=push)


def pullable(image: modelimage.ImageStatus) -> bool:
    """Whether every platform's image can be pulled back from the registry by digest.

    One platform pulls `image.reference`; several pull each platform's manifest digest (the
    index would give the daemon only its own platform).
    """
    if not image.reference:
        return False
    platforms = image.platform_images
    return len(platforms) == 1 or all(p.digest for p in platforms)


def begin_run(
    status: modelimage.ModelImageStatus, *, inputs_digest: str
) -> modelimage.ModelImageStatus:
    """The status for a new run: stage results and stage conditions of the old run removed."""
    return modelimage.ModelImageStatus(
        observed_generation=status.observed_generation,
        phase=status.phase,
        inputs_digest=inputs_digest,
        conditions=[c for c in status.conditions if c.type not in modelimage.STAGE_CONDITIONS],
    )
