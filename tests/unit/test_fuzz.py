"""1,000 generated specs per kind through the models' parsers: only documented errors come out.

A parser either returns a typed view or raises `pydantic.ValidationError` (which the handlers
turn into `InvalidSpec` with the message); anything else (a TypeError, a KeyError, a
RecursionError) would crash a reconcile loop instead of telling the user what is wrong. The
generator (`fuzz_specs`) is seeded: set EDGEFERRY_FUZZ_SEED to explore other documents.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import modelimage as mi
from tests.unit import fuzz_specs

SEED = int(os.environ.get("EDGEFERRY_FUZZ_SEED", "20261201"))
COUNT = 1000

PARSERS: dict[str, Callable[[Any], Any]] = {
    "ModelImage": mi.parse_spec,
    "EdgeTarget": et.parse_spec,
    "ModelDeployment": md.parse_spec,
}


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_generated_specs_parse_or_fail_with_a_validation_error(kind: str) -> None:
    parse = PARSERS[kind]
    parsed = refused = 0
    for doc in fuzz_specs.mutants(kind, count=COUNT, seed=SEED):
        try:
            parse(doc)
        except pydantic.ValidationError as exc:
            assert str(exc), "a validation error names what is wrong"
            refused += 1
        else:
            parsed += 1
    assert parsed + refused == COUNT
    # The generator must exercise both sides, or the test proves nothing about either.
    assert parsed > 0 and refused > 0, (parsed, refused)


STATUS_PARSERS: dict[str, Callable[[Any], Any]] = {
    "ModelImage": mi.parse_status,
    "EdgeTarget": et.parse_status,
    "ModelDeployment": md.parse_status,
}


@pytest.mark.parametrize("kind", sorted(STATUS_PARSERS))
def test_generated_statuses_parse_or_fail_with_a_validation_error(kind: str) -> None:
    """Status is user-editable (`kubectl edit --subresource=status`) and outlives CRD upgrades."""
    parse = STATUS_PARSERS[kind]
    parsed = refused = 0
    for doc in fuzz_specs.mutants(kind, count=COUNT, seed=SEED, of="status"):
        try:
            parse(doc)
        except pydantic.ValidationError:
            refused += 1
        else:
            parsed += 1
    assert parsed > 0 and refused > 0, (parsed, refused)


def test_the_shipped_samples_parse() -> None:
    for kind, parse in PARSERS.items():
        for spec in fuzz_specs.samples(kind):
            parse(spec)
