"""Conditions as kstatus reads them: abnormal-true types appear only while True."""

from __future__ import annotations

import datetime

import pytest

from edgeferry import metrics
from edgeferry.models import conditions, reasons, timestamps

NOW = "2026-12-01T10:00:00Z"


def types(merged: list[dict[str, object]]) -> dict[object, object]:
    return {c["type"]: c["status"] for c in merged}


def test_a_ready_resource_shows_ready_and_neither_reconciling_nor_stalled() -> None:
    trio = conditions.kstatus(ready=True, reason=reasons.UP_TO_DATE, message="pushed")
    assert types(conditions.merge([], trio, generation=3, now=NOW)) == {"Ready": "True"}


def test_a_stalled_resource_shows_stalled_true_and_no_reconciling() -> None:
    trio = conditions.kstatus(
        ready=False, reason=reasons.VULNERABILITIES_FOUND, message="1 finding", stalled=True
    )
    merged = conditions.merge([], trio, generation=1, now=NOW)
    assert types(merged) == {"Ready": "False", "Stalled": "True"}
    assert {c["reason"] for c in merged} == {"VulnerabilitiesFound"}


def test_reconciling_is_removed_once_the_work_is_done() -> None:
    working = conditions.kstatus(
        ready=False, reason=reasons.NOT_BUILT, message="build", reconciling=True
    )
    first = conditions.merge([], working, generation=1, now=NOW)
    assert types(first) == {"Ready": "False", "Reconciling": "True"}
    done = conditions.kstatus(ready=True, reason=reasons.UP_TO_DATE, message="pushed")
    assert types(conditions.merge(first, done, generation=1, now=NOW)) == {"Ready": "True"}


def test_a_stored_stalled_false_from_an_older_operator_is_removed() -> None:
    old = [{"type": "Stalled", "status": "False", "reason": "NotStalled", "message": ""}]
    done = conditions.kstatus(ready=True, reason=reasons.TARGET_REACHABLE, message="ok")
    assert types(conditions.merge(old, done, generation=None, now=NOW)) == {"Ready": "True"}


def test_other_false_conditions_are_kept() -> None:
    merged = conditions.merge(
        [],
        [conditions.Condition(reasons.ADMITTED, "False", reasons.VULNERABILITIES_FOUND)],
        generation=1,
        now=NOW,
    )
    assert types(merged) == {"Admitted": "False"}


def test_ready_with_reconciling_is_refused() -> None:
    with pytest.raises(ValueError, match="neither Reconciling nor Stalled"):
        conditions.kstatus(ready=True, reason="X", message="", reconciling=True)


def test_timestamps_round_trip_in_kubernetes_format() -> None:
    moment = datetime.datetime(2026, 12, 1, 22, 10, 56, 789, tzinfo=datetime.UTC)
    text = timestamps.format_rfc3339(moment)
    assert text == "2026-12-01T22:10:56Z"
    assert timestamps.parse_rfc3339(text) == moment.replace(microsecond=0)


def test_a_naive_time_is_taken_as_utc_and_garbage_reads_as_unknown() -> None:
    naive = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert timestamps.format_rfc3339(naive) == "2026-01-02T03:04:05Z"
    assert timestamps.parse_rfc3339("2026-01-02T03:04:05") == naive.replace(tzinfo=datetime.UTC)
    assert timestamps.parse_rfc3339("yesterday") is None
    assert timestamps.parse_rfc3339(None) is None
    assert timestamps.parse_rfc3339("") is None


def test_short_digest_and_reference() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    assert timestamps.short_digest(digest) == "0123456789ab"
    assert timestamps.short_digest(None) is None
    assert timestamps.short_reference(f"reg/repo@{digest}") == "reg/repo@sha256:0123456789ab"
    assert timestamps.short_reference("reg/repo:v1") == "reg/repo:v1"


def test_forget_drops_only_that_resources_series() -> None:
    gauge = metrics.ROLLOUT_STALLED
    gauge.labels("ns-forget", "a").set(1)
    gauge.labels("ns-forget", "b").set(1)
    metrics.forget("ns-forget", "a", gauge)
    left = {
        (s.labels["namespace"], s.labels["name"])
        for family in gauge.collect()
        for s in family.samples
        if s.labels.get("namespace") == "ns-forget"
    }
    assert left == {("ns-forget", "b")}
    metrics.forget("ns-forget", "b", gauge)
