"""How a rollout moves: wave planning and the next actions of each reconcile."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from edgeferry.decisions import (
    rollout_events,
    rollout_status,
    rollout_types,
    target_verdict,
    wave_plan,
    waves,
)
from edgeferry.models import conditions, release
from edgeferry.models import modeldeployment as md

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
OLD = "registry.local:5000/models/iris@sha256:" + "0" * 64
NEW = "registry.local:5000/models/iris@sha256:" + "1" * 64
NEWER = "registry.local:5000/models/iris@sha256:" + "2" * 64


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def image(
    digest: str | None = NEW,
    *,
    admitted: bool = True,
    platforms: tuple[str, ...] = ("linux/amd64",),
    reason: str = "",
    message: str = "",
) -> rollout_types.Image:
    return rollout_types.Image(
        name="iris",
        admitted=admitted,
        digest=digest,
        platforms=platforms,
        reason=reason,
        message=message,
    )


def fresh(name: str, **kw: Any) -> rollout_types.TargetState:
    """A reachable amd64 target where nothing of ours runs yet."""
    kw.setdefault("architectures", ("amd64",))
    return rollout_types.TargetState(name=name, **kw)


def running(
    name: str,
    digest: str,
    *,
    available: bool = True,
    started: float = 600,
    ready: float | None = 300,
    previous: str | None = OLD,
    failing: bool = False,
    rolled_back_from: str | None = None,
    rolled_back_generation: int | None = None,
    **kw: Any,
) -> rollout_types.TargetState:
    """A reachable amd64 target running `digest` (by default Ready there long ago)."""
    record = release.TargetRecord(
        digest=digest,
        previous_digest=previous,
        started_at=ago(started),
        ready_at=ago(ready) if ready is not None else None,
        rolled_back_from=rolled_back_from,
        rolled_back_generation=rolled_back_generation,
        architectures=("amd64",),
        previous_architectures=("amd64",) if previous else (),
    )
    kw.setdefault("architectures", ("amd64",))
    return rollout_types.TargetState(
        name=name,
        record=record,
        available=available,
        ready_replicas=1 if available else 0,
        replicas=1,
        failing=failing,
        failure="CrashLoopBackOff: container model exited 1" if failing else None,
        **kw,
    )


def progressing(name: str, digest: str = NEW, **kw: Any) -> rollout_types.TargetState:
    """Written recently, not available yet."""
    kw.setdefault("started", 30)
    return running(name, digest, available=False, ready=None, **kw)


def offline(name: str, *, since: float = 10, **kw: Any) -> rollout_types.TargetState:
    return fresh(name, reachable=False, unreachable_since=ago(since), **kw)


def plan(
    targets: list[rollout_types.TargetState],
    *,
    img: rollout_types.Image | None = None,
    generation: int = 1,
    recorded: md.ModelDeploymentStatus | None = None,
    **rollout: Any,
) -> rollout_types.Plan:
    return waves.next_actions(
        targets,
        image=img or image(),
        rollout=md.RolloutStrategy(**rollout),
        generation=generation,
        now=NOW,
        recorded=recorded,
    )


def phases(p: rollout_types.Plan) -> dict[str, str]:
    return {t.name: t.phase for t in p.targets}


def written(p: rollout_types.Plan, reason: rollout_types.WriteReason = "rollout") -> list[str]:
    return [w.target for w in p.writes if w.reason == reason]


def write_to(p: rollout_types.Plan, target: str) -> rollout_types.Write:
    (found,) = [w for w in p.writes if w.target == target]
    return found


def condition(p: rollout_types.Plan, type_: str) -> conditions.Condition:
    (found,) = [c for c in p.conditions if c.type == type_]
    return found


def recorded_line(name: str, phase: md.TargetPhase, **kw: Any) -> md.TargetStatus:
    return md.TargetStatus(name=name, phase=phase, **kw)


# --- wave planning -------------------------------------------------------------------------------
def test_canary_wave_comes_first_then_waves_of_max_per_wave() -> None:
    planned = wave_plan.plan_waves(["a", "b", "c", "d", "e", "f"], canary=1, max_per_wave=2)
    assert planned == (("a",), ("b", "c"), ("d", "e"), ("f",))


def test_percent_wave_size_rounds_up_to_at_least_one() -> None:
    assert wave_plan.wave_size("50%", total=5) == 3
    assert wave_plan.wave_size("10%", total=3) == 1
    assert wave_plan.wave_size("1%", total=1) == 1
    assert wave_plan.wave_size("100%", total=7) == 7


def test_percent_is_of_all_planned_targets_including_the_canary() -> None:
    planned = wave_plan.plan_waves([f"t{i}" for i in range(10)], canary=1, max_per_wave="20%")
    assert [len(w) for w in planned] == [1, 2, 2, 2, 2, 1]


def test_targets_are_planned_in_name_order_whatever_the_input_order() -> None:
    planned = wave_plan.plan_waves(["c", "a", "b"], canary=1, max_per_wave=5)
    assert planned == (("a",), ("b", "c"))


def test_zero_canary_means_no_canary_wave() -> None:
    assert wave_plan.plan_waves(["a", "b", "c"], canary=0, max_per_wave=2) == (("a", "b"), ("c",))


def test_canary_larger_than_the_fleet_puts_everyone_in_one_wave() -> None:
    assert wave_plan.plan_waves(["a", "b"], canary=5, max_per_wave=1) == (("a", "b"),)


def test_no_targets_plan_no_waves() -> None:
    assert wave_plan.plan_waves([], canary=1, max_per_wave="50%") == ()


# --- starting a rollout --------------------------------------------------------------------------
def test_first_reconcile_writes_only_the_canary() -> None:
    p = plan([fresh("a"), fresh("b"), fresh("c")])
    assert written(p) == ["a"]
    assert phases(p) == {"a": "Progressing", "b": "Pending", "c": "Pending"}
    assert p.phase == "Progressing"
    assert p.current_wave == 1


def test_canary_write_carries_digest_deadline_clock_and_node_pin() -> None:
    p = plan([fresh("a")])
    assert write_to(p, "a").record == release.TargetRecord(
        digest=NEW, started_at=NOW, architectures=("amd64",)
    )


def test_a_new_rollout_announces_its_wave() -> None:
    p = plan([fresh("a"), fresh("b")])
    assert [(e.type, e.reason) for e in p.events] == [("Normal", "WaveStarted")]
    assert "wave 1/2" in p.events[0].message


# --- the health gate -----------------------------------------------------------------------------
def test_next_wave_waits_until_the_canary_is_available() -> None:
    p = plan([progressing("a"), fresh("b")])
    assert written(p) == []
    assert phases(p)["b"] == "Pending"


def test_next_wave_waits_until_canary_stayed_available_for_min_ready_seconds() -> None:
    canary = running("a", NEW, ready=None)
    recorded = md.ModelDeploymentStatus(
        digest=NEW,
        current_wave=1,
        targets=(recorded_line("a", "Progressing", available_since=ago(4)),),
    )
    p = plan([canary, fresh("b")], recorded=recorded, min_ready_seconds=10)
    assert written(p) == []
    assert phases(p)["a"] == "Progressing"
    assert p.recheck_after_seconds == 6


def test_available_target_starts_its_soak_timer_when_first_seen() -> None:
    p = plan([running("a", NEW, ready=None), fresh("b")], min_ready_seconds=10)
    (line,) = [t for t in p.targets if t.name == "a"]
    assert line.available_since == NOW
    assert line.phase == "Progressing"


def test_next_wave_starts_once_the_canary_stayed_available_for_min_ready_seconds() -> None:
    canary = running("a", NEW, ready=None)
    recorded = md.ModelDeploymentStatus(
        digest=NEW,
        current_wave=1,
        targets=(recorded_line("a", "Progressing", available_since=ago(10)),),
    )
    p = plan([canary, fresh("b"), fresh("c")], recorded=recorded, min_ready_seconds=10)
    assert phases(p)["a"] == "Ready"
    assert written(p) == ["b", "c"]
    assert p.current_wave == 2


def test_target_turning_ready_records_it_at_the_target() -> None:
    canary = running("a", NEW, ready=None)
    recorded = md.ModelDeploymentStatus(
        digest=NEW, targets=(recorded_line("a", "Progressing", available_since=ago(60)),)
    )
    p = plan([canary], recorded=recorded)
    maintain = write_to(p, "a")
    assert maintain.reason == "maintain"
    assert maintain.record.ready_at == NOW


def test_target_turning_ready_says_so_in_its_outcome() -> None:
    canary = running("a", NEW, ready=None)
    recorded = md.ModelDeploymentStatus(
        digest=NEW, targets=(recorded_line("a", "Progressing", available_since=ago(60)),)
    )
    (outcome,) = plan([canary], recorded=recorded).targets
    assert outcome.phase == "Ready"
    assert outcome.became_ready


def test_target_ready_before_did_not_just_become_ready() -> None:
    (outcome,) = plan([running("a", NEW, ready=60)]).targets
    assert outcome.phase == "Ready"
    assert not outcome.became_ready


def test_rolled_back_target_did_not_become_ready() -> None:
    p = plan([progressing("a", started=400, failing=True)], progress_deadline_seconds=300)
    (outcome,) = p.targets
    assert outcome.phase == "RolledBack"
    assert not outcome.became_ready


def test_ready_recorded_at_the_target_survives_an_operator_restart() -> None:
    p = plan([running("a", NEW, ready=60), fresh("b")], recorded=None)
    assert phases(p)["a"] == "Ready"
    assert written(p) == ["b"]


def test_waves_complete_in_order_until_the_deployment_is_ready() -> None:
    targets = [running(n, NEW) for n in ("a", "b", "c")]
    p = plan(targets, canary=1, max_per_wave=1)
    assert p.phase == "Ready"
    assert p.current_wave == 3
    assert condition(p, "Ready").status == "True"
    assert condition(p, "Progressing").status == "False"
    assert condition(p, "Reconciling").status == "False"
    assert condition(p, "Stalled").status == "False"


# --- failure and rollback ------------------------------------------------------------------------
def test_canary_wave_failure_rolls_back_and_stops_later_waves() -> None:
    canary = progressing("a", started=200, failing=True)
    p = plan([canary, fresh("b"), fresh("c")], progress_deadline_seconds=120)
    rollback = write_to(p, "a")
    assert rollback.reason == "rollback"
    assert rollback.record.digest == OLD
    assert rollback.record.rolled_back_from == NEW
    assert written(p) == []
    assert phases(p) == {"a": "RolledBack", "b": "Pending", "c": "Pending"}
    assert p.phase == "Degraded"


def test_halted_rollout_explains_itself_in_degraded_and_stalled_conditions() -> None:
    canary = progressing("a", started=200, failing=True)
    p = plan([canary, fresh("b")], progress_deadline_seconds=120)
    degraded = condition(p, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "RolloutHalted")
    assert "CrashLoopBackOff" in degraded.message
    assert "later waves" in degraded.message
    assert condition(p, "Stalled").status == "True"
    assert condition(p, "Ready").status == "False"
    assert ("Warning", "RolledBack") in [(e.type, e.reason) for e in p.events]


def test_rolled_back_target_is_not_retried_with_the_same_digest() -> None:
    canary = running("a", OLD, rolled_back_from=NEW, rolled_back_generation=1)
    p = plan([canary, fresh("b")], generation=1)
    assert phases(p) == {"a": "RolledBack", "b": "Pending"}
    assert written(p) == []
    assert p.phase == "Degraded"


def test_spec_change_after_a_rollback_allows_a_retry() -> None:
    canary = running("a", OLD, rolled_back_from=NEW, rolled_back_generation=1)
    p = plan([canary, fresh("b")], generation=2)
    assert written(p) == ["a"]
    assert write_to(p, "a").record.rolled_back_from is None


def test_new_digest_after_a_rollback_starts_a_new_rollout() -> None:
    canary = running("a", OLD, rolled_back_from=NEW, rolled_back_generation=1)
    p = plan([canary, fresh("b")], img=image(NEWER))
    assert written(p) == ["a"]
    assert p.phase == "Progressing"


def test_failing_pods_within_the_deadline_are_waited_for() -> None:
    p = plan([progressing("a", started=30, failing=True)], progress_deadline_seconds=120)
    assert written(p, "rollback") == []
    assert phases(p)["a"] == "Progressing"
    (line,) = p.targets
    assert line.error is not None and "CrashLoopBackOff" in line.error


def test_crashing_pods_fail_the_canary_long_before_the_deadline() -> None:
    canary = progressing("a", started=20, failing=True, crashing=True)
    p = plan([canary, fresh("b")], progress_deadline_seconds=300)
    assert write_to(p, "a").reason == "rollback"
    assert phases(p) == {"a": "RolledBack", "b": "Pending"}
    assert p.phase == "Degraded"
    (line,) = [t for t in p.targets if t.name == "a"]
    assert line.message is not None and "before its 300s progress deadline" in line.message


def rolled_back_round(p: rollout_types.Plan, target: str) -> rollout_types.TargetState:
    """`target` in the next round: Ready on the release its rollback wrote, with the record as
    read back from its Deployment's annotations."""
    record = release.record_from_annotations(release.record_annotations(write_to(p, target).record))
    assert record is not None
    return dataclasses.replace(running(target, OLD), record=record)


