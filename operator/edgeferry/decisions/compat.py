"""Can a target's nodes run the image at all? Image platforms against node architectures.

An image built for `linux/arm64` only cannot start on an amd64 node: the Pod would sit in
`exec format error` crash loops until the progress deadline, then be rolled back, and the
rollout would stop as Degraded for a problem that was knowable up front. So edgeferry checks
first and reports such a target `Incompatible` with a message that names both sides; it never
attempts it, and it does not count as a failure of its wave.

Inputs are the image's platforms (one per manifest of an image index, e.g. `linux/arm64`) and
the architectures of the target's ready nodes as the EdgeTarget probe last saw them (the
`kubernetes.io/arch` node label). Trade-offs, on purpose:

- Variants (`arm/v7` vs `arm/v6`) are ignored: nodes do not label them, so a check would only
  guess. The health gate of the rollout still catches a wrong variant.
- Only Linux images run: edgeferry renders a `kubernetes.io/os: linux` node selector.
- An image whose platforms are unknown is let through (nothing to check against) and an
  EdgeTarget that was never probed is `Unknown`: the caller defers it until the probe reports.
- A mixed cluster is compatible when some nodes match; the result names the matching
  architectures so the workload can be pinned to exactly those nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Literal

Status = Literal["Compatible", "Incompatible", "Unknown"]

_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "arm64/v8": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}


@dataclasses.dataclass(frozen=True)
class Platform:
    """One platform of an image: OS, architecture and optional variant (`linux/arm/v7`)."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The answer for one target; `architectures` are the node architectures to pin to."""

    status: Status
    message: str
    architectures: tuple[str, ...] = ()

    @property
    def compatible(self) -> bool:
        """True only when the check passed (Unknown is not compatible yet)."""
        return self.status == "Compatible"


def normalize_arch(arch: str) -> str:
    """Kubernetes' spelling of an architecture (`aarch64` → `arm64`, `x86_64` → `amd64`)."""
    value = arch.strip().lower()
    return _ALIASES.get(value, value)


def parse_platform(text: str) -> Platform:
    """Parse `os/arch[/variant]`; a bare `arch` means Linux. Raises ValueError when malformed."""
    parts = [p for p in text.strip().lower().split("/") if p]
    if len(parts) == 1:
        return Platform(os="linux", architecture=normalize_arch(parts[0]))
    if len(parts) in (2, 3):
        return Platform(
            os=parts[0],
            architecture=normalize_arch(parts[1]),
            variant=parts[2] if len(parts) == 3 else None,
        )
    raise ValueError(f"not a platform (want os/arch[/variant], e.g. linux/arm64): {text!r}")


def check(image_platforms: Iterable[str], node_architectures: Iterable[str]) -> Verdict:
    """Whether nodes of these architectures can run an image built for these platforms."""
    platforms = [parse_platform(p) for p in image_platforms]
    nodes = sorted({normalize_arch(a) for a in node_architectures if a.strip()})
    linux = [p for p in platforms if p.os == "linux"]
    if platforms and not linux:
        listed = ", ".join(str(p) for p in platforms)
        return Verdict(
            "Incompatible",
            f"image is built for {listed}; edgeferry only runs Linux images. "
            "Build the ModelImage for linux/amd64 or linux/arm64.",
        )
    if not nodes:
        return Verdict(
            "Unknown",
            "node architectures are not known yet (the EdgeTarget has not reported a successful "
            "probe); the target is deferred until it does.",
        )
    if not platforms:
        return Verdict(
            "Compatible",
            "image platform is not recorded; not checked against the nodes.",
            tuple(nodes),
        )
    wanted = sorted({p.architecture for p in linux})
    matching = tuple(a for a in nodes if a in wanted)
    if matching:
        return Verdict(
            "Compatible",
            f"nodes with {', '.join(matching)} can run the image",
            matching,
        )
    return Verdict(
        "Incompatible",
        f"image is built for {', '.join(f'linux/{a}' for a in wanted)} but the target's ready "
        f"nodes are {', '.join(nodes)}. Build the ModelImage for "
        f"{' or '.join(f'linux/{a}' for a in nodes)}, or narrow targets.selector to "
        "exclude this target.",
    )


def check_size(verdict: Verdict, sizes: Mapping[str, int], *, budget_bytes: int | None) -> Verdict:
    """Whether the image fits the target's `imageSizeBudgetBytes`, on the architectures it
    would run there.

    `sizes` maps an architecture to the unpacked size of the image built for it (what lands
    on the node's disk, `status.image.size` of the ModelImage). Architectures whose image is
    too large are dropped from the pinning; when none is left the target is `Incompatible`,
    never attempted, like a platform mismatch: pulling 2 GB onto a 1 GB edge disk can only
    fail late and slowly. A size that is not known is not held against the target.
    """
    if budget_bytes is None or not verdict.compatible:
        return verdict
    fitting = tuple(a for a in verdict.architectures if sizes.get(a, 0) <= budget_bytes)
    if fitting == verdict.architectures:
        return verdict
    if fitting:
        return Verdict(
            "Compatible",
            f"{verdict.message}; pinned to {', '.join(fitting)}, where the image fits the "
            f"size budget of {_mb(budget_bytes)}",
            fitting,
        )
    too_big = ", ".join(
        f"linux/{a} is {_mb(sizes[a])}" for a in verdict.architectures if a in sizes
    )
    return Verdict(
        "Incompatible",
        f"image is too large for this target: {too_big} unpacked, over its "
        f"imageSizeBudgetBytes of {_mb(budget_bytes)}. Slim the image, or raise the budget "
        "if the site has the disk.",
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
