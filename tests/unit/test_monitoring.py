"""Alerts and dashboard speak about metrics the operator really exports, and every alert is tested.

The rules file and the Grafana dashboard are checked against `edgeferry.metrics` (the one module
that defines every metric): each series name a query uses must be one the registry exports
(counters as `_total`, histograms as `_bucket`/`_count`/`_sum`), and each label a query selects
or groups by must be one of that metric's labels. promtool checks the rules and runs their unit
tests, which must cover every alert both firing and staying silent.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import metrics as prom_metrics

from edgeferry import metrics
from tests.unit import _binaries

REPO = _binaries.REPO
MONITORING = REPO / "manifests" / "monitoring"
RULES = MONITORING / "edgeferry-rules.yaml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
REQUIRED_ALERTS = {
    "EdgeferryImageBlocked",
    "EdgeferryRolloutDegraded",
    "EdgeferryRolloutStalled",
    "EdgeferryEdgeTargetDown",
    "EdgeferryScanDatabaseStale",
    "EdgeferryOperatorDown",
    "EdgeferryReconcileErrors",
}
SCRAPE_JOB = "edgeferry-operator"
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus adds to every scraped series."""
PROMETHEUS_SERIES = {"up": frozenset(TARGET_LABELS)}
"""Series Prometheus itself produces, which queries may use too."""

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
_NAME = re.compile(r"\b(edgeferry_[a-z0-9_]+|up)\b(?!\s*\()")
_SELECTOR = re.compile(r"\b(edgeferry_[a-z0-9_]+|up)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the operator can expose, with the labels it carries."""
    series: dict[str, frozenset[str]] = dict(PROMETHEUS_SERIES)
    for obj in vars(metrics).values():
        if not isinstance(obj, prom_metrics.MetricWrapperBase):
            continue
        labels = frozenset(obj._labelnames) | TARGET_LABELS
        for suffix in _SUFFIXES[str(obj._type)]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[obj._name + suffix] = labels | extra
    return series


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def all_queries() -> list[tuple[str, str]]:
    rules = [(f"alert {r['alert']}", str(r["expr"])) for r in alert_rules()]
    return rules + [("dashboard", q) for q in dashboard_queries()]


def _strip_strings(expr: str) -> str:
    """The query without string literals (label values, regexes), keeping metric names in
    `__name__=~"..."` matchers, which do name series."""
    names = " ".join(re.findall(r'__name__\s*=~?\s*"([^"]*)"', expr)).replace("|", " ")
    return re.sub(r'"[^"]*"', '""', expr) + " " + names


@pytest.mark.parametrize(("where", "expr"), all_queries())
def test_every_series_a_query_uses_is_exported(where: str, expr: str) -> None:
    series = exported_series()
    used = set(_NAME.findall(_strip_strings(expr)))
    assert used, f"{where}: no edgeferry metric in {expr!r}"
    unknown = sorted(used - set(series))
    assert not unknown, f"{where}: {unknown} are not exported by edgeferry.metrics"


@pytest.mark.parametrize(("where", "expr"), all_queries())
def test_every_label_a_query_selects_or_groups_by_exists(where: str, expr: str) -> None:
    series = exported_series()
    for name, matchers in _SELECTOR.findall(expr):
        for label in _MATCHER.findall(re.sub(r'"[^"]*"', '""', matchers)):
            assert label in series.get(name, frozenset()) | {"__name__"}, (
                f"{where}: {name} has no label {label}"
            )
    used = set(_NAME.findall(_strip_strings(expr)))
    available = set().union(*(series.get(n, frozenset()) for n in used))
    for group in _GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",") if part.strip()):
            assert label in available, f"{where}: no metric in {sorted(used)} has label {label}"
    for metric_names, label in re.findall(
        r'label_values\(\{__name__=~"([^"]+)"\},\s*(\w+)\)', expr
    ):
        for name in metric_names.split("|"):
            assert label in series.get(name, frozenset()), f"{where}: {name} has no label {label}"


def test_required_alerts_exist() -> None:
    assert {r["alert"] for r in alert_rules()} >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    assert annotations["summary"].strip() and annotations["description"].strip()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_every_runbook_url_points_at_its_section_of_docs_runbooks(rule: dict[str, Any]) -> None:
    url, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert url.endswith("/docs/runbooks.md")
    assert anchor == rule["alert"].lower()
    assert anchor in markdown_anchors(RUNBOOKS), f"docs/runbooks.md has no section #{anchor}"


def markdown_anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in path.read_text().splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_alerts_select_the_job_the_service_monitor_scrapes() -> None:
    service = yaml.safe_load((MONITORING / "service.yaml").read_text())
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    job_label = monitor["spec"]["jobLabel"]
    assert service["metadata"]["labels"][job_label] == SCRAPE_JOB
    assert all(endpoint["honorLabels"] for endpoint in monitor["spec"]["endpoints"])
    down = next(r for r in alert_rules() if r["alert"] == "EdgeferryOperatorDown")
    assert f'job="{SCRAPE_JOB}"' in down["expr"]


def test_promtool_accepts_the_rules() -> None:
    promtool = _binaries.debian("promtool", "prometheus")
    _binaries.run([promtool, "check", "rules", str(RULES)])


def test_promtool_unit_tests_pass() -> None:
    promtool = _binaries.debian("promtool", "prometheus")
    out = _binaries.run([promtool, "test", "rules", *map(str, RULE_TESTS)], cwd=MONITORING)
    assert "FAILED" not in out


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../edgeferry-rules.yaml"], path
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested staying silent"


def test_prometheus_rule_wraps_the_rules_file_verbatim() -> None:
    current = PROMETHEUS_RULE.read_text()
    header = current[: current.index("spec:\n") + len("spec:\n")]
    wanted = header + textwrap.indent(RULES.read_text(), "  ")
    if os.environ.get("EDGEFERRY_UPDATE_GENERATED") == "1":
        PROMETHEUS_RULE.write_text(wanted)
        current = wanted
    assert current == wanted, (
        "manifests/monitoring/prometheusrule.yaml is stale; regenerate with "
        "EDGEFERRY_UPDATE_GENERATED=1 .venv/bin/pytest tests/unit/test_monitoring.py"
    )
    assert yaml.safe_load(current)["spec"] == yaml.safe_load(RULES.read_text())


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], f"panel {panel['title']!r} has no query"


def test_the_stale_database_alert_compares_with_the_threshold_the_operator_exports() -> None:
    stale = next(r for r in alert_rules() if r["alert"] == "EdgeferryScanDatabaseStale")
    assert "edgeferry_scan_db_stale_threshold_seconds" in stale["expr"]
    assert not re.search(r"\b\d+\b", stale["expr"]), (
        "the alert holds its own threshold; compare with the exported setting instead"
    )


def test_the_operator_exports_its_stale_database_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf
    import prometheus_client

    from edgeferry import main

    monkeypatch.setenv("EDGEFERRY_SCAN_DB_STALE_SECONDS", "86400")
    monkeypatch.setattr(prometheus_client, "start_http_server", lambda *a, **k: None)
    monkeypatch.setattr(kopf, "run", lambda **kwargs: None)
    main.main([])
    assert metrics.REGISTRY.get_sample_value("edgeferry_scan_db_stale_threshold_seconds") == 86400
