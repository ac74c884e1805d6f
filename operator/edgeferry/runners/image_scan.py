"""Scanning one platform's image with syft and grype as the operator's settings say.

The SBOM of each local image is kept under the build workdir, so a rescan for a new
vulnerability database re-matches it with grype in a fraction of a second instead of
cataloguing the image again (`scan_step.reuses_sbom` says when that is allowed).
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence

from edgeferry import settings
from edgeferry.adapters import grype_env, scanner
from edgeferry.decisions import scan_step

_LOG = logging.getLogger("edgeferry.modelimage")


def scanner_config(config: settings.Settings) -> scanner.ScannerConfig:
    """How the operator runs syft and grype: the DB cache and update policy from settings."""
    grype = grype_env.GrypeSettings(
        db_cache_dir=config.scan.db_cache_dir,
        auto_update=config.scan.db_auto_update,
        validate_age=config.scan.db_validate_age,
        update_url=config.scan.db_update_url,
    )
    return scanner.ScannerConfig(grype=grype)


def scan_one(
    image_id: str, *, trigger: str, workdir: pathlib.Path, config: scanner.ScannerConfig
) -> scanner.ScanResult:
    """Scan one platform's image, re-matching its cached SBOM when `image_steps` allows."""
    sbom_path = workdir / "sboms" / f"{image_id.replace(':', '-')}.json"
    sbom_path.parent.mkdir(parents=True, exist_ok=True)
    scanner.remove_partial_sboms(sbom_path.parent, older_than_s=2 * config.timeout_s)
    if scan_step.reuses_sbom(trigger, cached=scanner.readable_sbom(sbom_path)):
        return scanner.match(sbom_path, config=config, source=f"docker:{image_id}")
    return scanner.scan(f"docker:{image_id}", config=config, sbom_path=sbom_path)


def db_identity(config: scanner.ScannerConfig) -> str | None:
    """The grype DB's identity, None when grype cannot say (no DB-change rescan then)."""
    try:
        status = scanner.db_status(config=config)
    except scanner.ScanError as exc:
        _LOG.warning("grype DB status unavailable: %s", exc)
        return None
    return status.identity if status.valid else None


def update_db(config: scanner.ScannerConfig) -> None:
    """Ask grype for a newer DB (the DB watch, when updates are on); trouble is only logged:
    the next look tries again, and scans keep the DB they have."""
    try:
        scanner.update_db(config=config)
    except scanner.ScanError as exc:
        _LOG.warning("grype DB update failed: %s", exc)


def facts(results: Sequence[scanner.ScanResult]) -> scan_step.ScanFacts:
    """Every platform's findings, and the tools and DB of the first scan, for the gate."""
    descriptor = results[0].descriptor
    db = descriptor.db
    return scan_step.ScanFacts(
        findings_per_image=tuple(scanner.gate_findings(r.findings) for r in results),
        syft_version=descriptor.syft_version,
        grype_version=descriptor.grype_version,
        db_built=db.built if db else None,
        db_identity=db.identity if db else None,
    )
