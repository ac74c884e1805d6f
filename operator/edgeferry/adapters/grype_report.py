"""What grype and syft print, read into typed values: findings, the DB's identity, versions.

Pure parsing, apart from reading the small ``import.json`` grype keeps beside its DB; running
the tools is `edgeferry.adapters.scanner`'s job, and it returns these types. Kept apart so the
parsing of every grype release we have met is tested without the tools.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from edgeferry.models import timestamps

Severity = Literal["Critical", "High", "Medium", "Low", "Negligible", "Unknown"]
#: grype's severities, most severe first.
SEVERITIES: tuple[Severity, ...] = ("Critical", "High", "Medium", "Low", "Negligible", "Unknown")

FixState = Literal["fixed", "not-fixed", "wont-fix", "unknown"]
_FIX_STATES: tuple[FixState, ...] = ("fixed", "not-fixed", "wont-fix", "unknown")

# Neither tool gets -q: with it, grype exits 1 without saying why. Without a terminal both print
# only warnings and errors to stderr, which is what ScanError shows.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


# --- parsing (pure) -----------------------------------------------------------------------------


def parse_report(text: str, *, source: str = "") -> ScanResult:
    """Parse ``grype -o json`` output into a `ScanResult` (findings most severe first)."""
    doc = loads("grype", text)
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
    return _db_status_from(loads("grype", text))


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


def read_checksum(db_path: str) -> str:
    if not db_path:
        return ""
    path = pathlib.Path(db_path)
    db_dir = path.parent if path.suffix == ".db" else path
    return str(read_import_metadata(db_dir).get("digest") or "")


def _parse_time(text: str) -> datetime.datetime | None:
    if not text or text.startswith("0001-01-01"):
        return None
    return timestamps.parse_rfc3339(text)


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


def loads(tool: str, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScanError(tool, f"printed no JSON: {text[:200]!r}") from error
    if not isinstance(doc, dict):
        raise ScanError(tool, f"printed JSON that is not an object: {text[:200]!r}")
    return doc


def dig(doc: Mapping[str, Any], *keys: str) -> object:
    current: object = doc
    for key in keys:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def _tail(text: str, limit: int = 600) -> str:
    """The end of a tool's stderr, without terminal colours (that is where the error is)."""
    text = _ANSI.sub("", text).strip()
    return text if len(text) <= limit else "..." + text[-limit:]