def test_a_target_that_stays_rolled_back_keeps_saying_why() -> None:
    canary = progressing("a", started=20, failing=True, crashing=True)
    rollback = plan([canary, fresh("b")], progress_deadline_seconds=300)
    (first,) = [t for t in rollback.targets if t.name == "a"]
    why = write_to(rollback, "a").record.rolled_back_because
    assert why is not None and "before its 300s progress deadline" in why
    assert first.message is not None and first.message.startswith(why)

    later = plan([rolled_back_round(rollback, "a"), fresh("b")], progress_deadline_seconds=300)
    (line,) = [t for t in later.targets if t.name == "a"]
    assert (line.phase, written(later, "rollback")) == ("RolledBack", [])
    assert line.message is not None and line.message.startswith(why + "; rolled back from ")
    assert "publish a fixed image" in line.message


def test_a_rollback_recorded_without_its_reason_gives_the_line_without_it() -> None:
    canary = running("a", OLD, rolled_back_from=NEW, rolled_back_generation=1)
    (line, _) = plan([canary, fresh("b")]).targets
    assert line.message is not None and line.message.startswith("rolled back from ")


def test_a_stuck_container_fails_the_target_after_the_grace_not_before() -> None:
    grace = target_verdict.STUCK_GRACE_SECONDS
    early = plan([progressing("a", started=grace - 10, failing=True, stuck=True)])
    assert written(early, "rollback") == []
    assert phases(early)["a"] == "Progressing"
    assert early.recheck_after_seconds == 10
    late = plan([progressing("a", started=grace + 1, failing=True, stuck=True)])
    assert write_to(late, "a").reason == "rollback"
    assert phases(late)["a"] == "RolledBack"


