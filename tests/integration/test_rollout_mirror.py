"""Rollouts to air-gapped sites: the admitted digest is copied to the site's registryMirror
(a second registry process with storage of its own, `_site_mirror`) before the target's wave,
and the site runs the mirror's reference by the same digest.

Four EdgeTargets in one namespace, each with a mirror: `site-arm` (edge-1, arm64 kwok nodes),
`site-real` (edge-2's real node, whose containerd really pulls from the mirror), `site-lost`
(edge-2's kwok nodes; its mirror is changed to an address where nothing listens) and
`site-auth` (edge-1 again, with a second mirror that asks for basic auth, whose credentials
come from a dockerconfigjson Secret). The two images
are built together by the operator while the targets come up.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from edgeferry.adapters import registry_api
from edgeferry_testbed import handles, layout, operator_process, procs, pytest_plugin
from tests.integration import _resources as res
from tests.integration import _site_mirror

pytestmark = pytest.mark.integration

site_mirror = _site_mirror.site_mirror
site_mirror_with_auth = _site_mirror.site_mirror_with_auth
REAL = {layout.REAL_NODE_LABEL: "real"}
TOLERATE_REAL = [{**layout.REAL_NODE_TAINT, "operator": "Equal"}]
NOWHERE = f"{layout.HOST_ADDRESS}:5009"
"""A mirror address where nothing listens."""


@dataclasses.dataclass(frozen=True)
class Sites:
    namespace: str
    mirror: str
    refs: dict[str, str]
    """ModelImage name -> `repository@sha256:...` as admitted (in the testbed registry)."""
    mirror_with_auth: str


def _site(name: str, cluster: str, mirror: str, **placement: Any) -> dict[str, Any]:
    doc = res.edge_target(
        name, workload_namespace="", labels={"site": name}, secret=f"{cluster}-kubeconfig"
    )
    doc["spec"]["registryMirror"] = mirror
    doc["spec"]["k3s"] |= placement
    return doc


@pytest.fixture(scope="module")
def sites(
    operator: procs.Managed | None,
    testbed_handle: handles.Testbed,
    site_mirror: str,
    site_mirror_with_auth: str,
) -> Iterator[Sites]:
    hub = testbed_handle.hub
    # Unique per session, so are the images' digests: the real node pulls afresh every run.
    namespace = f"mirror-rollouts-{uuid.uuid4().hex[:6]}"
    pytest_plugin.make_namespace(hub, namespace)
    operator_process.grant_namespace(testbed_handle.env, namespace)
    edges = [testbed_handle.cluster("edge-1"), testbed_handle.cluster("edge-2")]
    registry, base = testbed_handle.registry, testbed_handle.env.base_images["busybox"]
    images = {
        "multi": res.scratch_image(
            "multi", registry=registry, variant=namespace, platforms=("linux/amd64", "linux/arm64")
        ),
        "server": res.server_image("server", base=base, registry=registry, variant=namespace),
    }
    try:
        for manifests in images.values():
            res.create_model_image(hub, namespace, manifests)
        docs: list[dict[str, Any]] = []
        for cluster in edges:
            pytest_plugin.make_namespace(cluster, namespace)
            kubeconfig = Path(cluster.target_kubeconfig).read_text()
            docs.append(res.kubeconfig_secret(f"{cluster.name}-kubeconfig", kubeconfig))
        for doc in (
            _site("site-arm", "edge-1", site_mirror),
            _site("site-real", "edge-2", site_mirror, nodeSelector=REAL, tolerations=TOLERATE_REAL),
            _site("site-lost", "edge-2", site_mirror),
            _site("site-auth", "edge-1", site_mirror_with_auth),
        ):
            doc["spec"]["namespace"] = namespace
            docs.append(doc)
        docs[-1]["spec"]["registryMirrorCredentialsSecret"] = "site-auth-mirror"
        docs.append(_docker_config("site-auth-mirror", site_mirror_with_auth))
        res.apply(hub, namespace, *docs)
        res.wait_targets_ready(hub, namespace, ["site-arm", "site-real", "site-lost", "site-auth"])
        refs = {
            name: res.image_reference(res.wait_model_image(hub, namespace, name, phase="Ready"))
            for name in images
        }
        yield Sites(
            namespace=namespace,
            mirror=site_mirror,
            refs=refs,
            mirror_with_auth=site_mirror_with_auth,
        )
    finally:
        hub.kubectl("-n", namespace, "delete", "modeldeployments", "--all", check=False)
        hub.kubectl("-n", namespace, "delete", "edgetargets", "--all", check=False)
        for cluster in edges:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        hub.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _docker_config(name: str, registry: str) -> dict[str, Any]:
    """A kubernetes.io/dockerconfigjson Secret for the auth mirror, as `kubectl create secret
    docker-registry` writes it."""
    token = f"{_site_mirror.MIRROR_USER}:{_site_mirror.MIRROR_PASSWORD}"
    config = {"auths": {registry: {"auth": base64.b64encode(token.encode()).decode()}}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": json.dumps(config)},
    }


def _mirrored(ref: str, mirror: str) -> str:
    """What the site runs: the mirror's host in place of the testbed registry's, same digest."""
    repository, _, digest = ref.partition("@")
    return f"{mirror}/{repository.split('/', 1)[1]}@{digest}"


def _deploy(hub: handles.Cluster, sites: Sites, name: str, image: str, site: str) -> None:
    doc = res.model_deployment(
        name, image=image, selector={"matchLabels": {"site": site}}, replicas=1
    )
    res.apply(hub, sites.namespace, doc)


def _container_image(cluster: handles.Cluster, namespace: str, name: str) -> str:
    deployment = res.deployment_at(cluster, namespace, name)
    assert deployment is not None, f"no Deployment {namespace}/{name} at {cluster.name}"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def test_an_index_is_copied_to_the_mirror_with_its_digest_and_rolled_out_from_there(
    testbed_handle: handles.Testbed, sites: Sites
) -> None:
    hub, ref = testbed_handle.hub, sites.refs["multi"]
    _deploy(hub, sites, "multi", "multi", "site-arm")
    obj = res.wait_deployment_phase(hub, sites.namespace, "multi", phase="Ready")

    expected = _mirrored(ref, sites.mirror)
    assert obj["status"]["digest"] == ref, "the admitted digest stays the status' digest"
    edge = testbed_handle.cluster("edge-1")
    assert _container_image(edge, sites.namespace, "multi") == expected
    destination, _, digest = expected.partition("@")
    with (
        registry_api.RegistryClient() as source,
        registry_api.RegistryClient(insecure=[sites.mirror]) as mirror,
    ):
        assert mirror.manifest_digest(destination, digest) == digest
        served = mirror.children(destination, digest)
        original = source.children(ref.partition("@")[0], digest)
    assert [c.platform for c in served] == ["linux/amd64", "linux/arm64"]
    assert served == original, "every platform's manifest, byte for byte (same digests)"
    copied = [
        m
        for _, r, m in res.wait_events(hub, sites.namespace, "multi", "MirrorCopied")
        if r == "MirrorCopied"
    ]
    assert copied and sites.mirror in copied[0], copied


def test_the_copy_to_a_mirror_that_asks_for_credentials_uses_the_targets_secret(
    testbed_handle: handles.Testbed, sites: Sites
) -> None:
    hub, ref = testbed_handle.hub, sites.refs["multi"]
    _deploy(hub, sites, "multi-auth", "multi", "site-auth")
    res.wait_deployment_phase(hub, sites.namespace, "multi-auth", phase="Ready")

    expected = _mirrored(ref, sites.mirror_with_auth)
    edge = testbed_handle.cluster("edge-1")
    assert _container_image(edge, sites.namespace, "multi-auth") == expected
    destination, _, digest = expected.partition("@")
    user = registry_api.Credentials(_site_mirror.MIRROR_USER, _site_mirror.MIRROR_PASSWORD)
    with registry_api.RegistryClient(credentials=user) as mirror:
        assert mirror.manifest_digest(destination, digest) == digest
    with registry_api.RegistryClient() as anonymous, pytest.raises(registry_api.RegistryError):
        anonymous.manifest_digest(destination, digest)


def test_a_real_node_pulls_the_digest_from_the_mirror_and_runs_it(
    testbed_handle: handles.Testbed, sites: Sites
) -> None:
    hub, ref = testbed_handle.hub, sites.refs["server"]
    _deploy(hub, sites, "server", "server", "site-real")
    res.wait_deployment_phase(hub, sites.namespace, "server", phase="Ready", timeout=240)

    edge = testbed_handle.cluster("edge-2")
    expected = _mirrored(ref, sites.mirror)
    with edge.api_client() as api:
        pods = k8s_client.CoreV1Api(api).list_namespaced_pod(
            sites.namespace, label_selector="app.kubernetes.io/name=server"
        )
    running = [p for p in pods.items if p.status.phase == "Running"]
    assert running, [p.status.phase for p in pods.items]
    for pod in running:
        assert pod.spec.node_name in edge.info.real_nodes, pod.spec.node_name
        (container,) = pod.spec.containers
        assert container.image == expected
        (status,) = pod.status.container_statuses
        # What containerd pulled, as the kubelet reports it: the admitted digest, from the mirror
        # (a fresh digest: this node never pulled it from anywhere else).
        assert status.image_id == expected, status.image_id
        assert status.ready


def test_a_copy_that_fails_defers_the_target_and_leaves_what_runs_there(
    testbed_handle: handles.Testbed, sites: Sites
) -> None:
    hub, ref = testbed_handle.hub, sites.refs["server"]
    _deploy(hub, sites, "lost", "server", "site-lost")
    res.wait_deployment_phase(hub, sites.namespace, "lost", phase="Ready")
    edge = testbed_handle.cluster("edge-2")
    running = _container_image(edge, sites.namespace, "lost")
    assert running == _mirrored(ref, sites.mirror)

    # The site's mirror moves to an address where nothing answers: the copy (a check that the
    # new mirror serves the digest) fails, and the target is deferred like an unreachable one.
    hub.kubectl(
        "-n",
        sites.namespace,
        "patch",
        "edgetarget",
        "site-lost",
        "--type=merge",
        "-p",
        f'{{"spec": {{"registryMirror": "{NOWHERE}"}}}}',
    )

    def deferred() -> dict[str, Any] | None:
        obj = res.get_object(hub, sites.namespace, "modeldeployments", "lost")
        line = res.target_line(obj or {}, "site-lost")
        return line if line.get("phase") == "Deferred" else None

    line = res.wait_until("site-lost to be Deferred", deferred, timeout=60)
    assert f"mirror {NOWHERE}" in line["lastError"], line
    events = res.wait_events(hub, sites.namespace, "lost", "MirrorCopyFailed")
    failed = [m for _, r, m in events if r == "MirrorCopyFailed"]
    assert failed and NOWHERE in failed[0], failed
    assert _container_image(edge, sites.namespace, "lost") == running, "nothing was written"
