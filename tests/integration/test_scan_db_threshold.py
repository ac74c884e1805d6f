"""The stale-database alert reads its threshold from the operator, through the real Prometheus."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edgeferry import settings
from edgeferry_testbed import handles
from tests.integration.test_prometheus_alerts import (  # noqa: F401 (fixtures)
    image_operator,
    prometheus,
    rules_loaded,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("image_operator", "rules_loaded")]

SERIES = 'edgeferry_scan_db_stale_threshold_seconds{job="edgeferry-operator"}'


def test_prometheus_sees_the_threshold_the_operator_runs_with(
    testbed_handle: handles.Testbed,
) -> None:
    expected = settings.from_env({}).scan.db_stale_after_seconds  # the testbed keeps the default
    deadline = time.monotonic() + 30
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = prometheus(testbed_handle, "/api/v1/query", query=SERIES)["result"]
        if result:
            break
        time.sleep(2)
    assert [float(r["value"][1]) for r in result] == [expected], result
    groups = prometheus(testbed_handle, "/api/v1/rules")["groups"]
    stale = next(
        rule
        for group in groups
        for rule in group["rules"]
        if rule["name"] == "EdgeferryScanDatabaseStale"
    )
    assert "edgeferry_scan_db_stale_threshold_seconds" in stale["query"]
    assert stale["health"] == "ok", stale
