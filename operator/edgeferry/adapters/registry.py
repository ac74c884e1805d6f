"""Push images and read back what the registry really serves.

The digest a user deploys must be the one the registry serves, not the one the Docker daemon
believes it pushed: the two differ when a registry rewrites manifests, and an edge node only ever
sees the registry. So after every push we ask the registry itself (Docker Registry HTTP API v2) for
the manifest digest of the tag and refuse to report a push whose digests disagree.

The registry's HTTP API itself (auth, plain HTTP to loopback registries) is `registry_api`; its
client and names are re-exported here, so a caller pushing and reading back needs one module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import docker
import docker.errors
import requests
import urllib3.exceptions

from edgeferry.adapters import oci_index, registry_api

MANIFEST_MEDIA_TYPES = registry_api.MANIFEST_MEDIA_TYPES
RegistryError = registry_api.RegistryError
Credentials = registry_api.Credentials
ImageName = registry_api.ImageName
RegistryClient = registry_api.RegistryClient
_LOG = logging.getLogger("edgeferry.registry")
is_transient_text = registry_api.is_transient_text
parse_repository = registry_api.parse_repository
is_loopback = registry_api.is_loopback
parse_bearer_challenge = registry_api.parse_bearer_challenge


@dataclasses.dataclass(frozen=True)
class PushResult:
    """What a push left in the registry."""

    repository: str
    tag: str
    digest: str
    """Manifest digest the registry serves for the tag (equal to what the daemon reported)."""
    reference: str
    """The pinned reference, ``repository@digest``: what gets rolled out."""
    size: int | None
    """Manifest size in bytes as reported by the daemon, when it reports one."""
    duration_s: float
    uploaded_bytes: int = 0
    """Layer bytes this push sent (layers the registry had already send none)."""


@dataclasses.dataclass
class PushedLayers:
    """Which layers a push uploaded and which the registry had already, from the daemon's stream.

    The daemon says `Pushing` with `progressDetail.total` (the layer's size) while it uploads a
    layer, then `Pushed`; a layer the repository has already is `Layer already exists` and
    sends nothing. This is how a rebuild that changed only the server shows that the model's
    layer was not sent again.
    """

    uploaded: dict[str, int] = dataclasses.field(default_factory=dict)
    """Layer id (short digest) -> bytes uploaded."""
    existing: set[str] = dataclasses.field(default_factory=set)

    def feed(self, chunk: Mapping[str, Any]) -> None:
        ident, status = chunk.get("id"), chunk.get("status")
        if not isinstance(ident, str) or not isinstance(status, str):
            return
        if status == "Layer already exists":
            self.existing.add(ident)
        elif status in ("Pushing", "Pushed"):
            detail = chunk.get("progressDetail")
            total = detail.get("total") if isinstance(detail, Mapping) else None
            known = self.uploaded.get(ident, 0)
            self.uploaded[ident] = max(known, total) if isinstance(total, int) else known

    @property
    def uploaded_bytes(self) -> int:
        return sum(self.uploaded.values())


def digest_from_push_stream(
    chunks: Iterable[Mapping[str, Any]], layers: PushedLayers | None = None
) -> tuple[str, int | None]:
    """Read the pushed manifest digest (and size) from the daemon's push progress stream.

    The daemon reports errors inside the stream with HTTP 200, so each chunk is checked. With
    `layers`, what each layer did (uploaded or already there) is recorded in it.
    """
    digest: str | None = None
    size: int | None = None
    last_status = ""
    for chunk in chunks:
        if layers is not None:
            layers.feed(chunk)
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = detail.get("message") if isinstance(detail, Mapping) else None
            text = str(message or chunk.get("error"))
            raise RegistryError(f"push failed: {text}", transient=is_transient_text(text))
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and isinstance(aux.get("Digest"), str):
            digest = aux["Digest"]
            raw_size = aux.get("Size")
            size = raw_size if isinstance(raw_size, int) else None
        status = chunk.get("status")
        if isinstance(status, str):
            last_status = status
            found = re.search(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)", status)
            if found and digest is None:
                digest, size = found.group(1), int(found.group(2))
    if digest is None:
        raise RegistryError(f"push reported no digest (last status: {last_status!r})")
    return digest, size


def push_image(
    api: docker.APIClient,
    image: str,
    repository: str,
    tag: str,
    *,
    credentials: Credentials | None = None,
    insecure: Iterable[str] = (),
    timeout_s: float = 600.0,
) -> PushResult:
    """Tag a local image (id or reference) as ``repository:tag``, push it, and verify the digest.

    Raises `RegistryError` when the push fails or when the registry serves a different digest
    than the daemon reported.
    """
    parse_repository(repository)
    started = time.monotonic()
    try:
        api.tag(image, repository, tag=tag)
        auth_config = (
            {"username": credentials.username, "password": credentials.password}
            if credentials
            else None
        )
        stream = api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)
        layers = PushedLayers()
        pushed_digest, size = digest_from_push_stream(
            _with_deadline(stream, started + timeout_s, f"push of {repository}:{tag}"), layers
        )
    except docker.errors.APIError as error:
        explanation = str(error.explanation)
        raise RegistryError(
            f"push of {repository}:{tag} failed: {explanation}",
            transient=error.is_server_error() or is_transient_text(explanation),
        ) from error
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        raise RegistryError(
            f"push of {repository}:{tag} broke off: {error}", transient=True
        ) from error
    with RegistryClient(credentials=credentials, insecure=insecure) as client:
        served = client.manifest_digest(repository, tag)
    if served != pushed_digest:
        raise RegistryError(
            f"registry serves {served} for {repository}:{tag} but the push reported {pushed_digest}"
        )
    _LOG.info(
        "pushed %s:%s: %d layer(s) uploaded (%d bytes), %d already in the registry",
        repository,
        tag,
        len(layers.uploaded),
        layers.uploaded_bytes,
        len(layers.existing),
    )
    return PushResult(
        repository=repository,
        tag=tag,
        digest=pushed_digest,
        reference=f"{repository}@{pushed_digest}",
        size=size,
        duration_s=time.monotonic() - started,
        uploaded_bytes=layers.uploaded_bytes,
    )


def manifest_digest(
    repository: str,
    reference: str,
    *,
    credentials: Credentials | None = None,
    insecure: Iterable[str] = (),
) -> str | None:
    """The digest the registry serves for ``repository:reference``, or None if absent."""
    with RegistryClient(credentials=credentials, insecure=insecure) as client:
        return client.manifest_digest(repository, reference)


class NoSuchPlatformError(RegistryError):
    """An image index has no image for the platform a build needs."""


def platform_children(
    references: Iterable[str], platform: str, *, insecure: Iterable[str] = ()
) -> dict[str, str]:
    """For each pinned `repository@sha256:` that is an image index, the pinned reference of
    its child for `platform`; single-platform images are left out (the daemon checks those).

    Raises `NoSuchPlatformError` when an index lacks the platform, `RegistryError` when the
    registry cannot be asked.
    """
    resolved: dict[str, str] = {}
    with RegistryClient(insecure=insecure) as client:
        for reference in references:
            repository, _, digest = reference.partition("@")
            body, media_type = client.manifest(repository, digest)
            document: dict[str, Any] = json.loads(body)
            if not oci_index.is_index(document, media_type):
                continue
            children = oci_index.parse_children(document)
            match = [c for c in children if c.platform == platform]
            if not match:
                offered = ", ".join(oci_index.platforms_of(children)) or "nothing runnable"
                raise NoSuchPlatformError(
                    f"base image {reference} is an index of {offered}; it has no {platform} "
                    f"image. Use a base with {platform}, or drop {platform} from build.platforms."
                )
            resolved[reference] = f"{repository}@{match[0].digest}"
    return resolved


def tag_exists(
    repository: str,
    tag: str,
    *,
    credentials: Credentials | None = None,
    insecure: Iterable[str] = (),
) -> bool:
    """Whether the registry serves anything under ``repository:tag``."""
    return manifest_digest(repository, tag, credentials=credentials, insecure=insecure) is not None


def _with_deadline(
    chunks: Iterable[Mapping[str, Any]], deadline: float, what: str
) -> Iterable[Mapping[str, Any]]:
    for chunk in chunks:
        yield chunk
        if time.monotonic() > deadline:
            raise RegistryError(f"{what} did not finish in time", transient=True)
