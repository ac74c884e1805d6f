"""Models from an OCI artifact and from an HTTP server go through the whole pipeline.

The artifact is pushed by the package's own CLI (`python -m edgeferry model push`) to the
testbed registry; the HTTP server is a real `python -m http.server` process this module starts
on 127.0.0.1 and stops by pid. The operator downloads each model into its cache, builds,
smoke-tests (a real prediction from the downloaded model), scans and pushes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeferry.adapters import model_artifact, registry, toolpaths
from edgeferry_testbed import env, handles, layout, operator_process, procs, samples
from tests.integration import _resources
from tests.integration._resources import apply, condition
from tests.integration.conftest import operator_metric

pytestmark = pytest.mark.integration

PLURAL = "modelimages"
UPLOADED = "edgeferry_image_push_uploaded_bytes_total"


@pytest.fixture(scope="module")
def crds_installed(testbed_handle: handles.Testbed) -> None:
    operator_process.install_crds(testbed_handle.env)


@pytest.fixture
def namespace(
    hub: handles.Cluster, testbed_handle: handles.Testbed, unique_name: str
) -> Iterator[str]:
    with hub.api_client() as api:
        samples.install_inputs(api, unique_name, layout.default_layout(), testbed_handle.env)
    operator_process.grant_namespace(testbed_handle.env, unique_name)
    yield unique_name
    hub.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def iris_model(testbed_handle: handles.Testbed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The samples' real scikit-learn model, as a file."""
    path = tmp_path_factory.mktemp("models") / "iris.pkl"
    path.write_bytes(samples.iris_model(layout.default_layout(), testbed_handle.env))
    return path


def image_doc(
    described: env.TestbedEnv, name: str, source: dict[str, Any], sha256: str
) -> dict[str, Any]:
    """The iris sample for amd64 only, its model from `source`, pushed to its own repository."""
    values = samples.placeholders(layout.default_layout(), described)
    doc = copy.deepcopy(samples.render(samples.SAMPLES / "modelimage-iris.yaml", values)[0])
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["model"] = {"format": "sklearn", "source": source, "sha256": sha256}
    spec["build"] = {
        "runtime": {"template": "sklearn-http", "baseImage": described.base_images["pythonSklearn"]}
    }
    spec["push"]["repository"] = f"{described.registry}/models/{name}"
    return doc


