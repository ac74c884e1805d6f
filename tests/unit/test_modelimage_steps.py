"""What a finished step means for a ModelImage (`decisions.image_steps`), one behaviour each.

The pipeline tests run these through whole lives of a ModelImage; here each judgement the
runner leaves to them is pinned directly: when the smoke test is skipped, that a failed smoke
test withdraws admission, when a scan may re-match the cached SBOM.
"""

from __future__ import annotations

from edgeferry.decisions import image_steps, pipeline, scan_step, smoke_platforms
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
AMD64 = "linux/amd64"
NATIVE = smoke_platforms.Run(AMD64, IMAGE_ID, emulated=False)
EMULATED = smoke_platforms.Run("linux/arm64", ARM_ID, emulated=True)


def plan(*platforms: str, daemon: str = AMD64, skip_emulated: bool = False) -> smoke_platforms.Plan:
    return smoke_platforms.plan(
        image(*platforms), daemon_platform=daemon, skip_emulated=skip_emulated
    )


def ran(
    run: smoke_platforms.Run,
    *,
    passed: bool = True,
    reason: str = "Passed",
    message: str = "",
    log_tail: tuple[str, ...] = (),
    startup_ms: float | None = 1150,
    prediction_latency_ms: float | None = 50,
) -> image_steps.SmokeOutcome:
    return image_steps.SmokeOutcome(
        run=run,
        passed=passed,
        reason=reason,
        message=message,
        log_tail=log_tail,
        startup_ms=startup_ms,
        prediction_latency_ms=prediction_latency_ms,
        prediction='{"predictions": [0]}' if passed else None,
    )


def smoke_tested(
    *outcomes: image_steps.SmokeOutcome, skipped: tuple[str, ...] = ()
) -> image_steps.Recorded:
    status = built(*(o.run.platform for o in outcomes), *skipped)
    return image_steps.smoke_tested(status, make_spec(), outcomes, skipped=skipped, generation=2)


def smoke_condition(recorded: image_steps.Recorded) -> tuple[str, str, str]:
    tested = recorded.status.condition("SmokeTested")
    assert tested is not None
    return tested.status, tested.reason, tested.message


def test_a_platform_other_than_the_daemons_is_emulated() -> None:
    assert smoke_platforms.emulated("linux/arm64", daemon_platform=AMD64)
    assert not smoke_platforms.emulated(AMD64, daemon_platform=AMD64)
    assert smoke_platforms.emulated(AMD64, daemon_platform="linux/arm64")


def test_every_platform_runs_its_own_image_native_first() -> None:
    # image() gives the first platform IMAGE_ID, the second ARM_ID
    assert plan("linux/arm64", AMD64).runs == (
        smoke_platforms.Run(AMD64, ARM_ID, emulated=False),
        smoke_platforms.Run("linux/arm64", IMAGE_ID, emulated=True),
    )


def test_on_an_arm64_daemon_amd64_is_the_emulated_one() -> None:
    runs = plan(AMD64, "linux/arm64", daemon="linux/arm64").runs
    assert [(r.platform, r.emulated) for r in runs] == [("linux/arm64", False), (AMD64, True)]
    assert runs[1].image_id == IMAGE_ID


def test_the_skip_setting_leaves_emulated_platforms_out() -> None:
    assert plan(AMD64, "linux/arm64", skip_emulated=True) == smoke_platforms.Plan(
        (NATIVE,), ("linux/arm64",)
    )


def test_an_arm64_only_image_is_smoke_tested_under_emulation() -> None:
    runs = plan("linux/arm64")
    assert image_steps.smoke_test_skip(make_spec(), runs, daemon_platform=AMD64) is None
    assert runs.runs == (smoke_platforms.Run("linux/arm64", IMAGE_ID, emulated=True),)


def test_smoke_test_is_skipped_when_every_platform_is_emulated_and_left_out() -> None:
    runs = plan("linux/arm64", skip_emulated=True)
    assert image_steps.smoke_test_skip(make_spec(), runs, daemon_platform=AMD64) == (
        "linux/arm64 is emulated on this linux/amd64 Docker daemon and "
        "EDGEFERRY_SKIP_EMULATED_SMOKE_TESTS is on"
    )


def test_smoke_test_is_skipped_when_disabled() -> None:
    spec = make_spec(smokeTest={"enabled": False})
    assert image_steps.smoke_test_skip(spec, plan(AMD64), daemon_platform=AMD64) == (
        "spec.smokeTest.enabled is false"
    )


def test_emulated_platforms_get_longer_deadlines() -> None:
    assert smoke_platforms.timeout_seconds(NATIVE, 60) == 60
    assert smoke_platforms.timeout_seconds(EMULATED, 60) == 60 * smoke_platforms.EMULATION_SLOWDOWN
    assert smoke_platforms.request_timeout_seconds(NATIVE) == 10
    assert smoke_platforms.request_timeout_seconds(EMULATED) == (
        10 * smoke_platforms.EMULATION_SLOWDOWN
    )


