"""The wire shape every resource view shares, and the one way to load and write it.

Specs and statuses reach the operator as camelCase mappings (from Kopf or the API) and leave as
status patches. One base class, so every view reads and writes them alike: camelCase on the
wire and snake_case in Python; unknown fields ignored, so an object written by a newer CRD still
loads; immutable, so a view never drifts from what was read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import pydantic
from pydantic import alias_generators


class Model(pydantic.BaseModel):
    """A typed view of (part of) a resource body."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any] | None) -> Self:
        """Load `.spec` or `.status` of a body; a missing block reads as an empty one.

        Raises `pydantic.ValidationError` when the block does not fit (for a status: rather
        than guessing what an older operator meant).
        """
        return cls.model_validate(dict(raw or {}))

    def to_status(self) -> dict[str, Any]:
        """The block as the API wants it: camelCase, unset fields left out (a merge patch that
        only touches what it sets)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
