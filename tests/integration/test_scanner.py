"""The scanner with real syft, real grype and a vulnerability DB built from our fixture records.

Nothing is mocked: the DB is built by ``edgeferry-vulndb`` from ``tests/fixtures/advisories`` and
imported into a DB directory of this test module; the images are built with Docker from real
PyPI wheels; grype runs offline and a trap proxy proves it never tries to leave the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pathlib
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from edgeferry.adapters import grype_env, scanner, vulndb
from edgeferry.models import reasons
from edgeferry.runners import image_scan

pytestmark = pytest.mark.integration

ADVISORIES = pathlib.Path(__file__).parents[1] / "fixtures" / "advisories"
TEST_LABEL = "edgeferry.io/test-run"
SITE_PACKAGES = "usr/lib/python3.11/site-packages"


@dataclasses.dataclass(frozen=True)
class OfflineDB:
    config: scanner.ScannerConfig
    status: scanner.DBStatus
    summary: vulndb.BuildSummary
    build_seconds: float


@pytest.fixture(scope="module")
def offline_db(tmp_path_factory: pytest.TempPathFactory) -> OfflineDB:
    root = tmp_path_factory.mktemp("grype")
    config = scanner.ScannerConfig(grype=grype_env.GrypeSettings.offline(root / "db-cache"))
    started = time.monotonic()
    archive = vulndb.build_offline_db(ADVISORIES, root / "build")
    build_seconds = time.monotonic() - started
    status = scanner.import_db(archive, config=config)
    return OfflineDB(config, status, vulndb.load_summary(root / "build"), build_seconds)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Real wheels from PyPI (pip's cache makes repeated runs local)."""
    target = tmp_path_factory.mktemp("wheels")
    for requirement in ("requests==2.19.1", "requests==2.32.3"):
        _pip_download(target, requirement)
    return target


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()
    yield client
    for image in client.images.list(filters={"label": TEST_LABEL}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)
    client.close()


def _pip_download(target: pathlib.Path, requirement: str, *extra: str) -> pathlib.Path:
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(target)]
    subprocess.run([*pip, requirement, *extra], check=True, timeout=300)
    name, version = requirement.split("==")
    return _wheel(target, name.replace("-", "_").lower(), version)


def _wheel(wheels: pathlib.Path, name: str, version: str) -> pathlib.Path:
    (found,) = wheels.glob(f"{name}-{version}-*.whl")
    return found


def _unpack(wheel: pathlib.Path, root: pathlib.Path, *, metadata_only: bool = False) -> None:
    """Install a wheel the way pip lays it out, into ``root``'s site-packages."""
    site = root / SITE_PACKAGES
    site.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [
            m
            for m in archive.namelist()
            if not metadata_only or m.split("/", 1)[0].endswith(".dist-info")
        ]
        archive.extractall(site, members)


def _build_image(client: docker.DockerClient, context: pathlib.Path, name: str) -> str:
    """An image FROM scratch holding ``context/root`` (a site-packages tree, nothing else)."""
    (context / "Dockerfile").write_text("FROM scratch\nCOPY root/ /\n")
    tag = f"edgeferry-test/{name}:{uuid.uuid4().hex[:8]}"
    client.images.build(path=str(context), tag=tag, labels={TEST_LABEL: name}, rm=True)
    return tag


