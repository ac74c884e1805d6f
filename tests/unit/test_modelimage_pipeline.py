"""What a ModelImage needs next, decided from spec and status alone.

`World` plays the tools (hadolint, Docker, syft/grype, registry); what their answers mean for
status is recorded by `decisions.image_steps`, the same pure functions the runner calls, so
the tests read as the story of one ModelImage: it converges, rests, survives a restart, and
wakes up for exactly the changes that concern it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
from typing import Any

import pytest

from edgeferry.decisions import (
    image_steps,
    lint_verdict,
    pipeline,
    retries,
    scan_step,
    smoke_platforms,
    stages,
)
from edgeferry.decisions.pipeline import Step
from edgeferry.models import conditions, modelimage, vulnerabilities

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
INPUTS = "sha256:" + "1" * 64
OTHER_INPUTS = "sha256:" + "9" * 64
IMAGE_ID = "sha256:" + "2" * 64
DIGEST = "sha256:" + "3" * 64
DB = "6@2026-11-01T00:00:00+00:00/xxh64:aaaa"
BASE = "127.0.0.1:5000/base/python-sklearn@sha256:" + "b" * 64
HIGH = vulnerabilities.Finding(
    id="GHSA-xqr8-7jwr-rhp7",
    severity="High",
    package="certifi",
    installed="2022.12.7",
    fixed_in=("2023.7.22",),
    fix_state="fixed",
    aliases=("CVE-2023-37920",),
)


@dataclasses.dataclass(frozen=True)
class LintFinding:
    rule: str
    line: int
    level: str
    message: str


HADOLINT_ERROR = LintFinding("DL3006", 1, "error", "Always tag the version of an image")


def make_spec(**changes: Any) -> modelimage.ModelImageSpec:
    raw: dict[str, Any] = {
        "model": {
            "format": "sklearn",
            "source": {"configMap": {"name": "iris-model", "key": "model.pkl"}},
            "sha256": "a" * 64,
        },
        "build": {"runtime": {"template": "sklearn-http", "baseImage": BASE}},
        "smokeTest": {"predict": {"body": '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'}},
        "push": {"repository": "127.0.0.1:5000/models/iris", "tags": ["v1"]},
    }
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)
    return modelimage.parse_spec(raw)


def exception(expires: datetime.date, id_: str = "CVE-2023-37920") -> dict[str, str]:
    return {"id": id_, "reason": "not reachable", "expires": expires.isoformat()}


@dataclasses.dataclass
class World:
    """What the tools would report: hadolint, Docker, the smoke test, syft/grype, the registry."""

    lint_findings: list[Any] = dataclasses.field(default_factory=list)
    build_fails: bool = False
    smoke_passes: bool = True
    findings: list[vulnerabilities.Finding] = dataclasses.field(default_factory=list)
    image_id: str = IMAGE_ID
    """The first platform's image id; further platforms get ids derived from it."""
    db: str = DB
    now: datetime.datetime = NOW
    image_present: bool = False
    steps: list[Step] = dataclasses.field(default_factory=list)
    unavailable: dict[Step, str] = dataclasses.field(default_factory=dict)
    """Steps whose tool is down, with the passing reason the runner records for them."""

    def built(self, platforms: tuple[str, ...]) -> list[modelimage.PlatformImage]:
        """The images a build for these platforms produces."""
        images = [
            modelimage.PlatformImage(
                platform=platform, id=self.image_id[:-1] + str(n), size=1, layers=3
            )
            for n, platform in enumerate(platforms)
        ]
        images[0] = images[0].model_copy(update={"id": self.image_id})
        return images

    def run(
        self,
        plan: pipeline.Plan,
        spec: modelimage.ModelImageSpec,
        status: modelimage.ModelImageStatus,
        *,
        generation: int,
    ) -> modelimage.ModelImageStatus:
        """The tools' answer to the plan's step, recorded by `image_steps` as the runner does."""
        self.steps.append(plan.step)
        if plan.step in self.unavailable:
            return retries.retry_later(
                status,
                plan.step,
                reason=self.unavailable[plan.step],
                error=f"{plan.step.value}: connection refused",
                now=self.now,
                generation=generation,
            ).status
        return retries.finished(self._answer(plan, spec, status, generation=generation))

    def _answer(
        self,
        plan: pipeline.Plan,
        spec: modelimage.ModelImageSpec,
        status: modelimage.ModelImageStatus,
        *,
        generation: int,
    ) -> modelimage.ModelImageStatus:
        image = status.image
        if plan.step is Step.LINT:
            verdict = lint_verdict.decide(
                self.lint_findings, threshold=spec.lint.failure_threshold, ignore=spec.lint.ignore
            )
            return image_steps.linted(status, spec, verdict, generation=generation).status
        if plan.step is Step.BUILD:
            if self.build_fails:
                platform = spec.build.target_platforms[0]
                failed = image_steps.build_failed(
                    status,
                    platform=platform,
                    error="RUN failed",
                    log_tail=(),
                    generation=generation,
                )
                return failed.status
            self.image_present = True
            images = self.built(spec.build.target_platforms)
            done = image_steps.built(status, images, seconds=1.0, tag="t", generation=generation)
            return done.status
        if plan.step is Step.PULL:
            self.image_present = True
            return status
        assert image is not None
        if plan.step is Step.SMOKE_TEST:
            runs = smoke_platforms.plan(image, daemon_platform="linux/amd64", skip_emulated=False)
            skip = image_steps.smoke_test_skip(spec, runs, daemon_platform="linux/amd64")
            if skip is not None:
                return image_steps.smoke_test_skipped(
                    status, spec, skip, generation=generation
                ).status
            outcomes = [
                image_steps.SmokeOutcome(
                    run=run,
                    passed=self.smoke_passes,
                    reason="Passed" if self.smoke_passes else "HealthTimeout",
                    message="" if self.smoke_passes else "never healthy",
                )
                for run in (runs.runs if self.smoke_passes else runs.runs[:1])
            ]
            return image_steps.smoke_tested(status, spec, outcomes, generation=generation).status
        if plan.step in (Step.SCAN, Step.RESCAN):
            facts = scan_step.ScanFacts(
                findings_per_image=tuple(tuple(self.findings) for _ in image.platform_images),
                db_identity=self.db,
            )
            recorded, _ = scan_step.scanned(
                status, spec, facts, now=self.now, generation=generation
            )
            return recorded.status
        assert plan.step is Step.PUSH
        children = [child_digest(n, image) for n in range(len(image.platform_images))]
        pushed = image_steps.pushed(
            status, spec, digest=DIGEST, children=children, generation=generation
        )
        return pushed.status