def test_an_early_failure_without_auto_rollback_stays_failed() -> None:
    canary = progressing("a", started=5, failing=True, crashing=True)
    p = plan([canary], auto_rollback=False)
    assert written(p, "rollback") == []
    assert phases(p)["a"] == "Failed"


def test_slow_target_past_the_deadline_without_failing_pods_keeps_waiting() -> None:
    p = plan([progressing("a", started=500, failing=False)], progress_deadline_seconds=120)
    assert written(p, "rollback") == []
    assert phases(p)["a"] == "Progressing"


def test_failure_without_an_earlier_digest_is_failed_not_rolled_back() -> None:
    canary = progressing("a", started=200, failing=True, previous=None)
    p = plan([canary, fresh("b")], progress_deadline_seconds=120)
    assert phases(p)["a"] == "Failed"
    assert written(p, "rollback") == []
    assert p.phase == "Degraded"


def test_failure_with_auto_rollback_off_stays_failed_on_the_new_digest() -> None:
    canary = progressing("a", started=200, failing=True)
    p = plan([canary, fresh("b")], progress_deadline_seconds=120, auto_rollback=False)
    assert phases(p)["a"] == "Failed"
    assert written(p, "rollback") == []
    assert write_to(p, "a").record.digest == NEW


def test_failures_within_max_failures_let_the_rollout_continue() -> None:
    targets = [
        progressing("a", started=200, failing=True),
        running("b", NEW),
        fresh("c"),
        fresh("d"),
    ]
    p = plan(targets, canary=0, max_per_wave=2, max_failures=1, progress_deadline_seconds=120)
    assert written(p, "rollback") == ["a"]
    assert written(p) == ["c", "d"]
    assert p.phase == "Progressing"
    assert (condition(p, "Degraded").status, condition(p, "Degraded").reason) == (
        "True",
        "TargetsFailed",
    )


