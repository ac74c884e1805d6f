"""Copying an admitted image to a site's registry mirror: what to copy, what to skip, and when.

An EdgeTarget with `registryMirror` runs the mirror's reference of the admitted digest
(`workload.image_reference`), so before its wave writes that reference the mirror must serve
the identical image. The copy is blob by blob over the registry API (`runners.mirror_copy`
carries it out); what is decided here, without I/O:

- **Which copies a round needs**: one per (source, mirror repository) for every write of this
  round to a target with a mirror, before anything is written. For a rollback or a re-apply
  the mirror normally has the image already, and the copy is one HEAD request; but a mirror
  just set on a running target, or one that lost the image, must never be handed a reference
  it cannot serve.
- **What an image is made of**: an index names every manifest (all platforms, attestations
  too: the index digest covers them and a registry refuses an index whose manifests it lacks);
  each manifest names its config and layers. Blobs are copied once even when several
  platforms share them, then the manifests, children before the index, each by digest.
- **What is not sent**: a blob the mirror repository already has; a blob the mirror holds in
  another repository is mounted (cross-repository mount, no bytes sent) when we know one.
- **What a failed copy does**: the target is treated as unreachable since the copy first
  failed, so it is `Deferred` (its wave waits `offlineGraceSeconds`, then goes on without it)
  or stays `Failed` by the same rules, and nothing is written there: it keeps what it runs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from edgeferry.decisions import rollout_types as rt
from edgeferry.decisions import workload
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons

INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


@dataclasses.dataclass(frozen=True)
class Copy:
    """One image to copy to one mirror repository before the targets' writes."""

    source: str
    """`repository@sha256:...` as admitted (in the registry it was pushed to)."""
    mirror: str
    """The EdgeTargets' `registryMirror` (host[:port], optional path prefix)."""
    destination: str
    """The mirror's repository for it (`mirror/path`), the repository part of what is rolled
    out."""
    targets: tuple[str, ...]
    """The targets whose writes wait for it, by name."""
    credentials_secret: str | None = None
    """The EdgeTargets' `registryMirrorCredentialsSecret`, if any."""

    @property
    def digest(self) -> str:
        return self.source.rpartition("@")[2]

    @property
    def source_repository(self) -> str:
        return self.source.rpartition("@")[0]


@dataclasses.dataclass(frozen=True)
class Mirror:
    """A target's mirror, as the copy needs it."""

    address: str
    credentials_secret: str | None = None


@dataclasses.dataclass(frozen=True)
class Blob:
    """A config or layer blob a manifest names."""

    digest: str
    size: int


@dataclasses.dataclass(frozen=True)
class Report:
    """What a copy did, for the event and the log."""

    already_there: bool = False
    """The mirror served the manifest already: nothing was checked or sent."""
    manifests: int = 0
    blobs_sent: int = 0
    bytes_sent: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0


def copies_for(writes: Iterable[rt.Write], mirrors: Mapping[str, Mirror]) -> tuple[Copy, ...]:
    """The copies a round's writes need: every write to a target with a mirror, one copy per
    image and mirror repository (targets sharing a mirror share it), ordered by destination."""
    found: dict[tuple[str, str, str | None], list[str]] = {}
    addresses: dict[tuple[str, str, str | None], str] = {}
    for write in writes:
        mirror = mirrors.get(write.target)
        if mirror is None:
            continue
        try:
            reference = workload.image_reference(write.record.digest)
            mirrored = workload.image_reference(reference, registry_mirror=mirror.address)
        except ValueError:
            continue  # not a digest reference: rendering the write refuses it and says why
        key = (reference, mirrored.rpartition("@")[0], mirror.credentials_secret)
        found.setdefault(key, []).append(write.target)
        addresses[key] = mirror.address
    return tuple(
        Copy(
            source=source,
            mirror=addresses[(source, destination, secret)],
            destination=destination,
            targets=tuple(sorted(targets)),
            credentials_secret=secret,
        )
        for (source, destination, secret), targets in sorted(
            found.items(), key=lambda item: (item[0][1], item[0][0])
        )
    )


def is_index(document: Mapping[str, Any], media_type: str = "") -> bool:
    """An OCI index or Docker manifest list (by media type, else by its `manifests` key)."""
    kind = media_type or str(document.get("mediaType", ""))
    return kind in INDEX_MEDIA_TYPES or "manifests" in document


def children_of(document: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(digest, media type) of every manifest an index names, in its order."""
    return tuple(
        (str(entry["digest"]), str(entry.get("mediaType", "")))
        for entry in document.get("manifests", [])
    )


def blobs_of(document: Mapping[str, Any]) -> tuple[Blob, ...]:
    """The config and layers of one image manifest; foreign layers (with `urls`, served
    elsewhere, e.g. Windows base layers) are not in the registry and are left out."""
    blobs = []
    config = document.get("config")
    if isinstance(config, Mapping) and "digest" in config:
        blobs.append(Blob(str(config["digest"]), int(config.get("size", 0))))
    for layer in document.get("layers", []):
        if layer.get("urls"):
            continue
        blobs.append(Blob(str(layer["digest"]), int(layer.get("size", 0))))
    return tuple(blobs)


def unique_blobs(manifests: Iterable[bytes]) -> tuple[Blob, ...]:
    """Every blob of some image manifests, each once, in first-seen order (platforms of one
    index often share layers, e.g. a model file COPYed on top of each base)."""
    seen: dict[str, Blob] = {}
    for body in manifests:
        for blob in blobs_of(json.loads(body)):
            seen.setdefault(blob.digest, blob)
    return tuple(seen.values())


def missing(blobs: Sequence[Blob], present: Collection[str]) -> tuple[Blob, ...]:
    """The blobs the mirror repository lacks: only these are mounted or sent."""
    return tuple(b for b in blobs if b.digest not in present)


def mount_source(digest: str, destination: str, known: Mapping[str, str]) -> str | None:
    """A repository (path on the mirror) known to hold `digest`, to mount it from; None when
    none is known or it is the destination itself. `known` maps blob digest to a repository
    path on the same mirror where a copy last saw it."""
    source = known.get(digest)
    return source if source and source != destination else None


def failure_message(copy: Copy, error: str) -> str:
    """The target's error when its copy failed: the mirror, what failed, and what happens."""
    return (
        f"copy of {copy.source} to mirror {copy.mirror} failed: {error}; nothing is written "
        "there until the mirror serves it (retried every reconcile)"
    )


def copied_message(copy: Copy, report: Report) -> str:
    """The event after a copy: what was sent and what was not."""
    where = f"{copy.destination}@{copy.digest}"
    if report.already_there:
        return f"mirror {copy.mirror} serves {where} already; nothing sent"
    return (
        f"copied {copy.source} to {where}: {report.manifests} manifest(s), "
        f"{report.blobs_sent} blob(s) sent ({report.bytes_sent} bytes), "
        f"{report.blobs_mounted} mounted from other repositories, "
        f"{report.blobs_present} already there"
    )


def failure_events(
    failed: Mapping[str, str], recorded: md.ModelDeploymentStatus | None
) -> tuple[rt.Event, ...]:
    """A `MirrorCopyFailed` Warning per target whose copy failed with an error that is new
    since the last status (the same failure every reconcile is told once)."""
    lines = {line.name: line for line in (recorded or md.ModelDeploymentStatus()).targets}
    return tuple(
        rt.Event("Warning", reasons.MIRROR_COPY_FAILED, f"{name}: {message}")
        for name, message in sorted(failed.items())
        if (line := lines.get(name)) is None or line.last_error != message
    )
