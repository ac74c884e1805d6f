"""The onnx-http runtime template end to end: a real ONNX model through the real pipeline.

The model is the samples' iris LogisticRegression (trained in the sklearn base), converted by
skl2onnx inside the onnxruntime base, where the scikit-learn that trained it and onnxruntime
both predict every iris row (`samples.iris_onnx_model`). The operator then builds it for amd64
and arm64 from the testbed's onnxruntime base index, smoke-tests both platforms (arm64 under
qemu emulation), scans and pushes; the smoke test's prediction must be scikit-learn's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from edgeferry.adapters import registry
from edgeferry_testbed import env, handles, layout, operator_process, procs, samples
from tests.integration import _resources
from tests.integration._resources import apply, condition

pytestmark = pytest.mark.integration

PLURAL = "modelimages"


@pytest.fixture(scope="module")
def crds_installed(testbed_handle: handles.Testbed) -> None:
    operator_process.install_crds(testbed_handle.env)


@pytest.fixture(scope="module")
def conversion(testbed_handle: handles.Testbed) -> samples.OnnxConversion:
    return samples.iris_onnx_model(layout.default_layout(), testbed_handle.env)


@pytest.fixture
def namespace(
    hub: handles.Cluster, testbed_handle: handles.Testbed, unique_name: str
) -> Iterator[str]:
    with hub.api_client() as api:
        samples.install_inputs(api, unique_name, layout.default_layout(), testbed_handle.env)
    operator_process.grant_namespace(testbed_handle.env, unique_name)
    yield unique_name
    hub.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


def onnx_image(described: env.TestbedEnv, name: str, sha256: str) -> dict[str, Any]:
    """An onnx-http ModelImage for amd64 and arm64, its model in the ConfigMap `<name>-model`."""
    body = json.dumps({"instances": [list(row) for row in samples.SMOKE_INSTANCES]})
    return {
        "apiVersion": "edgeferry.io/v1alpha1",
        "kind": "ModelImage",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "format": "onnx",
                "source": {"configMap": {"name": f"{name}-model", "key": "model.onnx"}},
                "sha256": sha256,
            },
            "build": {
                "runtime": {
                    "template": "onnx-http",
                    "baseImage": described.base_images["pythonOnnxruntimeMultiarch"],
                },
                "platforms": ["linux/amd64", "linux/arm64"],
            },
            "smokeTest": {"predict": {"body": body}},
            "push": {"repository": f"{described.registry}/models/{name}", "tags": ["v1"]},
        },
    }


def model_config_map(name: str, model: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-model"},
        "binaryData": {"model.onnx": base64.b64encode(model).decode()},
    }


def wait_ready(hub: handles.Cluster, namespace: str, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600  # arm64 is emulated
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = _resources.get_object(hub, namespace, PLURAL, name) or {}
        if obj.get("status", {}).get("phase") in {"Ready", "Blocked", "Failed"}:
            break
        time.sleep(1)
    assert obj.get("status", {}).get("phase") == "Ready", obj.get("status")
    return obj


def test_skl2onnx_and_sklearn_predict_the_same_class_for_every_iris_row(
    conversion: samples.OnnxConversion,
) -> None:
    assert len(conversion.sklearn) == 150
    assert conversion.onnx == conversion.sklearn
    assert conversion.smoke_onnx == conversion.smoke_sklearn


def test_onnx_model_is_built_for_both_platforms_and_its_smoke_prediction_is_sklearns(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    operator: procs.Managed | None,
    crds_installed: None,
    namespace: str,
    conversion: samples.OnnxConversion,
) -> None:
    name = "iris-onnx"
    sha256 = hashlib.sha256(conversion.model).hexdigest()
    apply(hub, namespace, model_config_map(name, conversion.model))
    apply(hub, namespace, onnx_image(testbed_handle.env, name, sha256))
    obj = wait_ready(hub, namespace, name)
    for type_ in ("Linted", "Built", "SmokeTested", "Scanned", "Admitted", "Pushed"):
        assert condition(obj, type_)["status"] == "True", (type_, condition(obj, type_))
    status = obj["status"]
    # What onnxruntime answered in the smoke test is what scikit-learn predicts.
    expected = json.dumps({"predictions": conversion.smoke_sklearn})
    assert status["smokeTest"]["prediction"] == expected, status["smokeTest"]
    smoke = condition(obj, "SmokeTested")["message"]
    assert re.fullmatch(
        r"linux/amd64: prediction ok in [0-9.]+ s; linux/arm64 \(emulated\): prediction ok in "
        r"[0-9.]+ s",
        smoke,
    ), smoke
    repository = f"{testbed_handle.registry}/models/{name}"
    digest = registry.manifest_digest(repository, "v1")
    assert digest == status["image"]["digest"]
    with registry.RegistryClient() as client:
        assert digest is not None
        assert client.platforms(repository, digest) == ("linux/amd64", "linux/arm64")
    built = {p["platform"]: p["id"] for p in status["image"]["platforms"]}
    with contextlib.closing(testbed_handle.docker()) as docker_client:
        image = docker_client.images.get(built["linux/amd64"])
        config = image.attrs["Config"]
        assert config["User"] == "10001:10001"
        assert "EDGEFERRY_MODEL_FORMAT=onnx" in config["Env"]
        assert image.labels["edgeferry.io/template"] == "onnx-http"
        # The model is a layer of its own, exactly its bytes, right after the base's layers.
        history = [h for h in image.history() if h["Size"] or "COPY" in h["CreatedBy"]]
        copies = [h for h in history if "/models/model.onnx" in h["CreatedBy"]]
        assert [h["Size"] for h in copies] == [len(conversion.model)], copies
        assert docker_client.images.get(built["linux/arm64"]).attrs["Architecture"] == "arm64"
        metrics = _serve_and_scrape(docker_client, built["linux/amd64"], body=expected)
    assert metrics['edgeferry_model_requests_total{code="200",endpoint="/predict"}'] == 1
    assert metrics['edgeferry_model_requests_total{code="400",endpoint="/predict"}'] == 1
    assert metrics['edgeferry_model_request_errors_total{code="400",endpoint="/predict"}'] == 1
    assert metrics['edgeferry_model_request_duration_seconds_count{endpoint="/predict"}'] == 2


def _serve_and_scrape(docker_client: Any, image_id: str, *, body: str) -> dict[str, float]:
    """Run the image, send one good and one bad prediction, and read its /metrics."""
    container = docker_client.containers.run(
        image_id, detach=True, labels={"edgeferry.io/testbed": "onnx-metrics"}
    )
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        base = f"http://{address}:8080"
        _resources.wait_until(
            "the onnx server to be healthy", lambda: _ok(f"{base}/healthz"), timeout=30
        )
        instances = json.dumps({"instances": [list(r) for r in samples.SMOKE_INSTANCES]})
        assert _post(f"{base}/predict", instances) == (200, body)
        status, answer = _post(f"{base}/predict", '{"instances": [[1.0, 2.0]]}')
        assert status == 400 and "shape [N, 4]" in answer, answer
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        container.remove(force=True)
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _post(url: str, body: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize(
    ("template", "model_format", "message"),
    [
        ("onnx-http", "sklearn", "build.runtime.template onnx-http serves ONNX models"),
        ("sklearn-http", "onnx", "build.runtime.template sklearn-http serves scikit-learn models"),
    ],
)
def test_a_template_with_another_model_format_is_refused_at_apply_time(
    hub: handles.Cluster,
    testbed_handle: handles.Testbed,
    crds_installed: None,
    template: str,
    model_format: str,
    message: str,
) -> None:
    doc = onnx_image(testbed_handle.env, "mismatch", "a" * 64)
    doc["spec"]["model"]["format"] = model_format
    doc["spec"]["build"]["runtime"]["template"] = template
    refusal = _resources.refused_at_apply(hub, doc)
    assert refusal is not None and message in refusal, refusal
