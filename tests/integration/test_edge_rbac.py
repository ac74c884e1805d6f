"""The operator reaches the edges as the shipped edge RBAC allows (`manifests/edge/`), and no more.

The testbed applies that RBAC at each edge cluster and gives EdgeTargets only its token
(`edgeferry_testbed.edge_access`), so every rollout test at an edge proves it sufficient. These
tests prove the rest: the kubeconfig Secrets really hold that identity, the site really refuses
it what the RBAC leaves out (real API answers, 403), and a site that grants only the base roles
reports which right is missing.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import edge_access, handles
from tests.integration import _resources as res
from tests.integration.conftest import Fleet
from tests.integration.test_rollout import apply_deployment, build_images

pytestmark = pytest.mark.integration


def whoami(cluster: handles.Cluster, kubeconfig: Path) -> str:
    """The user the API server sees for `kubeconfig` (a SelfSubjectReview)."""
    done = subprocess.run(
        [cluster.kubectl_path, f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return str(json.loads(done.stdout)["status"]["userInfo"]["username"])


def test_edgetargets_reach_the_edges_as_the_edge_service_account_not_as_admin(
    fleet: Fleet, tmp_path: Path
) -> None:
    with fleet.hub.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        for target in ("edge-1", "edge-2"):
            secret = core.read_namespaced_secret(f"{target}-kubeconfig", fleet.namespace)
            kubeconfig = tmp_path / f"{target}.kubeconfig"
            kubeconfig.write_bytes(base64.b64decode(secret.data["kubeconfig"]))
            cluster = fleet.cluster_of(target)
            assert whoami(cluster, kubeconfig) == edge_access.SERVICE_ACCOUNT
            assert whoami(cluster, Path(cluster.kubeconfig)) != edge_access.SERVICE_ACCOUNT


def _status_of(call: Callable[[], Any]) -> int:
    try:
        call()
    except k8s_exceptions.ApiException as exc:
        return int(exc.status)
    return 200


@pytest.mark.parametrize("edge_name", ["edge-1", "edge-2"])
def test_the_edge_token_is_refused_secrets_kube_system_writes_and_rbac(
    testbed_handle: handles.Testbed, edge_name: str
) -> None:
    edge = testbed_handle.cluster(edge_name)
    configmap = {"metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}"}, "data": {"a": "b"}}
    pod = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    binding = {
        "metadata": {"name": "edgeferry-escalation-probe"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [{"kind": "User", "name": "x"}],
    }
    label = {"metadata": {"labels": {"x": "y"}}}
    with k8s_config.new_client_from_config(config_file=edge.target_kubeconfig) as api:
        core = k8s_client.CoreV1Api(api)
        rbac = k8s_client.RbacAuthorizationV1Api(api)
        refused: dict[str, Callable[[], Any]] = {
            "get its own token Secret": lambda: core.read_namespaced_secret(
                "edgeferry-edge-token", "edgeferry-system"
            ),
            "list Secrets anywhere": lambda: core.list_secret_for_all_namespaces(limit=1),
            "create a ConfigMap in kube-system": lambda: core.create_namespaced_config_map(
                "kube-system", configmap, dry_run="All"
            ),
            "create a Pod in kube-system": lambda: core.create_namespaced_pod(
                "kube-system", pod, dry_run="All"
            ),
            "delete kube-system": lambda: core.delete_namespace("kube-system", dry_run="All"),
            "label kube-system": lambda: core.patch_namespace("kube-system", label, dry_run="All"),
            "label a Node": lambda: core.patch_node(edge.info.nodes[0], label, dry_run="All"),
            "bind itself a role": lambda: rbac.create_cluster_role_binding(binding, dry_run="All"),
        }
        answers = {what: _status_of(call) for what, call in refused.items()}
        assert answers == dict.fromkeys(refused, 403)
        # The same token is accepted for what the operator does (not refused for any reason).
        assert _status_of(lambda: core.list_node(limit=1)) == 200
        assert _status_of(lambda: core.read_namespace("kube-system")) == 200


@pytest.fixture
def probe_only(fleet: Fleet) -> Iterator[str]:
    """At edge-2, a second identity bound to the base role only (`manifests/edge/base/`, no
    workload grant); yields a kubeconfig for it. Removed again at the end."""
    edge = fleet.cluster_of("edge-2")
    name = f"edgeferry-probe-{uuid.uuid4().hex[:6]}"
    edge.kubectl("-n", "edgeferry-system", "create", "serviceaccount", name)
    edge.kubectl(
        "create",
        "clusterrolebinding",
        name,
        "--clusterrole=edgeferry-edge",
        f"--serviceaccount=edgeferry-system:{name}",
    )
    try:
        token = edge.kubectl(
            "-n", "edgeferry-system", "create", "token", name, "--duration=1h"
        ).stdout.strip()
        config = yaml.safe_load(Path(edge.target_kubeconfig).read_text())
        config["users"][0]["user"] = {"token": token}
        yield yaml.safe_dump(config)
    finally:
        edge.kubectl("delete", "clusterrolebinding", name, "--wait=false", check=False)
        edge.kubectl("-n", "edgeferry-system", "delete", "serviceaccount", name, check=False)


def test_a_site_without_the_workload_grant_names_the_missing_right(
    fleet: Fleet, probe_only: str
) -> None:
    res.apply(
        fleet.hub,
        fleet.namespace,
        res.kubeconfig_secret("probe-only-kubeconfig", probe_only),
        res.edge_target(
            "probe-only",
            workload_namespace=fleet.namespace,
            labels={"tier": "edge", "arch": "probe-only"},
            secret="probe-only-kubeconfig",
        ),
    )
    # The base role alone is enough for the probe: the target is Ready.
    res.wait_targets_ready(fleet.hub, fleet.namespace, ["probe-only"])
    build_images(fleet, server="server")
    selector = {"matchLabels": {"arch": "probe-only"}}
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=selector))

    def denied() -> dict[str, Any] | None:
        obj = res.get_object(fleet.hub, fleet.namespace, "modeldeployments", "model") or {}
        line = res.target_line(obj, "probe-only")
        return line if "forbidden" in (line.get("lastError") or "") else None

    error = res.wait_until("the rollout to report the missing right", denied, timeout=90)[
        "lastError"
    ]
    user = "system:serviceaccount:edgeferry-system:edgeferry-probe-"
    assert user in error, error
    assert f"may not get deployments.apps in namespace {fleet.namespace};" in error, error
    assert "manifests/edge/" in error, error