@pytest.fixture(scope="module")
def vulnerable_image(
    docker_client: docker.DockerClient,
    wheels: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    context = tmp_path_factory.mktemp("vulnerable-image")
    _unpack(_wheel(wheels, "requests", "2.19.1"), context / "root")
    return _build_image(docker_client, context, "requests-2-19-1")


@pytest.fixture(scope="module")
def vulnerable_scan(
    offline_db: OfflineDB, vulnerable_image: str, tmp_path_factory: pytest.TempPathFactory
) -> scanner.ScanResult:
    sbom = tmp_path_factory.mktemp("sbom") / "vulnerable.syft.json"
    return scanner.scan(f"docker:{vulnerable_image}", config=offline_db.config, sbom_path=sbom)


# --- the database ------------------------------------------------------------------------------


def test_the_fixture_records_build_a_db_grype_reads(offline_db: OfflineDB) -> None:
    status = offline_db.status
    assert status.valid, status.error
    assert status.schema_version.startswith("v6.")
    assert status.built is not None
    # "now" at build time; grype rounds it to the nearest second, so it may lead by up to 0.5 s.
    age = datetime.datetime.now(datetime.UTC) - status.built
    assert datetime.timedelta(seconds=-1) < age < datetime.timedelta(minutes=15)
    assert status.built == offline_db.summary.built
    assert status.checksum.startswith("xxh64:")
    assert pathlib.Path(status.path).is_relative_to(offline_db.config.grype.db_cache_dir or "/")
    assert offline_db.summary.providers == {"debian": 3, "github": 3}
    assert offline_db.build_seconds < 30


def test_db_status_reads_the_imported_fixture_db(offline_db: OfflineDB) -> None:
    again = scanner.db_status(config=offline_db.config)
    assert again == offline_db.status
    assert again.identity == offline_db.status.identity


def test_grype_runs_with_every_network_update_switched_off(offline_db: OfflineDB) -> None:
    env = grype_env.grype_environment(offline_db.config.grype)
    assert env["GRYPE_DB_AUTO_UPDATE"] == "false"
    assert env["GRYPE_DB_VALIDATE_AGE"] == "false"
    assert env["GRYPE_CHECK_FOR_APP_UPDATE"] == "false"
    assert env["GRYPE_DB_CACHE_DIR"] == str(offline_db.config.grype.db_cache_dir)


# --- image scans -------------------------------------------------------------------------------


def test_image_with_requests_2_19_1_has_the_high_requests_advisory(
    vulnerable_scan: scanner.ScanResult, offline_db: OfflineDB
) -> None:
    (finding,) = [f for f in vulnerable_scan.findings if f.id == "GHSA-x84v-xcm2-53pg"]
    assert finding.severity == "High"
    assert finding.aliases == ("CVE-2018-18074",)
    assert finding.package.name == "requests"
    assert finding.package.version == "2.19.1"
    assert finding.package.type == "python"
    assert finding.fix == scanner.Fix(state="fixed", versions=("2.20.0",))
    assert finding.namespace == "github:language:python"
    assert vulnerable_scan.counts()["High"] == 1


def test_scan_result_names_the_tools_and_the_db_it_used(
    vulnerable_scan: scanner.ScanResult, offline_db: OfflineDB
) -> None:
    descriptor = vulnerable_scan.descriptor
    assert descriptor.grype_version == "0.121.2"
    assert re.fullmatch(r"\d+\.\d+\.\d+", descriptor.syft_version)
    assert descriptor.db is not None
    assert descriptor.db.identity == offline_db.status.identity
    assert vulnerable_scan.sbom is not None and vulnerable_scan.sbom.is_file()
    assert vulnerable_scan.source.startswith("docker:")


def test_image_with_current_requests_has_no_high_or_critical(
    offline_db: OfflineDB,
    docker_client: docker.DockerClient,
    wheels: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    _unpack(_wheel(wheels, "requests", "2.32.3"), tmp_path / "root")
    tag = _build_image(docker_client, tmp_path, "requests-2-32-3")

    result = scanner.scan(f"docker:{tag}", config=offline_db.config)

    assert result.counts()["Critical"] == 0
    assert result.counts()["High"] == 0
    assert result.findings == ()
    assert result.sbom is None


def test_rescan_rematches_the_cached_sbom_without_the_image(
    offline_db: OfflineDB,
    docker_client: docker.DockerClient,
    wheels: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    _unpack(_wheel(wheels, "requests", "2.19.1"), tmp_path / "root")
    tag = _build_image(docker_client, tmp_path, "requests-rescan")
    first = scanner.scan(
        f"docker:{tag}", config=offline_db.config, sbom_path=tmp_path / "sbom.syft.json"
    )
    docker_client.images.remove(tag, force=True)

    again = scanner.match(tmp_path / "sbom.syft.json", config=offline_db.config)

    assert [f.id for f in again.findings] == [f.id for f in first.findings]
    assert again.match_seconds < first.catalog_seconds + first.match_seconds


def test_a_cut_short_cached_sbom_is_catalogued_again_and_leftovers_go(
    offline_db: OfflineDB,
    docker_client: docker.DockerClient,
    vulnerable_image: str,
    vulnerable_scan: scanner.ScanResult,
    tmp_path: pathlib.Path,
) -> None:
    """What an operator killed while syft wrote used to leave: half an SBOM at the cached path
    (every re-match then failed on it) and a leftover partial file."""
    image_id = docker_client.images.get(vulnerable_image).id
    sboms = tmp_path / "sboms"
    sboms.mkdir()
    cached = sboms / f"{image_id.replace(':', '-')}.json"
    assert vulnerable_scan.sbom is not None
    whole = vulnerable_scan.sbom.read_text()
    cached.write_text(whole[: len(whole) // 2])
    leftover = sboms / f"{cached.name}.1.abcd{scanner.PARTIAL_SUFFIX}"
    leftover.write_text(whole[:100])
    hour_ago = time.time() - 3600
    os.utime(leftover, (hour_ago, hour_ago))

    result = image_scan.scan_one(
        image_id, trigger=reasons.SCAN_DATABASE_CHANGED, workdir=tmp_path, config=offline_db.config
    )

    assert [f.id for f in result.findings] == [f.id for f in vulnerable_scan.findings]
    assert result.catalog_seconds > 0, "catalogued again, not re-matched"
    assert scanner.readable_sbom(cached)
    assert not list(sboms.glob(f"*{scanner.PARTIAL_SUFFIX}")), "no partial file is left"


def test_grype_never_opens_a_network_connection(
    offline_db: OfflineDB,
    vulnerable_scan: scanner.ScanResult,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert vulnerable_scan.sbom is not None
    with _TrapProxy() as trap:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, trap.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

        scanner.match(vulnerable_scan.sbom, config=offline_db.config)
        scanner.db_status(config=offline_db.config)
        assert trap.connections == 0

        # The trap is real: the same grype with auto-update on does walk into it.
        online = dataclasses.replace(
            offline_db.config,
            grype=dataclasses.replace(offline_db.config.grype, auto_update=True),
        )
        scanner.match(vulnerable_scan.sbom, config=online)
        assert trap.connections > 0


# --- directory scans: Debian records and a Medium-only python advisory --------------------------


def test_scikit_learn_1_2_1_matches_only_at_medium(
    offline_db: OfflineDB, tmp_path: pathlib.Path
) -> None:
    wheel = _pip_download(
        tmp_path,
        "scikit-learn==1.2.1",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        "manylinux2014_x86_64",
    )
    _unpack(wheel, tmp_path / "root", metadata_only=True)

    result = scanner.scan(f"dir:{tmp_path / 'root'}", config=offline_db.config)

    (finding,) = result.findings
    assert (finding.id, finding.severity, finding.package.version) == (
        "GHSA-jw8x-6495-233v",
        "Medium",
        "1.2.1",
    )
    assert finding.fix.versions == ("1.5.0",)
    assert result.counts()["High"] == result.counts()["Critical"] == 0


def _bookworm_host() -> bool:
    try:
        os_release = pathlib.Path("/etc/os-release").read_text()
    except OSError:
        return False
    return "VERSION_CODENAME=bookworm" in os_release and platform.system() == "Linux"


needs_bookworm = pytest.mark.skipif(
    not _bookworm_host(), reason="compares with this host's Debian 12 (bookworm) packages"
)


def _debian_root(root: pathlib.Path, dpkg_status: str) -> pathlib.Path:
    (root / "etc").mkdir(parents=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    shutil.copy("/etc/os-release", root / "etc/os-release")
    (root / "var/lib/dpkg/status").write_text(dpkg_status)
    return root


@needs_bookworm
def test_up_to_date_bookworm_packages_are_not_flagged_by_the_debian_records(
    offline_db: OfflineDB, tmp_path: pathlib.Path
) -> None:
    root = _debian_root(tmp_path / "root", pathlib.Path("/var/lib/dpkg/status").read_text())

    result = scanner.scan(f"dir:{root}", config=offline_db.config)

    assert result.distro == "debian 12"
    assert result.counts()["High"] == result.counts()["Critical"] == 0


@needs_bookworm
def test_bookworm_release_glibc_is_flagged_by_the_debian_records(
    offline_db: OfflineDB, tmp_path: pathlib.Path
) -> None:
    # glibc as bookworm's 12.1 point release shipped it, before the Looney Tunables fix.
    status = (
        "Package: libc6\nStatus: install ok installed\nPriority: optional\nSection: libs\n"
        "Architecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u1\n"
        "Description: GNU C Library: Shared libraries\n"
    )
    root = _debian_root(tmp_path / "root", status)

    result = scanner.scan(f"dir:{root}", config=offline_db.config)

    by_id = {f.id: f for f in result.findings}
    assert set(by_id) == {"CVE-2023-4911", "CVE-2024-2961"}
    assert by_id["CVE-2023-4911"].severity == "High"
    assert by_id["CVE-2023-4911"].fix.versions == ("2.36-9+deb12u3",)
    assert by_id["CVE-2023-4911"].namespace == "debian:distro:debian:12"
    assert by_id["CVE-2023-4911"].package.type == "deb"


# --- helpers -----------------------------------------------------------------------------------


class _TrapProxy:
    """A local TCP listener posing as an HTTP(S) proxy that counts (and drops) connections."""

    def __init__(self) -> None:
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _TrapProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()
