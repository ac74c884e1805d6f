"""Kopf wiring for ModelImage: one daemon per resource runs its pipeline.

A daemon (not change handlers plus a timer) because a build can take minutes and must never run
twice at once for the same image: the daemon is the one place that reconciles a given
ModelImage, waking when the generation changes, when the pipeline asked to look again (rescan
due, exception expiring, input missing) or when the vulnerability DB changed. The runner
(`runners.image_pipeline`) bounds builds across images so a burst of new ModelImages does not
fork-bomb the Docker daemon. On operator restart Kopf starts the daemons again and the
pipeline resumes from status alone.

The DB watch is one task per operator, not a timer per image: it asks grype every
`EDGEFERRY_SCAN_DB_WATCH_SECONDS` which database it has (`grype db status`, a local read) and,
when that changed (an update, an import), bumps a counter every daemon looks at while it
sleeps. Each then reconciles, and the pipeline re-matches its cached SBOM against the new DB
(`pipeline.next_step`: `ScanDatabaseChanged`), so a new advisory blocks an admitted image in
seconds rather than at its next periodic look; one grype call per interval whatever the fleet.
With `GRYPE_DB_AUTO_UPDATE` on, the watch also runs `grype db update` every
`EDGEFERRY_SCAN_DB_UPDATE_SECONDS`, so a new DB arrives even while no image is being scanned.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import kopf

from edgeferry import metrics, settings
from edgeferry.adapters import hub
from edgeferry.decisions import scan_step
from edgeferry.runners import image_pipeline, image_scan

_POLL_SECONDS = 2.0
_LOG = logging.getLogger("edgeferry.modelimage")


@dataclasses.dataclass
class _DBWatch:
    """What the DB watch saw: the DB's identity, and how many changes since the start."""

    identity: str | None = None
    changes: int = 0


_db = _DBWatch()


async def _watch_db(config: settings.Settings) -> None:
    """Every `db_watch_seconds`, ask grype which DB it has; count a change (`db_changed`).

    With updates on, every `db_update_seconds` it first lets grype fetch a newer DB.
    """
    scan_config = image_scan.scanner_config(config)
    updated: float | None = None
    while True:
        if scan_step.db_update_due(
            updated,
            time.monotonic(),
            every_seconds=config.scan.db_update_seconds,
            auto_update=config.scan.db_auto_update,
        ):
            updated = time.monotonic()
            await asyncio.to_thread(image_scan.update_db, scan_config)
        current = await asyncio.to_thread(image_scan.db_identity, scan_config)
        if scan_step.db_changed(_db.identity, current):
            _db.changes += 1
            _LOG.info(
                "vulnerability DB changed (%s -> %s): re-match every image", _db.identity, current
            )
        if current is not None:
            _db.identity = current
        await asyncio.sleep(config.scan.db_watch_seconds)


@kopf.on.startup()
async def start_db_watch(memo: kopf.Memo, **_: Any) -> None:
    """Start the operator's one DB watch."""
    memo["db_watch"] = asyncio.create_task(_watch_db(memo["config"]))


@kopf.on.cleanup()
async def stop_db_watch(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("db_watch")
    if task is not None:
        task.cancel()


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
    """Reconcile whenever the spec's generation moves, the pipeline's recheck comes due or the
    DB watch saw the vulnerability DB change."""
    config: settings.Settings = memo["config"]
    seen_generation: int | None = None
    seen_db_changes = _db.changes
    due = 0.0
    while not stopped:
        generation = body.meta.get("generation")
        if (
            generation != seen_generation
            or time.monotonic() >= due
            or (_db.changes != seen_db_changes)
        ):
            seen_generation, seen_db_changes = generation, _db.changes
            wait = await asyncio.to_thread(_reconcile, config, body)
            due = time.monotonic() + wait
        await asyncio.sleep(_POLL_SECONDS)


@kopf.on.delete(hub.GROUP, hub.VERSION, "modelimages", optional=True)
def forget(name: str, namespace: str | None, **_: Any) -> None:
    """Drop the per-image metric series of a deleted ModelImage (images in registries stay)."""
    gauges = (metrics.IMAGE_BLOCKED, metrics.VULNERABILITIES, metrics.LINT_FINDINGS)
    metrics.forget(namespace or "", name, *gauges)
