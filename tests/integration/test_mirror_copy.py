"""Copying images between two real registries: the testbed's and a site mirror of its own.

The source is the testbed registry (127.0.0.1:5000); the mirror is a separate `docker-registry`
process with its own storage (`_site_mirror`). Two-platform images are composed here through the
registry API (random bytes, so every session's first copy really sends them); the busybox base
is a real image Docker built and pushed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from edgeferry.adapters import oci_index, registry_api
from edgeferry.decisions import mirror_copy as mc
from edgeferry.runners import mirror_copy
from edgeferry_testbed import handles, layout
from tests.integration import _site_mirror

pytestmark = pytest.mark.integration

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
site_mirror = _site_mirror.site_mirror
site_mirror_with_auth = _site_mirror.site_mirror_with_auth


def _push_blob(client: registry_api.RegistryClient, repository: str, data: bytes) -> str:
    digest = oci_index.digest_of(data)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        client.upload_blob(repository, client.start_upload(repository), digest, f)
    return digest


def _push_two_platform_image(
    client: registry_api.RegistryClient, repository: str, *, layer: bytes
) -> tuple[str, list[str]]:
    """An index of linux/amd64 and linux/arm64 sharing one layer; (index digest, children)."""
    layer_digest = _push_blob(client, repository, layer)
    children = []
    descriptors = []
    for arch in ("amd64", "arm64"):
        config = (
            json.dumps(
                {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
            ).encode()
            + os.urandom(8).hex().encode()
        )
        config_digest = _push_blob(client, repository, config)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        digest = client.put_manifest(repository, oci_index.digest_of(body), body, MANIFEST)
        children.append(digest)
        descriptors.append(oci_index.Descriptor(MANIFEST, digest, len(body), "linux", arch))
    index = oci_index.render_index(descriptors)
    digest = client.put_manifest(
        repository, oci_index.digest_of(index), index, oci_index.INDEX_MEDIA_TYPE
    )
    return digest, children


def _copy(
    source_ref: str,
    mirror: str,
    *,
    known: dict[str, str],
    workdir: Path,
    credentials: registry_api.Credentials | None = None,
) -> tuple[mc.Copy, mc.Report]:
    repository = source_ref.partition("@")[0]
    destination = f"{mirror}/{repository.split('/', 1)[1]}"
    copy = mc.Copy(source=source_ref, mirror=mirror, destination=destination, targets=("t",))
    with (
        registry_api.RegistryClient() as source,
        registry_api.RegistryClient(credentials=credentials, insecure=[mirror]) as target,
    ):
        report = mirror_copy.copy_image(
            copy, source=source, mirror=target, known=known, workdir=workdir
        )
    return copy, report


def test_a_two_platform_index_arrives_with_its_digest_and_shared_layers_go_once(
    testbed_handle: handles.Testbed, site_mirror: str, unique_name: str, tmp_path: Path
) -> None:
    source_repo = f"{testbed_handle.registry}/mirror-tests/{unique_name}"
    layer = os.urandom(256 * 1024)
    with registry_api.RegistryClient() as client:
        digest, children = _push_two_platform_image(client, source_repo, layer=layer)
    known: dict[str, str] = {}

    copy, report = _copy(f"{source_repo}@{digest}", site_mirror, known=known, workdir=tmp_path)

    assert report.manifests == 3
    assert report.blobs_sent == 3, "one shared layer and two configs"
    assert report.bytes_sent > len(layer)
    assert report.blobs_present == report.blobs_mounted == 0
    with registry_api.RegistryClient(insecure=[site_mirror]) as mirror:
        assert mirror.manifest_digest(copy.destination, digest) == digest
        served = mirror.children(copy.destination, digest)
        assert [c.digest for c in served] == children
        assert [c.platform for c in served] == ["linux/amd64", "linux/arm64"]
        with tempfile.TemporaryFile() as f:
            layer_digest = oci_index.digest_of(layer)
            assert mirror.download_blob(copy.destination, layer_digest, f) == len(layer)
    assert not list(tmp_path.iterdir()), "no scratch file is left behind"

    _, again = _copy(f"{source_repo}@{digest}", site_mirror, known=known, workdir=tmp_path)
    assert again == mc.Report(already_there=True)


def test_blobs_the_mirror_has_are_not_sent_and_other_repositories_mount_them(
    testbed_handle: handles.Testbed, site_mirror: str, unique_name: str, tmp_path: Path
) -> None:
    first_repo = f"{testbed_handle.registry}/mirror-tests/{unique_name}"
    second_repo = f"{first_repo}-other"
    layer = os.urandom(128 * 1024)
    with registry_api.RegistryClient() as client:
        first, _ = _push_two_platform_image(client, first_repo, layer=layer)
        rebuilt, _ = _push_two_platform_image(client, first_repo, layer=layer)
        other, _ = _push_two_platform_image(client, second_repo, layer=layer)
    known: dict[str, str] = {}
    _copy(f"{first_repo}@{first}", site_mirror, known=known, workdir=tmp_path)

    # The same layer under new configs, into the same mirror repository: only the configs go.
    _, same_repo = _copy(f"{first_repo}@{rebuilt}", site_mirror, known=known, workdir=tmp_path)
    assert (same_repo.blobs_present, same_repo.blobs_sent) == (1, 2), same_repo
    assert same_repo.bytes_sent < len(layer)

    # Into another repository of the mirror: the layer is mounted from the first, not sent.
    copy, mounted = _copy(f"{second_repo}@{other}", site_mirror, known=known, workdir=tmp_path)
    assert (mounted.blobs_mounted, mounted.blobs_sent) == (1, 2), mounted
    assert mounted.bytes_sent < len(layer)
    with registry_api.RegistryClient(insecure=[site_mirror]) as mirror:
        assert mirror.manifest_digest(copy.destination, other) == other
        assert mirror.blob_exists(copy.destination, oci_index.digest_of(layer))


def test_a_real_docker_built_image_copies_with_its_digest(
    testbed_handle: handles.Testbed, site_mirror: str, tmp_path: Path
) -> None:
    busybox = testbed_handle.env.base_images["busybox"]
    copy, report = _copy(busybox, site_mirror, known={}, workdir=tmp_path)
    assert report.already_there or report.manifests == 1
    with registry_api.RegistryClient(insecure=[site_mirror]) as mirror:
        assert mirror.manifest_digest(copy.destination, copy.digest) == copy.digest
        (image,) = mirror.children(copy.destination, copy.digest)
        assert image.platform == "linux/amd64"


def test_a_mirror_that_does_not_answer_is_a_transient_error_naming_it(
    testbed_handle: handles.Testbed, tmp_path: Path
) -> None:
    nowhere = f"{layout.HOST_ADDRESS}:5009"
    busybox = testbed_handle.env.base_images["busybox"]
    with pytest.raises(registry_api.RegistryError) as caught:
        _copy(busybox, nowhere, known={}, workdir=tmp_path)
    assert caught.value.transient
    assert nowhere in str(caught.value)


def test_a_mirror_with_basic_auth_takes_the_copy_only_with_its_credentials(
    testbed_handle: handles.Testbed,
    site_mirror_with_auth: str,
    unique_name: str,
    tmp_path: Path,
) -> None:
    source_repo = f"{testbed_handle.registry}/mirror-tests/{unique_name}"
    with registry_api.RegistryClient() as client:
        digest, _ = _push_two_platform_image(client, source_repo, layer=os.urandom(64 * 1024))
    ref = f"{source_repo}@{digest}"
    with pytest.raises(registry_api.RegistryError, match="HTTP 401") as refused:
        _copy(ref, site_mirror_with_auth, known={}, workdir=tmp_path)
    assert not refused.value.transient, "wrong credentials are not retried by themselves"

    user = registry_api.Credentials(_site_mirror.MIRROR_USER, _site_mirror.MIRROR_PASSWORD)
    copy, report = _copy(ref, site_mirror_with_auth, known={}, workdir=tmp_path, credentials=user)
    assert (report.manifests, report.blobs_sent) == (3, 3), report
    with registry_api.RegistryClient(credentials=user) as mirror:
        assert mirror.manifest_digest(copy.destination, digest) == digest
