"""`helm install charts/edgeferry-agent` at a real edge API server gives the agent its rights.

`tests/unit/test_agent_chart.py` proves the chart renders what `manifests/edge/agent/` does;
this test installs it at edge-1 and asks that site's API server (SubjectAccessReviews, answered by
its real RBAC authorizer) what the agent's ServiceAccount may do: run models in the namespace it
serves, nothing in another namespace, no Secrets anywhere. `helm uninstall` takes it all away
again. The agent's Pod is not waited for (it lands on a kwok node, which runs nothing: the real
node's taint is not tolerated): what is checked is the identity and rights the chart installs,
the Pod spec is the unit test's.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s_client

from edgeferry_testbed import handles, layout, pytest_plugin

pytestmark = pytest.mark.integration

CHART = layout.REPO_ROOT / "charts" / "edgeferry-agent"
SITE = "edge-1"
"""Not edge-2, whose audit log `test_pull_mode.py` reads for the agent's requests only."""

Ask = tuple[str, str, str, str]
"""A request to ask about: (verb, API group, resource, namespace; "" for cluster-wide)."""


@pytest.fixture
def site(testbed_handle: handles.Testbed, unique_name: str) -> Iterator[dict[str, str]]:
    """Namespaces at the site for one install: the release's, the one the agent serves, another."""
    edge = testbed_handle.cluster(SITE)
    names = {
        "release": f"agent-{uuid.uuid4().hex[:6]}",
        "served": unique_name,
        "other": f"{unique_name}-other",
    }
    for name in names.values():
        pytest_plugin.make_namespace(edge, name)
    yield names
    for name in names.values():
        edge.kubectl("delete", "namespace", name, "--wait=false", check=False)


def helm(bed: handles.Testbed, *args: str) -> str:
    command = [bed.env.tools["helm"], f"--kubeconfig={bed.cluster(SITE).kubeconfig}", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def allowed(edge: handles.Cluster, user: str, asks: list[Ask]) -> dict[Ask, bool]:
    """The site's RBAC answers for `user` (a ServiceAccount, with its groups)."""
    namespace = user.split(":")[2]
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    answers: dict[Ask, bool] = {}
    with edge.api_client() as api:
        authorization = k8s_client.AuthorizationV1Api(api)
        for verb, group, resource, where in asks:
            review = k8s_client.V1SubjectAccessReview(
                spec=k8s_client.V1SubjectAccessReviewSpec(
                    user=user,
                    groups=[*groups, "system:authenticated"],
                    resource_attributes=k8s_client.V1ResourceAttributes(
                        verb=verb, group=group, resource=resource, namespace=where or None
                    ),
                )
            )
            answers[verb, group, resource, where] = bool(
                authorization.create_subject_access_review(review).status.allowed
            )
    return answers


def settled(edge: handles.Cluster, user: str, expected: dict[Ask, bool]) -> dict[Ask, bool]:
    """The answers once they are `expected`, or the last ones after 20 s: the authorizer's RBAC
    cache follows new and deleted bindings within moments, not at once."""
    deadline = time.monotonic() + 20
    while (answers := allowed(edge, user, list(expected))) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return answers


def test_the_agent_chart_grants_its_namespace_only_and_uninstall_takes_it_away(
    testbed_handle: handles.Testbed, site: dict[str, str]
) -> None:
    edge = testbed_handle.cluster(SITE)
    prefix = f"it-{site['release']}"  # beside the site's own `edgeferry-edge` (push mode)
    user = f"system:serviceaccount:{site['release']}:{prefix}-edge"
    served, other = site["served"], site["other"]
    granted: list[Ask] = [
        *[(verb, "apps", "deployments", served) for verb in ("create", "patch", "delete", "watch")],
        ("create", "", "services", served),
        ("create", "apps", "daemonsets", served),
        ("list", "", "pods", served),
        ("list", "", "nodes", ""),
        ("get", "", "namespaces", ""),
    ]
    refused: list[Ask] = [
        ("get", "", "secrets", served),
        ("list", "", "secrets", site["release"]),
        ("get", "", "configmaps", served),
        ("create", "", "pods", served),
        ("create", "apps", "deployments", other),
        ("list", "", "pods", other),
        ("create", "", "namespaces", ""),
        ("create", "rbac.authorization.k8s.io", "rolebindings", served),
    ]
    helm(
        testbed_handle,
        "install",
        "agent",
        str(CHART),
        "--namespace",
        site["release"],
        "--set",
        f"namePrefix={prefix}",
        "--set",
        "target.hubNamespace=edgeferry-agent-chart-test",
        "--set",
        f"target.namespace={served}",
        "--set",
        "hubKubeconfigSecret=edgeferry-agent-hub",
    )
    installed = True
    try:
        expected = dict.fromkeys(granted, True) | dict.fromkeys(refused, False)
        assert settled(edge, user, expected) == expected
        deployment = edge.kubectl(
            "-n",
            site["release"],
            "get",
            "deployment",
            f"{prefix}-agent",
            "-o",
            "jsonpath={.spec.template.spec.serviceAccountName}",
        ).stdout
        assert deployment == f"{prefix}-edge"
        helm(testbed_handle, "uninstall", "agent", "--namespace", site["release"], "--wait")
        installed = False
        withdrawn = dict.fromkeys([*granted, *refused], False)
        assert settled(edge, user, withdrawn) == withdrawn
        left = edge.kubectl("get", "clusterroles,clusterrolebindings", "-o", "name").stdout.split()
        assert [name for name in left if prefix in name] == []
        found = edge.kubectl(
            "-n", site["release"], "get", "serviceaccounts,deployments", "-o", "name"
        ).stdout.split()
        assert [name for name in found if prefix in name] == []
    finally:
        if installed:
            helm(testbed_handle, "uninstall", "agent", "--namespace", site["release"])