def child_digest(n: int, image: modelimage.ImageStatus) -> str:
    """Platform `n`'s manifest digest: the pushed digest itself for one platform, else a child."""
    return DIGEST if len(image.platform_images) == 1 else DIGEST[:-1] + str(n)


def converge(
    spec: modelimage.ModelImageSpec,
    status: modelimage.ModelImageStatus,
    world: World,
    *,
    generation: int = 1,
    inputs_digest: str = INPUTS,
) -> tuple[modelimage.ModelImageStatus, pipeline.Plan]:
    """Reconcile until the pipeline rests; return the status and the resting plan."""
    for _ in range(20):
        plan = decide(spec, status, world, generation=generation, inputs_digest=inputs_digest)
        status = image_steps.starting(
            plan, status, inputs_digest=inputs_digest, generation=generation
        )
        if plan.step is Step.NONE:
            return status, plan
        status = world.run(plan, spec, status, generation=generation)
    raise AssertionError(f"no rest after 20 steps: {world.steps}")


def decide(
    spec: modelimage.ModelImageSpec,
    status: modelimage.ModelImageStatus,
    world: World,
    *,
    generation: int = 1,
    inputs_digest: str = INPUTS,
) -> pipeline.Plan:
    return pipeline.next_step(
        spec,
        status,
        generation=generation,
        inputs_digest=inputs_digest,
        now=world.now,
        scan_db_checksum=world.db,
        image_present=world.image_present,
    )


def stored(status: modelimage.ModelImageStatus) -> modelimage.ModelImageStatus:
    """The status as a restarted operator reads it back from the API server."""
    return modelimage.parse_status(json.loads(json.dumps(status.to_patch())))


def ready(world: World | None = None, **changes: Any) -> tuple[modelimage.ModelImageStatus, World]:
    world = world or World()
    status, plan = converge(make_spec(**changes), modelimage.ModelImageStatus(), world)
    assert plan.reason == "UpToDate", plan
    world.steps.clear()
    return status, world


# --- the first run ------------------------------------------------------------------------------


def test_a_new_model_image_starts_a_run_with_lint() -> None:
    plan = decide(make_spec(), modelimage.ModelImageStatus(), World())
    assert (plan.step, plan.reason, plan.new_run) == (Step.LINT, "NewInputs", True)
    assert plan.phase == "Linting"


