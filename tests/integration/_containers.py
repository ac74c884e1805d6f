"""Where the container integration tests find Docker and the registry, until testbed fixtures do.

For now the registry address comes from ``EDGEFERRY_REGISTRY`` (default ``127.0.0.1:5000``) and
the daemon from ``DOCKER_HOST`` (default: the local socket). These are plain functions rather than
fixtures so the test module can wrap them in fixtures of its own scope, and the testbed's session
fixtures can replace them without touching the tests' bodies.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import docker
import docker.errors

from edgeferry.adapters import docker_build, registry

DEFAULT_REGISTRY = "127.0.0.1:5000"
#: Every container and image a test makes carries this label, with a value unique to the test.
TEST_LABEL = "edgeferry.io/test-run"


def registry_host() -> str:
    return os.environ.get("EDGEFERRY_REGISTRY", DEFAULT_REGISTRY)


def docker_api() -> docker.APIClient:
    """An Engine API client for ``DOCKER_HOST``, checked to answer."""
    api = docker_build.connect(os.environ.get("DOCKER_HOST"))
    api.ping()
    return api


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def containers_labelled(api: docker.APIClient, run_id: str) -> list[dict[str, object]]:
    """All containers (running or not) that carry this test's label."""
    found: list[dict[str, object]] = api.containers(
        all=True, filters={"label": f"{TEST_LABEL}={run_id}"}
    )
    return found


@contextlib.contextmanager
def cleanup(api: docker.APIClient, run_id: str) -> Iterator[list[tuple[str, str]]]:
    """Yield a list to append ``(repository, digest)`` pushes to; remove everything afterwards.

    Removes this run's containers, its local images (by label) and the pushed manifests.
    """
    pushed: list[tuple[str, str]] = []
    try:
        yield pushed
    finally:
        for container in containers_labelled(api, run_id):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(str(container["Id"]), force=True)
        for image in api.images(filters={"label": f"{TEST_LABEL}={run_id}"}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                api.remove_image(str(image["Id"]), force=True)
        with registry.RegistryClient() as client:
            for repository, digest in pushed:
                client.delete_manifest(repository, digest)