def test_one_failure_more_than_max_failures_halts_the_rollout() -> None:
    targets = [
        progressing("a", started=200, failing=True),
        progressing("b", started=200, failing=True),
        fresh("c"),
    ]
    p = plan(targets, canary=0, max_per_wave=2, max_failures=1, progress_deadline_seconds=120)
    assert written(p, "rollback") == ["a", "b"]
    assert written(p) == []
    assert p.phase == "Degraded"


def test_rollout_finishing_with_tolerated_failures_is_degraded_not_ready() -> None:
    targets = [running("a", OLD, rolled_back_from=NEW, rolled_back_generation=1), running("b", NEW)]
    p = plan(targets, canary=0, max_per_wave=2, max_failures=1)
    assert p.phase == "Degraded"
    assert condition(p, "Stalled").status == "False"


def test_rollback_restores_the_node_pin_of_the_previous_digest() -> None:
    canary = progressing("a", started=200, failing=True)
    p = plan([canary], progress_deadline_seconds=120)
    assert write_to(p, "a").record.architectures == ("amd64",)


def test_target_proven_ready_is_never_rolled_back_when_it_breaks_later() -> None:
    broken = running("a", NEW, available=False, ready=3000, started=4000, failing=True)
    p = plan([broken], progress_deadline_seconds=120)
    assert written(p, "rollback") == []
    assert phases(p)["a"] == "Progressing"


def test_broken_target_of_a_finished_wave_does_not_hold_later_waves() -> None:
    broken = running("a", NEW, available=False, ready=3000, started=4000, failing=True)
    p = plan([broken, fresh("b")])
    assert written(p) == ["b"]


def test_unreachable_target_last_seen_rolled_back_keeps_the_rollout_halted() -> None:
    recorded = md.ModelDeploymentStatus(
        digest=NEW,
        targets=(recorded_line("a", "RolledBack", digest=OLD, last_error="CrashLoopBackOff"),),
    )
    p = plan([offline("a"), fresh("b")], recorded=recorded)
    assert phases(p)["a"] == "RolledBack"
    assert written(p) == []
    assert p.phase == "Degraded"


# --- offline targets -----------------------------------------------------------------------------
def test_offline_target_is_deferred_not_failed() -> None:
    p = plan([offline("a", since=600), fresh("b")])
    assert phases(p)["a"] == "Deferred"
    assert condition(p, "Degraded").status == "False"
    assert p.phase == "Progressing"


def test_offline_target_holds_its_wave_only_for_the_grace_period() -> None:
    holding = plan(
        [running("a", NEW), offline("b", since=10), fresh("c")],
        canary=0,
        max_per_wave=2,
        offline_grace_seconds=60,
    )
    assert written(holding) == []
    assert holding.recheck_after_seconds == 50
    released = plan(
        [running("a", NEW), offline("b", since=61), fresh("c")],
        canary=0,
        max_per_wave=2,
        offline_grace_seconds=60,
    )
    assert written(released) == ["c"]
    assert phases(released)["b"] == "Deferred"


def test_offline_target_gets_no_write() -> None:
    p = plan([offline("a", since=600)])
    assert p.writes == ()


def test_offline_target_catches_up_when_back() -> None:
    targets = [running("a", NEW), fresh("b"), progressing("c")]
    p = plan(targets, canary=0, max_per_wave=2)
    assert written(p) == ["b"]
    assert [e.reason for e in p.events] == ["CatchingUp"]


