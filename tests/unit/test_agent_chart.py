"""The agent's Helm chart (`charts/edgeferry-agent`) installs what `manifests/edge/agent/` does.

A site installs `edgeferry-agent` either with `kubectl apply -k manifests/edge/agent/` plus the
grant it picks (`manifests/edge/workload-access/` in the namespace it serves, or
`manifests/edge/all-namespaces/`), or with the chart and `siteAccess`. Both must give the agent
the same objects: the same identity, the same RBAC, the same Pod. What differs is normalised away
as for the hub's chart (`test_install_parity`): Helm's own labels, and the Namespace that Helm
leaves to `--create-namespace`. Neither install keeps the base's long-lived token Secret.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit import _binaries, test_chart, test_install_parity

CHART = _binaries.REPO / "charts" / "edgeferry-agent"
EDGE = _binaries.REPO / "manifests" / "edge"
SHIPPED = (
    "target.hubNamespace=edgeferry-agent-CHANGE-ME",
    "target.namespace=models",
    "hubKubeconfigSecret=edgeferry-agent-hub",
)
"""The values manifests/edge/agent/agent.yaml ships with (its placeholders and its Secret)."""
NAMESPACE = ("v1", "Namespace", "", "edgeferry-system")
TOKEN = ("v1", "Secret", "edgeferry-system", "edgeferry-edge-token")

Objects = dict[test_install_parity.Key, dict[str, Any]]


def _template(
    *values: str, release: str = "edgeferry", namespace: str = "edgeferry-system"
) -> subprocess.CompletedProcess[str]:
    command = [_binaries.helm(), "template", release, str(CHART), "-n", namespace]
    for value in values:
        command += ["--set", value]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _chart(
    *values: str, release: str = "edgeferry", namespace: str = "edgeferry-system"
) -> Objects:
    done = _template(*values, release=release, namespace=namespace)
    assert done.returncode == 0, done.stderr
    return test_install_parity.normalise(yaml.safe_load_all(done.stdout))


def _kustomize(path: Path, tmp_path: Path, *, namespace: str = "") -> Objects:
    overlay = tmp_path / path.name
    overlay.mkdir()
    return test_install_parity.kustomize(resources=[path], namespace=namespace, tmp_path=overlay)


def _shipped_agent(tmp_path: Path) -> Objects:
    agent = _kustomize(EDGE / "agent", tmp_path)
    del agent[NAMESPACE]  # Helm leaves it to --create-namespace
    return agent


def test_namespace_access_renders_the_agent_kustomization_with_workload_access(
    tmp_path: Path,
) -> None:
    expected = _shipped_agent(tmp_path) | _kustomize(
        EDGE / "workload-access", tmp_path, namespace="models"
    )
    test_install_parity.assert_same_objects(_chart(*SHIPPED), expected)


def test_all_namespaces_renders_the_agent_kustomization_with_all_namespaces(
    tmp_path: Path,
) -> None:
    base = _kustomize(EDGE / "base", tmp_path)
    everything = _kustomize(EDGE / "all-namespaces", tmp_path)
    grant = {key: obj for key, obj in everything.items() if key not in base}
    assert sorted((kind, name) for _, kind, _, name in grant) == [
        ("ClusterRole", "edgeferry-edge-namespaces"),
        ("ClusterRoleBinding", "edgeferry-edge-namespaces"),
        ("ClusterRoleBinding", "edgeferry-edge-workloads"),
    ]
    expected = _shipped_agent(tmp_path) | grant
    test_install_parity.assert_same_objects(_chart(*SHIPPED, "siteAccess=allNamespaces"), expected)


def test_neither_install_keeps_the_bases_token_secret(tmp_path: Path) -> None:
    assert TOKEN in _kustomize(EDGE / "base", tmp_path), "push mode's base still has its token"
    assert TOKEN not in _shipped_agent(tmp_path)
    for access in ("namespace", "allNamespaces"):
        kinds = {kind for _, kind, _, _ in _chart(*SHIPPED, f"siteAccess={access}")}
        assert "Secret" not in kinds


def test_values_reach_the_agent_container() -> None:
    objects = _chart(
        "target.hubNamespace=edgeferry-agent-shop-17",
        "target.namespace=shop",
        "hubKubeconfigSecret=hub-access",
        "image.repository=registry.lab/edgeferry/operator",
        "image.tag=0.2.0",
        "image.pullPolicy=Always",
        "intervalSeconds=3",
        "resources.limits.memory=512Mi",
    )
    deployment = objects[("apps/v1", "Deployment", "edgeferry-system", "edgeferry-agent")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EDGEFERRY_AGENT_HUB_NAMESPACE"] == "edgeferry-agent-shop-17"
    assert env["EDGEFERRY_AGENT_NAMESPACE"] == "shop"
    assert env["EDGEFERRY_AGENT_INTERVAL_SECONDS"] == "3"
    assert container["image"] == "registry.lab/edgeferry/operator:0.2.0"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    (hub,) = [v for v in pod["volumes"] if v["name"] == "hub"]
    assert hub["secret"] == {"secretName": "hub-access"}
    (binding,) = [obj for key, obj in objects.items() if key[1] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == "shop"


def test_name_prefix_and_release_namespace_rename_every_object_and_subject() -> None:
    objects = _chart(*SHIPPED, "namePrefix=site-b", "siteAccess=allNamespaces", namespace="agents")
    names = sorted(name for _, _, _, name in objects)
    assert names == [
        "site-b-agent",
        "site-b-edge",
        "site-b-edge",
        "site-b-edge",
        "site-b-edge-namespaces",
        "site-b-edge-namespaces",
        "site-b-edge-workloads",
        "site-b-edge-workloads",
    ]
    for key, obj in objects.items():
        if key[1] == "ClusterRoleBinding":
            assert obj["subjects"] == [
                {"kind": "ServiceAccount", "name": "site-b-edge", "namespace": "agents"}
            ]
            assert obj["roleRef"]["name"] == obj["metadata"]["name"]
    deployment = objects[("apps/v1", "Deployment", "agents", "site-b-agent")]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "site-b-edge"


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (
            "target.hubNamespace",
            "target.hubNamespace is required: the EdgeTarget's status.agentNamespace",
        ),
        ("target.namespace", "target.namespace is required: the site namespace"),
        ("hubKubeconfigSecret", "hubKubeconfigSecret is required: the Secret"),
    ],
)
@pytest.mark.parametrize("access", ["namespace", "allNamespaces"])
def test_a_missing_required_value_fails_saying_what_to_set(
    missing: str, message: str, access: str
) -> None:
    values = [v for v in SHIPPED if not v.startswith(f"{missing}=")]
    assert len(values) == len(SHIPPED) - 1
    done = _template(*values, f"siteAccess={access}")
    assert done.returncode != 0, f"rendered without {missing}"
    assert message in done.stderr


@pytest.mark.parametrize(
    "bad",
    [
        "siteAcess=namespace",
        "target.hubNamespce=edgeferry-agent-x",
        "hubKubeconfig=hub",
        "image.tagg=1.0",
        "image.digest=sha256:" + "a" * 64,
        "resources.limits.memroy=1Gi",
        "rbac.create=false",
        "siteAccess=cluster",
        "intervalSeconds=0",
        "target.namespace=Models",
        "image.pullPolicy=Sometimes",
        "namePrefix=Edge_Ferry",
    ],
)
def test_values_schema_refuses_unknown_keys_and_bad_values(bad: str) -> None:
    done = _template(*SHIPPED, bad)
    assert done.returncode != 0, f"--set {bad} was accepted"
    assert "schema" in done.stderr


def test_every_schema_object_lists_its_properties() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = [
        path
        for path, node in test_chart.schema_objects(schema, "")
        if path != "global" and node.get("additionalProperties") is not False
    ]
    assert open_objects == [], f"schema objects that accept any key: {open_objects}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


@pytest.mark.parametrize("access", ["namespace", "allNamespaces"])
def test_chart_passes_strict_lint(access: str) -> None:
    command = [_binaries.helm(), "lint", "--strict", str(CHART), "--set", f"siteAccess={access}"]
    for value in SHIPPED:
        command += ["--set", value]
    assert "0 chart(s) failed" in _binaries.run(command)