def wait_for(
    hub: handles.Cluster, namespace: str, name: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = _resources.get_object(hub, namespace, PLURAL, name) or {}
        if check(obj):
            return obj
        time.sleep(1)
    raise AssertionError(f"{namespace}/{name} did not settle: {obj.get('status')}")


def phase(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: obj.get("status", {}).get("phase") == name


def push_with_cli(path: Path, repository: str) -> tuple[str, str]:
    """Run the CLI; (manifest digest, printed output)."""
    done = subprocess.run(
        [sys.executable, "-m", "edgeferry", "model", "push", str(path), repository],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    digest = next(
        line.split()[1] for line in done.stdout.splitlines() if line.startswith("digest: ")
    )
    return digest, done.stdout


def assert_admitted_and_pushed(obj: dict[str, Any], repository: str) -> None:
    for type_ in ("Built", "SmokeTested", "Scanned", "Admitted", "Pushed", "Ready"):
        assert condition(obj, type_)["status"] == "True", (type_, condition(obj, type_))
    status = obj["status"]
    assert '"predictions": [0, 2]' in status["smokeTest"]["prediction"]
    assert registry.manifest_digest(repository, "v1") == status["image"]["digest"]


def test_cli_pushes_a_model_artifact_and_prints_digest_and_snippet(
    testbed_handle: handles.Testbed, iris_model: Path, unique_name: str
) -> None:
    repository = f"{testbed_handle.registry}/models/{unique_name}-artifact"
    digest, output = push_with_cli(iris_model, repository)
    sha256 = hashlib.sha256(iris_model.read_bytes()).hexdigest()
    assert f"sha256: {sha256}" in output
    assert f"digest: {digest}" in output and f"repository: {repository}" in output
    with registry.RegistryClient() as client:
        body, media_type = client.manifest(repository, digest)
    assert media_type == model_artifact.OCI_MANIFEST
    manifest = model_artifact.manifest_for("iris.pkl", sha256, iris_model.stat().st_size)
    assert hashlib.sha256(body).hexdigest() == digest.removeprefix("sha256:")
    assert json.loads(body) == manifest
    # Pushing the same file again sends nothing and gives the same digest.
    again, output = push_with_cli(iris_model, repository)
    assert again == digest and "already in the registry" in output


def oras_cli() -> str:
    """The ORAS CLI built by `testbed/tools/build.sh oras`; a missing one fails, never skips."""
    go_mod = layout.REPO_ROOT / "testbed" / "gomod" / "oras" / "go.mod"
    version = next(
        line.split()[1]
        for line in go_mod.read_text().splitlines()
        if line.strip().startswith("oras.land/oras ")
    )
    path = toolpaths.cache_root() / "bin" / f"oras-{version}" / "oras"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `testbed/tools/build.sh oras`", pytrace=False)
    return str(path)


def test_oras_pull_of_a_pushed_model_returns_the_same_bytes(
    testbed_handle: handles.Testbed, iris_model: Path, unique_name: str, tmp_path: Path
) -> None:
    repository = f"{testbed_handle.registry}/models/{unique_name}-oras"
    digest, _ = push_with_cli(iris_model, repository)
    subprocess.run(
        [oras_cli(), "pull", "--plain-http", "-o", str(tmp_path), f"{repository}@{digest}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (tmp_path / iris_model.name).read_bytes() == iris_model.read_bytes()


def test_model_image_from_an_oci_artifact_is_built_smoke_tested_scanned_and_pushed(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    operator: procs.Managed | None,
    crds_installed: None,
    namespace: str,
    iris_model: Path,
    tmp_path: Path,
) -> None:
    # A model file no other test pushed, so its layer is new to the registry and the first push
    # uploads it (other tests push the same iris bytes; `docker push` mounts what a repository
    # already has). pickle stops at its STOP opcode, so the trailing name changes no prediction.
    model = tmp_path / "iris.pkl"
    model.write_bytes(iris_model.read_bytes() + namespace.encode())
    artifact = f"{testbed_handle.registry}/models/{namespace}-model"
    digest, _ = push_with_cli(model, artifact)
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    source = {"oci": {"repository": artifact, "digest": digest, "fileName": "model.pkl"}}
    doc = image_doc(testbed_handle.env, "iris-oci", source, sha256)
    apply(hub, namespace, doc)
    obj = wait_for(hub, namespace, "iris-oci", phase("Ready"))
    repository = f"{testbed_handle.registry}/models/iris-oci"
    assert_admitted_and_pushed(obj, repository)
    labels = {"namespace": namespace, "name": "iris-oci"}
    first = operator_metric(testbed_handle, UPLOADED, **labels)
    assert first is not None and first > 0
    # A rebuild that changes no layer (a new image label) pushes a new manifest and no layer:
    # the model's layer and every other one are in the registry already.
    doc["spec"]["build"]["labels"] = {"team": "ml"}
    apply(hub, namespace, doc)
    rebuilt = wait_for(
        hub,
        namespace,
        "iris-oci",
        lambda o: (
            phase("Ready")(o) and o["status"].get("inputsDigest") != obj["status"]["inputsDigest"]
        ),
    )
    assert rebuilt["status"]["image"]["digest"] != obj["status"]["image"]["digest"]
    assert operator_metric(testbed_handle, UPLOADED, **labels) == first


def test_an_oci_artifact_with_another_model_stays_stalled_naming_both_digests(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    operator: procs.Managed | None,
    crds_installed: None,
    namespace: str,
    iris_model: Path,
) -> None:
    artifact = f"{testbed_handle.registry}/models/{namespace}-model"
    digest, _ = push_with_cli(iris_model, artifact)
    actual = hashlib.sha256(iris_model.read_bytes()).hexdigest()
    pinned = "0" * 64
    source = {"oci": {"repository": artifact, "digest": digest}}
    apply(hub, namespace, image_doc(testbed_handle.env, "iris-mismatch", source, pinned))
    obj = wait_for(
        hub, namespace, "iris-mismatch", lambda o: condition(o, "Stalled").get("status") == "True"
    )
    stalled = condition(obj, "Stalled")
    assert stalled["reason"] == "ModelDigestMismatchError"
    assert pinned in stalled["message"] and actual in stalled["message"], stalled
    assert condition(obj, "Pushed").get("status") != "True"


@pytest.fixture
def http_server(tmp_path: Path, iris_model: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the iris model; its base URL."""
    (tmp_path / "iris.pkl").write_bytes(iris_model.read_bytes())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def test_model_image_from_an_http_url_is_built_smoke_tested_scanned_and_pushed(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    operator: procs.Managed | None,
    crds_installed: None,
    namespace: str,
    iris_model: Path,
    http_server: str,
) -> None:
    sha256 = hashlib.sha256(iris_model.read_bytes()).hexdigest()
    source = {"http": {"url": f"{http_server}/iris.pkl", "fileName": "model.pkl"}}
    apply(hub, namespace, image_doc(testbed_handle.env, "iris-http", source, sha256))
    obj = wait_for(hub, namespace, "iris-http", phase("Ready"))
    assert_admitted_and_pushed(obj, f"{testbed_handle.registry}/models/iris-http")


VALID_OCI = {"oci": {"repository": "127.0.0.1:5000/models/m", "digest": "sha256:" + "c" * 64}}
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no source", {}, "set exactly one of model.source.configMap"),
    (
        "two sources",
        {**VALID_OCI, "http": {"url": "https://example.com/m"}},
        "set exactly one of model.source.configMap",
    ),
    (
        "a tag for a digest",
        {"oci": {**VALID_OCI["oci"], "digest": "latest"}},
        "model.source.oci.digest must be a manifest digest",
    ),
    (
        "a repository with a digest",
        {"oci": {**VALID_OCI["oci"], "repository": "127.0.0.1:5000/m@sha256:" + "c" * 64}},
        "model.source.oci.repository must start with a registry host",
    ),
    (
        "an ftp url",
        {"http": {"url": "ftp://example.com/m"}},
        "model.source.http.url must be an http:// or https:// URL",
    ),
    (
        "a CA bundle that is no PEM",
        {"http": {"url": "https://example.com/m", "caBundle": "not a certificate"}},
        "model.source.http.caBundle must hold PEM certificates",
    ),
    (
        "a file name with a path",
        {"http": {"url": "https://example.com/m", "fileName": "../m"}},
        "model.source.http.fileName must be a file name",
    ),
]


def test_a_valid_oci_source_is_accepted(
    hub: handles.Cluster, testbed_handle: handles.Testbed, crds_installed: None
) -> None:
    doc = image_doc(testbed_handle.env, "valid", VALID_OCI, "a" * 64)
    assert _resources.refused_at_apply(hub, doc) is None


@pytest.mark.parametrize(("what", "source", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_an_invalid_source_is_refused_at_apply_time_with_a_clear_message(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    crds_installed: None,
    what: str,
    source: dict[str, Any],
    message: str,
) -> None:
    doc = image_doc(testbed_handle.env, "invalid", source, "a" * 64)
    refusal = _resources.refused_at_apply(hub, doc)
    assert refusal is not None, what
    assert message in refusal, refusal