def test_wave_with_an_offline_member_is_still_announced_as_started() -> None:
    p = plan([running("a", NEW), offline("b", since=600), fresh("c")], max_per_wave=2)
    assert written(p) == ["c"]
    assert [e.reason for e in p.events] == ["WaveStarted", "TargetDeferred"]


def test_rollout_waiting_only_for_offline_targets_says_so() -> None:
    p = plan([running("a", NEW), offline("b", since=600)])
    assert p.phase == "Progressing"
    assert condition(p, "Progressing").reason == "WaitingForDeferredTargets"
    assert "b" in p.message


def test_offline_target_last_seen_running_the_digest_lets_the_deployment_be_ready() -> None:
    line = recorded_line("b", "Ready", digest=NEW, available_since=ago(900))
    recorded = md.ModelDeploymentStatus(digest=NEW, targets=(line,))
    p = plan([running("a", NEW), offline("b", since=600)], recorded=recorded)
    assert phases(p)["b"] == "Deferred"
    assert p.phase == "Ready"
    (again,) = [t for t in p.targets if t.name == "b"]
    assert again.available_since == ago(900)


def test_offline_target_lost_while_progressing_keeps_the_deployment_progressing() -> None:
    line = recorded_line("b", "Progressing", digest=NEW)
    recorded = md.ModelDeploymentStatus(digest=NEW, targets=(line,))
    p = plan([running("a", NEW), offline("b", since=600)], recorded=recorded)
    assert p.phase == "Progressing"


def test_target_never_probed_is_deferred_until_its_architectures_are_known() -> None:
    p = plan([fresh("a", architectures=())])
    assert phases(p)["a"] == "Deferred"
    assert written(p) == []
    (line,) = p.targets
    assert line.error is not None and "probe" in line.error


def test_offline_target_without_a_known_start_does_not_hold_its_wave() -> None:
    p = plan([fresh("a", reachable=False), fresh("b")])
    assert written(p) == ["b"]


# --- architectures -------------------------------------------------------------------------------
def test_incompatible_target_is_never_attempted() -> None:
    p = plan([fresh("a", architectures=("amd64",))], img=image(platforms=("linux/arm64",)))
    assert phases(p)["a"] == "Incompatible"
    assert p.writes == ()
    (line,) = p.targets
    assert line.wave is None
    assert line.message is not None and "linux/arm64" in line.message and "amd64" in line.message


def test_incompatible_targets_do_not_take_the_canary_slot() -> None:
    targets = [fresh("a", architectures=("amd64",)), fresh("b", architectures=("arm64",))]
    p = plan(targets, img=image(platforms=("linux/arm64",)))
    assert written(p) == ["b"]


def test_incompatible_targets_do_not_keep_the_rest_from_ready() -> None:
    targets = [fresh("a", architectures=("amd64",)), running("b", NEW, architectures=("arm64",))]
    p = plan(targets, img=image(platforms=("linux/arm64",)))
    assert p.phase == "Ready"
    assert "a" in condition(p, "Ready").message


def test_no_compatible_target_at_all_is_degraded_and_stalled() -> None:
    p = plan([fresh("a", architectures=("amd64",))], img=image(platforms=("linux/arm64",)))
    assert p.phase == "Degraded"
    assert condition(p, "Stalled").reason == "NoCompatibleTargets"


def test_write_pins_the_nodes_to_the_matching_architecture() -> None:
    mixed = fresh("a", architectures=("amd64", "arm64"))
    p = plan([mixed], img=image(platforms=("linux/arm64",)))
    assert write_to(p, "a").record.architectures == ("arm64",)


# --- pause ---------------------------------------------------------------------------------------
def test_paused_rollout_starts_nothing_new() -> None:
    p = plan([running("a", NEW), fresh("b")], paused=True)
    assert p.writes == ()
    assert p.phase == "Paused"
    assert phases(p)["b"] == "Pending"
    assert "paused" in p.message


def test_paused_rollout_does_not_roll_back_but_reports_the_failure() -> None:
    canary = progressing("a", started=200, failing=True)
    p = plan([canary, fresh("b")], paused=True, progress_deadline_seconds=120)
    assert p.writes == ()
    assert phases(p)["a"] == "Failed"
    assert p.phase == "Degraded"


def test_paused_rollout_with_nothing_left_to_do_is_ready() -> None:
    p = plan([running("a", NEW)], paused=True)
    assert p.phase == "Ready"


# --- blocked images ------------------------------------------------------------------------------
def test_blocked_image_writes_nothing_and_targets_keep_their_digest() -> None:
    blocked = image(NEWER, admitted=False, reason="VulnerabilitiesFound", message="2 critical")
    p = plan([running("a", NEW), fresh("b"), offline("c")], img=blocked)
    assert p.writes == ()
    assert p.phase == "Blocked"
    assert {t.name: t.digest for t in p.targets}["a"] == NEW
    assert phases(p) == {"a": "Ready", "b": "Pending", "c": "Deferred"}


