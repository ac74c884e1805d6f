"""The sample ModelImages, made concrete for this testbed (the demo and the tests share them).

The YAML under `manifests/samples/` carries `@@NAME@@` placeholders for what only exists once a
testbed runs: the pinned base images, the registry address, the models' sha256 and the iris model's
OCI artifact digest. The iris model is trained inside the sklearn base image (so the pickle matches
its scikit-learn), converted to ONNX there by skl2onnx for the onnx-http tests, and reaches the
iris sample as users ship a model too large for a ConfigMap: pushed to the registry as an OCI
artifact by the package's CLI (`python -m edgeferry model push`), whose printed digest is rendered
into the sample. A digest cannot be written into static YAML before the artifact exists, hence a
placeholder; the push is deterministic (same file, same manifest), so every render of one testbed
gives one digest. The vulnerable sample vendors a real old `requests` wheel fetched from PyPI once
and cached.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, NamedTuple

import docker
import yaml
from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import env, images, layout, procs

SAMPLES = layout.REPO_ROOT / "manifests" / "samples"
IRIS_ARTIFACT_PATH = "models/iris-model"
"""Where in the registry the iris model's OCI artifact goes."""
REQUESTS_WHEEL = "requests-2.19.1-py2.py3-none-any.whl"
LEGACY_WEIGHTS = json.dumps({"weights": [0.4, -1.2, 0.7], "bias": 0.1}).encode()


def iris_model(lay: layout.Layout, described: env.TestbedEnv) -> bytes:
    """A real scikit-learn model, trained once in the base image and cached."""
    cached = lay.state_dir / "samples" / "iris-model.pkl"
    if cached.exists():
        return cached.read_bytes()
    client = docker.DockerClient(base_url=described.docker_host, timeout=600)
    try:
        data = images.make_sklearn_model(client, described.base_images["pythonSklearn"])
    finally:
        client.close()
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)
    return data


class Artifact(NamedTuple):
    """The iris model as an OCI artifact: where it is and what the CLI printed."""

    repository: str
    digest: str
    output: str


_PUSHED: dict[tuple[str, str], Artifact] = {}


