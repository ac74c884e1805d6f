"""What the Kopf handler modules share: the API group, target access and the daemons' sleep.

Handler modules do not import each other (an import-linter contract), so anything two of them
need lives here, and a reader of one handler finds its helpers in one place.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from edgeferry import settings
from edgeferry.adapters import clusters

GROUP = "edgeferry.io"
VERSION = "v1alpha1"

_POLL_SECONDS = 1.0


def access_for(config: settings.Settings) -> clusters.Access:
    """The process-wide clients and thread pool for talking to targets."""
    return clusters.shared(
        timeout=config.rollout.target_timeout_seconds,
        max_parallel=config.rollout.max_parallel_targets,
    )


async def sleep_or_wake(
    seconds: float,
    *,
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    wake: asyncio.Event | None = None,
) -> None:
    """Sleep `seconds`, ending early when the daemon stops, `wake` is set or the spec changes.

    The spec change is seen on the daemon's live body (Kopf keeps it current from its watch),
    checked every `_POLL_SECONDS`: cheaper and quieter than an event handler per watch event.
    """
    generation = body.meta.get("generation")
    deadline = time.monotonic() + max(0.0, seconds)
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopped.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        while (left := deadline - time.monotonic()) > 0:
            done, _ = await asyncio.wait(
                waits, timeout=min(left, _POLL_SECONDS), return_when=asyncio.FIRST_COMPLETED
            )
            if done or body.meta.get("generation") != generation:
                return
    finally:
        for waiter in waits:
            waiter.cancel()