def test_blocked_image_sets_blocked_and_stalled_with_the_gate_reason() -> None:
    blocked = image(None, admitted=False, reason="VulnerabilitiesFound", message="2 critical")
    p = plan([fresh("a")], img=blocked)
    assert (condition(p, "Blocked").status, condition(p, "Blocked").reason) == (
        "True",
        "VulnerabilitiesFound",
    )
    assert "2 critical" in condition(p, "Blocked").message
    assert condition(p, "Stalled").status == "True"
    assert condition(p, "Ready").status == "False"
    assert p.digest is None


def test_blocked_event_is_emitted_once() -> None:
    blocked = image(None, admitted=False)
    first = plan([fresh("a")], img=blocked)
    again = plan([fresh("a")], img=blocked, recorded=md.ModelDeploymentStatus(phase="Blocked"))
    assert [e.reason for e in first.events] == ["ImageBlocked"]
    assert again.events == ()


# --- digest changes ------------------------------------------------------------------------------
def test_new_digest_mid_rollout_starts_over_from_wave_one() -> None:
    targets = [running("a", NEW), progressing("b"), running("c", OLD, previous=None)]
    p = plan(targets, img=image(NEWER), canary=1, max_per_wave=1)
    assert written(p) == ["a"]
    assert p.current_wave == 1
    assert phases(p) == {"a": "Progressing", "b": "Pending", "c": "Pending"}


def test_targets_already_on_the_new_digest_stay_and_count() -> None:
    targets = [fresh("a"), fresh("b"), running("c", NEW)]
    p = plan(targets, canary=1, max_per_wave=1)
    assert written(p) == ["a"]
    assert phases(p)["c"] == "Ready"
    assert write_to(p, "c").reason == "maintain"


def test_previous_digest_is_the_last_one_proven_at_the_target() -> None:
    half_done = progressing("a", NEW, previous=OLD)
    p = plan([half_done], img=image(NEWER))
    assert write_to(p, "a").record.previous_digest == OLD
    proven = running("a", NEW, ready=None)
    p = plan([proven], img=image(NEWER))
    assert write_to(p, "a").record.previous_digest == NEW


# --- drift and housekeeping ----------------------------------------------------------------------
def test_reachable_targets_get_a_maintain_write_to_correct_drift() -> None:
    p = plan([fresh("a"), running("b", OLD, previous=None)])
    maintain = write_to(p, "b")
    assert maintain.reason == "maintain"
    assert maintain.record.digest == OLD


