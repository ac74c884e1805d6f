"""Kopf wiring for ModelImage: one daemon per resource runs its pipeline.

A daemon (not change handlers plus a timer) because a build can take minutes and must never run
twice at once for the same image: the daemon is the one place that reconciles a given
ModelImage, waking when the generation changes or when the pipeline asked to look again (rescan
due, exception expiring, input missing). Builds across images are bounded by a semaphore so a
burst of new ModelImages does not fork-bomb the Docker daemon. On operator restart Kopf starts
the daemons again and the pipeline resumes from status alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import kopf

from edgeferry import metrics, settings
from edgeferry.adapters import hub
from edgeferry.handlers import image_pipeline

_LOG = logging.getLogger("edgeferry.modelimage")
_POLL_SECONDS = 2.0
_RETRY_SECONDS = 30.0
_PIPELINES = threading.BoundedSemaphore(2)
"""At most two pipelines (builds, scans) at a time per operator."""


def _reconcile(config: settings.Settings, kopf_body: kopf.Body) -> float:
    """Run the pipeline once (in a worker thread); return seconds until the next look.

    The object is read afresh: the daemon's live body may not yet show our own last status
    write, and a stale status would repeat a finished step.
    """
    body = hub.get_object("modelimages", kopf_body.meta["namespace"], kopf_body.meta["name"])
    if body is None:
        return _RETRY_SECONDS

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(kopf_body, type=type_, reason=reason, message=message)

    started = time.monotonic()
    reconciler = image_pipeline.Reconciler(config=config, body=body, post_event=post)
    with _PIPELINES:
        try:
            outcome = reconciler.run()
            metrics.RECONCILES.labels("ModelImage", "succeeded").inc()
            return outcome.recheck_after.total_seconds()
        except image_pipeline.TransientError as exc:
            metrics.RECONCILES.labels("ModelImage", "retried").inc()
            _LOG.warning("%s: %s; retrying in %.0fs", body["metadata"]["name"], exc, _RETRY_SECONDS)
            post("Warning", "Retrying", f"{exc}; retrying in {_RETRY_SECONDS:.0f}s")
            return _RETRY_SECONDS
        except Exception as exc:
            metrics.RECONCILES.labels("ModelImage", "failed").inc()
            _LOG.exception("%s: reconcile failed", body["metadata"]["name"])
            post("Warning", "ReconcileError", f"{type(exc).__name__}: {exc}"[:900])
            return _RETRY_SECONDS
        finally:
            reconciler.close()
            metrics.RECONCILE_DURATION.labels("ModelImage").observe(time.monotonic() - started)


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
    for gauge in (metrics.IMAGE_BLOCKED, metrics.VULNERABILITIES, metrics.LINT_FINDINGS):
        for labels in list(gauge._metrics):
            if labels[:2] == (namespace, name):
                gauge.remove(*labels)
