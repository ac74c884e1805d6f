"""The inputs digest: one content hash of everything that determines a ModelImage's image.

It is what makes the operator idempotent across restarts. The status records the digest of the
inputs it built; on every reconcile the handler recomputes it from the spec and the ConfigMaps it
reads, and only a different digest starts a new build. So the hash must be a pure function of
the *content* (the resolved Dockerfile text, the bytes of every build-context file, the model's
SHA-256, build args, labels, platforms, base image), never of names, timestamps, dict order or
the order ConfigMaps were listed in. It is canonical JSON (sorted keys, no whitespace, UTF-8)
hashed with SHA-256; the `v` field versions the recipe, so changing what goes in invalidates
old digests instead of colliding with them.

Settings that do not change the image (timeouts, lint and scan policy, push target) are kept out
on purpose: changing them re-runs only the stages they affect (see `pipeline.stage_keys`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from edgeferry.models import modelimage

RECIPE_VERSION = 1
"""Bump when the set or meaning of hashed fields changes."""


def sha256_hex(data: bytes) -> str:
    """SHA-256 of some bytes as 64 lowercase hex characters (what `sha256sum` prints)."""
    return hashlib.sha256(data).hexdigest()


def model_matches(data: bytes, *, sha256: str) -> bool:
    """Whether the model bytes read from the source are the ones the spec pinned."""
    return sha256_hex(data) == sha256.lower()


def canonical_digest(document: Any) -> str:
    """`sha256:<hex>` of a JSON-able document, independent of dict order and formatting."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + sha256_hex(text.encode("utf-8"))


def inputs_digest(
    *,
    dockerfile: str,
    context: Mapping[str, str],
    model_sha256: str,
    platform: str | Sequence[str],
    args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    base_image: str | None = None,
) -> str:
    """The digest of one image's inputs.

    `context` maps each build-context path to the SHA-256 (hex) of its bytes; the model file is
    covered by `model_sha256` and may be left out of it. `platform` is one platform or the list
    of them; a list of one hashes like that platform alone, so single-platform images keep the
    digest they had before lists existed (and are not rebuilt).
    """
    platforms = [platform] if isinstance(platform, str) else list(platform)
    document: dict[str, Any] = {
        "v": RECIPE_VERSION,
        "dockerfile": dockerfile,
        "context": dict(context),
        "modelSha256": model_sha256.lower(),
        "platform": platforms[0],
        "args": dict(args or {}),
        "labels": dict(labels or {}),
        "baseImage": base_image,
    }
    if len(platforms) > 1:
        document["platforms"] = platforms
    return canonical_digest(document)


def of_spec(
    spec: modelimage.ModelImageSpec,
    *,
    dockerfile: str,
    context: Mapping[str, str],
) -> str:
    """`inputs_digest` with the spec's own fields filled in.

    `dockerfile` is the resolved text (`dockerfile.resolve`), `context` the digests of the files
    the handler put into the build context (template files and contextFrom keys).
    """
    runtime = spec.build.runtime
    return inputs_digest(
        dockerfile=dockerfile,
        context=context,
        model_sha256=spec.model.sha256,
        platform=spec.build.target_platforms,
        args=spec.build.args,
        labels=spec.build.labels,
        base_image=runtime.base_image if runtime is not None else None,
    )
