"""The real Prometheus scrapes the real operator and fires the blocked-image alert."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from edgeferry_testbed import handles, testbed
from tests.integration import _resources
from tests.integration import test_modelimage as mi

pytestmark = pytest.mark.integration

image_operator = mi.image_operator
namespace = mi.namespace


def prometheus(testbed_handle: handles.Testbed, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"{testbed_handle.env.prometheus_url}{path}{query}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def test_blocked_sample_fires_the_image_blocked_alert(
    image_operator: testbed.Testbed,
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    namespace: str,
) -> None:
    _resources.apply(hub, namespace, mi.sample(testbed_handle.env, "modelimage-vulnerable.yaml"))
    _resources.apply(hub, namespace, mi.sample(testbed_handle.env, "modelimage-iris.yaml"))
    mi.wait_for(hub, namespace, "legacy-scorer", mi.settled("Blocked"))
    mi.wait_for(hub, namespace, "iris", mi.settled("Ready"))
    rules = prometheus(testbed_handle, "/api/v1/rules")
    names = {r["name"] for g in rules["groups"] for r in g["rules"]}
    assert "EdgeferryImageBlocked" in names, "the testbed Prometheus did not load our rules"

    deadline = time.monotonic() + 180
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        alerts = prometheus(testbed_handle, "/api/v1/alerts")["alerts"]
        ours = [
            a
            for a in alerts
            if a["labels"].get("alertname") == "EdgeferryImageBlocked"
            and a["labels"].get("namespace") == namespace
        ]
        firing = [a for a in ours if a["state"] == "firing"]
        if firing:
            break
        time.sleep(5)
    assert [a["labels"]["name"] for a in firing] == ["legacy-scorer"], firing
    assert firing[0]["labels"]["reason"] == "VulnerabilitiesFound"
    assert firing[0]["annotations"]["runbook_url"].endswith("#edgeferryimageblocked")
    series = prometheus(
        testbed_handle,
        "/api/v1/query",
        query=f'edgeferry_image_blocked{{namespace="{namespace}",name="iris"}}',
    )
    assert {s["metric"]["reason"]: s["value"][1] for s in series["result"]} == {
        "VulnerabilitiesFound": "0",
        "SmokeTestFailed": "0",
    }
