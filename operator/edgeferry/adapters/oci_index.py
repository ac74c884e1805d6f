"""OCI image index documents: what a multi-platform ModelImage is in the registry.

A ModelImage built for several platforms is one reference for deployments: an index whose
children are each platform's manifest, so a node pulls the variant for its own architecture.
This module only renders and reads the JSON (pure, unit-tested); `index_push` talks to the
registry. The rendering is deterministic (fixed key order, no whitespace), so the same children
always give the same index digest and a push of unchanged images changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_LIST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_MEDIA_TYPES = frozenset({INDEX_MEDIA_TYPE, MANIFEST_LIST_MEDIA_TYPE})
MAX_TAG_LENGTH = 128


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """One manifest as an index names it: type, digest, size in bytes, and platform."""

    media_type: str
    digest: str
    size: int
    os: str
    architecture: str
    variant: str | None = None

    @property
    def platform(self) -> str:
        """``os/architecture[/variant]``, the way specs and status name platforms."""
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def split_platform(platform: str) -> tuple[str, str, str | None]:
    """``linux/arm64`` or ``linux/arm64/v8`` as (os, architecture, variant)."""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {platform!r} is not os/architecture[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def render_index(children: Sequence[Descriptor]) -> bytes:
    """The index document for these children, in their order, as the exact bytes to PUT."""
    if not children:
        raise ValueError("an image index needs at least one child manifest")
    seen = [c.platform for c in children]
    if len(set(seen)) != len(seen):
        raise ValueError(f"an image index names each platform once, got {seen}")
    manifests = []
    for child in children:
        platform = {"architecture": child.architecture, "os": child.os}
        if child.variant:
            platform["variant"] = child.variant
        manifests.append(
            {
                "mediaType": child.media_type,
                "digest": child.digest,
                "size": child.size,
                "platform": platform,
            }
        )
    document = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}
    return json.dumps(document, separators=(",", ":")).encode()


def digest_of(body: bytes) -> str:
    """The content digest a registry gives these exact bytes."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def is_index(document: Mapping[str, Any], media_type: str = "") -> bool:
    """Whether a manifest document is an index (OCI) or manifest list (Docker)."""
    return (media_type or str(document.get("mediaType", ""))) in INDEX_MEDIA_TYPES or (
        "manifests" in document
    )


def parse_children(document: Mapping[str, Any]) -> tuple[Descriptor, ...]:
    """The runnable children of an index (attestations, architecture unknown, left out)."""
    found = []
    for entry in document.get("manifests", []):
        platform = entry.get("platform") or {}
        if platform.get("architecture") in (None, "unknown"):
            continue
        found.append(
            Descriptor(
                media_type=str(entry.get("mediaType", "")),
                digest=str(entry["digest"]),
                size=int(entry.get("size", 0)),
                os=str(platform.get("os", "")),
                architecture=str(platform["architecture"]),
                variant=platform.get("variant") or None,
            )
        )
    return tuple(found)


def platform_tag(tag: str, platform: str) -> str:
    """The tag one platform's image is pushed under before the index: ``v1-linux-arm64``.

    An index can only name manifests the repository already has, and Docker pushes only
    tags; these per-platform tags also let a person pull one variant on purpose. Cut from the
    left part so the result stays a valid tag (at most 128 characters).
    """
    suffix = "-" + platform.replace("/", "-")
    return tag[: MAX_TAG_LENGTH - len(suffix)] + suffix


def platforms_of(children: Iterable[Descriptor]) -> tuple[str, ...]:
    """The platform strings of some descriptors, in order."""
    return tuple(child.platform for child in children)