def test_a_skipped_smoke_test_counts_as_smoke_tested() -> None:
    spec = make_spec()
    recorded = image_steps.smoke_test_skipped(built("linux/arm64"), spec, "why", generation=3)
    tested = recorded.status.condition("SmokeTested")
    assert tested is not None and (tested.status, tested.reason) == ("True", "Skipped")
    assert recorded.status.smoke_test == modelimage.SmokeTestStatus(result="Skipped", message="why")
    assert recorded.status.stage_inputs.smoke_test is not None
    assert recorded.event is None


def test_a_passed_smoke_test_says_what_ran_on_each_platform() -> None:
    recorded = smoke_tested(ran(NATIVE), ran(EMULATED, startup_ms=9300, prediction_latency_ms=480))
    assert smoke_condition(recorded) == (
        "True",
        "Passed",
        "linux/amd64: prediction ok in 1.2 s; linux/arm64 (emulated): prediction ok in 9.8 s",
    )
    assert recorded.status.condition("Admitted") is None and recorded.event is None
    smoke = recorded.status.smoke_test
    assert smoke is not None and smoke.result == "Passed"
    assert (smoke.health_latency_ms, smoke.prediction_latency_ms) == (None, 50)


def test_a_smoke_test_without_prediction_says_healthy() -> None:
    recorded = smoke_tested(ran(NATIVE, prediction_latency_ms=None))
    assert smoke_condition(recorded)[2] == "linux/amd64: healthy in 1.1 s"


def test_emulated_platforms_left_out_are_named_as_not_run() -> None:
    recorded = smoke_tested(ran(NATIVE), skipped=("linux/arm64",))
    assert smoke_condition(recorded)[2] == (
        "linux/amd64: prediction ok in 1.2 s; "
        "linux/arm64 (emulated): not run (EDGEFERRY_SKIP_EMULATED_SMOKE_TESTS is on)"
    )


def test_a_failure_on_the_emulated_platform_fails_the_smoke_test_naming_it() -> None:
    failed = ran(
        EMULATED,
        passed=False,
        reason="ContainerExited",
        message="container exited with code 1 before /healthz answered",
        log_tail=("ModuleNotFoundError: No module named 'sklearn'",),
    )
    recorded = smoke_tested(ran(NATIVE), failed)
    message = (
        "linux/arm64 (emulated): container exited with code 1 before /healthz answered; "
        "linux/amd64: prediction ok in 1.2 s; container log tail (linux/arm64):\n"
        "ModuleNotFoundError: No module named 'sklearn'"
    )
    assert smoke_condition(recorded) == ("False", "ContainerExited", message)
    admitted = recorded.status.condition("Admitted")
    assert admitted is not None
    assert (admitted.status, admitted.reason) == ("False", "SmokeTestFailed")
    assert admitted.message == f"not admitted: the smoke test failed: {message}"
    assert recorded.event == image_steps.Event("Warning", "SmokeTestFailed", message)
    assert recorded.status.smoke_test is not None
    assert recorded.status.smoke_test.result == "Failed"


def test_a_failed_native_smoke_test_withdraws_admission_and_warns() -> None:
    failed = ran(
        NATIVE, passed=False, reason="HealthTimeout", message="never healthy", log_tail=("boom",)
    )
    recorded = smoke_tested(failed)
    message = "linux/amd64: never healthy; container log tail (linux/amd64):\nboom"
    assert smoke_condition(recorded) == ("False", "HealthTimeout", message)
    admitted = recorded.status.condition("Admitted")
    assert admitted is not None and admitted.reason == "SmokeTestFailed"


def test_exec_format_error_on_an_emulated_platform_says_emulation_is_missing() -> None:
    failed = ran(
        EMULATED,
        passed=False,
        reason="ContainerExited",
        message="container exited with code 1 before /healthz answered",
        log_tail=("exec /usr/bin/python3: exec format error",),
    )
    status, reason, message = smoke_condition(smoke_tested(ran(NATIVE), failed))
    assert (status, reason) == ("False", "EmulationMissing")
    assert message.startswith(
        "linux/arm64 (emulated): the Docker daemon cannot run linux/arm64 programs (exec format "
        "error): register qemu-user-static in binfmt_misc, with the F flag, on the daemon's "
        "host, or set EDGEFERRY_SKIP_EMULATED_SMOKE_TESTS=true"
    ), message


def test_exec_format_error_natively_is_the_images_own_failure() -> None:
    failed = ran(
        NATIVE,
        passed=False,
        reason="StartFailed",
        message="container did not start: exec format error",
    )
    assert smoke_condition(smoke_tested(failed))[1] == "StartFailed"


def test_a_long_log_keeps_the_failing_platform_and_the_logs_end() -> None:
    failed = ran(
        EMULATED,
        passed=False,
        reason="ContainerExited",
        message="container exited with code 1 " + "x" * 2000,
        log_tail=tuple(f"line {n} " + "y" * 200 for n in range(10)),
    )
    message = smoke_condition(smoke_tested(failed))[2]
    assert len(message) == 1200
    assert message.startswith("linux/arm64 (emulated): container exited with code 1 ")
    assert message.endswith("line 9 " + "y" * 200)
    assert "; container log tail (linux/arm64):\n" in message


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
