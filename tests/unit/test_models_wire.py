"""Every resource view loads and writes its block the same way (`models.wire`)."""

from __future__ import annotations

import pydantic
import pytest

from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import modelimage as mi
from edgeferry.models import wire


class Probe(wire.Model):
    ready_nodes: int | None = None
    kubernetes_version: str | None = None


def test_a_block_loads_from_camel_case_and_ignores_fields_it_does_not_know() -> None:
    loaded = Probe.from_wire({"readyNodes": 2, "newerField": "x"})
    assert loaded == Probe(ready_nodes=2)


def test_a_missing_block_reads_as_an_empty_one() -> None:
    assert Probe.from_wire(None) == Probe()
    assert et.parse_status(None) == et.EdgeTargetStatus()
    assert md.parse_status(None) == md.ModelDeploymentStatus()
    assert mi.parse_status(None) == mi.ModelImageStatus()


def test_a_spec_without_its_required_fields_is_refused() -> None:
    for parse in (et.parse_spec, md.parse_spec, mi.parse_spec):
        with pytest.raises(pydantic.ValidationError):
            parse({})


def test_a_status_is_written_in_camel_case_without_unset_fields() -> None:
    assert Probe(kubernetes_version="v1.31.0").to_status() == {"kubernetesVersion": "v1.31.0"}


def test_a_view_is_immutable() -> None:
    with pytest.raises(pydantic.ValidationError):
        Probe().ready_nodes = 3  # type: ignore[misc]