def test_clean_image_goes_lint_build_smoke_scan_push_and_rests_ready() -> None:
    world = World()
    status, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)
    assert world.steps == [Step.LINT, Step.BUILD, Step.SMOKE_TEST, Step.SCAN, Step.PUSH]
    assert (plan.step, plan.reason, plan.phase) == (Step.NONE, "UpToDate", "Ready")
    assert status.image is not None and status.image.reference is not None
    assert plan.message == f"admitted and pushed as {status.image.reference}"
    for type_ in ("Linted", "Built", "SmokeTested", "Scanned", "Admitted", "Pushed", "Ready"):
        assert status.condition(type_) is not None, type_
        assert status.condition(type_).status == "True", type_  # type: ignore[union-attr]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        pipeline.next_step(
            make_spec(),
            modelimage.ModelImageStatus(),
            generation=1,
            inputs_digest=INPUTS,
            now=datetime.datetime(2026, 11, 27),
        )


# --- idempotency --------------------------------------------------------------------------------


def test_unchanged_inputs_need_no_rebuild_after_restart() -> None:
    status, world = ready()
    world.image_present = False  # a new operator pod on another node: the local daemon is empty
    plan = decide(make_spec(), stored(status), world)
    assert plan.step is Step.NONE and plan.reason == "UpToDate"


def test_a_converged_image_needs_nothing_on_the_next_reconcile() -> None:
    status, world = ready()
    assert converge(make_spec(), status, world)[1].reason == "UpToDate"
    assert world.steps == []


def test_changed_inputs_start_a_new_run_that_drops_the_old_results() -> None:
    status, world = ready()
    plan = decide(make_spec(), status, world, inputs_digest=OTHER_INPUTS)
    assert (plan.step, plan.reason, plan.new_run) == (Step.LINT, "InputsChanged", True)
    fresh = stages.begin_run(status, inputs_digest=OTHER_INPUTS)
    assert fresh.image is None and fresh.scan is None and fresh.lint is None
    assert fresh.stage_inputs == modelimage.StageInputs()
    assert {c.type for c in fresh.conditions} <= set(modelimage.SUMMARY_CONDITIONS)


def test_changed_inputs_rebuild_and_push_a_new_image() -> None:
    status, world = ready()
    world.image_id = "sha256:" + "4" * 64
    status, plan = converge(make_spec(), status, world, generation=2, inputs_digest=OTHER_INPUTS)
    assert world.steps == [Step.LINT, Step.BUILD, Step.SMOKE_TEST, Step.SCAN, Step.PUSH]
    assert status.inputs_digest == OTHER_INPUTS and plan.reason == "UpToDate"


# --- lint ---------------------------------------------------------------------------------------


def test_lint_failure_rests_until_the_spec_changes() -> None:
    world = World(lint_findings=[HADOLINT_ERROR])
    status, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)
    assert world.steps == [Step.LINT]
    assert (plan.reason, plan.phase) == ("LintFailed", "Failed")
    assert "DL3006" in plan.message
    assert decide(make_spec(), status, world, generation=2).step is Step.NONE


def test_lint_policy_change_lints_again_without_rebuilding() -> None:
    status, world = ready()
    spec = make_spec(lint={"failureThreshold": "warning"})
    status, plan = converge(spec, status, world, generation=2)
    assert world.steps == [Step.LINT] and plan.reason == "UpToDate"


def test_ignoring_the_failing_rule_lets_the_run_continue() -> None:
    world = World(lint_findings=[HADOLINT_ERROR])
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    _, plan = converge(make_spec(lint={"ignore": ["DL3006"]}), status, world, generation=2)
    assert plan.reason == "UpToDate"
    assert world.steps[1:3] == [Step.LINT, Step.BUILD]


# --- build --------------------------------------------------------------------------------------


def test_build_failure_rests_until_the_generation_changes() -> None:
    world = World(build_fails=True)
    status, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)
    assert (plan.reason, plan.phase) == ("BuildFailed", "Failed")
    assert plan.message == "linux/amd64: RUN failed; log tail:\n"
    assert decide(make_spec(), stored(status), world).step is Step.NONE


def test_failed_build_is_retried_after_a_spec_change() -> None:
    world = World(build_fails=True)
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    plan = decide(make_spec(), status, world, generation=2)
    assert (plan.step, plan.reason) == (Step.BUILD, "RetryBuild")


