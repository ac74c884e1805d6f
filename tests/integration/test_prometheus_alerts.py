"""The testbed's real Prometheus scrapes the running operator with edgeferry's rules loaded.

Prometheus (scrape and evaluation every 5 s) loads `manifests/monitoring/edgeferry-rules.yaml`;
the operator runs on the host. This checks the plumbing every alert depends on: all rules loaded,
the scrape job the alerts select (`edgeferry-operator`) up, and `EdgeferryOperatorDown` silent.
That the blocked sample fires `EdgeferryImageBlocked` (and the admitted one does not) is
`test_alerts.py`.
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

from edgeferry_testbed import handles, layout, operator_process, testbed

pytestmark = pytest.mark.integration


def prometheus(bed: handles.Testbed, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{bed.env.prometheus_url}{path}{query}", timeout=10) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return body["data"]


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

    def operator_down() -> list[dict[str, Any]]:
        return [
            a
            for a in prometheus(testbed_handle, "/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == "EdgeferryOperatorDown"
        ]

    # A fresh Prometheus evaluates `absent(up)` before its first scrape, so the alert may be
    # pending for one evaluation (5 s); once `up == 1` is evaluated it must go and stay gone.
    deadline = time.monotonic() + 20
    down = operator_down()
    while down and time.monotonic() < deadline:
        assert all(a["state"] == "pending" for a in down), down
        time.sleep(1)
        down = operator_down()
    assert down == [], down
