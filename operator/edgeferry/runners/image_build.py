"""Building a ModelImage: one Docker build per platform, each on that platform's base images.

The classic builder keeps one local image per reference, so a `FROM` that pins an image index
is rewritten for each platform's build to that platform's child (`decisions.base_images`);
otherwise every platform would build on whichever base was pulled first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import docker
import requests
import urllib3.exceptions

from edgeferry import metrics
from edgeferry.adapters import docker_build, registry
from edgeferry.decisions import base_images, image_steps
from edgeferry.models import modelimage, reasons
from edgeferry.runners import errors, image_inputs


class PlatformBuildError(RuntimeError):
    """One platform's build failed, which fails the whole stage."""

    def __init__(self, platform: str, error: str, log_tail: Sequence[str]) -> None:
        super().__init__(f"{platform}: {error}")
        self.platform = platform
        self.error = error
        self.log_tail = tuple(log_tail)


def build(
    api: Callable[[], docker.APIClient],
    spec: modelimage.ModelImageSpec,
    materials: image_inputs.Materials,
    *,
    tag: str,
    labels: Mapping[str, str],
    insecure: Collection[str],
    metric_labels: tuple[str, str],
    scratch_dir: Path | None = None,
) -> list[docker_build.BuildResult]:
    """Every platform's image, in spec order; the first failure raises `PlatformBuildError`."""
    platforms = spec.build.target_platforms
    results: list[docker_build.BuildResult] = []
    for platform in platforms:
        try:
            text = dockerfile_for(materials.dockerfile, platform, insecure=insecure)
            with metrics.BUILD_DURATION.labels(*metric_labels).time():
                results.append(
                    docker_build.build_image(
                        api(),
                        text,
                        files=materials.files,
                        tag=image_steps.build_tag(tag, platform, platforms=len(platforms)),
                        build_args=spec.build.args,
                        labels=dict(labels),
                        platform=platform,
                        timeout_s=spec.build.timeout_seconds,
                        scratch_dir=scratch_dir,
                    )
                )
        except docker_build.BuildError as exc:
            if exc.transient or not docker_build.daemon_answers(api()):
                raise errors.TransientError(
                    f"{platform}: {exc.message}", reason=reasons.DOCKER_UNAVAILABLE
                ) from exc
            raise PlatformBuildError(platform, exc.message, exc.log_tail) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise errors.TransientError(
                f"{platform}: the Docker daemon went away: {exc}", reason=reasons.DOCKER_UNAVAILABLE
            ) from exc
        except registry.NoSuchPlatformError as exc:
            raise PlatformBuildError(platform, str(exc.args[0] if exc.args else exc), ()) from exc
    return results


def dockerfile_for(dockerfile_text: str, platform: str, *, insecure: Collection[str]) -> str:
    """The Dockerfile for one platform's build: bases pinned as an image index replaced by
    their child for that platform (see `decisions.base_images`)."""
    pinned = base_images.pinned_bases(dockerfile_text)
    if not pinned:
        return dockerfile_text
    try:
        resolved = registry.platform_children(pinned, platform, insecure=insecure)
    except registry.NoSuchPlatformError:
        raise
    except registry.RegistryError as exc:
        raise errors.TransientError(
            f"cannot resolve the base images for {platform}: {exc}",
            reason=reasons.REGISTRY_UNAVAILABLE,
        ) from exc
    return base_images.for_platform(dockerfile_text, resolved)