def test_selector_matching_nothing_is_stalled_not_ready_with_a_hint() -> None:
    p = plan([])
    assert p.phase == "Degraded"
    ready = condition(p, "Ready")
    assert (ready.status, ready.reason) == ("False", "NoTargetsSelected")
    stalled = condition(p, "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "NoTargetsSelected")
    assert condition(p, "Degraded").status == "False"
    assert "selector" in p.message


def test_completion_event_only_when_the_phase_changes() -> None:
    first = plan([running("a", NEW)], recorded=md.ModelDeploymentStatus(digest=NEW))
    again = plan([running("a", NEW)], recorded=md.ModelDeploymentStatus(digest=NEW, phase="Ready"))
    assert [e.reason for e in first.events] == ["RolloutComplete"]
    assert again.events == ()


def test_wave_success_is_announced_when_the_next_wave_starts() -> None:
    recorded = md.ModelDeploymentStatus(digest=NEW, current_wave=1, phase="Progressing")
    p = plan([running("a", NEW), fresh("b")], recorded=recorded)
    assert [e.reason for e in p.events] == ["WaveSucceeded", "WaveStarted"]


def test_phase_keeps_its_transition_time_while_unchanged() -> None:
    recorded = md.ModelDeploymentStatus(
        digest=NEW, targets=(recorded_line("b", "Pending", last_transition_time=ago(90)),)
    )
    p = plan([progressing("a"), fresh("b")], recorded=recorded)
    times = {t.name: t.last_transition_time for t in p.targets}
    assert times == {"a": NOW, "b": ago(90)}


def test_recheck_is_the_soonest_timer() -> None:
    recorded = md.ModelDeploymentStatus(
        digest=NEW, targets=(recorded_line("a", "Progressing", available_since=ago(7)),)
    )
    targets = [running("a", NEW, ready=None), progressing("b", started=100)]
    p = plan(targets, recorded=recorded, canary=0, min_ready_seconds=10)
    assert p.recheck_after_seconds == 3


# --- whole rollouts, reconcile after reconcile ---------------------------------------------------
def simulate(
    names: list[str],
    *,
    desired: str,
    bad: frozenset[str] = frozenset(),
    offline_names: frozenset[str] = frozenset(),
    steps: int = 30,
    **rollout: Any,
) -> tuple[list[list[str]], rollout_types.Plan, dict[str, release.TargetRecord]]:
    """Reconcile every 15 s against a fake fleet; a written digest is available (or failing,
    for digests in `bad`) one reconcile later. Returns the rollout writes per reconcile."""
    records: dict[str, release.TargetRecord] = {
        n: release.TargetRecord(digest=OLD, ready_at=ago(9999), architectures=("amd64",))
        for n in names
    }
    written_at: dict[str, dt.datetime] = {}
    status: md.ModelDeploymentStatus | None = None
    history: list[list[str]] = []
    now = NOW
    p: rollout_types.Plan | None = None
    for _ in range(steps):
        states = []
        for n in names:
            r = records[n]
            settled = n in written_at and written_at[n] < now
            is_bad = r.digest in bad
            states.append(
                rollout_types.TargetState(
                    name=n,
                    reachable=n not in offline_names,
                    unreachable_since=NOW - dt.timedelta(hours=1),
                    architectures=("amd64",),
                    record=r if n not in offline_names else None,
                    available=(settled or n not in written_at) and not is_bad,
                    failing=settled and is_bad,
                    failure="CrashLoopBackOff" if is_bad else None,
                    replicas=1,
                )
            )
        p = waves.next_actions(
            states,
            image=image(desired),
            rollout=md.RolloutStrategy(**rollout),
            generation=1,
            now=now,
            recorded=status,
        )
        status = rollout_status.build(p, generation=1, now=now)
        history.append([w.target for w in p.writes if w.reason == "rollout"])
        for w in p.writes:
            if w.record != records[w.target]:
                if w.record.digest != records[w.target].digest:
                    written_at[w.target] = now
                records[w.target] = w.record
        now += dt.timedelta(seconds=15)
    assert p is not None
    return [h for h in history if h], p, records


def test_rollout_reaches_every_target_wave_by_wave() -> None:
    names = [f"site-{i}" for i in range(7)]
    history, final, records = simulate(names, desired=NEW, canary=1, max_per_wave=3)
    assert history == [["site-0"], ["site-1", "site-2", "site-3"], ["site-4", "site-5", "site-6"]]
    assert final.phase == "Ready"
    assert all(r.digest == NEW and r.previous_digest == OLD for r in records.values())


def test_bad_digest_is_contained_to_the_canary_and_rolled_back() -> None:
    names = [f"site-{i}" for i in range(5)]
    history, final, records = simulate(
        names, desired=NEW, bad=frozenset({NEW}), progress_deadline_seconds=60
    )
    assert history == [["site-0"]]
    assert final.phase == "Degraded"
    assert {n: r.digest for n, r in records.items()} == dict.fromkeys(names, OLD)
    assert records["site-0"].rolled_back_from == NEW


def test_offline_site_is_left_behind_without_stopping_the_others() -> None:
    names = [f"site-{i}" for i in range(4)]
    history, final, records = simulate(
        names, desired=NEW, offline_names=frozenset({"site-1"}), canary=1, max_per_wave=2
    )
    assert history == [["site-0"], ["site-2"], ["site-3"]]
    assert {t.name: t.phase for t in final.targets}["site-1"] == "Deferred"
    assert final.phase == "Progressing"
    assert records["site-1"].digest == OLD


# --- the pod template is half of a release -------------------------------------------------------
T1 = '{"port":8080}'
T2 = '{"env":[{"name":"MODE","value":"fast"}],"port":8080}'


def with_template(
    state: rollout_types.TargetState, template: str | None, previous: str | None = None
) -> rollout_types.TargetState:
    assert state.record is not None
    record = dataclasses.replace(state.record, template=template, previous_template=previous)
    return dataclasses.replace(state, record=record)


def template_plan(
    targets: list[rollout_types.TargetState], template: str, **kw: Any
) -> rollout_types.Plan:
    rollout = {"canary": 1, "max_per_wave": 1, **kw.pop("rollout", {})}
    return waves.next_actions(
        targets,
        image=kw.pop("img", image()),
        rollout=md.RolloutStrategy(**rollout),
        generation=kw.pop("generation", 2),
        now=NOW,
        recorded=kw.pop("recorded", None),
        template=template,
    )


def test_a_template_edit_alone_is_rolled_out_in_waves() -> None:
    targets = [with_template(running(n, NEW), T1) for n in ("a", "b", "c")]
    p = template_plan(targets, T2)
    assert written(p) == ["a"]
    assert write_to(p, "a").record.template == T2
    assert write_to(p, "a").record.previous_template == T1
    assert write_to(p, "a").record.previous_digest == NEW
    assert phases(p) == {"a": "Progressing", "b": "Pending", "c": "Pending"}
    assert p.template_hash == rollout_types.template_hash(T2) != rollout_types.template_hash(T1)


def test_targets_waiting_for_their_wave_keep_their_template_and_digest() -> None:
    canary = with_template(progressing("a", NEWER), T2, previous=T1)
    waiting = [with_template(running(n, NEW), T1) for n in ("b", "c")]
    p = template_plan([canary, *waiting], T2, img=image(NEWER))
    maintained = {w.target: w.record for w in p.writes if w.reason == "maintain"}
    assert set(maintained) == {"a", "b", "c"}
    assert (maintained["b"].digest, maintained["b"].template) == (NEW, T1)
    assert (maintained["c"].digest, maintained["c"].template) == (NEW, T1)
    assert written(p) == []
    by_name = {t.name: t for t in p.targets}
    assert by_name["b"].template_hash == rollout_types.template_hash(T1)
    assert by_name["a"].template_hash == rollout_types.template_hash(T2)


def test_a_rollback_restores_the_previous_template_with_the_previous_digest() -> None:
    canary = with_template(
        progressing("a", NEWER, started=200, failing=True, previous=NEW), T2, previous=T1
    )
    p = template_plan(
        [canary, with_template(running("b", NEW), T1)],
        T2,
        img=image(NEWER),
        rollout={"progress_deadline_seconds": 120},
    )
    rollback = write_to(p, "a")
    assert rollback.reason == "rollback"
    assert (rollback.record.digest, rollback.record.template) == (NEW, T1)
    assert rollback.record.rolled_back_from == NEWER
    assert written(p) == []
    assert p.phase == "Degraded"


def test_a_target_on_the_digest_and_template_is_ready_and_not_rewritten() -> None:
    targets = [with_template(running(n, NEW), T2) for n in ("a", "b")]
    p = template_plan(targets, T2)
    assert p.phase == "Ready"
    assert written(p) == []


def test_a_record_without_a_template_gets_the_template_in_its_wave() -> None:
    targets = [running(n, NEW) for n in ("a", "b")]  # written before templates were recorded
    p = template_plan(targets, T1)
    assert written(p) == ["a"]
    assert phases(p)["b"] == "Pending"


def test_soak_timer_restarts_when_only_the_template_changed() -> None:
    canary = with_template(running("a", NEW, ready=None, started=20), T2, previous=T1)
    recorded = md.ModelDeploymentStatus(
        digest=NEW,
        template_hash=rollout_types.template_hash(T1),
        targets=(recorded_line("a", "Progressing", available_since=ago(60)),),
    )
    p = template_plan([canary], T2, recorded=recorded, rollout={"min_ready_seconds": 30})
    assert phases(p) == {"a": "Progressing"}


def test_a_target_whose_budget_the_image_exceeds_is_incompatible_and_not_attempted() -> None:
    big = rollout_types.Image(
        name="iris",
        admitted=True,
        digest=NEW,
        platforms=("linux/amd64",),
        sizes=(("amd64", 248_000_000),),
    )
    small_site = fresh("b", size_budget_bytes=100_000_000)
    p = plan([fresh("a"), small_site], img=big, canary=1)
    assert phases(p) == {"a": "Progressing", "b": "Incompatible"}
    assert written(p) == ["a"]
    (line,) = [t for t in p.targets if t.name == "b"]
    assert line.message is not None and "imageSizeBudgetBytes" in line.message


# --- after the writes ----------------------------------------------------------------------------
def test_a_failed_write_shows_in_the_target_error_and_as_an_event() -> None:
    p = plan([fresh("a")])
    done = waves.with_errors(p, {"a": "a: apply (rollout): forbidden"}, reachable={"a"})
    (outcome,) = done.targets
    assert outcome.error == "a: apply (rollout): forbidden"
    assert done.events[-1] == rollout_types.Event(
        "Warning", "TargetWriteFailed", "a: a: apply (rollout): forbidden"
    )


def test_a_write_failure_already_reported_is_not_an_event_again() -> None:
    p = plan([fresh("a")])
    error = "a: apply (rollout): forbidden"
    recorded = md.ModelDeploymentStatus(targets=(recorded_line("a", "Pending", last_error=error),))
    done = waves.with_errors(p, {"a": error}, reachable={"a"}, recorded=recorded)
    assert done.targets[0].error == error
    assert done.events == p.events


def test_an_unreachable_target_error_is_shown_but_not_an_event() -> None:
    p = plan([offline("a")])
    done = waves.with_errors(p, {"a": "unreachable at its last probe"}, reachable=set())
    assert "unreachable" in (done.targets[0].error or "")
    assert done.events == p.events


def test_an_error_the_plan_already_names_is_not_repeated() -> None:
    p = plan([offline("a")])
    done = waves.with_errors(p, {"a": "unreachable"}, reachable=set())
    assert done.targets[0].error == p.targets[0].error


def test_a_released_target_names_what_was_removed_there() -> None:
    (event,) = rollout_events.released("edge-1", ["Deployment/iris"], namespace="models")
    assert (event.type, event.reason) == ("Normal", "TargetReleased")
    assert event.message == (
        "edge-1 no longer matches targets.selector: removed Deployment/iris from namespace "
        "models there"
    )


def test_releasing_a_target_that_held_nothing_is_silent() -> None:
    assert rollout_events.released("edge-1", [], namespace="models") == []


# --- serving whatever release: READY after a rollback --------------------------------------------
def test_after_a_rollback_serving_counts_targets_up_on_the_previous_release() -> None:
    canary = running("a", OLD, rolled_back_from=NEW, rolled_back_generation=1)
    p = plan([canary, running("b", OLD), running("c", OLD)], generation=1)
    status = rollout_status.build(p, generation=1, now=NOW).to_status()
    assert p.phase == "Degraded"
    assert status["readyTargets"] == "0/3"
    assert status["servingTargets"] == "3/3"
    assert status["counts"]["serving"] == 3


def test_targets_with_no_ready_pod_do_not_count_as_serving() -> None:
    down = running("a", OLD, available=False)
    down = dataclasses.replace(down, ready_replicas=0)
    p = plan([down, offline("b"), fresh("c")])
    status = rollout_status.build(p, generation=1, now=NOW).to_status()
    assert status["servingTargets"] == "0/3"
