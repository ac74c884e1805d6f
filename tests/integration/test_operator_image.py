"""The operator image: built from operator/Dockerfile, it passes edgeferry's own gate and runs.

The image is staged and built once per module on the testbed's Docker daemon, from the testbed's
python base pinned by digest. The gate is the one a ModelImage meets: hadolint finds nothing in
the Dockerfile, and syft + grype (the real binaries, the testbed's offline database) find nothing
at or above High. It then runs the way the Deployment runs it: non-root, read-only root
filesystem, no capabilities, no network.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from edgeferry.adapters import docker_build
from edgeferry_testbed import handles, layout, operator_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(testbed_handle: handles.Testbed) -> Iterator[Any]:
    client = docker_build.connect(testbed_handle.env.docker_host, timeout_s=900)
    yield client
    client.close()


@pytest.fixture(scope="module")
def built(testbed_handle: handles.Testbed, api: Any) -> operator_image.Built:
    operator_image.stage()
    return operator_image.build(api, testbed_handle.env.base_images["pythonSklearn"])


@pytest.fixture(scope="module")
def verdict(
    built: operator_image.Built, tmp_path_factory: pytest.TempPathFactory
) -> operator_image.Verdict:
    workdir: pathlib.Path = tmp_path_factory.mktemp("operator-image-scan")
    return operator_image.check(built.tag, layout.default_layout(), workdir=workdir)


def test_dockerfile_is_hadolint_clean(verdict: operator_image.Verdict) -> None:
    assert verdict.lint == (), [f"{f.rule} line {f.line}: {f.message}" for f in verdict.lint]


def test_image_has_no_high_or_critical_vulnerabilities(verdict: operator_image.Verdict) -> None:
    decision = verdict.decision
    assert decision.admitted, decision.condition.message
    assert decision.counts.critical == 0 and decision.counts.high == 0


def test_scan_covered_the_operators_dependencies(verdict: operator_image.Verdict) -> None:
    """A clean scan means something only if syft saw the Python dependencies and the OS."""
    assert {
        "kopf",
        "kubernetes",
        "pydantic",
        "pyyaml",
        "prometheus-client",
    } <= verdict.sbom_packages
    assert "libc6" in verdict.sbom_packages
    assert verdict.scan.descriptor.db is not None


def test_operator_help_runs_in_the_image(api: Any, built: operator_image.Built) -> None:
    out = operator_image.run(api, built.tag, "--help")
    assert "usage: edgeferry" in out
    assert "--liveness" in out


def test_scanner_and_linter_run_in_the_image(api: Any, built: operator_image.Built) -> None:
    assert "0.121.2" in operator_image.run(api, built.tag, "version", entrypoint=["grype"])
    assert "1.18.1" in operator_image.run(api, built.tag, "version", entrypoint=["syft"])
    assert "2.15.1" in operator_image.run(api, built.tag, "--version", entrypoint=["hadolint"])


def test_image_runs_as_a_numeric_non_root_user(api: Any, built: operator_image.Built) -> None:
    config = api.inspect_image(built.image_id)["Config"]
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit()
    assert "uid=65532" in operator_image.run(api, built.tag, entrypoint=["id"])


def test_image_adds_three_layers_to_its_pinned_base(
    api: Any, built: operator_image.Built, testbed_handle: handles.Testbed
) -> None:
    base = api.inspect_image(testbed_handle.env.base_images["pythonSklearn"])
    assert built.layers == len(base["RootFS"]["Layers"]) + 3


def test_build_refuses_a_base_that_is_not_pinned_by_digest(api: Any) -> None:
    with pytest.raises(operator_image.ImageError, match="pinned by digest"):
        operator_image.build(api, "127.0.0.1:5000/base/python-sklearn:latest")
