"""Model files as OCI artifacts: push one (the `model push` CLI), and the client both sides use.

An artifact is an OCI image manifest with `artifactType` set, the empty config
(`application/vnd.oci.empty.v1+json`, `{}`) and one layer holding the model file's raw bytes,
titled with its file name: the layout the OCI 1.1 guidance and ORAS use, so `oras pull` gets the
file back, and a layer digest that is `sha256:` + the model's sha256, what `spec.model.sha256`
pins. Nothing time-dependent goes into the manifest, so pushing one file twice gives one digest.

The registry protocol comes from the ORAS project's Python SDK (`oras`): its auth (anonymous,
basic, bearer tokens, credentials from `~/.docker/config.json`), chunked blob upload (bounded
memory: it reads one chunk at a time; its one-shot upload would read the whole file) and
manifest upload. It sets no timeouts, so `client()` adds ours to every request.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import oras.provider  # type: ignore[import-untyped]

from edgeferry.adapters import registry_api

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MODEL_ARTIFACT_TYPE = "application/vnd.edgeferry.model.v1"
"""`artifactType` of the artifacts `python -m edgeferry model push` makes."""
MODEL_LAYER_MEDIA_TYPE = "application/vnd.edgeferry.model.file.v1"
"""Media type of their one layer: the model file's raw bytes (not a tar, not compressed)."""
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
TITLE = "org.opencontainers.image.title"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
"""Longest silence of a registry mid-request before it counts as gone."""
CHUNK_BYTES = 16 << 20
"""Size of one upload chunk (PATCH); what the push holds in memory at a time."""


def client(host: str, *, plain_http: bool, credentials: tuple[str, str] | None = None) -> Any:
    """An `oras` registry client for `host`, with our timeouts on every request."""
    registry = oras.provider.Registry(hostname=host, insecure=plain_http)
    registry.session.request = functools.partial(
        registry.session.request, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    )
    if registry_api.is_loopback(host):
        registry.session.trust_env = False  # never through a proxy from the environment
    if credentials is not None:
        registry.auth.set_basic_auth(*credentials)
    return registry


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclasses.dataclass(frozen=True)
class Pushed:
    """What a push left in the registry."""

    repository: str
    tag: str
    digest: str
    """The artifact's manifest digest: what `model.source.oci.digest` names."""
    sha256: str
    """The model file's SHA-256: what `model.sha256` names (and the layer's digest)."""
    size: int
    uploaded: bool
    """False when the registry had the model's blob already (nothing was sent)."""


def manifest_for(file_name: str, sha256: str, size: int) -> dict[str, Any]:
    """The artifact manifest of one model file (deterministic: same file, same manifest)."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MODEL_ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {
                "mediaType": MODEL_LAYER_MEDIA_TYPE,
                "digest": f"sha256:{sha256}",
                "size": size,
                "annotations": {TITLE: file_name},
            }
        ],
    }


def push(
    path: Path,
    repository: str,
    *,
    tag: str = "latest",
    plain_http: bool | None = None,
    credentials: tuple[str, str] | None = None,
) -> Pushed:
    """Push the file at `path` to `repository:tag` as a model artifact.

    Raises `registry_api.RegistryError` with what the registry answered.
    """
    name = registry_api.parse_repository(repository)
    if plain_http is None:
        plain_http = registry_api.is_loopback(name.host)
    registry = client(name.host, plain_http=plain_http, credentials=credentials)
    container = registry.get_container(f"{repository}:{tag}")
    sha256, size = file_sha256(path)
    manifest = manifest_for(path.name, sha256, size)
    layer = manifest["layers"][0]
    uploaded = not registry.blob_exists(layer, container)
    try:
        if uploaded:
            _check(registry.chunked_upload(str(path), container, layer, CHUNK_BYTES), "model blob")
        with tempfile.TemporaryDirectory() as scratch:
            config = Path(scratch) / "config.json"
            config.write_bytes(EMPTY_CONFIG)
            _check(registry.upload_blob(str(config), container, manifest["config"]), "config")
        response = registry.upload_manifest(manifest, container)
    except ValueError as exc:  # oras raises ValueError for refusals it cannot handle
        raise registry_api.RegistryError(f"push to {repository} failed: {exc}") from exc
    _check(response, "manifest")
    body = response.request.body
    sent = body if isinstance(body, bytes) else json.dumps(manifest).encode()
    digest = response.headers.get("Docker-Content-Digest") or (
        "sha256:" + hashlib.sha256(sent).hexdigest()
    )
    return Pushed(repository, tag, digest, sha256, size, uploaded)


def _check(response: Any, what: str) -> None:
    if response.status_code not in (200, 201, 202):
        raise registry_api.RegistryError(
            f"registry answered HTTP {response.status_code} to the {what} upload: "
            f"{response.text[:300]}",
            transient=response.status_code >= 500 or response.status_code == 429,
        )
