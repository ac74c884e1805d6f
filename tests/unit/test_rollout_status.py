"""The ModelDeployment status block: complete counts, bounded detail."""

from __future__ import annotations

import dataclasses
import datetime as dt

from edgeferry.decisions import rollout_status, rollout_types, waves
from edgeferry.models import conditions
from edgeferry.models import modeldeployment as md

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DIGEST = "registry.local:5000/models/iris@sha256:" + "1" * 64


def outcome(
    name: str, phase: md.TargetPhase, *, error: str | None = None
) -> rollout_types.TargetOutcome:
    return rollout_types.TargetOutcome(
        name=name,
        cluster_type="K3s",
        phase=phase,
        wave=1,
        digest=DIGEST,
        previous_digest=None,
        template_hash="0123456789ab",
        ready_replicas=1 if phase == "Ready" else 0,
        available_since=None,
        last_transition_time=NOW,
        message=f"{name} is {phase}",
        error=error,
        record=None,
    )


def plan_of(
    outcomes: list[rollout_types.TargetOutcome],
    *,
    conds: tuple[conditions.Condition, ...] = (),
    current_wave: int = 1,
    waves_: tuple[tuple[str, ...], ...] = (("a",),),
) -> rollout_types.Plan:
    return rollout_types.Plan(
        phase="Progressing",
        digest=DIGEST,
        template_hash="0123456789ab",
        waves=waves_,
        current_wave=current_wave,
        targets=tuple(outcomes),
        writes=(),
        conditions=conds,
        message="wave 1/1",
        events=(),
        recheck_after_seconds=None,
    )


def test_counts_cover_every_target_even_beyond_the_listed_limit() -> None:
    outcomes = [outcome(f"t{i:03}", "Ready") for i in range(120)] + [outcome("z", "Failed")]
    status = rollout_status.build(plan_of(outcomes), generation=1, now=NOW, limit=50)
    assert status.counts.total == 121
    assert status.counts.ready == 120
    assert status.counts.failed == 1


def test_status_lists_at_most_limit_targets_and_says_how_many_were_left_out() -> None:
    outcomes = [outcome(f"t{i:03}", "Ready") for i in range(120)]
    status = rollout_status.build(plan_of(outcomes), generation=1, now=NOW, limit=50)
    assert len(status.targets) == 50
    assert status.targets_not_listed == 70


def test_targets_needing_attention_are_listed_first() -> None:
    outcomes = [
        outcome("a", "Ready"),
        outcome("b", "Pending"),
        outcome("c", "Deferred"),
        outcome("d", "RolledBack"),
        outcome("e", "Progressing"),
        outcome("f", "Failed"),
        outcome("g", "Incompatible"),
    ]
    lines, _ = rollout_status.target_lines(outcomes, limit=3)
    assert [line.name for line in lines] == ["f", "d", "e"]


def test_targets_in_the_same_phase_are_listed_by_name() -> None:
    lines, _ = rollout_status.target_lines([outcome("b", "Ready"), outcome("a", "Ready")])
    assert [line.name for line in lines] == ["a", "b"]


def test_long_errors_are_cut_to_a_bounded_length() -> None:
    (line,), _ = rollout_status.target_lines([outcome("a", "Failed", error="x" * 5000)])
    assert line.last_error is not None
    assert len(line.last_error) == rollout_status.MAX_MESSAGE


def test_target_line_carries_digest_phase_replicas_and_error() -> None:
    (line,), _ = rollout_status.target_lines([outcome("a", "Failed", error="CrashLoopBackOff")])
    assert (line.name, line.cluster_type, line.phase, line.digest) == ("a", "K3s", "Failed", DIGEST)
    assert line.last_error == "CrashLoopBackOff"
    assert line.message == "a is Failed"
    assert line.last_transition_time == NOW


def test_ready_and_wave_columns_read_like_kubectl() -> None:
    outcomes = [outcome("a", "Ready"), outcome("b", "Ready"), outcome("c", "Pending")]
    plan = plan_of(outcomes, current_wave=2, waves_=(("a",), ("b",), ("c",)))
    status = rollout_status.build(plan, generation=1, now=NOW).to_status()
    assert status["readyTargets"] == "2/3"
    assert status["wave"] == "2/3"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    earlier = "2025-06-01T11:00:00Z"
    existing = [{"type": "Ready", "status": "False", "reason": "X", "lastTransitionTime": earlier}]
    conds = (conditions.Condition("Ready", "False", "WaveInProgress", "wave 1/1"),)
    status = rollout_status.build(
        plan_of([outcome("a", "Pending")], conds=conds),
        generation=4,
        existing_conditions=existing,
        now=NOW,
    )
    (ready,) = status.conditions
    assert ready["lastTransitionTime"] == earlier
    assert ready["observedGeneration"] == 4


def test_status_is_written_in_camel_case_and_reads_back_the_same() -> None:
    status = rollout_status.build(
        plan_of([outcome("a", "RolledBack", error="boom")]), generation=2, now=NOW
    )
    written = status.to_status()
    assert written["observedGeneration"] == 2
    assert written["counts"]["rolledBack"] == 1
    assert written["targets"][0]["lastTransitionTime"] == "2025-06-01T12:00:00Z"
    assert md.parse_status(written) == status


# --- gauges --------------------------------------------------------------------------------------
def test_gauges_count_targets_per_phase() -> None:
    p = dataclasses.replace(
        plan_of([outcome("a", "Ready"), outcome("b", "Failed")]), phase="Degraded"
    )
    shown = rollout_status.gauges(p, rollout_status.build(p, generation=1, now=NOW))
    assert shown.targets["Ready"] == 1 and shown.targets["Failed"] == 1
    assert shown.targets["Blocked"] == 0
    assert shown.degraded and shown.wave == 1


def test_a_blocked_rollout_counts_every_target_as_blocked_and_stalled() -> None:
    p = dataclasses.replace(
        plan_of([outcome("a", "Ready"), outcome("b", "Pending")]), phase="Blocked"
    )
    shown = rollout_status.gauges(p, rollout_status.build(p, generation=1, now=NOW))
    assert shown.targets["Blocked"] == 2
    assert all(n == 0 for phase, n in shown.targets.items() if phase != "Blocked")
    assert shown.stalled and not shown.degraded


def test_stalled_gauge_follows_the_stalled_condition() -> None:
    stalled = conditions.Condition("Stalled", "True", "RolloutHalted", "halted")
    p = dataclasses.replace(plan_of([outcome("a", "Failed")], conds=(stalled,)), phase="Degraded")
    assert rollout_status.gauges(p, rollout_status.build(p, generation=1, now=NOW)).stalled


def test_a_selector_matching_nothing_sets_the_stalled_gauge_not_the_degraded_one() -> None:
    p = waves.next_actions(
        [],
        image=rollout_types.Image(name="iris", admitted=True, digest="r/iris@sha256:" + "a" * 64),
        rollout=md.RolloutStrategy(),
        generation=1,
        now=NOW,
    )
    shown = rollout_status.gauges(p, rollout_status.build(p, generation=1, now=NOW))
    assert shown.stalled and not shown.degraded
    assert all(n == 0 for n in shown.targets.values())
