"""Metric analysis of one target: given the measurements so far, pass, fail or keep measuring.

A target of a wave counts Ready only when its Pods are healthy, it stayed Available for
`minReadySeconds`, and, when `rollout.analysis` is set, every query stayed in its range. This
module answers the last part as a pure function of the measurements taken so far, so the rule
a user meets is tested without Prometheus:

- The first measurement is due `intervalSeconds` after the target became Available (a rate
  over a fresh Pod needs samples first), each later one `intervalSeconds` after the previous.
- A value outside the metric's `successCondition` is a failure; more than `failureLimit`
  failures of one metric fail the target. No value (no sample, NaN, Prometheus unreachable or
  refusing the query) is inconclusive; more than `inconclusiveLimit` of them fail it too: a
  release nobody can measure is not proven. The failure message names the metric, the value
  or the error, the condition and the query as sent, so the event says what to look at.
- The analysis passes once every metric has `count` values (inconclusive measurements do not
  count) without failing.

What the measurements came to is kept in status (`status.analysis`), one tally per metric
and target (`add`): counts of values within and outside the condition and of measurements
without one, the last time and value, the last failing value and error with their queries. That
is all `decide` needs, so a restarted operator goes on where the analysis was (a failure is
never forgotten, the next measurement is due one interval after the last), and the status
keeps a fixed size however large `count` is. Whether a value passes is judged when it is
measured, with the successCondition of that moment. Tallies are kept only while they matter
(`kept`: the release being rolled out, targets not Ready or rolled back) and at most
`md.MAX_ANALYSIS_TALLIES`, failures first; a target whose tally was cut starts its analysis
again (slower, never wrongly Ready). Once a target was Ready its record says so and the
analysis is never repeated for that release.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Collection, Iterable, Sequence
from typing import Literal

from edgeferry.models import modeldeployment as md

Outcome = Literal["Passed", "Failed", "Measuring"]


@dataclasses.dataclass(frozen=True)
class Query:
    """One query to send now for one target (the plan asks, the handler measures)."""

    target: str
    metric: str
    promql: str
    digest: str
    template_hash: str | None


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What one query gave for one target's release."""

    target: str
    metric: str
    promql: str
    digest: str
    template_hash: str | None
    at: datetime.datetime
    value: float | None
    """None: inconclusive (see `error`)."""
    error: str | None = None
    """Why there is no value (no sample, NaN, Prometheus unreachable...)."""


@dataclasses.dataclass(frozen=True)
class Decision:
    outcome: Outcome
    message: str
    """For the target's status line: progress, or why it failed."""
    error: str | None = None
    """For a failure: the query as sent and what it gave."""
    queries: tuple[Query, ...] = ()
    """What to measure now (only while Measuring)."""
    recheck: float | None = None
    """Seconds until the next measurement is due (only while Measuring)."""


def render(query: str, *, target: str, namespace: str, name: str, digest: str, wave: int) -> str:
    """The query with its placeholders filled; `digest` is the bare `sha256:...`."""
    values = {
        "target": target,
        "namespace": namespace,
        "name": name,
        "digest": digest.rsplit("@", 1)[-1],
        "wave": str(wave),
    }
    return md.QUERY_PLACEHOLDER.sub(lambda m: values[m.group(1)], query)


def of_release(
    tallies: Iterable[md.AnalysisTally], *, digest: str, template_hash: str | None
) -> tuple[md.AnalysisTally, ...]:
    """The tallies that belong to this release (older ones are of another rollout)."""
    return tuple(t for t in tallies if t.digest == digest and t.template_hash == template_hash)


def add(
    tallies: Iterable[md.AnalysisTally],
    measured: Iterable[Measurement],
    analysis: md.Analysis | None,
) -> tuple[md.AnalysisTally, ...]:
    """`tallies` with `measured` counted in, each against its metric's successCondition (a
    measurement of a metric the analysis no longer has is dropped)."""
    conditions = {m.name: m.success_condition for m in analysis.metrics} if analysis else {}
    by_key = {(t.target, t.metric, t.digest, t.template_hash): t for t in tallies}
    for m in measured:
        condition = conditions.get(m.metric)
        if condition is None:
            continue
        key = (m.target, m.metric, m.digest, m.template_hash)
        t = by_key.get(key) or md.AnalysisTally(
            target=m.target,
            metric=m.metric,
            digest=m.digest,
            template_hash=m.template_hash,
            last_at=m.at,
        )
        update: dict[str, object] = {"last_at": m.at, "last_value": m.value}
        if m.value is None:
            update |= {
                "inconclusive": t.inconclusive + 1,
                "inconclusive_error": (m.error or "no value")[:1024],
                "inconclusive_query": m.promql[:4096],
            }
        elif condition.holds(m.value):
            update["passed"] = t.passed + 1
        else:
            update |= {
                "failed": t.failed + 1,
                "failed_value": m.value,
                "failed_query": m.promql[:4096],
            }
        by_key[key] = t.model_copy(update=update)
    return tuple(by_key.values())


