"""operator/Dockerfile follows the practices edgeferry enforces on model images."""

from __future__ import annotations

import re

import pytest

from edgeferry.adapters import hadolint
from edgeferry_testbed import operator_image

DOCKERFILE = operator_image.DOCKERFILE.read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def test_hadolint_finds_nothing() -> None:
    assert hadolint.lint(DOCKERFILE) == ()


def test_base_is_a_build_argument_without_default() -> None:
    assert INSTRUCTIONS[0] == "ARG BASE_IMAGE"
    assert INSTRUCTIONS[1] == "FROM ${BASE_IMAGE}"


@pytest.mark.parametrize(
    "base",
    ["python:3.11", "127.0.0.1:5000/base/python-sklearn:latest", "repo@sha256:abc", ""],
)
def test_build_script_refuses_bases_not_pinned_by_digest(base: str) -> None:
    with pytest.raises(operator_image.ImageError, match="pinned by digest"):
        operator_image.require_pinned(base)


def test_build_script_accepts_a_digest_pinned_base() -> None:
    base = "127.0.0.1:5000/base/python-sklearn@sha256:" + "0" * 64
    assert operator_image.require_pinned(base) == base


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [i.split()[1] for i in INSTRUCTIONS if i.startswith("USER ")]
    assert users, "no USER instruction"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()


def test_few_layers_and_no_package_manager() -> None:
    layered = [i for i in INSTRUCTIONS if i.split()[0] in {"RUN", "COPY", "ADD"}]
    assert len(layered) <= 3
    assert not any(i.startswith("RUN") for i in INSTRUCTIONS)


def test_build_context_sends_only_what_the_image_needs() -> None:
    ignore = (operator_image.REPO / ".dockerignore").read_text().splitlines()
    patterns = [line for line in ignore if line and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {p for p in patterns if p.startswith("!")} == {
        "!operator/edgeferry/",
        "!build/operator-image/",
    }
