"""Which base image each platform's build starts from, when a `FROM` names an image index.

Docker Engine 20.10's classic builder keeps one local image per reference. Building
`FROM base@sha256:<index>` for linux/amd64 and then for linux/arm64 resolves the same local
reference both times, so the second build silently starts from the amd64 base; pulling again
is refused ("Cannot overwrite digest"). BuildKit resolves the index per platform; edgeferry does
the same before handing the Dockerfile to the daemon: every `FROM` that pins an index by digest
is rewritten, for one build, to the digest of the index's child for that build's platform.
Pure text work here; the adapter asks the registry for the children.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def _from_image(line: str) -> str | None:
    """The image a `FROM` line names (flags like `--platform=` skipped), else None."""
    words = line.split()
    if not words or words[0].upper() != "FROM":
        return None
    images = [w for w in words[1:] if not w.startswith("--")]
    return images[0] if images else None


def pinned_bases(dockerfile: str) -> tuple[str, ...]:
    """`repository@sha256:...` references the Dockerfile's `FROM` lines pin, in order, once."""
    found: list[str] = []
    for line in dockerfile.splitlines():
        image = _from_image(line.strip())
        if image is not None and _PINNED.match(image) and image not in found:
            found.append(image)
    return tuple(found)


def for_platform(dockerfile: str, resolved: Mapping[str, str]) -> str:
    """The Dockerfile with each pinned base in `resolved` replaced by its platform's child."""
    lines = []
    for line in dockerfile.splitlines(keepends=True):
        image = _from_image(line.strip())
        if image is not None and image in resolved:
            lines.append(line.replace(image, resolved[image], 1))
        else:
            lines.append(line)
    return "".join(lines)
