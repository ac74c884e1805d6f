"""What determines a ModelImage's image: the Dockerfile, the build context and its digest.

Read from the spec and the ConfigMaps it names on every reconcile; the inputs digest names the
run in `status.inputsDigest`, so a change to any input (a new model, an edited context file)
starts a new run and nothing else does.
"""

from __future__ import annotations

import dataclasses

from edgeferry.adapters import hub
from edgeferry.decisions import dockerfile, inputs
from edgeferry.models import modelimage

LOCAL_REPOSITORY = "edgeferry-local"
"""Local tags live here: never a registry host, so a local tag is never a deployable reference."""


@dataclasses.dataclass(frozen=True)
class Materials:
    """Everything that determines the image, read from the spec and its ConfigMaps."""

    dockerfile: str
    files: dict[str, bytes]
    inputs_digest: str


def gather(spec: modelimage.ModelImageSpec, *, namespace: str, name: str) -> Materials:
    """Dockerfile text, build-context files and the inputs digest; raises on missing inputs."""
    model_ref = spec.model.source.config_map
    model = hub.config_map_key(namespace, model_ref.name, model_ref.key)
    if not inputs.model_matches(model, sha256=spec.model.sha256):
        raise ModelDigestMismatchError(
            f"model in ConfigMap {model_ref.name}/{model_ref.key} has sha256 "
            f"{inputs.sha256_hex(model)}, spec.model.sha256 expects {spec.model.sha256}"
        )
    files: dict[str, bytes] = {}
    for source in spec.build.context_from:
        files.update(hub.config_map_files(namespace, source.config_map.name))
    files.update(dockerfile.template_files(spec))
    files[dockerfile.model_context_path(spec)] = model
    text = dockerfile.resolve(spec, name=name)
    digest = inputs.of_spec(
        spec,
        dockerfile=text,
        context={path: inputs.sha256_hex(data) for path, data in files.items()},
    )
    return Materials(dockerfile=text, files=files, inputs_digest=digest)


class ModelDigestMismatchError(ValueError):
    """The model artifact is not the one the spec pins."""


def local_tag(namespace: str, name: str, inputs_digest: str) -> str:
    return f"{LOCAL_REPOSITORY}/{namespace}/{name}:{inputs_digest.removeprefix('sha256:')[:16]}"
