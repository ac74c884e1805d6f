"""The operator survives being killed: kill -9 at random moments while images build and roll out.

Each cycle changes the image's inputs (a new model), which makes the operator lint, build, smoke
test, scan, push and roll the new digest out in two waves; at a random moment of that cycle the
operator is killed with SIGKILL (its whole process group, as a node failure would) and started
again from this checkout. Then the registry and the targets are checked, not the operator's
own status:

- the registry's storage holds exactly one manifest per cycle: a restart never pushed a second,
  different image for inputs it had already pushed;
- a watch on each target's Deployment saw only admitted digests, in cycle order, and never went
  back to an older one (no target was written with two different digests for one cycle);
- at the end every target runs the last cycle's digest, Ready.

`EDGEFERRY_KILL_LOOP_CYCLES` sets the cycle count (default 2, for CI; more on demand);
`EDGEFERRY_KILL_LOOP_SEED` makes the kill moments repeatable.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch

from edgeferry_testbed import handles, operator_process, services, testbed
from tests.integration import _resources as res
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration

CYCLES = int(os.environ.get("EDGEFERRY_KILL_LOOP_CYCLES", "2"))
SEED = int(os.environ.get("EDGEFERRY_KILL_LOOP_SEED", str(int(time.time()))))
KILL_WINDOW_S = 40.0
"""A cycle (build, smoke test, scan, push, two waves) takes about this long on the testbed."""
AMD64 = {"matchLabels": {"arch": "amd64"}}
TARGETS = ("cloud", "edge-2")


class DeploymentWatch:
    """Every image a target's Deployment `model` was written with, in order, from a real watch."""

    def __init__(self, cluster: handles.Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.images: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception), self.cluster.api_client() as api:
                apps = k8s_client.AppsV1Api(api)
                stream = k8s_watch.Watch().stream(
                    apps.list_namespaced_deployment,
                    self.namespace,
                    field_selector="metadata.name=model",
                    timeout_seconds=5,
                )
                for event in stream:
                    deployment = event["object"]
                    image = deployment.spec.template.spec.containers[0].image
                    if not self.images or self.images[-1] != image:
                        self.images.append(image)
                    if self._stop.is_set():
                        break

    def __enter__(self) -> DeploymentWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def pushed_manifests(bed: testbed.Testbed, repository: str) -> set[str]:
    """Every manifest digest the registry ever stored for `repository`, read from its storage."""
    path = repository.partition("/")[2]
    revisions = (
        bed.layout.cache_dir
        / "registry/docker/registry/v2/repositories"
        / path
        / "_manifests/revisions/sha256"
    )
    return {f"sha256:{p.name}" for p in revisions.iterdir()} if revisions.exists() else set()


def kill_at_random_moment(bed: testbed.Testbed, rng: random.Random, described: Any) -> float:
    """Sleep a random part of a cycle, kill -9 the operator, start it again; the delay used."""
    delay = rng.uniform(0, KILL_WINDOW_S)
    time.sleep(delay)
    assert bed.sup.kill("operator"), "the operator was not running when the kill came"
    operator_process.start(bed, described)
    return delay


@contextlib.contextmanager
def watching(fleet: Fleet) -> Iterator[dict[str, DeploymentWatch]]:
    watches = {t: DeploymentWatch(fleet.cluster_of(t), fleet.namespace) for t in TARGETS}
    with contextlib.ExitStack() as stack:
        for w in watches.values():
            stack.enter_context(w)
        yield watches