# --- smoke test ---------------------------------------------------------------------------------


def test_unhealthy_image_is_blocked_and_never_scanned_or_pushed() -> None:
    world = World(smoke_passes=False)
    status, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)
    assert world.steps == [Step.LINT, Step.BUILD, Step.SMOKE_TEST]
    assert (plan.reason, plan.phase) == ("SmokeTestFailed", "Blocked")
    assert status.condition("Admitted").status == "False"  # type: ignore[union-attr]


def test_smoke_test_passing_after_a_fix_restores_admission() -> None:
    world = World(smoke_passes=False)
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    world.smoke_passes = True
    status, plan = converge(make_spec(smokeTest__timeoutSeconds=120), status, world, generation=2)
    assert plan.reason == "UpToDate"
    assert status.condition("Admitted").status == "True"  # type: ignore[union-attr]


def test_disabled_smoke_test_is_recorded_as_skipped_once() -> None:
    world = World()
    status, plan = converge(
        make_spec(smokeTest={"enabled": False}), modelimage.ModelImageStatus(), world
    )
    assert plan.reason == "UpToDate"
    assert status.smoke_test is not None and status.smoke_test.result == "Skipped"
    assert world.steps.count(Step.SMOKE_TEST) == 1


def test_changing_the_smoke_test_runs_it_and_regates_without_rebuilding() -> None:
    status, world = ready()
    _, plan = converge(make_spec(smokeTest__timeoutSeconds=30), status, world, generation=2)
    assert world.steps == [Step.SMOKE_TEST, Step.SCAN] and plan.reason == "UpToDate"


# --- scan and gate ------------------------------------------------------------------------------


def test_vulnerable_image_is_blocked_and_never_pushed() -> None:
    world = World(findings=[HIGH])
    status, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)
    assert Step.PUSH not in world.steps
    assert (plan.reason, plan.phase) == ("Blocked", "Blocked")
    assert "GHSA-xqr8-7jwr-rhp7" in plan.message
    assert status.image is not None and status.image.digest is None


def test_new_exception_regates_without_rebuild_or_fresh_scan() -> None:
    world = World(findings=[HIGH])
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    world.steps.clear()
    spec = make_spec(scan={"exceptions": [exception(NOW.date() + datetime.timedelta(days=30))]})
    assert decide(spec, status, world, generation=2).reason == "ScanPolicyChanged"
    _, plan = converge(spec, status, world, generation=2)
    assert world.steps == [Step.SCAN, Step.PUSH] and plan.reason == "UpToDate"


def test_expired_exception_that_admitted_the_image_triggers_a_new_gate() -> None:
    expiry = NOW.date() + datetime.timedelta(days=2)
    world = World(findings=[HIGH])
    spec = make_spec(scan={"exceptions": [exception(expiry)], "rescanInterval": "168h"})
    status, _ = converge(spec, modelimage.ModelImageStatus(), world)
    world.now = NOW + datetime.timedelta(days=2)
    world.steps.clear()
    plan = decide(spec, status, world)
    assert (plan.step, plan.reason) == (Step.SCAN, "ExceptionExpired")
    status, plan = converge(spec, status, world)
    assert plan.reason == "Blocked"
    assert status.scan is not None and status.scan.expired_exceptions == ["CVE-2023-37920"]


def test_rest_rechecks_when_the_first_applied_exception_expires() -> None:
    expiry = NOW.date() + datetime.timedelta(days=1)
    world = World(findings=[HIGH])
    _, plan = converge(
        make_spec(scan={"exceptions": [exception(expiry)]}), modelimage.ModelImageStatus(), world
    )
    assert plan.recheck_after == datetime.timedelta(hours=12)


def test_rescan_is_due_when_the_interval_has_passed() -> None:
    status, world = ready()
    world.now = NOW + datetime.timedelta(hours=24)
    plan = decide(make_spec(), status, world)
    assert (plan.step, plan.reason) == (Step.RESCAN, "RescanDue")


def test_no_rescan_before_the_interval_has_passed() -> None:
    status, world = ready()
    world.now = NOW + datetime.timedelta(hours=23, minutes=59)
    plan = decide(make_spec(), status, world)
    assert plan.step is Step.NONE
    assert plan.recheck_after == datetime.timedelta(minutes=1)


