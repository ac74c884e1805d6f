"""Reading grype's JSON into typed findings, and telling grype's exit codes apart.

The JSON documents under ``tests/fixtures/grype/`` were captured from real runs of grype 0.121.2
against the DB built from ``tests/fixtures/advisories`` (see the README there).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import stat

import pytest

from edgeferry.adapters import grype_env, scanner
from edgeferry.models import vulnerabilities

CAPTURED = pathlib.Path(__file__).parents[1] / "fixtures" / "grype"


def _captured(name: str) -> str:
    return (CAPTURED / name).read_text()


def test_requests_match_becomes_a_typed_high_finding() -> None:
    result = scanner.parse_report(_captured("requests-2.19.1.grype.json"))

    (finding,) = result.findings
    assert finding == scanner.Finding(
        id="GHSA-x84v-xcm2-53pg",
        severity="High",
        package=scanner.Package(
            name="requests",
            version="2.19.1",
            type="python",
            purl="pkg:pypi/requests@2.19.1",
            locations=finding.package.locations,
        ),
        fix=scanner.Fix(state="fixed", versions=("2.20.0",)),
        aliases=("CVE-2018-18074",),
        namespace="github:language:python",
        data_source="https://github.com/advisories/GHSA-x84v-xcm2-53pg",
        description="Insufficiently Protected Credentials in Requests",
    )
    assert any(p.endswith("requests-2.19.1.dist-info/METADATA") for p in finding.package.locations)


def test_descriptor_carries_grype_version_and_db_build_time() -> None:
    result = scanner.parse_report(_captured("requests-2.19.1.grype.json"))

    assert result.descriptor.grype_version == "0.121.2"
    db = result.descriptor.db
    assert db is not None
    assert db.schema_version == "v6.1.10"
    assert db.built == datetime.datetime(2026, 11, 27, 23, 56, 51, tzinfo=datetime.UTC)
    assert db.valid


def test_an_os_match_keeps_its_id_without_aliasing_itself() -> None:
    result = scanner.parse_report(_captured("debian-bookworm-old-glibc.grype.json"))

    glibc = [f for f in result.findings if f.package.name == "libc6"]
    assert {f.id for f in glibc} == {"CVE-2023-4911", "CVE-2024-2961"}
    looney = next(f for f in glibc if f.id == "CVE-2023-4911")
    assert looney.aliases == ()
    assert looney.package.type == "deb"
    assert looney.fix.versions == ("2.36-9+deb12u3",)
    assert looney.namespace == "debian:distro:debian:12"
    assert result.distro == "debian 12"


def test_findings_come_most_severe_first_and_are_counted_per_severity() -> None:
    result = scanner.parse_report(_captured("debian-bookworm-old-glibc.grype.json"))

    assert [f.severity for f in result.findings] == ["High", "High", "High"]
    counts = result.counts()
    assert counts["High"] == 3
    assert set(counts) == set(scanner.SEVERITIES)
    assert sum(counts.values()) == 3


def test_a_clean_report_has_no_findings_and_still_a_distro() -> None:
    result = scanner.parse_report(_captured("debian-bookworm-current.grype.json"))

    assert result.findings == ()
    assert result.distro == "debian 12"


def test_the_same_vulnerability_through_two_matchers_is_one_finding() -> None:
    doc = json.loads(_captured("requests-2.19.1.grype.json"))
    doc["matches"] = doc["matches"] * 2

    assert len(scanner.parse_report(json.dumps(doc)).findings) == 1


def test_unknown_severity_and_fix_state_words_become_unknown() -> None:
    doc = json.loads(_captured("requests-2.19.1.grype.json"))
    doc["matches"][0]["vulnerability"]["severity"] = "Catastrophic"
    doc["matches"][0]["vulnerability"]["fix"] = {"state": "maybe"}

    (finding,) = scanner.parse_report(json.dumps(doc)).findings

    assert finding.severity == "Unknown"
    assert finding.fix == scanner.Fix(state="unknown", versions=())


def test_output_that_is_not_a_grype_report_is_a_scan_error() -> None:
    with pytest.raises(scanner.ScanError, match="no JSON"):
        scanner.parse_report("panic: runtime error")
    with pytest.raises(scanner.ScanError, match="vulnerability id or package"):
        scanner.parse_report('{"matches": [{"vulnerability": {}}]}')


def test_db_status_of_an_imported_db() -> None:
    status = scanner.parse_db_status(_captured("db-status.json"))

    assert status.valid
    assert status.schema_version == "v6.1.10"
    assert status.source == "manual import"
    assert status.path.endswith("/6/vulnerability.db")


def test_db_status_without_a_db_is_invalid_with_grypes_reason() -> None:
    status = scanner.parse_db_status(_captured("db-status-missing.json"))

    assert not status.valid
    assert status.error == "database does not exist"
    assert status.built is None


def test_db_identity_changes_with_the_checksum() -> None:
    status = scanner.parse_db_status(_captured("db-status.json"))
    a = dataclasses.replace(status, checksum="xxh64:aaaa")
    b = dataclasses.replace(status, checksum="xxh64:bbbb")

    assert a.identity != b.identity
    assert a.identity.startswith("v6.1.10@2026-11-27T23:56:51+00:00/")


def test_findings_convert_to_what_the_gate_reads() -> None:
    result = scanner.parse_report(_captured("requests-2.19.1.grype.json"))

    (converted,) = scanner.gate_findings(result.findings)

    assert converted == vulnerabilities.Finding(
        id="GHSA-x84v-xcm2-53pg",
        severity="high",
        package="requests",
        installed="2.19.1",
        fixed_in=("2.20.0",),
        fix_state="fixed",
        aliases=("CVE-2018-18074",),
    )
    assert converted.level == "high"


def test_a_source_without_a_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="docker:example/model:1"):
        scanner.catalog(
            "example/model:1",
            pathlib.Path("/nonexistent/sbom.json"),
            config=scanner.ScannerConfig(),
        )


# --- grype's exit codes, with a stand-in grype that replays a captured report ------------------


def _fake_grype(
    tmp_path: pathlib.Path, *, exit_code: int, stdout_file: str = "", stderr: str = ""
) -> scanner.ScannerConfig:
    script = tmp_path / "grype"
    cat = f'cat "{CAPTURED / stdout_file}"\n' if stdout_file else ""
    script.write_text(f"#!/bin/sh\n{cat}echo '{stderr}' >&2\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return scanner.ScannerConfig(
        grype=grype_env.GrypeSettings.offline(tmp_path / "db"), grype_binary=str(script)
    )


def test_exit_code_1_is_an_error_with_grypes_message(tmp_path: pathlib.Path) -> None:
    config = _fake_grype(tmp_path, exit_code=1, stderr="failed to load vulnerability db")
    (tmp_path / "sbom.json").write_text("{}")

    with pytest.raises(scanner.ScanError) as caught:
        scanner.match(tmp_path / "sbom.json", config=config)

    assert caught.value.exit_code == 1
    assert "failed to load vulnerability db" in str(caught.value)


def test_exit_code_2_is_a_report_with_matches_above_the_threshold(tmp_path: pathlib.Path) -> None:
    config = _fake_grype(tmp_path, exit_code=2, stdout_file="requests-2.19.1.grype.json")
    (tmp_path / "sbom.json").write_text("{}")

    result = scanner.match(tmp_path / "sbom.json", config=config)

    assert [f.id for f in result.findings] == ["GHSA-x84v-xcm2-53pg"]
    assert result.sbom == tmp_path / "sbom.json"


def test_db_status_reports_a_missing_db_instead_of_raising(tmp_path: pathlib.Path) -> None:
    config = _fake_grype(tmp_path, exit_code=1, stdout_file="db-status-missing.json")

    status = scanner.db_status(config=config)

    assert not status.valid
    assert status.error == "database does not exist"


def test_db_status_reads_the_checksum_from_import_json(tmp_path: pathlib.Path) -> None:
    db_dir = tmp_path / "db" / "6"
    db_dir.mkdir(parents=True)
    (db_dir / "import.json").write_text('{"digest": "xxh64:dfeeb4c0b4751a26"}')
    doc = json.loads(_captured("db-status.json"))
    doc["path"] = str(db_dir / "vulnerability.db")
    (tmp_path / "status.json").write_text(json.dumps(doc))
    script = tmp_path / "grype"
    script.write_text(f'#!/bin/sh\ncat "{tmp_path / "status.json"}"\n')
    script.chmod(0o755)
    config = scanner.ScannerConfig(grype_binary=str(script))

    assert scanner.db_status(config=config).checksum == "xxh64:dfeeb4c0b4751a26"


def test_a_syft_failure_carries_syfts_own_message(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "syft"
    script.write_text(
        "#!/bin/sh\n"
        "printf '[0000] ERROR \\033[31mcould not determine source: no such image\\033[0m\\n' >&2\n"
        "exit 1\n"
    )
    script.chmod(0o755)
    config = scanner.ScannerConfig(syft_binary=str(script))

    with pytest.raises(scanner.ScanError) as caught:
        scanner.catalog("docker:example/missing:1", tmp_path / "sbom.json", config=config)

    assert caught.value.exit_code == 1
    assert str(caught.value).endswith("could not determine source: no such image")


def test_a_missing_grype_is_a_scan_error_that_says_how_to_build_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFERRY_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(scanner.ScanError, match=r"testbed/tools/build\.sh grype"):
        scanner.db_status(config=scanner.ScannerConfig())
