"""Build grype's vulnerability database from advisory records on disk, and install it.

Air-gapped clusters cannot download grype's DB, and tests must not: both build their own from a
directory of vunnel-format advisory records (GitHub advisories, Debian/other OS records, or whole
vunnel provider workspaces). The work is done by ``edgeferry-vulndb``, a small Go program linked
against the same grype release as the scanner and using grype's own DB-building packages, so the
DB always has the schema that grype reads. This module only runs it and hands its archive to
``grype db import`` (`install_offline_db`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import subprocess

from edgeferry.adapters import scanner, toolpaths
from edgeferry.models import timestamps

#: The archive name `build_offline_db` writes into its output directory.
ARCHIVE_NAME = "vulnerability-db.tar.gz"
#: The builder's JSON summary, kept beside the archive.
SUMMARY_NAME = "build-summary.json"


class VulnDBBuildError(RuntimeError):
    """The DB builder failed; the message carries its diagnosis (often a bad record file)."""


@dataclasses.dataclass(frozen=True)
class BuildSummary:
    """What ``edgeferry-vulndb build`` reported."""

    archive: pathlib.Path
    db_dir: pathlib.Path
    built: datetime.datetime
    checksum: str
    """``xxh64:...`` of the DB as built. ``grype db import`` rewrites the file, so an installed
    DB reports its own checksum (`scanner.DBStatus.checksum`); the built time stays the same."""
    schema_version: str
    grype_version: str
    records: int
    providers: dict[str, int]
    """Records per provider (``github``, ``debian``...)."""
    seconds: float


def build_offline_db(
    records_dir: pathlib.Path,
    out_dir: pathlib.Path,
    *,
    builder: str | None = None,
    timeout_s: float = 300.0,
) -> pathlib.Path:
    """Build a DB from ``records_dir`` into ``out_dir``; return the archive to import.

    ``out_dir`` receives ``vulnerability.db``, ``import.json``, the archive and the builder's
    summary (`load_summary`). A rebuild into the same directory replaces the previous DB. The
    build timestamp is now, so grype's age check passes for the next five days.
    """
    try:
        binary = toolpaths.find("edgeferry-vulndb", explicit=builder)
    except toolpaths.ToolNotFoundError as error:
        raise VulnDBBuildError(str(error)) from error
    if not records_dir.is_dir():
        raise VulnDBBuildError(f"advisory records directory {records_dir} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / ARCHIVE_NAME
    command = [
        str(binary.path),
        "build",
        "--records",
        str(records_dir),
        "--out",
        str(out_dir),
        "--archive",
        str(archive),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRYPE_")}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise VulnDBBuildError(f"edgeferry-vulndb did not finish in {timeout_s:.0f}s") from error
    except OSError as error:
        raise VulnDBBuildError(f"edgeferry-vulndb could not start: {error}") from error
    if done.returncode != 0:
        raise VulnDBBuildError(
            f"edgeferry-vulndb exited {done.returncode} building from {records_dir}: "
            f"{done.stderr.strip()[-1500:]}"
        )
    (out_dir / SUMMARY_NAME).write_text(done.stdout)
    if not archive.is_file():
        raise VulnDBBuildError(f"edgeferry-vulndb reported success but wrote no {archive}")
    return archive


def load_summary(out_dir: pathlib.Path) -> BuildSummary:
    """The summary of the last `build_offline_db` into ``out_dir``."""
    try:
        doc = json.loads((out_dir / SUMMARY_NAME).read_text())
        built = timestamps.parse_rfc3339(doc["built"])
        if built is None:
            raise ValueError(f"built is not an RFC 3339 time: {doc['built']!r}")
        return BuildSummary(
            archive=pathlib.Path(doc.get("archive") or out_dir / ARCHIVE_NAME),
            db_dir=pathlib.Path(doc["vulnerabilityDb"]).parent,
            built=built,
            checksum=str(doc["checksum"]),
            schema_version=str(doc["schemaVersion"]),
            grype_version=str(doc.get("grypeVersion", "")),
            records=int(doc["records"]),
            providers={str(p["name"]): int(p["records"]) for p in doc.get("providers") or []},
            seconds=float(doc.get("durationSeconds") or 0.0),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise VulnDBBuildError(f"no readable build summary in {out_dir}: {error}") from error


def install_offline_db(
    records_dir: pathlib.Path,
    build_dir: pathlib.Path,
    *,
    config: scanner.ScannerConfig,
    builder: str | None = None,
) -> scanner.DBStatus:
    """Build a DB from ``records_dir`` and import it into ``config``'s grype DB cache dir.

    ``config.grype`` should point at a dedicated cache dir (`grype_env.GrypeSettings.offline`):
    importing replaces whatever DB grype had there.
    """
    if config.grype.db_cache_dir is None:
        raise VulnDBBuildError(
            "refusing to import into grype's default DB directory; set GrypeSettings.db_cache_dir"
        )
    archive = build_offline_db(records_dir, build_dir, builder=builder)
    return scanner.import_db(archive, config=config)
