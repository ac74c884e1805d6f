"""Metric analysis of a wave's targets: when to measure, when it passes, when it fails."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic
import pytest

from edgeferry.decisions import analysis, rollout_status, waves
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import modeldeployment as md
from tests.unit import test_waves as tw

NOW = tw.NOW
NEW, OLD = tw.NEW, tw.OLD
QUERY = 'sum(rate(errors{namespace="{{ namespace }}", image=~".*@{{ digest }}"}[1m]))'


def spec(**kw: Any) -> md.Analysis:
    kw.setdefault("interval_seconds", 10)
    kw.setdefault("count", 3)
    metrics = kw.pop(
        "metrics",
        [{"name": "error-rate", "query": QUERY, "successCondition": {"max": 0.05}}],
    )
    return md.Analysis.from_wire({"metrics": metrics, **{_camel(k): v for k, v in kw.items()}})


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(r.title() for r in rest)


def measured(*values: float | None, metric: str = "error-rate", start: float = 30) -> list[Any]:
    """Measurements of NEW at `t1`, 10 s apart, the last one `start - 10*(n-1)` s ago."""
    return [
        analysis.Measurement(
            target="t1",
            metric=metric,
            promql="q",
            digest=NEW,
            template_hash=None,
            at=NOW - dt.timedelta(seconds=start - 10 * i),
            value=v,
            error=None if v is not None else "no sample (or NaN)",
        )
        for i, v in enumerate(values)
    ]


def decide(a: md.Analysis, ms: list[Any], *, available_for: float = 40) -> analysis.Decision:
    return analysis.decide(
        a,
        analysis.add((), ms, a),
        target="t1",
        namespace="models",
        name="iris",
        digest=NEW,
        template_hash=None,
        wave=1,
        available_since=NOW - dt.timedelta(seconds=available_for),
        now=NOW,
    )


# --- the decision ----------------------------------------------------------------------------
def test_first_measurement_waits_one_interval_after_the_target_became_available() -> None:
    d = decide(spec(), [], available_for=4)
    assert (d.outcome, d.queries, d.recheck) == ("Measuring", (), 6.0)


def test_a_due_measurement_asks_for_every_metric_with_placeholders_filled() -> None:
    (query,) = decide(spec(), [], available_for=10).queries
    assert query.promql == (
        'sum(rate(errors{namespace="models", image=~".*@sha256:' + "1" * 64 + '"}[1m]))'
    )
    assert (query.target, query.metric, query.digest) == ("t1", "error-rate", NEW)


def test_next_measurement_is_one_interval_after_the_last() -> None:
    d = decide(spec(), measured(0.0, start=4))
    assert (d.outcome, d.queries, d.recheck) == ("Measuring", (), 6.0)


def test_count_passing_measurements_pass() -> None:
    assert decide(spec(), measured(0.0, 0.01, 0.05)).outcome == "Passed"


def test_one_value_outside_the_range_fails_with_the_value_the_threshold_and_the_query() -> None:
    d = decide(spec(), measured(0.0, 0.5))
    assert d.outcome == "Failed"
    assert "error-rate = 0.5, needs <= 0.05" in d.message
    assert d.error == "query 'q' gave 0.5"


def test_failures_up_to_the_failure_limit_are_tolerated() -> None:
    a = spec(failure_limit=1, count=4)
    assert decide(a, measured(0.5, 0.0)).outcome == "Measuring"
    assert decide(a, measured(0.5, 0.0, 0.6)).outcome == "Failed"


def test_inconclusive_measurements_beyond_their_limit_fail() -> None:
    a = spec(inconclusive_limit=1, count=5)
    assert decide(a, measured(None, 0.0)).outcome == "Measuring"
    d = decide(a, measured(None, 0.0, None))
    assert d.outcome == "Failed"
    assert "no value in 2 of 3 measurements" in d.message
    assert d.error == "query 'q': no sample (or NaN)"


def test_inconclusive_measurements_do_not_count_towards_passing() -> None:
    a = spec(inconclusive_limit=3, count=2)
    assert decide(a, measured(None, 0.0)).outcome == "Measuring"
    assert decide(a, measured(None, 0.0, 0.0)).outcome == "Passed"


def test_a_min_bound_fails_values_below_it() -> None:
    metrics = [{"name": "success", "query": "q", "successCondition": {"min": 0.95}}]
    d = decide(spec(metrics=metrics), measured(0.9, metric="success", start=10))
    assert (d.outcome, "needs >= 0.95" in d.message) == ("Failed", True)


def test_every_metric_must_pass() -> None:
    metrics = [
        {"name": "error-rate", "query": "q", "successCondition": {"max": 0.05}},
        {"name": "latency", "query": "q", "successCondition": {"max": 0.2}},
    ]
    a = spec(metrics=metrics, count=1)
    assert decide(a, measured(0.0)).outcome == "Measuring"
    assert decide(a, measured(0.0) + measured(0.1, metric="latency")).outcome == "Passed"


def test_measurements_of_another_release_are_ignored() -> None:
    other = analysis.add((), measured(0.5), spec())
    kept = analysis.of_release(other, digest=OLD, template_hash=None)
    assert kept == ()


# --- the spec ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"metrics": []},
        {"metrics": [{"name": "e", "query": "x{{ pod }}", "successCondition": {"max": 1}}]},
        {"metrics": [{"name": "e", "query": "x", "successCondition": {}}]},
        {"metrics": [{"name": "e", "query": "x", "successCondition": {"min": 2, "max": 1}}]},
        {"metrics": [{"name": "E!", "query": "x", "successCondition": {"max": 1}}]},
        {
            "metrics": [
                {"name": "e", "query": "x", "successCondition": {"max": 1}},
                {"name": "e", "query": "y", "successCondition": {"max": 1}},
            ]
        },
        {
            "metrics": [{"name": "e", "query": "x", "successCondition": {"max": 1}}],
            "count": 2,
            "failureLimit": 2,
        },
    ],
)
def test_the_model_refuses_analyses_that_cannot_work(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        md.Analysis.from_wire(bad)


def test_queries_with_label_matchers_and_known_placeholders_are_accepted() -> None:
    query = 'sum(x{a="b", t="{{target}}", w="{{ wave }}", n="{{ name }}"}) / on() {'
    assert md.AnalysisMetric.from_wire(
        {"name": "e", "query": query, "successCondition": {"max": 1}}
    )


# --- in a rollout ----------------------------------------------------------------------------
def _plan(
    state: rt.TargetState, ms: list[Any], *, available_for: float = 40, **rollout: Any
) -> rt.Plan:
    line = md.TargetStatus(
        name="t1",
        phase="Progressing",
        digest=NEW,
        available_since=NOW - dt.timedelta(seconds=available_for),
    )
    recorded = md.ModelDeploymentStatus(digest=NEW, targets=(line,), current_wave=1)
    return waves.next_actions(
        [state],
        image=tw.image(),
        rollout=md.RolloutStrategy(analysis=spec(), min_ready_seconds=10, **rollout),
        generation=1,
        now=NOW,
        recorded=recorded,
        name="iris",
        measured=analysis.add((), ms, spec()),
    )


def _available() -> rt.TargetState:
    return tw.running("t1", NEW, ready=None, started=60, previous=OLD, namespace="models")


def test_an_available_target_is_not_ready_before_its_analysis_passed() -> None:
    p = _plan(_available(), measured(0.0, start=3))
    (line,) = p.targets
    assert line.phase == "Progressing"
    assert "analysis 1/3" in (line.message or "")


def test_the_plan_lists_the_queries_due() -> None:
    p = _plan(_available(), measured(0.0, start=10))
    assert [q.metric for q in p.queries] == ["error-rate"]


def test_a_passed_analysis_and_a_finished_soak_make_the_target_ready() -> None:
    p = _plan(_available(), measured(0.0, 0.0, 0.0))
    (line,) = p.targets
    assert line.phase == "Ready"
    assert line.became_ready


def test_a_failed_analysis_rolls_the_target_back_naming_query_value_and_threshold() -> None:
    p = _plan(_available(), measured(0.0, 0.5))
    (line,) = p.targets
    assert line.phase == "RolledBack"
    assert [(w.target, w.reason, w.record.digest) for w in p.writes] == [("t1", "rollback", OLD)]
    (event,) = [e for e in p.events if e.reason == "RolledBack"]
    assert "error-rate = 0.5, needs <= 0.05" in event.message
    assert "query 'q' gave 0.5" in event.message
    assert "error-rate = 0.5" in (line.message or "")
    assert line.error == "query 'q' gave 0.5"


def test_a_target_rolled_back_by_its_analysis_keeps_naming_the_metric() -> None:
    rollback = _plan(_available(), measured(0.0, 0.5))
    (later,) = _plan(tw.rolled_back_round(rollback, "t1"), []).targets
    assert later.phase == "RolledBack"
    assert "analysis failed: error-rate = 0.5, needs <= 0.05" in (later.message or "")


def test_a_failed_analysis_without_an_earlier_release_leaves_the_target_failed() -> None:
    state = tw.running("t1", NEW, ready=None, started=60, previous=None)
    (line,) = _plan(state, measured(0.0, 0.5)).targets
    assert line.phase == "Failed"


def test_a_target_ready_before_is_not_analysed_again() -> None:
    state = tw.running("t1", NEW, ready=30, started=60, previous=OLD)
    p = _plan(state, [])
    assert (p.targets[0].phase, p.queries) == ("Ready", ())


# --- what survives a restart (status.analysis) ---------------------------------------------------
def _restarted(plan: rt.Plan) -> tuple[md.AnalysisTally, ...]:
    """What a restarted operator reads back: the tallies as written to and read from status."""
    status = rollout_status.build(plan, generation=1, now=NOW).to_status()
    return md.parse_status(status).analysis


def test_a_tally_has_one_entry_per_metric_whatever_the_number_of_measurements() -> None:
    (tally,) = analysis.add((), measured(0.0, 0.5, None, 0.01, start=40), spec())
    assert (tally.passed, tally.failed, tally.inconclusive) == (2, 1, 1)
    assert (tally.last_value, tally.failed_value, tally.failed_query) == (0.01, 0.5, "q")
    assert tally.last_at == NOW - dt.timedelta(seconds=10)


def test_an_analysis_under_way_is_written_to_status_and_goes_on_after_a_restart() -> None:
    before = _plan(_available(), measured(0.0, 0.0, start=13))
    assert "analysis 2/3" in (before.targets[0].message or "")
    kept = _restarted(before)
    assert [(t.target, t.passed) for t in kept] == [("t1", 2)]
    again = waves.next_actions(
        [_available()],
        image=tw.image(),
        rollout=md.RolloutStrategy(analysis=spec(), min_ready_seconds=10),
        generation=1,
        now=NOW,
        recorded=md.ModelDeploymentStatus(
            digest=NEW,
            targets=(
                md.TargetStatus(
                    name="t1",
                    phase="Progressing",
                    digest=NEW,
                    available_since=NOW - dt.timedelta(seconds=40),
                ),
            ),
            current_wave=1,
        ),
        name="iris",
        measured=analysis.add(kept, measured(0.0, start=0), spec()),
    )
    assert again.targets[0].phase == "Ready", "the third measurement completes the analysis"


def test_the_next_measurement_after_a_restart_is_due_one_interval_after_the_last() -> None:
    kept = _restarted(_plan(_available(), measured(0.0, start=4)))
    d = analysis.decide(
        spec(),
        kept,
        target="t1",
        namespace="models",
        name="iris",
        digest=NEW,
        template_hash=None,
        wave=1,
        available_since=NOW - dt.timedelta(seconds=40),
        now=NOW,
    )
    assert d.outcome == "Measuring" and d.queries == () and d.recheck == pytest.approx(6)


def test_a_failure_survives_a_restart_so_the_target_never_becomes_ready() -> None:
    state = tw.running("t1", NEW, ready=None, started=60, previous=None)
    failed = _plan(state, measured(0.0, 0.5))
    assert failed.targets[0].phase == "Failed"
    kept = _restarted(failed)
    assert [(t.failed, t.failed_value) for t in kept] == [(1, 0.5)]
    later = analysis.add(kept, measured(0.0, 0.0, start=0), spec())
    p = waves.next_actions(
        [state],
        image=tw.image(),
        rollout=md.RolloutStrategy(analysis=spec(), min_ready_seconds=10),
        generation=1,
        now=NOW,
        name="iris",
        measured=later,
    )
    assert p.targets[0].phase == "Failed"


def test_tallies_of_ready_or_rolled_back_targets_are_dropped() -> None:
    assert _plan(_available(), measured(0.0, 0.0, 0.0)).analysis == ()
    assert _plan(_available(), measured(0.0, 0.5)).analysis == ()


def test_status_keeps_at_most_the_limit_failures_first() -> None:
    many = [
        md.AnalysisTally(target=f"t{i:03}", metric="m", digest=NEW, last_at=NOW, passed=1)
        for i in range(150)
    ]
    failing = md.AnalysisTally(target="t999", metric="m", digest=NEW, last_at=NOW, failed=1)
    kept = analysis.kept([*many, failing], measuring={t.target for t in [*many, failing]})
    assert len(kept) == md.MAX_ANALYSIS_TALLIES
    assert kept[0].target == "t999"
