"""The inputs digest: same inputs give the same digest, any change gives another."""

from __future__ import annotations

from typing import Any

import pytest

from edgeferry.decisions import inputs
from edgeferry.models import modelimage

BASE = "127.0.0.1:5000/base/python-sklearn@sha256:" + "b" * 64

INPUTS: dict[str, Any] = {
    "dockerfile": "FROM x@sha256:" + "b" * 64 + "\nCOPY a /a\n",
    "context": {"serve.py": "1" * 64, "extra.txt": "2" * 64},
    "model_sha256": "a" * 64,
    "platform": "linux/amd64",
    "args": {"A": "1", "B": "2"},
    "labels": {"team": "ml", "tier": "edge"},
    "base_image": BASE,
}


def test_same_inputs_give_the_same_digest() -> None:
    assert inputs.inputs_digest(**INPUTS) == inputs.inputs_digest(**INPUTS)


def test_digest_is_independent_of_dict_order() -> None:
    reordered = dict(INPUTS)
    reordered["context"] = dict(reversed(list(INPUTS["context"].items())))
    reordered["args"] = dict(reversed(list(INPUTS["args"].items())))
    reordered["labels"] = dict(reversed(list(INPUTS["labels"].items())))
    assert inputs.inputs_digest(**reordered) == inputs.inputs_digest(**INPUTS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dockerfile", INPUTS["dockerfile"] + "USER 10001\n"),
        ("context", {**INPUTS["context"], "extra.txt": "3" * 64}),
        ("context", {**INPUTS["context"], "another.txt": "2" * 64}),
        ("context", {"renamed.txt": "2" * 64, "serve.py": "1" * 64}),
        ("model_sha256", "c" * 64),
        ("platform", "linux/arm64"),
        ("args", {"A": "1", "B": "3"}),
        ("args", {"A": "1"}),
        ("labels", {"team": "ml", "tier": "cloud"}),
        ("base_image", "127.0.0.1:5000/base/python-sklearn@sha256:" + "d" * 64),
    ],
)
def test_any_change_gives_another_digest(field: str, value: Any) -> None:
    changed = {**INPUTS, field: value}
    assert inputs.inputs_digest(**changed) != inputs.inputs_digest(**INPUTS)


def test_model_digest_case_does_not_matter() -> None:
    upper = {**INPUTS, "model_sha256": "A" * 64}
    assert inputs.inputs_digest(**upper) == inputs.inputs_digest(**INPUTS)


def test_digest_is_a_sha256_reference() -> None:
    digest = inputs.inputs_digest(**INPUTS)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64


def test_canonical_digest_ignores_key_order_and_whitespace() -> None:
    assert inputs.canonical_digest({"a": 1, "b": [1, 2]}) == inputs.canonical_digest(
        {"b": [1, 2], "a": 1}
    )


def test_of_spec_hashes_the_spec_fields_that_shape_the_image() -> None:
    spec = modelimage.parse_spec(
        {
            "model": {
                "format": "sklearn",
                "source": {"configMap": {"name": "m", "key": "model.pkl"}},
                "sha256": INPUTS["model_sha256"],
            },
            "build": {
                "runtime": {"template": "sklearn-http", "baseImage": BASE},
                "args": INPUTS["args"],
                "labels": INPUTS["labels"],
            },
            "smokeTest": {"predict": {"body": "{}"}},
            "push": {"repository": "127.0.0.1:5000/models/iris", "tags": ["v1"]},
        }
    )
    digest = inputs.of_spec(spec, dockerfile=INPUTS["dockerfile"], context=INPUTS["context"])
    assert digest == inputs.inputs_digest(**INPUTS)


def test_model_bytes_match_only_their_own_digest() -> None:
    data = b"pickled model"
    assert inputs.model_matches(data, sha256=inputs.sha256_hex(data))
    assert not inputs.model_matches(data + b"!", sha256=inputs.sha256_hex(data))