def test_rescan_interval_comes_from_the_spec() -> None:
    status, world = ready(scan={"rescanInterval": "30m"})
    world.now = NOW + datetime.timedelta(minutes=30)
    assert decide(make_spec(scan={"rescanInterval": "30m"}), status, world).step is Step.RESCAN


def test_changing_only_the_rescan_interval_needs_no_scan() -> None:
    status, world = ready()
    assert decide(make_spec(scan={"rescanInterval": "48h"}), status, world, generation=2).step is (
        Step.NONE
    )


def test_rescan_when_the_vulnerability_database_changes() -> None:
    status, world = ready()
    world.db = "6@2026-11-27T00:00:00+00:00/xxh64:bbbb"
    plan = decide(make_spec(), status, world)
    assert (plan.step, plan.reason) == (Step.RESCAN, "ScanDatabaseChanged")


def test_unknown_database_checksum_triggers_no_rescan() -> None:
    status, _ = ready()
    plan = pipeline.next_step(
        make_spec(), status, generation=1, inputs_digest=INPUTS, now=NOW, scan_db_checksum=None
    )
    assert plan.step is Step.NONE


def test_rescan_finding_a_new_advisory_blocks_an_admitted_image() -> None:
    status, world = ready()
    world.now = NOW + datetime.timedelta(days=1)
    world.findings = [HIGH]
    world.image_present = True
    status, plan = converge(make_spec(), status, world)
    assert world.steps == [Step.RESCAN] and plan.reason == "Blocked"


def test_rescan_leaves_ready_alone_while_it_runs() -> None:
    plan = pipeline.Plan(Step.RESCAN, "RescanDue", "scan again")
    assert "Ready" not in {c.type for c in pipeline.progress_conditions(plan)}


# --- push ---------------------------------------------------------------------------------------


def test_new_tags_push_again_without_rescanning() -> None:
    status, world = ready()
    world.image_present = True
    spec = make_spec(push={"repository": "127.0.0.1:5000/models/iris", "tags": ["v1", "v2"]})
    plan = decide(spec, status, world, generation=2)
    assert (plan.step, plan.reason) == (Step.PUSH, "PushTargetChanged")


def test_push_failure_rests_until_the_generation_changes() -> None:
    status, world = ready()
    assert status.image is not None
    unpushed = status.image.model_copy(update={"digest": None})
    failed = status.model_copy(update={"image": unpushed}).with_conditions(
        [conditions.Condition("Pushed", "False", "PushFailed", "denied")], generation=1
    )
    plan = decide(make_spec(), failed, world)
    assert (plan.step, plan.reason, plan.message) == (Step.NONE, "PushFailed", "denied")
    assert decide(make_spec(), failed, world, generation=2).step is Step.PUSH


# --- the local image ----------------------------------------------------------------------------


def test_missing_local_image_is_pulled_back_when_it_was_pushed() -> None:
    status, world = ready()
    world.now = NOW + datetime.timedelta(days=1)
    world.image_present = False
    plan = decide(make_spec(), status, world)
    assert (plan.step, plan.reason) == (Step.PULL, "ImageMissing")
    assert status.image is not None and status.image.reference is not None
    assert status.image.reference in plan.message


def test_missing_local_image_is_rebuilt_when_it_was_never_pushed() -> None:
    world = World(findings=[HIGH])
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    world.now = NOW + datetime.timedelta(days=1)
    world.image_present = False
    plan = decide(make_spec(), status, world)
    assert (plan.step, plan.reason) == (Step.BUILD, "ImageMissing")


# --- keys and conditions ------------------------------------------------------------------------


def test_stage_keys_ignore_the_order_of_exceptions_and_tags() -> None:
    later = NOW.date() + datetime.timedelta(days=9)
    one = make_spec(
        scan={"exceptions": [exception(later, "CVE-1"), exception(later, "CVE-2")]},
        push={"repository": "127.0.0.1:5000/models/iris", "tags": ["a", "b"]},
    )
    two = make_spec(
        scan={"exceptions": [exception(later, "CVE-2"), exception(later, "CVE-1")]},
        push={"repository": "127.0.0.1:5000/models/iris", "tags": ["b", "a"]},
    )
    assert stages.stage_keys(one, image_ids=[IMAGE_ID]) == stages.stage_keys(
        two, image_ids=[IMAGE_ID]
    )


def test_stage_keys_of_smoke_test_and_push_follow_the_image() -> None:
    one = stages.stage_keys(make_spec(), image_ids=[IMAGE_ID])
    two = stages.stage_keys(make_spec(), image_ids=["sha256:" + "5" * 64])
    assert one.lint == two.lint
    assert one.smoke_test != two.smoke_test and one.scan != two.scan and one.push != two.push