def test_operator_killed_at_random_moments_converges_without_duplicate_pushes(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    rng = random.Random(SEED)
    bed = testbed.Testbed()
    described = testbed_handle.env
    base = described.base_images["busybox"]
    repository = f"{testbed_handle.registry}/rollout-tests/{fleet.namespace}/model"

    def image_for(cycle: int) -> tuple[dict[str, Any], dict[str, Any]]:
        config_map, image = res.server_image(
            "model", base=base, registry=testbed_handle.registry, variant=f"cycle-{cycle}"
        )
        image["spec"]["push"] = {"repository": repository, "tags": [f"c{cycle}"]}
        return config_map, image

    res.create_model_image(fleet.hub, fleet.namespace, image_for(0))
    first = res.wait_model_image(fleet.hub, fleet.namespace, "model", phase="Ready")
    digests = [first["status"]["image"]["digest"]]
    res.apply(
        fleet.hub,
        fleet.namespace,
        res.model_deployment("model", image="model", selector=AMD64, replicas=1),
    )
    reference = f"{repository}@{digests[0]}"
    wait_serving(fleet, reference)

    delays: list[float] = []
    with watching(fleet) as watches:
        for cycle in range(1, CYCLES + 1):
            res.create_model_image(fleet.hub, fleet.namespace, image_for(cycle))
            delays.append(kill_at_random_moment(bed, rng, described))
            obj = res.wait_until(
                f"ModelImage model to be Ready for cycle {cycle}",
                functools.partial(ready_for_cycle, fleet, cycle),
                timeout=420,
                interval=1,
            )
            digests.append(obj["status"]["image"]["digest"])
            wait_serving(fleet, f"{repository}@{digests[-1]}")
        time.sleep(3)  # let the watches see the last writes

    context = f"seed {SEED}, kills after {[round(d, 1) for d in delays]} s"
    assert len(set(digests)) == len(digests), f"two cycles share a digest: {digests} ({context})"
    stored = pushed_manifests(bed, repository)
    assert stored == set(digests), (
        f"the registry stored {len(stored)} manifests for {CYCLES + 1} cycles: "
        f"extra {sorted(stored - set(digests))} ({context})"
    )
    expected = [f"{repository}@{d}" for d in digests[1:]]
    for target, w in watches.items():
        seen = [image for image in w.images if image != f"{repository}@{digests[0]}"]
        assert seen == expected, (
            f"{target} was written with {w.images}, expected each cycle's digest once in order "
            f"after {digests[0]} ({context})"
        )


def ready_for_cycle(fleet: Fleet, cycle: int) -> dict[str, Any] | None:
    obj = res.get_object(fleet.hub, fleet.namespace, "modelimages", "model")
    status = (obj or {}).get("status", {})
    if obj is None or status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    if status.get("phase") in {"Blocked", "Failed"}:
        raise AssertionError(
            f"cycle {cycle}: ModelImage settled as {status.get('phase')}: {status}"
        )
    tags = (status.get("image") or {}).get("tags") or []
    tagged = any(t == f"c{cycle}" or str(t).endswith(f":c{cycle}") for t in tags)
    return obj if status.get("phase") == "Ready" and tagged else None


def wait_serving(fleet: Fleet, reference: str) -> None:
    """Every target's ready Pods run `reference` and the ModelDeployment is Ready."""

    def check() -> bool:
        return all(
            res.pod_images(fleet.cluster_of(t), fleet.namespace, "model") == {reference}
            for t in TARGETS
        )

    res.wait_until(f"targets to serve {reference}", check, timeout=300)
    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready", timeout=120)


# --- the services the pipeline depends on go away and come back ----------------------------------
def own_service(bed: testbed.Testbed, name: str) -> None:
    """Fail (never skip) when the testbed did not start `name` itself: we stop only our own."""
    if bed.sup.find(name) is None:
        pytest.fail(
            f"this test stops and restarts {name}, but the {name} answering here was not started "
            f"by the testbed; stop it and let `python -m edgeferry_testbed up` start its own"
        )


def wait_phase_seen(hub: handles.Cluster, namespace: str, name: str, phase: str) -> None:
    """Poll fast until the ModelImage is in `phase` (a stage that lasts a few seconds)."""

    def seen() -> bool:
        obj = res.get_object(hub, namespace, "modelimages", name)
        return bool(obj and obj.get("status", {}).get("phase") == phase)

    res.wait_until(f"ModelImage {name} to be {phase}", seen, timeout=300, interval=0.05)


def big_server_image(
    name: str, *, described: Any, registry: str, variant: str, build_seconds: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The busybox server with a 160 MiB random layer, so that its push lasts seconds."""
    config_map, image = res.server_image(
        name, base=described.base_images["busybox"], registry=registry, variant=variant
    )
    first, _, rest = image["spec"]["build"]["dockerfile"].partition("\n")
    # The variant goes into the slow steps, so Docker's layer cache (warm from earlier runs)
    # never skips them and the registry has none of their blobs yet.
    slow = f"RUN echo {variant} > /variant && sleep {build_seconds}\n" if build_seconds else ""
    ballast = (
        f"RUN echo {variant} > /variant.ballast"
        " && dd if=/dev/urandom of=/ballast bs=1M count=160 2>/dev/null\n"
    )
    image["spec"]["build"]["dockerfile"] = f"{first}\n{slow}{ballast}{rest}"
    return config_map, image


def registry_manifest(registry: str, repository: str, tag: str) -> str | None:
    """The digest the registry serves for `repository:tag`, or None."""
    path = repository.partition("/")[2]
    request = urllib.request.Request(
        f"http://{registry}/v2/{path}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def test_registry_outage_during_a_push_is_retried_until_the_image_is_pushed(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    bed = testbed.Testbed()
    own_service(bed, "registry")
    manifests = big_server_image(
        "outage",
        described=testbed_handle.env,
        registry=testbed_handle.registry,
        variant=fleet.namespace,
    )
    repository = manifests[1]["spec"]["push"]["repository"]
    res.create_model_image(fleet.hub, fleet.namespace, manifests)
    wait_phase_seen(fleet.hub, fleet.namespace, "outage", "Pushing")
    assert bed.sup.stop("registry", grace=2)
    try:

        def retrying() -> dict[str, Any] | None:
            obj = res.get_object(fleet.hub, fleet.namespace, "modelimages", "outage")
            pushed = res.condition(obj, "Pushed")
            return obj if pushed.get("status") == "False" else None

        obj = res.wait_until("Pushed=False while the registry is down", retrying, timeout=180)
        pushed = res.condition(obj, "Pushed")
        assert pushed["reason"] == "RegistryUnavailable", pushed
        assert "retry" in pushed["message"], pushed
        assert res.condition(obj, "Reconciling").get("status") == "True", obj["status"]
        assert res.condition(obj, "Stalled") == {}, "a transient outage must not stall the image"
        assert res.condition(obj, "Ready")["status"] == "False"
        assert res.wait_events(fleet.hub, fleet.namespace, "outage", "RegistryUnavailable")
        time.sleep(5)  # a few backoff rounds against the dead registry
    finally:
        services.ensure_registry(bed.sup, bed.layout)

    # Back without any spec edit: the retry pushes, the image is admitted and served.
    generation = obj["metadata"]["generation"]
    ready = res.wait_model_image(fleet.hub, fleet.namespace, "outage", phase="Ready", timeout=300)
    assert ready["metadata"]["generation"] == generation, "the spec was never edited"
    digest = ready["status"]["image"]["digest"]
    assert registry_manifest(testbed_handle.registry, repository, "v1") == digest
    assert res.condition(ready, "Pushed")["status"] == "True"


def test_dockerd_restart_during_a_build_is_retried_and_the_image_converges(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    bed = testbed.Testbed()
    own_service(bed, "dockerd")
    manifests = big_server_image(
        "dockerd-restart",
        described=testbed_handle.env,
        registry=testbed_handle.registry,
        variant=fleet.namespace,
        build_seconds=6,
    )
    repository = manifests[1]["spec"]["push"]["repository"]
    res.create_model_image(fleet.hub, fleet.namespace, manifests)
    wait_phase_seen(fleet.hub, fleet.namespace, "dockerd-restart", "Building")
    time.sleep(2)  # inside the RUN sleep
    assert bed.sup.stop("dockerd", grace=20)
    services.ensure_docker(bed.sup, bed.layout)

    ready = res.wait_model_image(
        fleet.hub, fleet.namespace, "dockerd-restart", phase="Ready", timeout=420
    )
    reasons = [(r, m) for _, r, m in res.events(fleet.hub, fleet.namespace, "dockerd-restart")]
    assert any(r == "DockerUnavailable" for r, _ in reasons), reasons
    digest = ready["status"]["image"]["digest"]
    assert registry_manifest(testbed_handle.registry, repository, "v1") == digest
