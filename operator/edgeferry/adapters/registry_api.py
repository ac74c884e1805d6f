"""A small Docker Registry HTTP API v2 client: manifests, tags, config blobs, and the auth dance.

It speaks plain HTTP to loopback registries (Docker treats them as insecure by default) and
HTTPS to everything else unless told otherwise. It handles anonymous, basic and bearer-token
registries; the token dance follows the `WWW-Authenticate` challenge the registry sends. A
loopback registry is never reached through a proxy from the environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import IO, Any

import requests

from edgeferry.adapters import oci_index

#: Every manifest type we accept, most specific first; the registry answers with the type it stores.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_SCOPE_ACTIONS = {"DELETE": "delete", "PUT": "pull,push", "POST": "pull,push", "PATCH": "pull,push"}
"""Token scope actions per HTTP method (everything else only pulls)."""
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK_BYTES = 1 << 20
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# An empty proxy URL overrides HTTP(S)_PROXY from the environment for one request.
_NO_PROXY = {"http": "", "https": ""}


class RegistryError(RuntimeError):
    """A push or a registry request failed; the message says what the registry answered.

    `transient` is True for trouble that passes by itself (connection refused or reset,
    timeouts, 5xx, 429): the pipeline retries those with backoff instead of waiting for a spec
    edit. Refusals (401, 403, 404, a bad manifest) are not transient: retrying changes nothing.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


_TRANSIENT_TEXT = re.compile(
    r"connection refused|connection reset|broken pipe|i/o timeout|timeout|timed out|"
    r"\bEOF\b|no route to host|network is unreachable|service unavailable|bad gateway|"
    r"gateway timeout|too many requests|toomanyrequests|internal server error|"
    r"HTTP (5\d\d|429)\b|\b(50[0234])\b",
    re.IGNORECASE,
)


