"""Download a model file from an OCI registry or an HTTP(S) server, streamed and hashed.

Models are 10 MB to several GB, so nothing here holds one in memory: the bytes go from the
socket through SHA-256 into the file the caller opened, 1 MiB at a time, and the caller
(`adapters.model_store`) decides what a finished or failed download becomes. Every request has
a connect and a read timeout, and the whole download a deadline checked at every chunk, so a
stalled server costs at most that, never a hung reconcile.

Registry traffic goes through the ORAS project's Python SDK (`oras`, set up by
`model_artifact.client`): it already speaks the distribution API's auth dance (anonymous,
basic, bearer tokens) and builds the URLs; what it lacks for us (a hash while streaming, an
answer that tells a passing failure from a refusal) is the few lines below around its
`do_request` and `get_blob`.

A failure is `FetchError`; `transient` says whether trying again later may help (timeouts,
refused or reset connections, 5xx, 429) or not (401, 403, 404: a spec or Secret edit is
needed). Digests are judged by the caller, except an OCI artifact whose layers cannot be the
pinned model (`DigestMismatchError` before a byte is downloaded).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable
from typing import IO

import requests

from edgeferry.adapters import model_artifact, registry_api

CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
"""Longest silence of a server mid-download before it counts as gone."""

OCI_MANIFEST = model_artifact.OCI_MANIFEST

_NO_PROXY = {"http": "", "https": ""}


class FetchError(RuntimeError):
    """The model could not be downloaded; `transient` when trying later may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class DigestMismatchError(ValueError):
    """The source holds another model than the one `spec.model.sha256` pins."""

    def __init__(self, where: str, *, expected: str, actual: str) -> None:
        super().__init__(
            f"model from {where} has sha256 {actual}, spec.model.sha256 expects {expected}"
        )
        self.expected = expected
        self.actual = actual


@dataclasses.dataclass(frozen=True)
class Downloaded:
    """What went into the file: its SHA-256 (hex) and size."""

    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class HttpAuth:
    """Credentials for an HTTP source: a bearer token, or a username and password."""

    token: str | None = None
    username: str | None = None
    password: str | None = None


def _transient_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _copy(chunks: Iterable[bytes], into: IO[bytes], *, where: str, deadline: float) -> Downloaded:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise FetchError(f"download of {where} ran past its deadline", transient=True)
        digest.update(chunk)
        into.write(chunk)
        size += len(chunk)
    return Downloaded(sha256=digest.hexdigest(), size=size)


def _stream(
    response: requests.Response, into: IO[bytes], *, where: str, timeout_s: float
) -> Downloaded:
    deadline = time.monotonic() + timeout_s
    try:
        return _copy(
            response.iter_content(chunk_size=CHUNK_BYTES), into, where=where, deadline=deadline
        )
    except requests.RequestException as exc:
        raise FetchError(f"download of {where} broke off: {exc}", transient=True) from exc
    finally:
        response.close()


def http(
    url: str,
    into: IO[bytes],
    *,
    timeout_s: float,
    ca_bundle_file: str | None = None,
    auth: HttpAuth | None = None,
) -> Downloaded:
    """Download `url` into `into`; TLS verified (against `ca_bundle_file` when given)."""
    headers: dict[str, str] = {}
    basic: tuple[str, str] | None = None
    if auth is not None and auth.token:
        headers["Authorization"] = f"Bearer {auth.token}"
    elif auth is not None and auth.username is not None:
        basic = (auth.username, auth.password or "")
    host = url.split("://", 1)[-1].split("/", 1)[0]
    try:
        response = requests.get(
            url,
            headers=headers,
            auth=basic,
            stream=True,
            timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            verify=ca_bundle_file or True,
            proxies=_NO_PROXY if registry_api.is_loopback(host) else None,
        )
    except requests.exceptions.SSLError as exc:
        raise FetchError(f"TLS to {host} failed: {exc}", transient=False) from exc
    except requests.RequestException as exc:
        raise FetchError(f"cannot reach {url}: {exc}", transient=True) from exc
    if response.status_code != 200:
        response.close()
        raise FetchError(
            f"{url} answered HTTP {response.status_code} {response.reason}",
            transient=_transient_status(response.status_code),
        )
    return _stream(response, into, where=url, timeout_s=timeout_s)


def oci(
    repository: str,
    digest: str,
    into: IO[bytes],
    *,
    expected_sha256: str,
    timeout_s: float,
    plain_http: bool,
    credentials: tuple[str, str] | None = None,
) -> Downloaded:
    """Download the layer of artifact `repository@digest` that is the pinned model.

    The manifest's own digest is checked (a registry answering by digest must serve exactly
    it), then its layer `sha256:<expected_sha256>` is streamed; an artifact without such a layer
    is a `DigestMismatchError` naming what it has, before any download.
    """
    where = f"{repository}@{digest}"
    host = registry_api.parse_repository(repository).host
    client = model_artifact.client(host, plain_http=plain_http, credentials=credentials)
    try:
        container = client.get_container(where)
        response = client.do_request(
            f"{client.prefix}://{container.manifest_url()}",
            "GET",
            headers={"Accept": OCI_MANIFEST},
        )
    except requests.RequestException as exc:
        raise FetchError(f"cannot reach registry {host}: {exc}", transient=True) from exc
    except ValueError as exc:  # oras: "Cannot respond to request for authentication."
        raise FetchError(f"registry {host} refused the credentials: {exc}", transient=False) from (
            exc
        )
    if response.status_code != 200:
        raise FetchError(
            f"registry answered HTTP {response.status_code} for {where}",
            transient=_transient_status(response.status_code),
        )
    served = "sha256:" + hashlib.sha256(response.content).hexdigest()
    if served != digest:
        raise FetchError(f"registry served manifest {served} for {where}", transient=True)
    layers = json.loads(response.content).get("layers") or []
    wanted = f"sha256:{expected_sha256}"
    if not any(layer.get("digest") == wanted for layer in layers):
        found = ", ".join(str(layer.get("digest", "?")).removeprefix("sha256:") for layer in layers)
        raise DigestMismatchError(where, expected=expected_sha256, actual=found or "(no layers)")
    try:
        blob = client.get_blob(container, wanted, stream=True)
    except requests.RequestException as exc:
        raise FetchError(f"cannot reach registry {host}: {exc}", transient=True) from exc
    if blob.status_code != 200:
        blob.close()
        raise FetchError(
            f"registry answered HTTP {blob.status_code} for blob {wanted} of {where}",
            transient=_transient_status(blob.status_code),
        )
    return _stream(blob, into, where=where, timeout_s=timeout_s)
