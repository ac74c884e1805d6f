"""Pushing an admitted ModelImage: one plain manifest, or an OCI image index for several platforms.

The registry's credentials come from the Secret the spec names, in the ModelImage's namespace;
the digests returned are the ones the registry serves, never ones computed here.
"""

from __future__ import annotations

from collections.abc import Collection

import docker

from edgeferry.adapters import hub, index_push, registry
from edgeferry.decisions import image_steps
from edgeferry.models import modelimage


def push(
    api: docker.APIClient,
    image: modelimage.ImageStatus,
    target: modelimage.Push,
    *,
    namespace: str,
    insecure: Collection[str],
) -> tuple[str, list[str], int]:
    """Push every platform's image under every tag: (digest to deploy, each platform's digest,
    layer bytes uploaded).

    Raises `registry.RegistryError` when the registry refuses or cannot be reached.
    """
    repository = target.repository
    credentials = None
    if target.credentials_secret:
        host = registry.parse_repository(repository).host
        user, password = hub.registry_credentials(
            namespace, target.credentials_secret, registry_host=host
        )
        credentials = registry.Credentials(username=user, password=password)
    platforms = image.platform_images
    if image_steps.pushes_index(image):
        pushed = index_push.push_index(
            api,
            [index_push.PlatformBuild(p.platform, p.id) for p in platforms],
            repository,
            target.tags,
            credentials=credentials,
            insecure=insecure,
        )
        return pushed.digest, [child.digest for child in pushed.children], pushed.uploaded_bytes
    digest, uploaded = _push_single(
        api, platforms[0].id, target, credentials=credentials, insecure=insecure
    )
    return digest, [digest], uploaded


def _push_single(
    api: docker.APIClient,
    image_id: str,
    target: modelimage.Push,
    *,
    credentials: registry.Credentials | None,
    insecure: Collection[str],
) -> tuple[str, int]:
    """Push one platform's image under every tag as a plain manifest; its digest, bytes sent."""
    digests = set()
    uploaded = 0
    for tag in target.tags:
        pushed = registry.push_image(
            api, image_id, target.repository, tag, credentials=credentials, insecure=insecure
        )
        digests.add(pushed.digest)
        uploaded += pushed.uploaded_bytes
    return sorted(digests)[0], uploaded
