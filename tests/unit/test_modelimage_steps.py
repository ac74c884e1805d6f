"""What a finished step means for a ModelImage (`decisions.image_steps`), one behaviour each.

The pipeline tests run these through whole lives of a ModelImage; here each judgement the
runner leaves to them is pinned directly: when the smoke test is skipped, that a failed smoke
test withdraws admission, when a scan may re-match the cached SBOM.
"""

from __future__ import annotations

from edgeferry.decisions import image_steps, pipeline, scan_step
from edgeferry.decisions.pipeline import Step
from edgeferry.models import modelimage, vulnerabilities
from tests.unit.test_modelimage_pipeline import DIGEST, IMAGE_ID, NOW, make_spec

ARM_ID = "sha256:" + "8" * 64
FINDING = vulnerabilities.Finding(id="CVE-1", severity="High", package="p", installed="1")


def image(*platforms: str) -> modelimage.ImageStatus:
    ids = [IMAGE_ID, ARM_ID]
    images = [modelimage.PlatformImage(platform=p, id=ids[n]) for n, p in enumerate(platforms)]
    first = images[0]
    return modelimage.ImageStatus(id=first.id, platform=first.platform, platforms=images)


def built(*platforms: str) -> modelimage.ModelImageStatus:
    return modelimage.ModelImageStatus(image=image(*platforms))


# --- smoke test ---------------------------------------------------------------------------------


def test_smoke_test_runs_the_host_platform_image() -> None:
    both = image("linux/arm64", "linux/amd64")
    assert image_steps.smoke_test_skip(make_spec(), both) is None
    target = image_steps.smoke_test_target(both)
    assert target is not None and target.platform == "linux/amd64"


def test_smoke_test_is_skipped_when_no_platform_runs_on_the_host() -> None:
    why = image_steps.smoke_test_skip(make_spec(), image("linux/arm64"))
    assert why == "image platform linux/arm64 cannot run on this linux/amd64 host"


def test_smoke_test_is_skipped_when_disabled() -> None:
    spec = make_spec(smokeTest={"enabled": False})
    assert image_steps.smoke_test_skip(spec, image("linux/amd64")) == (
        "spec.smokeTest.enabled is false"
    )


def test_a_skipped_smoke_test_counts_as_smoke_tested() -> None:
    spec = make_spec()
    recorded = image_steps.smoke_test_skipped(built("linux/arm64"), spec, "why", generation=3)
    tested = recorded.status.condition("SmokeTested")
    assert tested is not None and (tested.status, tested.reason) == ("True", "Skipped")
    assert recorded.status.smoke_test == modelimage.SmokeTestStatus(result="Skipped", message="why")
    assert recorded.status.stage_inputs.smoke_test is not None
    assert recorded.event is None


def test_a_failed_smoke_test_withdraws_admission_and_warns() -> None:
    outcome = image_steps.SmokeOutcome(
        passed=False, reason="HealthTimeout", message="never healthy", log_tail=("boom",)
    )
    recorded = image_steps.smoke_tested(built("linux/amd64"), make_spec(), outcome, generation=2)
    admitted = recorded.status.condition("Admitted")
    assert admitted is not None and (admitted.status, admitted.reason) == (
        "False",
        "SmokeTestFailed",
    )
    message = "never healthy; container log tail:\nboom"
    assert admitted.message == f"not admitted: the smoke test failed: {message}"
    tested = recorded.status.condition("SmokeTested")
    assert tested is not None and (tested.status, tested.reason) == ("False", "HealthTimeout")
    assert recorded.event == image_steps.Event("Warning", "SmokeTestFailed", message)
    assert recorded.status.smoke_test is not None
    assert recorded.status.smoke_test.result == "Failed"


def test_a_passed_smoke_test_leaves_admission_to_the_gate() -> None:
    outcome = image_steps.SmokeOutcome(
        passed=True, reason="Passed", message="", startup_ms=120, prediction_latency_ms=8
    )
    recorded = image_steps.smoke_tested(built("linux/amd64"), make_spec(), outcome, generation=1)
    assert recorded.status.condition("Admitted") is None and recorded.event is None
    tested = recorded.status.condition("SmokeTested")
    assert tested is not None
    assert tested.message == "healthy after 120 ms; prediction answered in 8 ms"


