"""The edge RBAC users apply at a K3s site (`manifests/edge/`) stays least privilege.

That it is *enough* is proven by the integration tests: the testbed's edges are reached only with
its token (`edgeferry_testbed.edge_access`); `tests/integration/test_edge_rbac.py` checks what it
is refused there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeferry_testbed import agent_site
from tests.unit import _binaries

EDGE = _binaries.REPO / "manifests" / "edge"
WRITES = {
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "escalate",
    "bind",
    "impersonate",
}
SUBJECT = {"kind": "ServiceAccount", "name": "edgeferry-edge", "namespace": "edgeferry-system"}


def rendered(path: Path) -> list[dict[str, Any]]:
    out = _binaries.run([_binaries.kubectl(), "kustomize", str(path)])
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for doc in docs if doc["kind"] == "ClusterRole" for rule in doc["rules"]]


@pytest.mark.parametrize("variant", ["base", "all-namespaces"])
def test_no_rule_uses_a_wildcard(variant: str) -> None:
    for rule in rules(rendered(EDGE / variant)):
        for field in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), rule


def test_the_operator_may_not_read_secrets_or_configmaps_at_a_site() -> None:
    for rule in rules(rendered(EDGE / "all-namespaces")):
        assert not {"secrets", "configmaps"} & set(rule.get("resources", [])), rule


def test_only_workloads_are_written_and_namespaces_only_created() -> None:
    written: dict[str, set[str]] = {}
    for rule in rules(rendered(EDGE / "all-namespaces")):
        for resource in rule.get("resources", []):
            written.setdefault(resource, set()).update(WRITES & set(rule["verbs"]))
    assert {r: v for r, v in written.items() if v} == {
        "deployments": {"create", "patch", "delete"},
        "daemonsets": {"create", "patch", "delete"},
        "services": {"create", "patch", "delete"},
        "namespaces": {"create"},
    }


def test_the_base_grants_nothing_in_a_namespace_and_creates_no_namespace() -> None:
    base = rules(rendered(EDGE / "base"))
    bound = {
        doc["roleRef"]["name"]
        for doc in rendered(EDGE / "base")
        if doc["kind"] == "ClusterRoleBinding"
    }
    assert bound == {"edgeferry-edge"}
    assert not any(
        "create" in rule["verbs"] for rule in base if "namespaces" in rule.get("resources", [])
    )


def test_every_binding_and_the_token_name_the_edge_service_account() -> None:
    docs = rendered(EDGE / "all-namespaces")
    for doc in docs:
        if doc["kind"] in {"ClusterRoleBinding", "RoleBinding"}:
            assert doc["subjects"] == [SUBJECT], doc["metadata"]["name"]
    (token,) = [d for d in docs if d["kind"] == "Secret"]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == SUBJECT["name"]
    (binding,) = rendered(EDGE / "workload-access")
    assert binding["roleRef"]["name"] == "edgeferry-edge-workloads"
    assert binding["subjects"] == [SUBJECT]


def test_the_site_agent_runs_as_the_edge_identity_with_the_flags_it_reads() -> None:
    # Pull mode: the agent at the site gets exactly the edge RBAC push mode gives the operator,
    # and its manifest sets the environment `edgeferry.agent.main` reads, nothing else.
    docs = rendered(EDGE / "agent")
    assert rules(docs) == rules(rendered(EDGE / "base"))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SUBJECT["name"]
    (container,) = pod["containers"]
    assert container["args"] == ["agent"]
    source = (_binaries.REPO / "operator" / "edgeferry" / "agent" / "main.py").read_text()
    for env in container["env"]:
        if env["name"].startswith("EDGEFERRY_AGENT_"):
            assert f'"{env["name"]}"' in source, env["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_demo_runs_the_shipped_agent_changing_only_image_placement_and_settings() -> None:
    # `make demo` applies this manifest in edge-1 (`edgeferry_testbed.agent_site`): the identity,
    # RBAC and security context stay the shipped ones.
    shipped = rendered(EDGE / "agent")
    docs = agent_site.agent_manifests(
        shipped,
        image="10.255.0.1:5000/edgeferry/operator@sha256:" + "0" * 64,
        hub_namespace="edgeferry-agent-demo-shop",
        site_namespace="shop",
        site_api="10.255.0.1:31444",
    )
    assert [d for d in docs if d["kind"] != "Deployment"] == [
        d for d in shipped if d["kind"] != "Deployment"
    ]
    (before,) = [d["spec"]["template"]["spec"] for d in shipped if d["kind"] == "Deployment"]
    (after,) = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    assert after["serviceAccountName"] == before["serviceAccountName"] == SUBJECT["name"]
    assert after["securityContext"] == before["securityContext"]
    (container,) = after["containers"]
    assert container["securityContext"] == before["containers"][0]["securityContext"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EDGEFERRY_AGENT_HUB_NAMESPACE"] == "edgeferry-agent-demo-shop"
    assert env["EDGEFERRY_AGENT_NAMESPACE"] == "shop"
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == (
        "10.255.0.1",
        "31444",
    )
    assert after["nodeSelector"]["edgeferry.io/node-kind"] == "real"
