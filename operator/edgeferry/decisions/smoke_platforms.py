"""Which platforms of an image the smoke test runs, and what each run's result reads as.

A multi-platform image is one digest that nodes of every platform pull, so every platform's
image is smoke-tested, each the one its own build produced: a server that starts on amd64 can
still exit on arm64 (a base whose arm64 variant is broken, a step that differs per
architecture). The daemon runs its own platform natively and any other one only under emulation
(qemu-user-static in binfmt_misc on the daemon's host). Whether a run is emulated is decided here
from the daemon's platform alone; the daemon cannot say whether it has emulation, so a daemon
without it shows as "exec format error", which is told apart from a server that fails.

Emulated runs are slower but still cheap enough for the full check, health and one prediction:
the iris sklearn image was healthy after 0.6 s natively and 5.4-5.9 s under qemu on this amd64
machine (about 9x), and answered in 3 ms and 30-40 ms (bench/smoke_platforms_bench.py). So
emulated runs get the same check with deadlines scaled by that factor, not a lighter check.

Pure: the runner asks the daemon for its platform and hands the smoke adapter's results here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from edgeferry.models import modelimage, reasons

EMULATION_SLOWDOWN = 10
"""How many times the spec's `timeoutSeconds` (and the per-request deadline) an emulated platform
may take: the measured start-up slowdown under qemu (about 9x), rounded up."""
REQUEST_TIMEOUT_SECONDS = 10.0
"""The smoke adapter's deadline for one health or prediction request, natively."""
SKIP_SETTING = "EDGEFERRY_SKIP_EMULATED_SMOKE_TESTS"
_EXEC_FORMAT_ERROR = "exec format error"


@dataclasses.dataclass(frozen=True)
class Run:
    """One platform's smoke test: the image that platform's build produced, and how it runs."""

    platform: str
    image_id: str
    emulated: bool

    @property
    def label(self) -> str:
        """How messages name the platform: `linux/arm64 (emulated)`."""
        return f"{self.platform} (emulated)" if self.emulated else self.platform


@dataclasses.dataclass(frozen=True)
class Plan:
    """The runs, native first, and the emulated platforms left out by the operator's setting."""

    runs: tuple[Run, ...]
    skipped: tuple[str, ...]


def emulated(platform: str, *, daemon_platform: str) -> bool:
    """Whether the daemon can run `platform` only under emulation (any platform but its own)."""
    return platform != daemon_platform


def plan(image: modelimage.ImageStatus, *, daemon_platform: str, skip_emulated: bool) -> Plan:
    """Every built platform, native ones first (cheap failures first), then the emulated ones
    in spec order unless `skip_emulated`."""
    runs = [
        Run(p.platform, p.id, emulated(p.platform, daemon_platform=daemon_platform))
        for p in image.platform_images
    ]
    ordered = sorted(runs, key=lambda run: run.emulated)  # stable: spec order within each
    if not skip_emulated:
        return Plan(tuple(ordered), ())
    return Plan(
        tuple(r for r in ordered if not r.emulated),
        tuple(r.platform for r in ordered if r.emulated),
    )


def timeout_seconds(run: Run, spec_timeout_seconds: int) -> int:
    """The health deadline of one run: the spec's, times `EMULATION_SLOWDOWN` when emulated."""
    return spec_timeout_seconds * (EMULATION_SLOWDOWN if run.emulated else 1)


def request_timeout_seconds(run: Run) -> float:
    """The deadline of each health and prediction request of one run."""
    return REQUEST_TIMEOUT_SECONDS * (EMULATION_SLOWDOWN if run.emulated else 1)


def nothing_runs(plan_: Plan, *, daemon_platform: str) -> str | None:
    """Why no platform is smoke-tested (every one emulated and skipped); None: some run."""
    if plan_.runs:
        return None
    verb = "is" if len(plan_.skipped) == 1 else "are"
    return (
        f"{', '.join(plan_.skipped)} {verb} emulated on this {daemon_platform} Docker daemon "
        f"and {SKIP_SETTING} is on"
    )


def emulation_missing(run: Run, *, message: str, log_tail: Sequence[str]) -> bool:
    """Whether an emulated run failed because the daemon cannot run that platform at all."""
    if not run.emulated:
        return False  # natively, "exec format error" is a binary of the wrong architecture
    return any(_EXEC_FORMAT_ERROR in text.lower() for text in (message, *log_tail))


def failure(run: Run, *, reason: str, message: str, log_tail: Sequence[str]) -> tuple[str, str]:
    """(condition reason, what to say first) for a failed run, naming its platform."""
    if emulation_missing(run, message=message, log_tail=log_tail):
        return reasons.EMULATION_MISSING, (
            f"{run.label}: the Docker daemon cannot run {run.platform} programs (exec format "
            f"error): register qemu-user-static in binfmt_misc, with the F flag, on the daemon's "
            f"host, or set {SKIP_SETTING}=true (Helm build.skipEmulatedSmokeTests) to leave "
            f"emulated platforms out of the smoke test"
        )
    return reason, f"{run.label}: {message}"


def passed(run: Run, *, startup_ms: float | None, prediction_latency_ms: float | None) -> str:
    """`linux/arm64 (emulated): prediction ok in 9.8 s`: start to healthy to the answer."""
    seconds = ((startup_ms or 0) + (prediction_latency_ms or 0)) / 1000
    what = "prediction ok" if prediction_latency_ms is not None else "healthy"
    return f"{run.label}: {what} in {seconds:.1f} s"


def skipped(platforms: Sequence[str]) -> str:
    """The part of the message for emulated platforms the operator's setting left out."""
    return f"{', '.join(platforms)} (emulated): not run ({SKIP_SETTING} is on)"
