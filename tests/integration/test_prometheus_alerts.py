"""The testbed's real Prometheus scrapes the running operator and fires edgeferry's alerts.

Prometheus (scrape and evaluation every 5 s) loads `manifests/monitoring/edgeferry-rules.yaml`;
the operator runs on the host. A vulnerable sample blocked by the gate must show up as a firing
`EdgeferryImageBlocked` alert for exactly that ModelImage (after the rule's one-minute `for`),
while the admitted sample next to it raises nothing.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from edgeferry_testbed import handles, layout, operator_process, samples, testbed

pytestmark = pytest.mark.integration

BLOCKED, ADMITTED = "legacy-scorer", "iris"
FIRING_WITHIN = 240.0
"""Build, smoke test and scan (~15 s), a scrape (5 s), the rule's `for: 1m`, an evaluation
(5 s), with room for a busy testbed."""


def prometheus(bed: handles.Testbed, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{bed.env.prometheus_url}{path}{query}", timeout=10) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return body["data"]


def alerts(bed: handles.Testbed, name: str, namespace: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prometheus(bed, "/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == name and a["labels"].get("namespace") == namespace
    ]


@pytest.fixture(scope="module")
def image_operator(testbed_handle: handles.Testbed) -> Iterator[None]:
    bed = testbed.Testbed()
    started = bed.sup.find("operator") is None
    operator_process.start(bed, testbed_handle.env)
    yield
    if started:
        operator_process.stop(bed)


@pytest.fixture(scope="module")
def rules_loaded(testbed_handle: handles.Testbed) -> None:
    """Prometheus reads rule files on (re)load; reload so it has this checkout's rules."""
    request = urllib.request.Request(f"{testbed_handle.env.prometheus_url}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    groups = prometheus(testbed_handle, "/api/v1/rules")["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    wanted = yaml.safe_load(
        (layout.REPO_ROOT / "manifests" / "monitoring" / "edgeferry-rules.yaml").read_text()
    )
    assert {r["alert"] for g in wanted["groups"] for r in g["rules"]} <= loaded


@pytest.fixture
def samples_applied(
    hub: handles.Cluster, testbed_handle: handles.Testbed, unique_name: str
) -> Iterator[str]:
    lay = layout.default_layout()
    with hub.api_client() as api:
        samples.install_inputs(api, unique_name, lay, testbed_handle.env)
    values = samples.placeholders(lay, testbed_handle.env)
    for sample in ("modelimage-vulnerable.yaml", "modelimage-iris.yaml"):
        doc = samples.render(samples.SAMPLES / sample, values)[0]
        hub.kubectl("-n", unique_name, "apply", "-f", "-", stdin=yaml.safe_dump(doc))
    yield unique_name
    hub.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


def test_prometheus_scrapes_the_operator(
    testbed_handle: handles.Testbed, image_operator: None, rules_loaded: None
) -> None:
    deadline = time.monotonic() + 30
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = prometheus(testbed_handle, "/api/v1/query", query='up{job="edgeferry-operator"}')[
            "result"
        ]
        if result and result[0]["value"][1] == "1":
            break
        time.sleep(2)
    assert result and result[0]["value"][1] == "1", result
    down = [
        a
        for a in prometheus(testbed_handle, "/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == "EdgeferryOperatorDown"
    ]
    assert down == []


def test_blocked_sample_fires_image_blocked_alert_and_admitted_one_does_not(
    testbed_handle: handles.Testbed,
    image_operator: None,
    rules_loaded: None,
    samples_applied: str,
) -> None:
    namespace = samples_applied
    deadline = time.monotonic() + FIRING_WITHIN
    seen_states: list[str] = []
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = alerts(testbed_handle, "EdgeferryImageBlocked", namespace)
        seen_states += [a["state"] for a in found if a["state"] not in seen_states]
        firing = [a for a in found if a["state"] == "firing"]
        if firing:
            break
        time.sleep(5)
    assert firing, f"no firing EdgeferryImageBlocked for {namespace} (states seen: {seen_states})"
    assert "pending" in seen_states, "the alert waits out its `for` before firing"
    (alert,) = firing
    assert alert["labels"]["name"] == BLOCKED
    assert alert["labels"]["reason"] == "VulnerabilitiesFound"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith("docs/runbooks.md#edgeferryimageblocked")
    assert f"{namespace}/{BLOCKED}" in alert["annotations"]["summary"]
    admitted = prometheus(
        testbed_handle,
        "/api/v1/query",
        query=f'edgeferry_image_blocked{{namespace="{namespace}",name="{ADMITTED}"}}',
    )["result"]
    assert all(sample["value"][1] == "0" for sample in admitted), admitted
    assert not [
        a
        for a in alerts(testbed_handle, "EdgeferryImageBlocked", namespace)
        if a["labels"]["name"] == ADMITTED
    ]
