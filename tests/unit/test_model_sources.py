"""A ModelImage's model comes from exactly one source, each pinned by the model's sha256."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

from edgeferry.decisions import dockerfile
from edgeferry.models import modelimage
from edgeferry.runners import image_inputs

SHA = "a" * 64
DIGEST = "sha256:" + "c" * 64
BASE = "127.0.0.1:5000/base/python-sklearn@sha256:" + "b" * 64
OCI = {"oci": {"repository": "127.0.0.1:5000/models/iris-model", "digest": DIGEST}}
HTTP = {"http": {"url": "https://models.example.com/iris/model.pkl"}}
CONFIG_MAP = {"configMap": {"name": "iris-model", "key": "model.pkl"}}


def spec_dict(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {"format": "sklearn", "source": copy.deepcopy(source), "sha256": SHA},
        "build": {"runtime": {"template": "sklearn-http", "baseImage": BASE}},
        "smokeTest": {"predict": {"body": "{}"}},
        "push": {"repository": "127.0.0.1:5000/models/iris", "tags": ["v1"]},
    }


def parse(source: dict[str, Any]) -> modelimage.ModelImageSpec:
    return modelimage.parse_spec(spec_dict(source))


def test_an_oci_source_names_the_artifact_by_manifest_digest() -> None:
    oci = parse(OCI).model.source.oci
    assert oci is not None
    assert (oci.repository, oci.digest, oci.credentials_secret) == (
        "127.0.0.1:5000/models/iris-model",
        DIGEST,
        None,
    )


def test_an_http_source_has_a_url_and_optional_ca_bundle_and_credentials() -> None:
    source = {
        "http": {
            "url": "https://models.example.com/iris.pkl",
            "caBundle": "-----BEGIN CERTIFICATE-----\n...",
            "credentialsSecret": "model-server",
        }
    }
    http = parse(source).model.source.http
    assert http is not None
    assert http.ca_bundle is not None and http.credentials_secret == "model-server"


@pytest.mark.parametrize(
    "sources",
    [{}, {**CONFIG_MAP, **OCI}, {**OCI, **HTTP}, {**CONFIG_MAP, **OCI, **HTTP}],
    ids=["none", "configMap and oci", "oci and http", "all three"],
)
def test_exactly_one_source_is_accepted(sources: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"exactly one of model\.source"):
        parse(sources)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"oci": {**OCI["oci"], "digest": "latest"}}, "String should match pattern"),
        ({"oci": {**OCI["oci"], "repository": "models/iris"}}, "host"),
        ({"oci": {**OCI["oci"], "repository": "r.example.com/m@sha256:" + "c" * 64}}, "digest"),
        ({"http": {"url": "ftp://example.com/model.pkl"}}, "String should match pattern"),
        ({"http": {"url": "https://"}}, "String should match pattern"),
        ({"http": {**HTTP["http"], "fileName": "../model"}}, "fileName must be a file name"),
        ({"oci": {**OCI["oci"], "fileName": ".."}}, "fileName must be a file name"),
    ],
    ids=[
        "a tag instead of a digest",
        "a repository without a host",
        "a repository with a digest",
        "an ftp url",
        "a url without a host",
        "an http fileName with a path",
        "an oci fileName of ..",
    ],
)
def test_a_malformed_remote_source_is_refused(source: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        parse(source)


def test_the_sha256_is_required_for_every_source() -> None:
    for source in (CONFIG_MAP, OCI, HTTP):
        raw = spec_dict(source)
        del raw["model"]["sha256"]
        with pytest.raises(pydantic.ValidationError, match="sha256"):
            modelimage.parse_spec(raw)


def test_the_model_file_is_named_by_its_configmap_key_or_its_file_name() -> None:
    assert dockerfile.model_context_path(parse(CONFIG_MAP)) == "model/model.pkl"
    assert dockerfile.model_context_path(parse(OCI)) == "model/model"
    named = {"http": {**HTTP["http"], "fileName": "iris.onnx"}}
    assert dockerfile.model_context_path(parse(named)) == "model/iris.onnx"


def test_a_remote_model_is_not_downloaded_to_compute_the_inputs_digest() -> None:
    """Nothing is fetched by `gather` for oci/http; the pinned sha256 stands for the bytes."""
    for source in (OCI, HTTP):
        materials = image_inputs.gather(parse(source), namespace="ns", name="iris")
        assert materials.model_path == "model/model"
        assert materials.model_path not in materials.files


def test_same_model_from_oci_or_http_under_one_file_name_is_the_same_image() -> None:
    oci = {"oci": {**OCI["oci"], "fileName": "model.pkl"}}
    http = {"http": {**HTTP["http"], "fileName": "model.pkl"}}
    first = image_inputs.gather(parse(oci), namespace="ns", name="iris")
    second = image_inputs.gather(parse(http), namespace="ns", name="iris")
    assert first.inputs_digest == second.inputs_digest


def test_a_new_model_digest_is_a_new_run() -> None:
    raw = spec_dict(OCI)
    other = copy.deepcopy(raw)
    other["model"]["sha256"] = "d" * 64
    first = image_inputs.gather(modelimage.parse_spec(raw), namespace="ns", name="iris")
    second = image_inputs.gather(modelimage.parse_spec(other), namespace="ns", name="iris")
    assert first.inputs_digest != second.inputs_digest