def test_resting_ready_is_not_stalled() -> None:
    plan = pipeline.Plan(Step.NONE, "UpToDate", "admitted")
    found = {c.type: c.status for c in pipeline.progress_conditions(plan)}
    assert found == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


def test_resting_blocked_is_stalled_with_the_reason() -> None:
    plan = pipeline.Plan(Step.NONE, "Blocked", "1 finding blocks")
    found = {c.type: c for c in pipeline.progress_conditions(plan)}
    assert found["Ready"].status == "False" and found["Stalled"].status == "True"
    assert found["Stalled"].reason == "Blocked" and found["Stalled"].message == "1 finding blocks"


def test_working_is_reconciling_and_not_ready() -> None:
    plan = pipeline.Plan(Step.BUILD, "NotBuilt", "build the image")
    found = {c.type: c.status for c in pipeline.progress_conditions(plan)}
    assert found == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}


@pytest.mark.parametrize(
    ("step", "reason", "phase"),
    [
        (Step.LINT, "NotLinted", "Linting"),
        (Step.BUILD, "NotBuilt", "Building"),
        (Step.PULL, "ImageMissing", "Building"),
        (Step.SMOKE_TEST, "NotSmokeTested", "SmokeTesting"),
        (Step.SCAN, "NotScanned", "Scanning"),
        (Step.RESCAN, "RescanDue", "Scanning"),
        (Step.PUSH, "NotPushed", "Pushing"),
        (Step.NONE, "UpToDate", "Ready"),
        (Step.NONE, "Blocked", "Blocked"),
        (Step.NONE, "SmokeTestFailed", "Blocked"),
        (Step.NONE, "LintFailed", "Failed"),
        (Step.NONE, "PushFailed", "Failed"),
    ],
)
def test_phase_follows_the_step(step: Step, reason: str, phase: str) -> None:
    assert pipeline.Plan(step, reason, "").phase == phase


def test_a_new_advisory_revokes_admission_naming_it_in_the_condition_and_a_warning() -> None:
    status, world = ready()
    assert status.image is not None
    world.db = "6@2026-11-27T00:00:00+00:00/xxh64:bbbb"
    world.findings = [HIGH]
    facts = scan_step.ScanFacts(findings_per_image=((HIGH,),), db_identity=world.db)
    recorded, _ = scan_step.scanned(status, make_spec(), facts, now=NOW, generation=1)
    admitted = recorded.status.condition("Admitted")
    assert admitted is not None and admitted.status == "False"
    assert admitted.message.startswith("admission revoked")
    assert HIGH.id in admitted.message and HIGH.package in admitted.message
    assert "(high)" in admitted.message
    assert recorded.event is not None
    assert (recorded.event.type, recorded.event.reason) == ("Warning", "AdmissionRevoked")


def test_an_image_blocked_at_its_first_scan_is_not_a_revoked_admission() -> None:
    world = World()
    world.findings = [HIGH]
    _, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)
    assert plan.reason == "Blocked"
    assert not scan_step.revokes_admission(modelimage.ModelImageStatus(), admitted=False)


@pytest.mark.parametrize(
    ("seen", "current", "changed"),
    [
        (None, "6@2026-11-27/xxh64:aaaa", False),
        ("6@2026-11-27/xxh64:aaaa", "6@2026-11-27/xxh64:aaaa", False),
        ("6@2026-11-27/xxh64:aaaa", None, False),
        ("6@2026-11-27/xxh64:aaaa", "6@2026-12-02/xxh64:bbbb", True),
    ],
    ids=["first look", "same DB", "grype cannot say", "new DB"],
)
def test_the_db_watch_counts_a_change_only_between_two_known_databases(
    seen: str | None, current: str | None, changed: bool
) -> None:
    assert scan_step.db_changed(seen, current) is changed


def test_the_db_watch_updates_at_once_then_every_interval_and_never_when_updates_are_off() -> None:
    due = scan_step.db_update_due
    assert due(None, 100.0, every_seconds=3600, auto_update=True)
    assert not due(100.0, 3000.0, every_seconds=3600, auto_update=True)
    assert due(100.0, 3700.0, every_seconds=3600, auto_update=True)
    assert not due(None, 100.0, every_seconds=3600, auto_update=False)
