"""A vulnerability finding as the admission gate reads it, and how severities rank.

Its own module because two rooms share it: `adapters.scanner` flattens grype's matches into
`Finding`s and `decisions.gate` judges them; neither may import the other.
"""

from __future__ import annotations

import dataclasses

from edgeferry.models import modelimage

SEVERITY_ORDER: tuple[modelimage.Severity, ...] = (
    "negligible",
    "low",
    "medium",
    "high",
    "critical",
)
"""Known severities, least severe first."""

FindingSeverity = modelimage.Severity | str
"""A finding's severity as the scanner spelt it; anything not in `SEVERITY_ORDER` is unknown."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One vulnerability matched to one installed package (the scanner's view, flattened)."""

    id: str
    severity: FindingSeverity
    """`critical` ... `negligible` in any case; anything else counts as unknown."""
    package: str
    installed: str
    fixed_in: tuple[str, ...] = ()
    fix_state: str = "unknown"
    """grype's fix state: `fixed`, `not-fixed`, `wont-fix` or `unknown`."""
    aliases: tuple[str, ...] = ()
    """Other ids of the same advisory (the CVE of a GHSA, ...)."""

    @property
    def level(self) -> modelimage.Severity | None:
        """The normalised severity, or None when unknown."""
        return normalise(self.severity)

    @property
    def fixable(self) -> bool:
        """Whether a fixed version exists to upgrade to."""
        return self.fix_state == "fixed" or bool(self.fixed_in)

    def ids(self) -> frozenset[str]:
        """The finding's id and aliases, upper-cased for matching."""
        return frozenset(i.upper() for i in (self.id, *self.aliases))


def normalise(severity: FindingSeverity) -> modelimage.Severity | None:
    """`High`, `HIGH`, `high` -> `high`; None for severities outside `SEVERITY_ORDER`."""
    lowered = str(severity).lower()
    for known in SEVERITY_ORDER:
        if known == lowered:
            return known
    return None


def rank(severity: FindingSeverity) -> int:
    """Position in `SEVERITY_ORDER` (0 = negligible), -1 for unknown severities."""
    level = normalise(severity)
    return -1 if level is None else SEVERITY_ORDER.index(level)