def is_transient_text(message: str) -> bool:
    """Whether an error the Docker daemon relayed (text only) says the registry was unavailable.

    The daemon reports push failures as text inside its progress stream ("dial tcp ...:
    connect: connection refused", "received unexpected HTTP status: 503"), so text is all
    there is to judge by.
    """
    return bool(_TRANSIENT_TEXT.search(message))


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Username and password (or token) for a registry, as in a docker-registry Secret."""

    username: str
    password: str


@dataclasses.dataclass(frozen=True)
class ImageName:
    """A repository split the way the registry API needs it: host, path name, and a reference."""

    host: str
    """Registry host with optional port, e.g. ``127.0.0.1:5000``."""
    name: str
    """Repository path inside the registry, e.g. ``models/iris``."""

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.name}"


def parse_repository(repository: str) -> ImageName:
    """Split ``host[:port]/path`` into host and name; a host is required (no implicit hub)."""
    host, sep, name = repository.partition("/")
    if not sep or not name or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(
            f"repository {repository!r} must start with a registry host, e.g. "
            f"127.0.0.1:5000/models/iris"
        )
    if "@" in name or ":" in name:
        raise ValueError(f"repository {repository!r} must not carry a tag or digest")
    return ImageName(host=host, name=name)


def is_loopback(host: str) -> bool:
    """True for registries on this machine, which Docker itself talks to over plain HTTP."""
    if host.startswith("["):  # [::1]:5000
        hostname = host[1 : host.find("]")]
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """A small Docker Registry v2 client: manifests, tags and config blobs.

    ``insecure`` lists extra hosts reached over plain HTTP (loopback always is).
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        insecure: Iterable[str] = (),
        timeout_s: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self._credentials = credentials
        self._insecure = frozenset(insecure)
        self._timeout_s = timeout_s
        self._session = session or requests.Session()
        self._tokens: dict[tuple[str, str], str] = {}
        self._basic_hosts: set[str] = set()
        """Hosts that asked for basic auth once: sent it up front since (no body sent twice)."""

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- public queries -------------------------------------------------------------------------

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest the registry serves for a tag or digest, or None if it serves nothing."""
        image = parse_repository(repository)
        response = self._request(
            "HEAD",
            image,
            f"manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        )
        if response.status_code == 404:
            return None
        self._raise_for(response, f"HEAD manifest {repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest")
        if digest and _DIGEST.match(digest):
            return digest
        # Some registries omit the header on HEAD; the digest is the hash of the exact bytes.
        body, _ = self.manifest(repository, reference)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def tag_exists(self, repository: str, tag: str) -> bool:
        """Whether the registry serves a manifest under this tag."""
        return self.manifest_digest(repository, tag) is not None

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The raw manifest bytes and their media type."""
        image = parse_repository(repository)
        response = self._request(
            "GET",
            image,
            f"manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        )
        self._raise_for(response, f"GET manifest {repository}:{reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return response.content, media_type

    def platforms(self, repository: str, reference: str) -> tuple[str, ...]:
        """``os/architecture[/variant]`` of every image behind a reference.

        An index (multi-arch) lists its children's platforms; a single manifest's platform lives
        in its config blob. Rollouts use this to refuse an image no node of a target can run.
        """
        return oci_index.platforms_of(self.children(repository, reference))

    def children(self, repository: str, reference: str) -> tuple[oci_index.Descriptor, ...]:
        """The runnable manifests behind a reference, with their platforms.

        For an index, its children (attestations left out); for a single manifest, that
        manifest itself, its platform read from the config blob.
        """
        body, media_type = self.manifest(repository, reference)
        document: dict[str, Any] = json.loads(body)
        if oci_index.is_index(document, media_type):
            return oci_index.parse_children(document)
        return (self._describe(repository, reference, body, media_type, document),)

    def descriptor(self, repository: str, reference: str) -> oci_index.Descriptor:
        """A single-image manifest as an index child: media type, digest, size, platform."""
        body, media_type = self.manifest(repository, reference)
        document: dict[str, Any] = json.loads(body)
        if oci_index.is_index(document, media_type):
            raise RegistryError(f"{repository}:{reference} is an index, not one image")
        return self._describe(repository, reference, body, media_type, document)

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest (or index) under a tag or digest; returns the digest the registry
        reports, which must be the digest of ``body``."""
        image = parse_repository(repository)
        response = self._request(
            "PUT", image, f"manifests/{reference}", headers={"Content-Type": media_type}, data=body
        )
        self._raise_for(response, f"PUT manifest {repository}:{reference}")
        expected = oci_index.digest_of(body)
        reported = response.headers.get("Docker-Content-Digest") or expected
        if reported != expected:
            raise RegistryError(
                f"registry stored {repository}:{reference} as {reported}, expected {expected}"
            )
        return reported

    def config(
        self, repository: str, reference: str, *, manifest: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The image config blob (architecture, os, config.Labels, rootfs...) of a manifest."""
        if manifest is None:
            body, _ = self.manifest(repository, reference)
            manifest = json.loads(body)
        config_digest = manifest.get("config", {}).get("digest")
        if not isinstance(config_digest, str):
            raise RegistryError(f"{repository}:{reference} is not a single-image manifest")
        image = parse_repository(repository)
        response = self._request("GET", image, f"blobs/{config_digest}")
        self._raise_for(response, f"GET config blob of {repository}:{reference}")
        config: dict[str, Any] = json.loads(response.content)
        return config

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete a manifest by digest (the registry must allow deletes); False if absent."""
        if not _DIGEST.match(digest):
            raise ValueError(f"delete needs a sha256 digest, got {digest!r}")
        image = parse_repository(repository)
        response = self._request("DELETE", image, f"manifests/{digest}")
        if response.status_code == 404:
            return False
        self._raise_for(response, f"DELETE manifest {repository}@{digest}")
        return True

    # -- blobs (copying an image between registries) ----------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository serves this blob (HEAD: nothing is downloaded)."""
        image = parse_repository(repository)
        response = self._request("HEAD", image, f"blobs/{_checked(digest)}")
        if response.status_code == 404:
            return False
        self._raise_for(response, f"HEAD blob {repository}@{digest}")
        return True

    def download_blob(self, repository: str, digest: str, into: IO[bytes]) -> int:
        """Stream a blob into a file, checking its digest; returns its size in bytes.

        Raises `RegistryError` when the bytes do not hash to `digest` (the file then holds
        them, and must not be uploaded anywhere).
        """
        image = parse_repository(repository)
        response = self._request("GET", image, f"blobs/{_checked(digest)}", stream=True)
        with response:
            self._raise_for(response, f"GET blob {repository}@{digest}")
            hasher = hashlib.sha256()
            size = 0
            try:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    hasher.update(chunk)
                    into.write(chunk)
                    size += len(chunk)
            except requests.RequestException as error:
                raise RegistryError(
                    f"GET blob {repository}@{digest} broke off: {error}", transient=True
                ) from error
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            raise RegistryError(f"blob {repository}@{digest} downloaded as {got}: corrupt")
        return size

    def mount_blob(self, repository: str, digest: str, *, source: str) -> str | None:
        """Ask the registry to link a blob it holds in repository `source` (same registry, path
        only) into `repository` without any bytes sent. None when it did (201 Created); else
        the upload URL the registry opened instead (202), for `upload_blob`."""
        image = parse_repository(repository)
        query = urllib.parse.urlencode({"mount": _checked(digest), "from": source})
        response = self._request("POST", image, f"blobs/uploads/?{query}")
        self._raise_for(response, f"mount blob {digest} from {source} into {repository}")
        if response.status_code == 201:
            return None
        return self._upload_url(image, response)

    def start_upload(self, repository: str) -> str:
        """Open a blob upload in `repository`; returns the URL to PUT the bytes to."""
        image = parse_repository(repository)
        response = self._request("POST", image, "blobs/uploads/")
        self._raise_for(response, f"start blob upload to {repository}")
        return self._upload_url(image, response)

    def upload_blob(self, repository: str, url: str, digest: str, data: IO[bytes]) -> None:
        """Finish an upload in one PUT (monolithic) of `data`; the registry checks the digest."""
        image = parse_repository(repository)
        separator = "&" if "?" in url else "?"
        target = f"{url}{separator}{urllib.parse.urlencode({'digest': _checked(digest)})}"
        response = self._request_url(
            "PUT",
            image,
            target,
            headers={"Content-Type": "application/octet-stream"},
            data=data,
        )
        self._raise_for(response, f"PUT blob {repository}@{digest}")
        reported = response.headers.get("Docker-Content-Digest") or digest
        if reported != digest:
            raise RegistryError(f"registry stored blob {digest} in {repository} as {reported}")

    def _upload_url(self, image: ImageName, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry opened an upload to {image.repository} without a URL")
        return urllib.parse.urljoin(f"{self._base_url(image.host)}/", location)

    # -- HTTP plumbing ---------------------------------------------------------------------------

    def _base_url(self, host: str) -> str:
        scheme = "http" if is_loopback(host) or host in self._insecure else "https"
        return f"{scheme}://{host}/v2"

    def _describe(
        self,
        repository: str,
        reference: str,
        body: bytes,
        media_type: str,
        document: Mapping[str, Any],
    ) -> oci_index.Descriptor:
        config = self.config(repository, reference, manifest=document)
        return oci_index.Descriptor(
            media_type=media_type or str(document.get("mediaType", "")),
            digest=oci_index.digest_of(body),
            size=len(body),
            os=str(config.get("os", "")),
            architecture=str(config.get("architecture", "")),
            variant=config.get("variant") or None,
        )

    def _request(
        self,
        method: str,
        image: ImageName,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | IO[bytes] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        url = f"{self._base_url(image.host)}/{image.name}/{path}"
        return self._request_url(method, image, url, headers=headers, data=data, stream=stream)

    def _request_url(
        self,
        method: str,
        image: ImageName,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | IO[bytes] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One request with the auth dance; a file body is rewound before a retry with auth."""
        all_headers = dict(headers or {})
        action = _SCOPE_ACTIONS.get(method, "pull")
        scope = f"repository:{image.name}:{action}"
        token = self._tokens.get((image.host, scope))
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        basic = (
            (self._credentials.username, self._credentials.password)
            if self._credentials and image.host in self._basic_hosts
            else None
        )
        start = data.tell() if data is not None and not isinstance(data, bytes) else None
        response = self._send(method, url, all_headers, auth=basic, data=data, stream=stream)
        if response.status_code != 401:
            return response
        response.close()
        if start is not None and data is not None and not isinstance(data, bytes):
            data.seek(start)
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("basic") and self._credentials and basic is None:
            self._basic_hosts.add(image.host)
            auth = (self._credentials.username, self._credentials.password)
            return self._send(method, url, dict(headers or {}), auth=auth, data=data, stream=stream)
        if challenge.lower().startswith("bearer"):
            token = self._fetch_token(challenge, default_scope=scope)
            self._tokens[(image.host, scope)] = token
            all_headers["Authorization"] = f"Bearer {token}"
            return self._send(method, url, all_headers, data=data, stream=stream)
        return response

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        auth: tuple[str, str] | None = None,
        data: bytes | IO[bytes] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        # A loopback registry must never be reached through an HTTP proxy from the environment.
        proxies = _NO_PROXY if is_loopback(url.split("/")[2]) else None
        try:
            return self._session.request(
                method,
                url,
                headers=dict(headers),
                auth=auth,
                data=data,
                timeout=self._timeout_s,
                allow_redirects=True,
                proxies=proxies,
                stream=stream,
            )
        except requests.RequestException as error:
            raise RegistryError(f"{method} {url}: {error}", transient=True) from error

    def _fetch_token(self, challenge: str, *, default_scope: str) -> str:
        params = parse_bearer_challenge(challenge)
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError(f"registry sent a bearer challenge without a realm: {challenge}")
        params.setdefault("scope", default_scope)
        auth = (
            (self._credentials.username, self._credentials.password) if self._credentials else None
        )
        try:
            response = self._session.get(realm, params=params, auth=auth, timeout=self._timeout_s)
        except requests.RequestException as error:
            raise RegistryError(f"token request to {realm}: {error}", transient=True) from error
        self._raise_for(response, f"token request to {realm}")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise RegistryError(f"token endpoint {realm} returned no token")
        return token

    @staticmethod
    def _raise_for(response: requests.Response, what: str) -> None:
        if response.status_code >= 400:
            code = response.status_code
            raise RegistryError(
                f"{what}: HTTP {code} {response.text[:300]}",
                transient=code >= 500 or code == 429,
            )


def _checked(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"expected a sha256 digest, got {digest!r}")
    return digest


def parse_bearer_challenge(challenge: str) -> dict[str, str]:
    """``Bearer realm="...",service="...",scope="..."`` as a dict of its parameters."""
    _, _, rest = challenge.partition(" ")
    return dict(_CHALLENGE_PARAM.findall(rest))