def test_a_passed_smoke_test_names_the_platforms_it_could_not_run() -> None:
    outcome = image_steps.SmokeOutcome(passed=True, reason="Passed", message="", startup_ms=5)
    status = built("linux/amd64", "linux/arm64")
    recorded = image_steps.smoke_tested(status, make_spec(), outcome, generation=1)
    assert recorded.status.smoke_test is not None
    assert recorded.status.smoke_test.message == (
        "smoke-tested linux/amd64 only; linux/arm64 cannot run on this linux/amd64 host and is "
        "not smoke-tested; healthy after 5 ms"
    )


# --- scan ---------------------------------------------------------------------------------------


def test_a_cached_sbom_is_rematched_unless_the_rescan_interval_passed() -> None:
    assert scan_step.reuses_sbom("ScanDatabaseChanged", cached=True)
    assert scan_step.reuses_sbom("ScanPolicyChanged", cached=True)
    assert not scan_step.reuses_sbom("RescanDue", cached=True)


def test_without_a_cached_sbom_the_image_is_catalogued() -> None:
    assert not scan_step.reuses_sbom("NotScanned", cached=False)


def test_scan_kind_says_why_the_scan_ran() -> None:
    assert scan_step.scan_kind(pipeline.Plan(Step.SCAN, "NotScanned", "")) == "build"
    assert scan_step.scan_kind(pipeline.Plan(Step.RESCAN, "RescanDue", "")) == "interval"
    changed = pipeline.Plan(Step.RESCAN, "ScanDatabaseChanged", "")
    assert scan_step.scan_kind(changed) == "dbchange"


def test_a_finding_in_any_platform_blocks_the_whole_image() -> None:
    facts = scan_step.ScanFacts(findings_per_image=((), (FINDING,)), grype_version="0.1")
    status = built("linux/amd64", "linux/arm64")
    recorded, decision = scan_step.scanned(status, make_spec(), facts, now=NOW, generation=1)
    assert not decision.admitted
    assert scan_step.blocked_by(recorded.status) == "VulnerabilitiesFound"
    assert recorded.event is not None and recorded.event.reason == "Blocked"
    assert recorded.status.scan is not None
    assert recorded.status.scan.image_ids == [IMAGE_ID, ARM_ID]


# --- build, pull, push --------------------------------------------------------------------------


def test_a_cut_build_log_keeps_the_platform_in_view() -> None:
    recorded = image_steps.build_failed(
        modelimage.ModelImageStatus(),
        platform="linux/arm64",
        error="RUN failed",
        log_tail=["x" * 200] * 15,
        generation=1,
    )
    built_ = recorded.status.condition("Built")
    assert built_ is not None and built_.message.startswith("linux/arm64: ...")
    assert len(built_.message) <= 1500


def test_several_platforms_are_pulled_back_by_their_manifest_digests() -> None:
    pushed = image("linux/amd64", "linux/arm64").model_copy(
        update={"repository": "r/iris", "digest": DIGEST}
    )
    platforms = [
        p.model_copy(update={"digest": f"sha256:{n}"}) for n, p in enumerate(pushed.platforms)
    ]
    pushed = pushed.model_copy(update={"platforms": platforms})
    assert image_steps.pull_references(pushed) == [
        ("r/iris@sha256:0", "linux/amd64"),
        ("r/iris@sha256:1", "linux/arm64"),
    ]
    assert image_steps.pushes_index(pushed)


def test_one_platform_is_pulled_and_pushed_as_a_plain_image() -> None:
    pushed = image("linux/amd64").model_copy(update={"repository": "r/iris", "digest": DIGEST})
    assert image_steps.pull_references(pushed) == [(f"r/iris@{DIGEST}", "linux/amd64")]
    assert not image_steps.pushes_index(pushed)
