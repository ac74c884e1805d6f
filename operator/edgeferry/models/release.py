"""A release as remembered at a target: the record edgeferry keeps on its own Deployment.

The rollout keeps no plan and no per-target memory on the hub: what ran where, what ran before
(where a rollback goes), when it was written, when it became Ready and why a release was rolled
back live in `edgeferry.io/` annotations of the Deployment at each target. So the memory scales
with the fleet, survives an operator restart, and is read and written by three rooms (decided on
in `decisions`, rendered into the Deployment in `decisions.workload`, read back in
`adapters.target_workloads`); it is a model so all three can share it without depending on each
other.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from edgeferry.models import target_objects, timestamps

PREFIX = target_objects.PREFIX
DIGEST = PREFIX + "digest"
PREVIOUS_DIGEST = PREFIX + "previous-digest"
STARTED_AT = PREFIX + "started-at"
READY_AT = PREFIX + "ready-at"
ROLLED_BACK_FROM = PREFIX + "rolled-back-from"
ROLLED_BACK_GENERATION = PREFIX + "rolled-back-generation"
ROLLED_BACK_BECAUSE = PREFIX + "rolled-back-because"
ARCHITECTURES = PREFIX + "architectures"
PREVIOUS_ARCHITECTURES = PREFIX + "previous-architectures"
TEMPLATE = PREFIX + "template"
PREVIOUS_TEMPLATE = PREFIX + "previous-template"

REASON_LIMIT = 300
"""Most characters of `rolled_back_because` kept: the reason is read in one status line, and
the Deployment's annotations (256 KiB in all) also carry two pod templates."""


@dataclasses.dataclass(frozen=True)
class TargetRecord:
    """What edgeferry remembers at a target, in `edgeferry.io/` annotations of its Deployment."""

    digest: str
    """The digest edgeferry applied there."""
    previous_digest: str | None = None
    """The last digest proven Ready there before `digest`: where a rollback goes."""
    started_at: datetime.datetime | None = None
    """When `digest` was first written: the progress-deadline clock."""
    ready_at: datetime.datetime | None = None
    """When `digest` first counted Ready; never rolled back after that."""
    rolled_back_from: str | None = None
    """The digest that failed here and was rolled back."""
    rolled_back_generation: int | None = None
    """The ModelDeployment generation of that rollback; a spec change allows a retry."""
    rolled_back_because: str | None = None
    """Why it was rolled back (at most `REASON_LIMIT` characters, see `bounded_reason`), so
    every later status line still says it; None for records written before it was kept."""
    architectures: tuple[str, ...] = ()
    """Node architectures `digest` is pinned to (empty: not pinned)."""
    previous_architectures: tuple[str, ...] = ()
    """Node architectures `previous_digest` was pinned to."""
    template: str | None = None
    """The pod template written with `digest` (canonical JSON, see `workload.template_document`);
    None for records written before templates were remembered."""
    previous_template: str | None = None
    """The pod template that ran with `previous_digest`: what a rollback restores."""

    def runs(self, digest: str, template: str | None) -> bool:
        """Whether this record is the release `digest` + `template`."""
        return self.digest == digest and self.template == template


def bounded_reason(text: str) -> str:
    """`text` cut to `REASON_LIMIT` characters; a cut one ends in "..." (cutting twice changes
    nothing, so a record reads back as written)."""
    if len(text) <= REASON_LIMIT:
        return text
    return text[: REASON_LIMIT - 3] + "..."


def _parse_int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _parse_list(value: str | None) -> tuple[str, ...]:
    return tuple(v for v in (value or "").split(",") if v)


def record_annotations(record: TargetRecord) -> dict[str, str]:
    """The record as Deployment annotations; unset fields are left out (and so removed)."""
    pairs: dict[str, str | None] = {
        DIGEST: record.digest,
        PREVIOUS_DIGEST: record.previous_digest,
        STARTED_AT: timestamps.format_rfc3339(record.started_at) if record.started_at else None,
        READY_AT: timestamps.format_rfc3339(record.ready_at) if record.ready_at else None,
        ROLLED_BACK_FROM: record.rolled_back_from,
        ROLLED_BACK_GENERATION: (
            str(record.rolled_back_generation)
            if record.rolled_back_generation is not None
            else None
        ),
        ROLLED_BACK_BECAUSE: (
            bounded_reason(record.rolled_back_because) if record.rolled_back_because else None
        ),
        ARCHITECTURES: ",".join(record.architectures) or None,
        PREVIOUS_ARCHITECTURES: ",".join(record.previous_architectures) or None,
        TEMPLATE: record.template,
        PREVIOUS_TEMPLATE: record.previous_template,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def record_from_annotations(annotations: Mapping[str, str] | None) -> TargetRecord | None:
    """Read the record back from a Deployment's annotations; None when it carries no digest.

    Malformed values (edited by hand) read as unset rather than failing the reconcile.
    """
    found = annotations or {}
    digest = found.get(DIGEST)
    if not digest:
        return None
    return TargetRecord(
        digest=digest,
        previous_digest=found.get(PREVIOUS_DIGEST) or None,
        started_at=timestamps.parse_rfc3339(found.get(STARTED_AT)),
        ready_at=timestamps.parse_rfc3339(found.get(READY_AT)),
        rolled_back_from=found.get(ROLLED_BACK_FROM) or None,
        rolled_back_generation=_parse_int(found.get(ROLLED_BACK_GENERATION)),
        rolled_back_because=bounded_reason(found.get(ROLLED_BACK_BECAUSE) or "") or None,
        architectures=_parse_list(found.get(ARCHITECTURES)),
        previous_architectures=_parse_list(found.get(PREVIOUS_ARCHITECTURES)),
        template=found.get(TEMPLATE) or None,
        previous_template=found.get(PREVIOUS_TEMPLATE) or None,
    )
