"""pytest fixtures over the testbed (session scope).

The first integration test brings the testbed up, or reuses one that `make testbed-up` already
started; a testbed this session started is taken down again at the end, one it found is left
running. Unit tests never touch it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s_client

from edgeferry_testbed import handles, testbed


@pytest.fixture(scope="session")
def testbed_handle() -> Iterator[handles.Testbed]:
    bed = testbed.Testbed()
    was_running = bed.sup.find("etcd") is not None and bed.layout.env_file.exists()
    described = bed.up()
    yield handles.Testbed(described)
    if not was_running:
        bed.down()


@pytest.fixture(scope="session")
def hub(testbed_handle: handles.Testbed) -> handles.Cluster:
    return testbed_handle.hub


@pytest.fixture(scope="session")
def edge_clusters(testbed_handle: handles.Testbed) -> list[handles.Cluster]:
    return list(testbed_handle.edges)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A DNS-1123 name unique to this test, e.g. for namespaces."""
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:6]}"


def make_namespace(cluster: handles.Cluster, name: str) -> None:
    with cluster.api_client() as api:
        k8s_client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})


def delete_namespace(cluster: handles.Cluster, name: str) -> None:
    with cluster.api_client() as api:
        k8s_client.CoreV1Api(api).delete_namespace(name)
