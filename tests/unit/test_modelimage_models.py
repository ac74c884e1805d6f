"""The typed ModelImage spec and status: what they accept, refuse, and write back."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pydantic
import pytest

from edgeferry.models import conditions, modelimage

BASE = "127.0.0.1:5000/base/python-sklearn@sha256:" + "b" * 64


def spec_dict(**sections: Any) -> dict[str, Any]:
    """A valid raw spec (runtime template), with top-level sections replaced."""
    raw: dict[str, Any] = {
        "model": {
            "format": "sklearn",
            "source": {"configMap": {"name": "iris-model", "key": "model.pkl"}},
            "sha256": "a" * 64,
        },
        "build": {"runtime": {"template": "sklearn-http", "baseImage": BASE}},
        "smokeTest": {"predict": {"body": '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'}},
        "push": {"repository": "127.0.0.1:5000/models/iris", "tags": ["v1"]},
    }
    raw.update(copy.deepcopy(sections))
    return raw


def test_spec_parses_camel_case_with_defaults() -> None:
    spec = modelimage.parse_spec(spec_dict())
    assert spec.model.source.config_map is not None
    assert spec.model.source.config_map.key == "model.pkl"
    assert spec.build.runtime is not None
    assert spec.build.runtime.python_path == "/usr/bin/python3"
    assert spec.build.target_platforms == ("linux/amd64",)
    assert spec.build.timeout_seconds == 900
    assert spec.smoke_test.enabled and spec.smoke_test.port == 8080
    assert spec.lint.failure_threshold == "error"
    assert spec.scan.fail_on == "high" and not spec.scan.only_fixed
    assert spec.scan.rescan_every == datetime.timedelta(hours=24)


def test_spec_accepts_snake_case_names_too() -> None:
    push = modelimage.Push(repository="127.0.0.1:5000/models/iris", tags=["v1"])
    assert push.model_dump(by_alias=True)["credentialsSecret"] is None


def test_spec_is_immutable() -> None:
    spec = modelimage.parse_spec(spec_dict())
    with pytest.raises(pydantic.ValidationError):
        spec.push.repository = "elsewhere"  # type: ignore[misc]


def test_fields_the_model_does_not_know_are_ignored() -> None:
    raw = spec_dict()
    raw["future"] = {"field": 1}
    assert modelimage.parse_spec(raw) == modelimage.parse_spec(spec_dict())


@pytest.mark.parametrize(
    "build",
    [
        {
            "dockerfile": "FROM scratch\n",
            "runtime": {"template": "sklearn-http", "baseImage": BASE},
        },
        {},
    ],
    ids=["both", "neither"],
)
def test_build_needs_exactly_one_of_dockerfile_and_runtime(build: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        modelimage.parse_spec(spec_dict(build=build))


def test_context_from_is_refused_with_a_runtime_template() -> None:
    build = {
        "runtime": {"template": "sklearn-http", "baseImage": BASE},
        "contextFrom": [{"configMap": {"name": "ctx"}}],
    }
    with pytest.raises(pydantic.ValidationError, match="contextFrom"):
        modelimage.parse_spec(spec_dict(build=build))


def test_operator_label_prefix_is_refused() -> None:
    build = {"dockerfile": "FROM scratch\n", "labels": {"edgeferry.io/inputs-digest": "x"}}
    with pytest.raises(pydantic.ValidationError, match=r"edgeferry\.io/"):
        modelimage.parse_spec(spec_dict(build=build))


@pytest.mark.parametrize(
    ("template", "model_format", "wanted"),
    [
        ("sklearn-http", "custom", "sklearn"),
        ("sklearn-http", "onnx", "sklearn"),
        ("onnx-http", "sklearn", "onnx"),
        ("onnx-http", "custom", "onnx"),
    ],
)
def test_runtime_template_needs_the_model_format_it_serves(
    template: str, model_format: str, wanted: str
) -> None:
    raw = spec_dict()
    raw["model"]["format"] = model_format
    raw["build"]["runtime"]["template"] = template
    with pytest.raises(
        pydantic.ValidationError, match=f"runtime template {template} serves model.format {wanted}"
    ):
        modelimage.parse_spec(raw)


def test_onnx_template_takes_an_onnx_model() -> None:
    raw = spec_dict()
    raw["model"]["format"] = "onnx"
    raw["build"]["runtime"]["template"] = "onnx-http"
    runtime = modelimage.parse_spec(raw).build.runtime
    assert runtime is not None and runtime.template == "onnx-http"


@pytest.mark.parametrize(
    "base",
    ["127.0.0.1:5000/base/python-sklearn:bookworm", "python@sha256:abc", "a b@sha256:" + "c" * 64],
)
def test_runtime_base_image_must_be_pinned_by_digest(base: str) -> None:
    build = {"runtime": {"template": "sklearn-http", "baseImage": base}}
    with pytest.raises(pydantic.ValidationError, match=r"base_image|baseImage"):
        modelimage.parse_spec(spec_dict(build=build))


@pytest.mark.parametrize("sha", ["a" * 63, "A" * 64, "g" * 64])
def test_model_sha256_must_be_64_lowercase_hex(sha: str) -> None:
    raw = spec_dict()
    raw["model"]["sha256"] = sha
    with pytest.raises(pydantic.ValidationError):
        modelimage.parse_spec(raw)


@pytest.mark.parametrize(
    "repository",
    [
        "127.0.0.1:5000/models/iris",
        "localhost:5000/iris",
        "registry:5000/a/b",
        "registry.example.com/team/iris-v2",
        "registry.example.com/a__b/c.d",
    ],
)
def test_push_repository_with_a_registry_host_is_accepted(repository: str) -> None:
    push = {"repository": repository, "tags": ["v1"]}
    assert modelimage.parse_spec(spec_dict(push=push)).push.repository == repository


@pytest.mark.parametrize(
    "repository",
    [
        "models/iris",
        "iris",
        "127.0.0.1:5000/models/iris:v1",
        "127.0.0.1:5000/models/iris@sha256:" + "a" * 64,
        "registry.example.com/Models/Iris",
        "registry.example.com/models/-iris",
    ],
)
def test_push_repository_without_host_or_with_tag_or_digest_is_refused(repository: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"push\.repository"):
        modelimage.parse_spec(spec_dict(push={"repository": repository, "tags": ["v1"]}))


@pytest.mark.parametrize("tag", ["-v1", ".v1", "v 1", "a" * 129, "v1:x"])
def test_push_tags_must_be_docker_tags(tag: str) -> None:
    push = {"repository": "127.0.0.1:5000/models/iris", "tags": [tag]}
    with pytest.raises(pydantic.ValidationError):
        modelimage.parse_spec(spec_dict(push=push))


def test_push_needs_at_least_one_tag() -> None:
    push = {"repository": "127.0.0.1:5000/models/iris", "tags": []}
    with pytest.raises(pydantic.ValidationError):
        modelimage.parse_spec(spec_dict(push=push))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", datetime.timedelta(hours=24)),
        ("30m", datetime.timedelta(minutes=30)),
        ("1h30m", datetime.timedelta(minutes=90)),
        ("90s", datetime.timedelta(seconds=90)),
    ],
)
def test_durations_use_go_units(text: str, expected: datetime.timedelta) -> None:
    assert modelimage.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7d", "1.5h", "24", "h", ""])
def test_durations_without_h_m_s_units_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        modelimage.parse_duration(text)


def test_rescan_interval_below_a_minute_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="at least 1m"):
        modelimage.parse_spec(spec_dict(scan={"rescanInterval": "30s"}))


@pytest.mark.parametrize(
    "exception",
    [
        {"reason": "ok", "expires": "2027-01-31"},
        {"id": "CVE-2023-1", "expires": "2027-01-31"},
        {"id": "CVE-2023-1", "reason": "  ", "expires": "2027-01-31"},
        {"id": "CVE-2023-1", "reason": "ok"},
        {"id": "CVE-2023-1", "reason": "ok", "expires": "next week"},
    ],
    ids=["no-id", "no-reason", "blank-reason", "no-expiry", "bad-date"],
)
def test_exception_needs_id_reason_and_expiry_date(exception: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError):
        modelimage.parse_spec(spec_dict(scan={"exceptions": [exception]}))


def test_exception_ids_must_be_unique() -> None:
    exception = {"id": "CVE-2023-1", "reason": "ok", "expires": "2027-01-31"}
    with pytest.raises(pydantic.ValidationError, match="unique"):
        modelimage.parse_spec(spec_dict(scan={"exceptions": [exception, exception]}))


def test_exception_applies_until_the_day_before_it_expires() -> None:
    exception = modelimage.ScanException(
        id="CVE-2023-1", reason="ok", expires=datetime.date(2027, 1, 31)
    )
    assert exception.active_on(datetime.date(2027, 1, 30))
    assert not exception.active_on(datetime.date(2027, 1, 31))


def test_unknown_severity_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        modelimage.parse_spec(spec_dict(scan={"failOn": "hihg"}))


def test_empty_status_parses() -> None:
    status = modelimage.parse_status(None)
    assert status.inputs_digest is None and status.image is None and status.conditions == []


def test_image_reference_and_short_digest_follow_the_digest() -> None:
    image = modelimage.ImageStatus(
        id="sha256:" + "1" * 64,
        repository="127.0.0.1:5000/models/iris",
        digest="sha256:" + "abcdef0123456789" * 4,
    )
    dumped = image.model_dump(by_alias=True)
    assert dumped["shortDigest"] == "abcdef012345"
    assert dumped["reference"] == "127.0.0.1:5000/models/iris@sha256:" + "abcdef0123456789" * 4


def test_image_without_digest_has_no_reference() -> None:
    assert modelimage.ImageStatus(id="sha256:" + "1" * 64).reference is None


def test_status_patch_spells_out_cleared_fields_as_null() -> None:
    patch = modelimage.ModelImageStatus(inputs_digest="sha256:" + "0" * 64).to_patch()
    assert patch["image"] is None and patch["scan"] is None and patch["lint"] is None
    assert patch["stageInputs"] == {"lint": None, "smokeTest": None, "scan": None, "push": None}


def test_status_survives_a_round_trip_through_the_api_server() -> None:
    status = modelimage.ModelImageStatus(
        observed_generation=3,
        phase="Ready",
        inputs_digest="sha256:" + "0" * 64,
        image=modelimage.ImageStatus(
            id="sha256:" + "1" * 64,
            repository="127.0.0.1:5000/models/iris",
            tags=["v1"],
            digest="sha256:" + "2" * 64,
            size=1000,
            layers=3,
        ),
        scan=modelimage.ScanStatus(
            scanned_at=datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC),
            excepted=[
                modelimage.ScanException(
                    id="CVE-2023-1", reason="ok", expires=datetime.date(2027, 1, 31)
                )
            ],
        ),
    )
    stored = {k: v for k, v in status.to_patch().items() if v is not None}
    assert stored["scan"]["scannedAt"] == "2026-11-27T12:00:00Z"
    assert stored["scan"]["excepted"][0]["expires"] == "2027-01-31"
    assert modelimage.parse_status(stored) == status


def test_conditions_merge_keeps_transition_time_when_status_is_unchanged() -> None:
    status = modelimage.ModelImageStatus().with_conditions(
        [conditions.Condition("Linted", "True", "LintPassed", "clean")],
        generation=1,
        now="2026-11-27T10:00:00Z",
    )
    again = status.with_conditions(
        [conditions.Condition("Linted", "True", "LintPassed", "still clean")],
        generation=2,
        now="2026-11-27T11:00:00Z",
    )
    linted = again.condition("Linted")
    assert linted is not None
    assert linted.last_transition_time == "2026-11-27T10:00:00Z"
    assert linted.observed_generation == 2 and linted.message == "still clean"