def kept(
    tallies: Iterable[md.AnalysisTally],
    *,
    measuring: Collection[str],
    limit: int = md.MAX_ANALYSIS_TALLIES,
) -> tuple[md.AnalysisTally, ...]:
    """The tallies worth keeping in status: those of targets still `measuring` (analysed and
    not settled Ready or rolled back), failures first, at most `limit`."""
    mine = [t for t in tallies if t.target in measuring]
    mine.sort(key=lambda t: (t.failed == 0 and t.inconclusive == 0, t.target, t.metric))
    return tuple(mine[: max(0, limit)])


def _value(value: float) -> str:
    return f"{value:.4g}"


def decide(
    analysis: md.Analysis,
    tallies: Sequence[md.AnalysisTally],
    *,
    target: str,
    namespace: str,
    name: str,
    digest: str,
    template_hash: str | None,
    wave: int,
    available_since: datetime.datetime,
    now: datetime.datetime,
) -> Decision:
    """Pass, fail or keep measuring, from this release's tallies at one target."""
    interval = analysis.interval_seconds
    rounds: list[tuple[md.AnalysisMetric, md.AnalysisTally | None]] = []
    for metric in analysis.metrics:
        t = next((x for x in tallies if x.metric == metric.name), None)
        taken = (t.passed + t.failed + t.inconclusive) if t else 0
        if t is not None and t.failed > analysis.failure_limit:
            shown = _value(t.failed_value) if t.failed_value is not None else "?"
            return Decision(
                "Failed",
                message=(
                    f"analysis failed: {metric.name} = {shown}, needs "
                    f"{metric.success_condition.describe()} ({t.failed} of {taken} "
                    f"measurements outside, failureLimit {analysis.failure_limit})"
                ),
                error=f"query {t.failed_query!r} gave {shown}",
            )
        if t is not None and t.inconclusive > analysis.inconclusive_limit:
            return Decision(
                "Failed",
                message=(
                    f"analysis failed: {metric.name} had no value in {t.inconclusive} of "
                    f"{taken} measurements (inconclusiveLimit {analysis.inconclusive_limit}), "
                    f"needs {metric.success_condition.describe()}"
                ),
                error=f"query {t.inconclusive_query!r}: {t.inconclusive_error or 'no value'}",
            )
        rounds.append((metric, t))

    def conclusive(t: md.AnalysisTally | None) -> int:
        return (t.passed + t.failed) if t else 0

    left = [(metric, t) for metric, t in rounds if conclusive(t) < analysis.count]
    if not left:
        names = ", ".join(metric.name for metric in analysis.metrics)
        return Decision(
            "Passed", message=f"analysis passed ({names}: {analysis.count} measurements)"
        )

    taken = min(conclusive(t) for _, t in left)
    times = [t.last_at for _, t in rounds if t is not None]
    due_at = (max(times) if times else available_since) + datetime.timedelta(seconds=interval)
    wait = (due_at - now).total_seconds()
    shown = ", ".join(
        f"{metric.name} {_value(t.last_value)}"
        if t is not None and t.last_value is not None
        else f"{metric.name} -"
        for metric, t in rounds
    )
    progress = f"analysis {taken}/{analysis.count}: {shown}"
    if wait > 0:
        return Decision(
            "Measuring",
            message=f"{progress}; next measurement in {math.ceil(wait)}s",
            recheck=max(1.0, wait),
        )
    queries = tuple(
        Query(
            target=target,
            metric=metric.name,
            promql=render(
                metric.query,
                target=target,
                namespace=namespace,
                name=name,
                digest=digest,
                wave=wave,
            ),
            digest=digest,
            template_hash=template_hash,
        )
        for metric, _ in left
    )
    return Decision(
        "Measuring",
        message=f"{progress}; measuring",
        queries=queries,
        recheck=float(interval),
    )