def iris_artifact(lay: layout.Layout, described: env.TestbedEnv) -> Artifact:
    """Push the iris model to the testbed registry with `python -m edgeferry model push` (once
    per process and registry: a second push sends nothing and gives the same digest)."""
    data = iris_model(lay, described)
    key = (described.registry, hashlib.sha256(data).hexdigest())
    if key not in _PUSHED:
        path = lay.state_dir / "samples" / "model.pkl"
        path.write_bytes(data)
        repository = f"{described.registry}/{IRIS_ARTIFACT_PATH}"
        command = [sys.executable, "-m", "edgeferry", "model", "push", str(path), repository]
        done = subprocess.run(
            [*command, "--tag", "v1", "--format", "sklearn"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise procs.TestbedError(f"model push {repository}: {done.stderr.strip()}")
        digest = next(
            line.split()[1] for line in done.stdout.splitlines() if line.startswith("digest: ")
        )
        _PUSHED[key] = Artifact(repository, digest, done.stdout)
    return _PUSHED[key]


CONVERTER_WHEELS = (
    "skl2onnx==1.20.0",
    "onnx==1.23.2",
    "protobuf==7.36.2",
    "ml_dtypes==0.5.4",
    "typing_extensions==4.16.0",
)
"""skl2onnx and what it needs beyond the onnxruntime base (its numpy 1.24 and scikit-learn 1.2
come from Debian; ml_dtypes 0.5 is the last that runs on numpy 1.x): test-only, never in an
image. Downloaded once for CPython 3.11 on amd64 and put into the converting container."""
SMOKE_INSTANCES = ((5.1, 3.5, 1.4, 0.2), (6.7, 3.0, 5.2, 2.3))
"""The iris sample's smoke-test instances (`modelimage-iris.yaml`)."""

_CONVERT_SCRIPT = """
import base64, json, pickle, sys
import numpy, onnxruntime
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
with open("/tmp/convert/model.pkl", "rb") as handle:
    model = pickle.load(handle)
features, _ = load_iris(return_X_y=True)
graph = to_onnx(model, features[:1].astype(numpy.float32), options={"zipmap": False},
                target_opset=17).SerializeToString()
session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
feed = session.get_inputs()[0].name
def onnx_labels(rows):
    return session.run(None, {feed: numpy.asarray(rows, dtype=numpy.float32)})[0].tolist()
smoke = %(smoke)s
json.dump({
    "model": base64.b64encode(graph).decode(),
    "rows": len(features),
    "sklearn": model.predict(features).tolist(),
    "onnx": onnx_labels(features),
    "smokeSklearn": model.predict(smoke).tolist(),
    "smokeOnnx": onnx_labels(smoke),
}, sys.stdout)
"""


@dataclasses.dataclass(frozen=True)
class OnnxConversion:
    """The iris model as ONNX, and what sklearn and onnxruntime predicted from it in the
    converting container (every iris row, and the smoke-test instances)."""

    model: bytes
    sklearn: list[int]
    onnx: list[int]
    smoke_sklearn: list[int]
    smoke_onnx: list[int]


def iris_onnx_model(lay: layout.Layout, described: env.TestbedEnv) -> OnnxConversion:
    """The iris pickle converted by skl2onnx inside the onnxruntime base (which has the
    scikit-learn that trained it), with both libraries' predictions; cached."""
    cached = lay.state_dir / "samples" / "iris-onnx.json"
    pickle_bytes = iris_model(lay, described)
    key = hashlib.sha256(pickle_bytes + "\0".join(CONVERTER_WHEELS).encode()).hexdigest()
    if cached.exists():
        stored = json.loads(cached.read_text())
        if stored.get("key") == key:
            return _conversion(stored)
    wheels = lay.cache_dir / "wheels" / "skl2onnx"
    expected = {w.split("==")[0].replace("_", "-").lower() for w in CONVERTER_WHEELS}
    present = {p.name.split("-")[0].replace("_", "-").lower() for p in wheels.glob("*.whl")}
    if not expected <= present:
        images.pip_download(CONVERTER_WHEELS, "linux/amd64", into=wheels)
    site = images.wheels_tar(sorted(wheels.glob("*.whl")))
    script = _CONVERT_SCRIPT % {"smoke": json.dumps([list(r) for r in SMOKE_INSTANCES])}
    client = docker.DockerClient(base_url=described.docker_host, timeout=600)
    try:
        output = images.run_python(
            client,
            described.base_images["pythonOnnxruntime"],
            script,
            files=_convert_folder(site, pickle_bytes),
            environment={"PYTHONPATH": "/tmp/convert/site"},
        )
    finally:
        client.close()
    stored = {"key": key, **json.loads(output)}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(stored))
    return _conversion(stored)


def _conversion(stored: dict[str, Any]) -> OnnxConversion:
    return OnnxConversion(
        model=base64.b64decode(stored["model"]),
        sklearn=stored["sklearn"],
        onnx=stored["onnx"],
        smoke_sklearn=stored["smokeSklearn"],
        smoke_onnx=stored["smokeOnnx"],
    )


def _convert_folder(site: bytes, pickle_bytes: bytes) -> bytes:
    """A tar of `convert/` (the converter's packages under `site/`, the pickle) for /tmp."""
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=buffer, mode="w") as out,
        tarfile.open(fileobj=io.BytesIO(site)) as tree,
    ):
        for folder in ("convert", "convert/site"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            out.addfile(info)
        for member in tree.getmembers():
            name = member.name.removeprefix("./")
            if not name or name == ".":
                continue
            member.name = f"convert/site/{name}"
            member.mode |= 0o444 if member.isfile() else 0o555
            out.addfile(member, tree.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("convert/model.pkl")
        info.size, info.mode = len(pickle_bytes), 0o644
        out.addfile(info, io.BytesIO(pickle_bytes))
    return buffer.getvalue()


def requests_wheel(lay: layout.Layout) -> bytes:
    """requests 2.19.1 from PyPI (GHSA-x84v-xcm2-53pg applies to it), downloaded once."""
    wheels = lay.cache_dir / "wheels"
    path = wheels / REQUESTS_WHEEL
    if not path.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(wheels),
                "requests==2.19.1",
            ],
            check=True,
        )
    return path.read_bytes()


def placeholders(lay: layout.Layout, described: env.TestbedEnv) -> dict[str, str]:
    return {
        "REGISTRY": described.registry,
        "BUSYBOX_BASE": described.base_images["busybox"],
        "PYTHON_SKLEARN_BASE": described.base_images["pythonSklearn"],
        "PYTHON_SKLEARN_MULTIARCH_BASE": described.base_images["pythonSklearnMultiarch"],
        "IRIS_MODEL_SHA256": hashlib.sha256(iris_model(lay, described)).hexdigest(),
        "IRIS_MODEL_DIGEST": iris_artifact(lay, described).digest,
        "LEGACY_MODEL_SHA256": hashlib.sha256(LEGACY_WEIGHTS).hexdigest(),
    }


def render(path: Path, values: dict[str, str]) -> list[dict[str, Any]]:
    """A sample file with its placeholders filled, as objects."""
    text = path.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    left = re.findall(r"@@[A-Z0-9_]+@@", text)
    if left:
        raise ValueError(f"{path}: placeholders left unfilled: {sorted(set(left))}")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _apply_config_map(
    core: k8s_client.CoreV1Api, namespace: str, name: str, binary: dict[str, bytes]
) -> None:
    body = {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "edgeferry-demo"}},
        "binaryData": {k: base64.b64encode(v).decode() for k, v in binary.items()},
    }
    try:
        core.create_namespaced_config_map(namespace, body)
    except k8s_exceptions.ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_config_map(name, namespace, body)


def install_inputs(
    api: k8s_client.ApiClient, namespace: str, lay: layout.Layout, described: env.TestbedEnv
) -> None:
    """The namespace and the ConfigMaps the sample ModelImages read (the iris model is an OCI
    artifact: `iris_artifact`, pushed by `placeholders`)."""
    core = k8s_client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": namespace}})
    except k8s_exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    _apply_config_map(core, namespace, "legacy-model", {"weights.json": LEGACY_WEIGHTS})
    _apply_config_map(core, namespace, "legacy-deps", {REQUESTS_WHEEL: requests_wheel(lay)})
