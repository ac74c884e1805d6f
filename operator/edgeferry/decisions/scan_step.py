"""What a finished scan means: the gate's verdict on every platform's findings, as status.

The runner scans each platform's image (`adapters.scanner`) and hands the findings here; the
image is admitted or blocked as a whole, on the union of them (`gate.union`). Whether a scan
may re-match the cached SBOM is decided here too, so the runner never compares reasons.
"""

from __future__ import annotations

import dataclasses
import datetime

from edgeferry.decisions import gate, image_steps, pipeline
from edgeferry.models import conditions, modelimage, reasons, vulnerabilities


@dataclasses.dataclass(frozen=True)
class ScanFacts:
    """One scan of every platform's image: the findings per platform and what produced them."""

    findings_per_image: tuple[tuple[vulnerabilities.Finding, ...], ...]
    syft_version: str = ""
    grype_version: str = ""
    db_built: datetime.datetime | None = None
    db_identity: str | None = None


def reuses_sbom(trigger: str, *, cached: bool) -> bool:
    """Whether a scan may re-match the cached SBOM: yes, unless the rescan interval passed (a
    periodic rescan catalogues the image afresh, so syft's own fixes reach the verdict too)."""
    return cached and trigger != reasons.RESCAN_DUE


def db_changed(seen: str | None, current: str | None) -> bool:
    """Whether the DB watch saw the vulnerability DB change: both identities known and apart.

    The first look (nothing seen yet) is no change: every image's daemon reconciles when it
    starts anyway. An unknown identity (grype mid-import, no DB) is no change either; the watch
    keeps the last one it knew and compares with it once grype answers again.
    """
    return seen is not None and current is not None and seen != current


def db_update_due(
    last_update: float | None, now: float, *, every_seconds: float, auto_update: bool
) -> bool:
    """Whether the DB watch should ask grype for a newer DB now (monotonic seconds): only with
    updates on, and at most every `every_seconds` (the first look updates at once)."""
    if not auto_update:
        return False
    return last_update is None or now - last_update >= every_seconds


def scan_kind(plan: pipeline.Plan) -> str:
    """The `kind` label of the scans metric: `build`, `interval` or `dbchange`."""
    if plan.reason == reasons.SCAN_DATABASE_CHANGED:
        return "dbchange"
    return "interval" if plan.step is pipeline.Step.RESCAN else "build"


def scanned(
    status: modelimage.ModelImageStatus,
    spec: modelimage.ModelImageSpec,
    facts: ScanFacts,
    *,
    now: datetime.datetime,
    generation: int,
) -> tuple[image_steps.Recorded, gate.Decision]:
    """Gate the union of every platform's findings: the image is admitted or blocked whole."""
    image = status.image
    assert image is not None and image.id
    platforms = image.platform_images
    findings = gate.union(facts.findings_per_image)
    decision = gate.decide(
        findings,
        today=now.date(),
        fail_on=spec.scan.fail_on,
        only_fixed=spec.scan.only_fixed,
        exceptions=spec.scan.exceptions,
    )
    revoked = revokes_admission(status, admitted=decision.admitted)
    if revoked:
        built = facts.db_built.isoformat() if facts.db_built else "unknown"
        decision = dataclasses.replace(
            decision,
            condition=dataclasses.replace(
                decision.condition,
                message=f"admission revoked: a rescan against the vulnerability DB built "
                f"{built} blocks the pushed image {image.reference}; "
                f"{decision.condition.message}",
            ),
        )
    scan = modelimage.ScanStatus(
        syft_version=facts.syft_version or None,
        grype_version=facts.grype_version or None,
        db_built=facts.db_built,
        db_checksum=facts.db_identity,
        scanned_at=now.replace(microsecond=0),
        image_id=image.id,
        image_ids=[p.id for p in platforms],
        platforms=[p.platform for p in platforms],
        counts=decision.counts,
        blocking=list(decision.blocking),
        blocking_total=decision.blocking_total,
        excepted=list(decision.applied_exceptions),
        expired_exceptions=list(decision.expired_exceptions),
    )
    counts = decision.counts
    summary = conditions.Condition(
        reasons.SCANNED,
        "True",
        reasons.SCANNED,
        f"{len(findings)} findings: {counts.critical} critical, "
        f"{counts.high} high, {counts.medium} medium, {counts.low} low "
        f"(grype {scan.grype_version}; scanned "
        f"{', '.join(p.platform for p in platforms)})",
    )
    fields = {"scan": scan, "stage_inputs": image_steps.stage_inputs(status, spec, "scan")}
    recorded = image_steps.record(
        status, [summary, decision.condition], generation=generation, fields=fields
    )
    if decision.admitted:
        event = image_steps.Event(
            "Normal", reasons.ADMITTED_BY_GATE, decision.condition.message[:900]
        )
    else:
        reason = reasons.ADMISSION_REVOKED if revoked else reasons.BLOCKED_BY_GATE
        event = image_steps.Event("Warning", reason, decision.condition.message[:900])
    return image_steps.Recorded(recorded, event), decision


def revokes_admission(status: modelimage.ModelImageStatus, *, admitted: bool) -> bool:
    """Whether this verdict blocks an image that was admitted and pushed: what runs of it
    runs a digest the gate no longer vouches for (ModelDeployments follow `onBlocked`)."""
    was = status.condition(reasons.ADMITTED)
    pushed = status.image is not None and bool(status.image.reference)
    return not admitted and pushed and was is not None and was.status == "True"


def blocked_by(status: modelimage.ModelImageStatus) -> str:
    """The reason `Admitted` is False (`VulnerabilitiesFound`, `SmokeTestFailed`), else ""."""
    admitted = status.condition(reasons.ADMITTED)
    return admitted.reason if admitted is not None and admitted.status == "False" else ""
