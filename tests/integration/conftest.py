"""Fixtures for rollout tests: the real operator process and a fleet of EdgeTargets per test.

The operator is the real `python -m edgeferry` of this checkout, started under the testbed's
supervisor (so `make testbed-down` stops it too). A session that finds one running reuses it only
if it was started from this checkout's current code with the settings the tests expect
(`operator_process.fingerprint`); otherwise it is restarted first. A session that found an
operator leaves one running; one that found none stops it at the end. To test an operator you
run yourself, set `EDGEFERRY_TEST_OPERATOR_METRICS` to its /metrics URL.

Each test gets a namespace of its own on the hub holding three EdgeTargets, one per cluster of
the testbed (see `_resources.TARGET_LABELS`), with kubeconfig Secrets for the two edges. Workloads
go to a namespace of the same name at every target, so tests never see each other's Deployments.
Teardown deletes the test's ModelDeployments first and waits (the operator's finalizer removes
their workloads), then its EdgeTargets (their finalizers), then the namespaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import handles, incluster, operator_process, procs, pytest_plugin, testbed
from tests.integration import _resources

EXTERNAL_OPERATOR = "EDGEFERRY_TEST_OPERATOR_METRICS"
"""Set to an operator's /metrics URL to test an operator you run yourself (e.g. in a debugger)."""


@pytest.fixture(scope="session")
def operator(testbed_handle: handles.Testbed) -> Iterator[procs.Managed | None]:
    """The operator process (`python -m edgeferry`) of this checkout, as the tests configure it."""
    if os.environ.get(EXTERNAL_OPERATOR):
        operator_process.install_crds(testbed_handle.env)
        yield None
        return
    bed = testbed.Testbed()
    found = bed.sup.find("operator")
    if incluster.installed(testbed_handle.env):
        # Left by `make demo`: it would reconcile the demo's namespace beside this operator.
        print("tests: uninstalling the in-cluster operator the demo left", flush=True)
        incluster.uninstall(bed.layout, testbed_handle.env)
    managed = operator_process.start(bed, testbed_handle.env)
    yield managed
    if found is None:
        operator_process.stop(bed)


def operator_metric(bed: handles.Testbed, series: str, /, **labels: str) -> float | None:
    """One sample of the operator's /metrics: `series` with exactly these labels, or None."""
    url = os.environ.get(EXTERNAL_OPERATOR) or (
        f"http://127.0.0.1:{bed.env.operator_metrics_port}/metrics"
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        metric, _, rest = sample.partition("{")
        if line.startswith("#") or metric != series:
            continue
        found = dict(_LABEL.findall(rest))
        if found == labels:
            return float(value)
    return None


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclasses.dataclass
class Fleet:
    """A test's namespace on the hub, its EdgeTargets, and the clusters behind them."""

    namespace: str
    bed: handles.Testbed

    @property
    def hub(self) -> handles.Cluster:
        return self.bed.hub

    def cluster_of(self, target: str) -> handles.Cluster:
        """The testbed cluster an EdgeTarget stands for."""
        return self.bed.cluster(_resources.TARGET_CLUSTERS[target])


def _delete_all(hub: handles.Cluster, namespace: str, plural: str) -> None:
    """Delete every `plural` in the namespace and wait until the operator's finalizers let go.

    Done before the namespace is deleted: the namespace controller re-checks content that
    still has finalizers only every 15 s, so leaving EdgeTargets to it costs half a minute.
    """
    hub.kubectl("-n", namespace, "delete", plural, "--all", "--wait=false", check=False)
    with hub.api_client() as api:
        custom = k8s_client.CustomObjectsApi(api)

        def gone() -> bool:
            found = custom.list_namespaced_custom_object(
                _resources.GROUP, _resources.VERSION, namespace, plural
            )
            return not found.get("items")

        _resources.wait_until(f"{plural} in {namespace} to go", gone, timeout=180)


def _delete_namespace(cluster: handles.Cluster, namespace: str) -> None:
    """Delete a namespace without waiting for it to go (its name is never used again)."""
    with cluster.api_client() as api, contextlib.suppress(k8s_exceptions.ApiException):
        k8s_client.CoreV1Api(api).delete_namespace(namespace)


@pytest.fixture
def fleet(
    operator: procs.Managed | None,
    testbed_handle: handles.Testbed,
    unique_name: str,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    """A namespace with EdgeTargets `cloud` (hub CPU pool), `edge-1` (arm64), `edge-2` (amd64).

    `@pytest.mark.fleet_without("edge-2")` leaves targets out: the operator then holds no
    credential for that cluster (`tests/integration/test_pull_mode.py` makes it an agent's site).
    """
    marker = request.node.get_closest_marker("fleet_without")
    names = [t for t in _resources.TARGET_CLUSTERS if t not in (marker.args if marker else ())]
    hub = testbed_handle.hub
    namespace = unique_name
    pytest_plugin.make_namespace(hub, namespace)
    # As a platform team would: let the operator read this namespace's Secrets and run the
    # Cloud target's workloads here (it runs with its own ServiceAccount's RBAC).
    operator_process.grant_namespace(testbed_handle.env, namespace, workloads=True)
    try:
        _resources.apply(
            hub,
            namespace,
            *_resources.testbed_targets(testbed_handle, workload_namespace=namespace, names=names),
        )
        _resources.wait_targets_ready(hub, namespace, names)
        yield Fleet(namespace=namespace, bed=testbed_handle)
    finally:
        # Everything the operator acts on goes first, each waited for: then nothing of this
        # test is left that the operator or its metrics still see. The namespace itself is not
        # waited for: what is left in it (Pods of a test's own Deployments, their grace period,
        # Secrets) is no one's business, and waiting cost ~40 s per test.
        _delete_all(hub, namespace, "modeldeployments")
        _delete_all(hub, namespace, "edgetargets")
        _delete_all(hub, namespace, "modelimages")
        for cluster in (*testbed_handle.edges, hub):
            _delete_namespace(cluster, namespace)
