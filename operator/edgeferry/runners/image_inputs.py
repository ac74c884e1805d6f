"""What determines a ModelImage's image: the Dockerfile, the build context and its digest.

Read from the spec and the ConfigMaps it names on every reconcile; the inputs digest names the
run in `status.inputsDigest`, so a change to any input (a new model, an edited context file)
starts a new run and nothing else does.

The model counts in the digest by its pinned `spec.model.sha256`, so a model in a registry or
on an HTTP server is not downloaded to learn whether anything changed: only a build fetches it
(`model_in_context`), into the workdir's model cache, once per digest. A ConfigMap model is
small and read on every reconcile, as before, so a mismatch there stalls at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from edgeferry import settings
from edgeferry.adapters import docker_build, hub, model_fetch, model_store, registry_api
from edgeferry.decisions import dockerfile, inputs, model_cache
from edgeferry.models import modelimage, reasons
from edgeferry.runners import errors

LOCAL_REPOSITORY = "edgeferry-local"
"""Local tags live here: never a registry host, so a local tag is never a deployable reference."""


@dataclasses.dataclass(frozen=True)
class Materials:
    """Everything that determines the image, read from the spec and its ConfigMaps.

    `files` lacks the model when it comes from an `oci` or `http` source; `model_in_context`
    adds it, as a file in the cache, for the build.
    """

    dockerfile: str
    files: Mapping[str, docker_build.ContextFile]
    inputs_digest: str
    model_path: str
    """The model's path in the build context, e.g. `model/model.pkl`."""


def gather(spec: modelimage.ModelImageSpec, *, namespace: str, name: str) -> Materials:
    """Dockerfile text, build-context files and the inputs digest; raises on missing inputs."""
    model_path = dockerfile.model_context_path(spec)
    small: dict[str, bytes] = {}
    for source in spec.build.context_from:
        small.update(hub.config_map_files(namespace, source.config_map.name))
    small.update(dockerfile.template_files(spec))
    context = {path: inputs.sha256_hex(data) for path, data in small.items()}
    files: dict[str, docker_build.ContextFile] = dict(small)
    model_ref = spec.model.source.config_map
    if model_ref is not None:
        model = hub.config_map_key(namespace, model_ref.name, model_ref.key)
        if not inputs.model_matches(model, sha256=spec.model.sha256):
            raise ModelDigestMismatchError(
                f"model in ConfigMap {model_ref.name}/{model_ref.key} has sha256 "
                f"{inputs.sha256_hex(model)}, spec.model.sha256 expects {spec.model.sha256}"
            )
        files[model_path] = model
    context[model_path] = spec.model.sha256.lower()
    text = dockerfile.resolve(spec, name=name)
    digest = inputs.of_spec(spec, dockerfile=text, context=context)
    return Materials(dockerfile=text, files=files, inputs_digest=digest, model_path=model_path)


class ModelDigestMismatchError(ValueError):
    """The model artifact is not the one the spec pins."""


class ModelSourceRefusedError(RuntimeError):
    """The model's server refused it for good (404, 401, bad TLS): a spec or Secret edit helps."""


@contextlib.contextmanager
def model_in_context(
    spec: modelimage.ModelImageSpec,
    materials: Materials,
    *,
    namespace: str,
    config: settings.BuildSettings,
) -> Iterator[Materials]:
    """`materials` with the model file in them, fetched into the cache first if need be.

    The cached file is held (never evicted) until the block ends. Raises
    `ModelDigestMismatchError` naming both digests, `ModelSourceRefusedError`,
    `errors.TransientError` (retried with backoff) or `hub.MissingInputError` (a Secret).
    """
    if materials.model_path in materials.files:
        yield materials
        return
    root = model_root(config)
    fetch, where = _fetcher(spec, namespace=namespace, config=config)
    try:
        with model_store.held(root, spec.model.sha256, fetch=fetch, where=where) as path:
            _evict(root, config)
            yield dataclasses.replace(
                materials, files={**materials.files, materials.model_path: path}
            )
    except model_fetch.DigestMismatchError as exc:
        raise ModelDigestMismatchError(str(exc)) from exc
    except model_fetch.FetchError as exc:
        if exc.transient:
            raise errors.TransientError(str(exc), reason=reasons.MODEL_SOURCE_UNAVAILABLE) from exc
        raise ModelSourceRefusedError(str(exc)) from exc


def model_root(config: settings.BuildSettings) -> Path:
    """The model cache's folder under the workdir."""
    return config.workdir / "models"


def _evict(root: Path, config: settings.BuildSettings) -> None:
    chosen = model_cache.evictions(
        [model_cache.CachedModel(*entry) for entry in model_store.cached(root)],
        limit_bytes=config.model_cache_bytes,
        in_use=model_store.in_use(),
    )
    model_store.delete(root, chosen)


def _fetcher(
    spec: modelimage.ModelImageSpec, *, namespace: str, config: settings.BuildSettings
) -> tuple[model_store.Fetch, str]:
    """How to download the spec's remote model, and a name for it in messages."""
    source = spec.model.source
    timeout = config.model_fetch_timeout_seconds
    if source.oci is not None:
        oci = source.oci
        host = registry_api.parse_repository(oci.repository).host
        credentials = (
            hub.registry_credentials(namespace, oci.credentials_secret, registry_host=host)
            if oci.credentials_secret
            else None
        )
        plain_http = registry_api.is_loopback(host) or host in config.insecure_registries

        def from_registry(into: IO[bytes]) -> model_fetch.Downloaded:
            return model_fetch.oci(
                oci.repository,
                oci.digest,
                into,
                expected_sha256=spec.model.sha256,
                timeout_s=timeout,
                plain_http=plain_http,
                credentials=credentials,
            )

        return from_registry, f"{oci.repository}@{oci.digest}"
    http = source.http
    assert http is not None
    auth = _http_auth(namespace, http.credentials_secret) if http.credentials_secret else None

    def from_url(into: IO[bytes]) -> model_fetch.Downloaded:
        if http.ca_bundle is None:
            return model_fetch.http(http.url, into, timeout_s=timeout, auth=auth)
        with tempfile.NamedTemporaryFile("w", suffix=".pem", dir=config.workdir) as ca:
            ca.write(http.ca_bundle)
            ca.flush()
            return model_fetch.http(
                http.url, into, timeout_s=timeout, auth=auth, ca_bundle_file=ca.name
            )

    return from_url, http.url


def _http_auth(namespace: str, secret: str) -> model_fetch.HttpAuth:
    data = hub.secret_data(namespace, secret)
    if "token" in data:
        return model_fetch.HttpAuth(token=data["token"].decode().strip())
    if "username" in data and "password" in data:
        return model_fetch.HttpAuth(
            username=data["username"].decode(), password=data["password"].decode()
        )
    raise hub.MissingInputError(
        f"Secret {namespace}/{secret} needs a token key, or username and password keys"
    )


def local_tag(namespace: str, name: str, inputs_digest: str) -> str:
    return f"{LOCAL_REPOSITORY}/{namespace}/{name}:{inputs_digest.removeprefix('sha256:')[:16]}"
