"""Copy one admitted image to a site's registry mirror over the registry API, blob by blob.

`decisions.mirror_copy` says what an image is made of and what is not sent; this module does
the talking, with two `registry_api.RegistryClient`s (the registry the image was pushed to and
the mirror). Every manifest read from the source is checked against the digest that names it,
every blob is hashed while it is downloaded (to a temporary file under the operator's workdir,
so a model of gigabytes never sits in memory) and the mirror checks it again on upload. The
manifests go last, children before the index, so the mirror never serves a reference to
something it lacks; a copy cut off half way leaves only blobs, and the next one skips them.

The copy does not retry: a failure is reported to the rollout, which treats the target as
unreachable and tries again on its next reconcile.
"""

from __future__ import annotations

import json
import logging
import pathlib
import tempfile
from collections.abc import Collection, MutableMapping

from edgeferry.adapters import hub, oci_index, registry_api
from edgeferry.decisions import mirror_copy as mc

_LOG = logging.getLogger("edgeferry.mirror")
_MOUNTABLE: dict[str, dict[str, str]] = {}
"""Per mirror host: blob digest -> a repository there that holds it (cross-repository mounts),
from the copies of this process."""
_MOUNTABLE_MAX = 50_000


def copy_with_secrets(
    copy: mc.Copy,
    *,
    namespace: str,
    source_secret: str | None,
    insecure: Collection[str],
    workdir: pathlib.Path,
) -> mc.Report:
    """`copy_image` with credentials from the Secrets in `namespace` (the ModelImage's push
    Secret for the source, the EdgeTarget's mirror Secret for the mirror).

    Raises `registry_api.RegistryError`, `hub.MissingInputError` for a missing Secret or key,
    or what the Kubernetes client raises reading it.
    """
    source_host = registry_api.parse_repository(copy.source_repository).host
    mirror_host = registry_api.parse_repository(copy.destination).host
    source_auth = _credentials(namespace, source_secret, source_host)
    mirror_auth = _credentials(namespace, copy.credentials_secret, mirror_host)
    known = _MOUNTABLE.setdefault(mirror_host, {})
    if len(known) > _MOUNTABLE_MAX:
        known.clear()
    with (
        registry_api.RegistryClient(credentials=source_auth, insecure=insecure) as source,
        registry_api.RegistryClient(credentials=mirror_auth, insecure=insecure) as mirror,
    ):
        return copy_image(copy, source=source, mirror=mirror, known=known, workdir=workdir)


def _credentials(namespace: str, secret: str | None, host: str) -> registry_api.Credentials | None:
    if not secret:
        return None
    user, password = hub.registry_credentials(namespace, secret, registry_host=host)
    return registry_api.Credentials(username=user, password=password)


def copy_image(
    copy: mc.Copy,
    *,
    source: registry_api.RegistryClient,
    mirror: registry_api.RegistryClient,
    known: MutableMapping[str, str],
    workdir: pathlib.Path,
) -> mc.Report:
    """Make the mirror serve `copy.source` under `copy.destination` with the same digest.

    `known` maps blob digests to a repository path on this mirror that holds them (kept by the
    caller per mirror host, across copies) for cross-repository mounts; it is updated here.
    Raises `registry_api.RegistryError` (or ValueError for a reference it cannot name).
    """
    digest, source_repository = copy.digest, copy.source_repository
    destination = copy.destination
    path = registry_api.parse_repository(destination).name
    if mirror.manifest_digest(destination, digest) == digest:
        return mc.Report(already_there=True)

    root, root_type = _manifest(source, source_repository, digest)
    manifests: list[tuple[str, str, bytes]] = []
    images: list[bytes] = []
    root_document = json.loads(root)
    if mc.is_index(root_document, root_type):
        for child, declared in mc.children_of(root_document):
            body, media_type = _manifest(source, source_repository, child)
            if mc.is_index(json.loads(body), media_type):
                raise registry_api.RegistryError(
                    f"{source_repository}@{digest} names an index inside an index ({child}); "
                    "edgeferry copies one level of index only"
                )
            manifests.append((child, media_type or declared, body))
            images.append(body)
    else:
        images.append(root)
    manifests.append((digest, root_type, root))

    blobs = mc.unique_blobs(images)
    present = {b.digest for b in blobs if mirror.blob_exists(destination, b.digest)}
    sent = mounted = sent_bytes = 0
    for blob in mc.missing(blobs, present):
        upload: str | None = None
        mount_from = mc.mount_source(blob.digest, path, known)
        if mount_from is not None:
            upload = mirror.mount_blob(destination, blob.digest, source=mount_from)
            if upload is None:
                mounted += 1
                known[blob.digest] = path
                continue
        url = upload or mirror.start_upload(destination)
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir, prefix="mirror-blob-") as scratch:
            size = source.download_blob(source_repository, blob.digest, scratch)
            scratch.seek(0)
            mirror.upload_blob(destination, url, blob.digest, scratch)
        sent += 1
        sent_bytes += size
        known[blob.digest] = path
    for digest_present in present:
        known[digest_present] = path

    for manifest_digest, media_type, body in manifests:
        mirror.put_manifest(destination, manifest_digest, body, media_type)
    served = mirror.manifest_digest(destination, digest)
    if served != digest:
        raise registry_api.RegistryError(
            f"mirror serves {served} for {destination}@{digest} after the copy"
        )
    report = mc.Report(
        manifests=len(manifests),
        blobs_sent=sent,
        bytes_sent=sent_bytes,
        blobs_present=len(present),
        blobs_mounted=mounted,
    )
    _LOG.info("%s", mc.copied_message(copy, report))
    return report


def _manifest(
    client: registry_api.RegistryClient, repository: str, digest: str
) -> tuple[bytes, str]:
    """A manifest by digest, refused unless its bytes hash to that digest."""
    body, media_type = client.manifest(repository, digest)
    got = oci_index.digest_of(body)
    if got != digest:
        raise registry_api.RegistryError(
            f"{repository}@{digest}: the registry served a manifest that hashes to {got}"
        )
    return body, media_type
