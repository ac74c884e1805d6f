"""What the Kopf handler modules share: the API group, target access and the daemons' sleep.

Handler modules do not import each other (an import-linter contract), so anything two of them
need lives here, and a reader of one handler finds its helpers in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Mapping
from typing import Any

import kopf
import pydantic

from edgeferry import settings
from edgeferry.adapters import clusters
from edgeferry.models import conditions, reasons, timestamps
from edgeferry.models import edgetarget as et

GROUP = "edgeferry.io"
VERSION = "v1alpha1"

_POLL_SECONDS = 1.0


def access_for(config: settings.Settings) -> clusters.Access:
    """The process-wide clients and thread pool for talking to targets."""
    return clusters.shared(
        timeout=config.rollout.target_timeout_seconds,
        max_parallel=config.rollout.max_parallel_targets,
        allow_insecure_tls=config.rollout.allow_insecure_target_tls,
    )


async def sleep_or_wake(
    seconds: float,
    *,
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    wake: asyncio.Event | None = None,
    seen_generation: object = None,
) -> None:
    """Sleep `seconds`, ending early when the daemon stops, `wake` is set or the spec changes.

    The spec change is seen on the daemon's live body (Kopf keeps it current from its watch),
    checked every `_POLL_SECONDS`: cheaper and quieter than an event handler per watch event.
    `seen_generation` is the generation the daemon's last round worked from: an edit made
    during that round ends the sleep at once (taken at the start of the sleep instead, that
    edit would wait out the whole sleep).
    """
    generation = body.meta.get("generation") if seen_generation is None else seen_generation
    deadline = time.monotonic() + max(0.0, seconds)
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopped.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        while body.meta.get("generation") == generation:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            done, _ = await asyncio.wait(
                waits, timeout=min(left, _POLL_SECONDS), return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                return
    finally:
        for waiter in waits:
            waiter.cancel()


@dataclasses.dataclass(frozen=True)
class TargetView:
    """An EdgeTarget as the rollout needs it, parsed once per watch event."""

    name: str
    labels: Mapping[str, str]
    spec: et.EdgeTargetSpec | None
    """None when the spec does not parse (the EdgeTarget reports why)."""
    status: et.EdgeTargetStatus
    created: datetime.datetime | None
    generation: int
    deleting: bool = False
    """Its deletion was requested: its own cleanup empties it, rollouts leave it alone."""

    @property
    def ready(self) -> Mapping[str, Any] | None:
        return conditions.find(self.status.conditions, reasons.READY)

    def fingerprint(self) -> tuple[object, ...]:
        """What, when it changes, can change a rollout decision."""
        ready = self.ready or {}
        return (
            tuple(sorted(self.labels.items())),
            self.generation,
            self.status.reachable,
            ready.get("status"),
            self.status.architectures,
            self.status.cluster_id,
            self.deleting,
        )


def target_view(body: Mapping[str, Any]) -> TargetView:
    """Parse an EdgeTarget body; a bad spec or status reads as unknown rather than failing."""
    meta = body.get("metadata", {})
    try:
        spec: et.EdgeTargetSpec | None = et.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError:
        spec = None
    try:
        status = et.parse_status(body.get("status"))
    except pydantic.ValidationError:
        status = et.EdgeTargetStatus()
    return TargetView(
        name=str(meta.get("name")),
        labels=dict(meta.get("labels") or {}),
        spec=spec,
        status=status,
        created=timestamps.parse_rfc3339(meta.get("creationTimestamp")),
        generation=int(meta.get("generation") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
    )
