"""Process entry: `python -m edgeferry` runs the operator.

It reads settings once, serves `/metrics` on a port of its own, configures Kopf to keep its
bookkeeping in `edgeferry.io/` annotations (so a restarted operator resumes where it stopped, and
our status stays ours), and imports the handler modules, which register themselves with Kopf.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import kopf
import prometheus_client

from edgeferry import metrics, settings
from edgeferry.handlers import edgetarget, edgetarget_cleanup, modeldeployment, modelimage

_LOG = logging.getLogger("edgeferry")
HANDLER_MODULES = (modelimage, edgetarget, edgetarget_cleanup, modeldeployment)
"""Importing these registers their Kopf handlers."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Kopf's bookkeeping under our prefix, and bounded watch and request timeouts."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="edgeferry.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="edgeferry.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "edgeferry.io/cleanup"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="edgeferry", description="the edgeferry operator")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("EDGEFERRY_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="Kopf liveness endpoint URL (EDGEFERRY_LIVENESS)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = settings.from_env()
    except settings.SettingsError as exc:
        raise SystemExit(f"edgeferry: cannot start: {exc}") from None
    metrics.SCAN_DB_STALE_THRESHOLD.set(config.scan.db_stale_after_seconds)
    prometheus_client.start_http_server(
        config.metrics_port, addr=config.metrics_host, registry=metrics.REGISTRY
    )
    _LOG.info(
        "metrics on %s:%d; handlers: %s",
        config.metrics_host,
        config.metrics_port,
        ", ".join(m.__name__ for m in HANDLER_MODULES),
    )
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(config=config),
    )


if __name__ == "__main__":
    main()
