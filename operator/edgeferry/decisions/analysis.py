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

Measurements live in the operator's memory, not at the target: after a restart the analysis
of a target not yet Ready starts again (slower, never wrongly Ready); once a target was Ready
its record says so and the analysis is never repeated for that release.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterable, Sequence
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
    measured: Iterable[Measurement], *, digest: str, template_hash: str | None
) -> tuple[Measurement, ...]:
    """The measurements that belong to this release (older ones are of another rollout)."""
    return tuple(m for m in measured if m.digest == digest and m.template_hash == template_hash)


def _value(value: float) -> str:
    return f"{value:.4g}"


def decide(
    analysis: md.Analysis,
    measured: Sequence[Measurement],
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
    """Pass, fail or keep measuring, from this release's measurements at one target."""
    interval = analysis.interval_seconds
    rounds = []
    for metric in analysis.metrics:
        mine = [m for m in measured if m.metric == metric.name]
        failed = [
            m for m in mine if m.value is not None and not metric.success_condition.holds(m.value)
        ]
        if len(failed) > analysis.failure_limit:
            last = failed[-1]
            assert last.value is not None
            return Decision(
                "Failed",
                message=(
                    f"analysis failed: {metric.name} = {_value(last.value)}, needs "
                    f"{metric.success_condition.describe()} ({len(failed)} of {len(mine)} "
                    f"measurements outside, failureLimit {analysis.failure_limit})"
                ),
                error=f"query {last.promql!r} gave {_value(last.value)}",
            )
        missing = [m for m in mine if m.value is None]
        if len(missing) > analysis.inconclusive_limit:
            last = missing[-1]
            return Decision(
                "Failed",
                message=(
                    f"analysis failed: {metric.name} had no value in {len(missing)} of "
                    f"{len(mine)} measurements (inconclusiveLimit {analysis.inconclusive_limit}), "
                    f"needs {metric.success_condition.describe()}"
                ),
                error=f"query {last.promql!r}: {last.error or 'no value'}",
            )
        rounds.append((metric, mine))

    def conclusive(mine: Sequence[Measurement]) -> int:
        return sum(m.value is not None for m in mine)

    left = [(metric, mine) for metric, mine in rounds if conclusive(mine) < analysis.count]
    if not left:
        names = ", ".join(metric.name for metric in analysis.metrics)
        return Decision(
            "Passed", message=f"analysis passed ({names}: {analysis.count} measurements)"
        )

    taken = min(conclusive(mine) for _, mine in left)
    times = [m.at for _, mine in rounds for m in mine]
    due_at = (max(times) if times else available_since) + datetime.timedelta(seconds=interval)
    wait = (due_at - now).total_seconds()
    shown = ", ".join(
        f"{metric.name} {_value(mine[-1].value)}"
        if mine and mine[-1].value is not None
        else f"{metric.name} -"
        for metric, mine in rounds
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
