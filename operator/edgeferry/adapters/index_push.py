"""Push a multi-platform ModelImage: each platform's image, then one OCI image index.

Docker Engine 20.10 cannot push an index itself (and buildx is not here), so the operator
composes it: `docker push` each platform's local image under its platform tag
(`oci_index.platform_tag`, e.g. `v1-linux-arm64`), read back from the registry what it stores
for it (media type, digest, size, and the platform its config really says), then PUT the index
naming those children under every user tag through the registry HTTP API. As with single
images, the reported digest is the one the registry serves, read back with the index Accept
header, never one computed and trusted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence

import docker

from edgeferry.adapters import oci_index, registry


@dataclasses.dataclass(frozen=True)
class PlatformBuild:
    """One platform's local image, to be pushed."""

    platform: str
    image_id: str


@dataclasses.dataclass(frozen=True)
class IndexPushResult:
    """What the push left in the registry: the index and its children, in spec order."""

    repository: str
    digest: str
    """Digest of the index, served for every tag."""
    children: tuple[oci_index.Descriptor, ...]
    duration_s: float
    uploaded_bytes: int = 0
    """Layer bytes the platform pushes sent (layers the registry had already send none)."""


def push_index(
    api: docker.APIClient,
    images: Sequence[PlatformBuild],
    repository: str,
    tags: Sequence[str],
    *,
    credentials: registry.Credentials | None = None,
    insecure: Iterable[str] = (),
) -> IndexPushResult:
    """Push every platform's image, then the index of them under every tag; verify each step.

    Raises `registry.RegistryError` when a push fails, a child is not the platform it was
    built for, or the registry serves something else than the index under a tag.
    """
    if not tags:
        raise ValueError("push_index needs at least one tag")
    started = time.monotonic()
    children = []
    uploaded = 0
    with registry.RegistryClient(credentials=credentials, insecure=insecure) as client:
        for image in images:
            pushed = registry.push_image(
                api,
                image.image_id,
                repository,
                oci_index.platform_tag(tags[0], image.platform),
                credentials=credentials,
                insecure=insecure,
            )
            uploaded += pushed.uploaded_bytes
            child = client.descriptor(repository, pushed.digest)
            if child.platform != image.platform:
                raise registry.RegistryError(
                    f"{repository}@{pushed.digest} was built for {image.platform} but its "
                    f"config says {child.platform}"
                )
            children.append(child)
        body = oci_index.render_index(children)
        digest = oci_index.digest_of(body)
        for tag in tags:
            client.put_manifest(repository, tag, body, oci_index.INDEX_MEDIA_TYPE)
            served = client.manifest_digest(repository, tag)
            if served != digest:
                raise registry.RegistryError(
                    f"registry serves {served} for {repository}:{tag}, not the index {digest}"
                )
        found = client.children(repository, digest)
    if found != tuple(children):
        raise registry.RegistryError(
            f"index {repository}@{digest} lists {oci_index.platforms_of(found)}, "
            f"expected {oci_index.platforms_of(children)}"
        )
    return IndexPushResult(
        repository=repository,
        digest=digest,
        children=tuple(children),
        duration_s=time.monotonic() - started,
        uploaded_bytes=uploaded,
    )
