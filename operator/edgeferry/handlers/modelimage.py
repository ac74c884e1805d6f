"""Kopf wiring for ModelImage: one daemon per resource runs its pipeline.

A daemon (not change handlers plus a timer) because a build can take minutes and must never run
twice at once for the same image: the daemon is the one place that reconciles a given
ModelImage, waking when the generation changes or when the pipeline asked to look again (rescan
due, exception expiring, input missing). The runner (`runners.image_pipeline`) bounds builds
across images so a burst of new ModelImages does not fork-bomb the Docker daemon. On operator
restart Kopf starts the daemons again and the pipeline resumes from status alone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from edgeferry import metrics, settings
from edgeferry.adapters import hub
from edgeferry.runners import image_pipeline

_POLL_SECONDS = 2.0


def _reconcile(config: settings.Settings, kopf_body: kopf.Body) -> float:
    """Run the pipeline once (in a worker thread); return seconds until the next look.

    The object is read afresh: the daemon's live body may not yet show our own last status
    write, and a stale status would repeat a finished step.
    """
    body = hub.get_object("modelimages", kopf_body.meta["namespace"], kopf_body.meta["name"])
    if body is None:
        return image_pipeline.RETRY_SECONDS

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(kopf_body, type=type_, reason=reason, message=message)

    return image_pipeline.reconcile_once(config, body, post)


@kopf.daemon(hub.GROUP, hub.VERSION, "modelimages", cancellation_timeout=5.0)
async def run_pipeline(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Reconcile whenever the spec's generation moves or the pipeline's recheck comes due."""
    config: settings.Settings = memo["config"]
    seen_generation: int | None = None
    due = 0.0
    while not stopped:
        generation = body.meta.get("generation")
        if generation != seen_generation or time.monotonic() >= due:
            seen_generation = generation
            wait = await asyncio.to_thread(_reconcile, config, body)
            due = time.monotonic() + wait
        await asyncio.sleep(_POLL_SECONDS)


@kopf.on.delete(hub.GROUP, hub.VERSION, "modelimages", optional=True)
def forget(name: str, namespace: str | None, **_: Any) -> None:
    """Drop the per-image metric series of a deleted ModelImage (images in registries stay)."""
    gauges = (metrics.IMAGE_BLOCKED, metrics.VULNERABILITIES, metrics.LINT_FINDINGS)
    metrics.forget(namespace or "", name, *gauges)
