"""The monitoring manifests against the Prometheus Operator's real CRDs, on the hub.

A ServiceMonitor or PrometheusRule with a misspelt field is not refused by the API server: its
structural schema silently prunes the unknown field, and the scrape or alert quietly does not
exist. So these tests install the CRDs of a pinned Prometheus Operator release (downloaded as a
Go module by `testbed/tools/build.sh`), apply what kustomize and Helm render for real, and check
that what the API server stored is exactly what we sent: nothing pruned, nothing refused.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeferry_testbed import handles, layout
from tests.integration.test_install import CHART, MANIFESTS, helm, kubectl

pytestmark = pytest.mark.integration

CRD_DIR = layout.default_layout().bin_dir / (
    f"prometheus-operator-crds-{layout.PROMETHEUS_OPERATOR_VERSION}"
)
CRDS = ("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com")
KINDS = ("ServiceMonitor", "PrometheusRule")


@pytest.fixture(scope="module")
def prometheus_operator_crds(hub: handles.Cluster) -> Iterator[None]:
    """The two CRDs installed on the hub for this module, removed again afterwards."""
    files = [CRD_DIR / "servicemonitors.yaml", CRD_DIR / "prometheusrules.yaml"]
    missing = [str(f) for f in files if not f.exists()]
    assert not missing, f"run testbed/tools/build.sh prometheus_operator_crds; missing {missing}"
    for crd in files:
        kubectl(hub, "apply", "--server-side", "-f", str(crd))
    kubectl(
        hub, "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRDS)
    )
    yield
    kubectl(hub, "delete", "--ignore-not-found", "--wait=true", *(f"crd/{c}" for c in CRDS))


@pytest.fixture
def scratch_namespace(hub: handles.Cluster) -> Iterator[str]:
    name = f"edgeferry-monitoring-{uuid.uuid4().hex[:6]}"
    kubectl(hub, "create", "namespace", name)
    yield name
    kubectl(hub, "delete", "namespace", name, "--wait=false")


def monitoring_objects(manifest: str, namespace: str) -> list[dict[str, Any]]:
    objects = [d for d in yaml.safe_load_all(manifest) if d and d.get("kind") in KINDS]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return objects


def assert_stored_as_sent(hub: handles.Cluster, objects: list[dict[str, Any]]) -> None:
    """Apply for real, read back: the stored spec must equal the sent one (no pruning)."""
    assert sorted(o["kind"] for o in objects) == sorted(KINDS), [o["kind"] for o in objects]
    kubectl(hub, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))
    for sent in objects:
        meta = sent["metadata"]
        stored = yaml.safe_load(
            kubectl(hub, "get", sent["kind"], meta["name"], "-n", meta["namespace"], "-o", "yaml")
        )
        assert stored["spec"] == sent["spec"], f"{sent['kind']} was changed by the API server"


def test_kustomize_monitoring_component_is_stored_unpruned(
    hub: handles.Cluster, prometheus_operator_crds: None, scratch_namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(MANIFESTS, tmp_path)],
                "components": [os.path.relpath(MANIFESTS / "monitoring", tmp_path)],
            }
        )
    )
    rendered = kubectl(hub, "kustomize", str(tmp_path))
    objects = monitoring_objects(rendered, scratch_namespace)
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    assert sum(len(group["rules"]) for group in rule["spec"]["groups"]) >= 7
    assert_stored_as_sent(hub, objects)


def test_helm_monitoring_objects_are_stored_unpruned(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    prometheus_operator_crds: None,
    scratch_namespace: str,
) -> None:
    rendered = helm(
        testbed_handle,
        "template",
        "ef-mon",
        str(CHART),
        "--namespace",
        scratch_namespace,
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.serviceMonitor.labels.release=kube-prometheus",
    )
    objects = monitoring_objects(rendered, scratch_namespace)
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert_stored_as_sent(hub, objects)


def test_a_misspelt_field_would_be_caught(
    hub: handles.Cluster, prometheus_operator_crds: None, scratch_namespace: str
) -> None:
    """The check above can fail: the real CRD knows its fields (refused, or else pruned)."""
    monitoring = MANIFESTS / "monitoring"
    objects = monitoring_objects(
        (monitoring / "servicemonitor.yaml").read_text()
        + "\n---\n"
        + (monitoring / "prometheusrule.yaml").read_text(),
        scratch_namespace,
    )
    objects[0]["spec"]["endpoints"][0]["honourLabels"] = True
    with pytest.raises(AssertionError) as caught:
        assert_stored_as_sent(hub, objects)
    text = str(caught.value)
    assert "honourLabels" in text or "changed by the API server" in text, text
