"""Turn hadolint's findings into the lint stage's verdict: pass or fail, counts, worst findings.

hadolint only reports (the adapter runs it with `--no-fail`); whether a Dockerfile may be built
is the ModelImage's policy: a failure threshold and a list of ignored rules. Keeping the verdict
here means the policy is applied the same way whatever hadolint's own defaults or config files
say, and it can be tested without the binary.

Ignored rules are dropped before counting: an ignored rule is one the user decided not to care
about, so it should not show up as a warning in status either. The status keeps at most
`MAX_FINDINGS` findings, worst first, so a Dockerfile with hundreds of style nits cannot bloat the
object in etcd; the counts still tell the whole story.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from typing import Protocol

from edgeferry.models import conditions, modelimage, reasons

MAX_FINDINGS = 10
"""Findings kept in status (worst first)."""

MAX_MESSAGE = 240
"""Characters of one hadolint message kept in status."""

LEVELS: tuple[modelimage.LintLevel, ...] = ("error", "warning", "info", "style")
"""hadolint's levels, most severe first."""


class Finding(Protocol):
    """What the verdict needs from a hadolint finding (the adapter's `Finding` fits)."""

    @property
    def rule(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The lint stage's outcome."""

    passed: bool
    status: modelimage.LintStatus
    """Counts per level and the worst findings, ready for `status.lint`."""
    failing: int
    """Findings at or above the threshold (after ignores)."""
    condition: conditions.Condition
    """`Linted`, with a reason and a message that names the findings to fix."""


def _rank(level: str) -> int:
    """Index in `LEVELS`; levels hadolint may add later count as `info`."""
    return LEVELS.index(level) if level in LEVELS else LEVELS.index("info")


def _level(level: str) -> modelimage.LintLevel:
    return LEVELS[_rank(level)]


def decide(
    findings: Iterable[Finding],
    *,
    threshold: modelimage.LintThreshold = "error",
    ignore: Collection[str] = (),
) -> Verdict:
    """Apply the lint policy: findings at or above `threshold` fail, ignored rules don't count."""
    ignored = {rule.upper() for rule in ignore}
    kept = sorted(
        (f for f in findings if f.rule.upper() not in ignored),
        key=lambda f: (_rank(f.level), f.line, f.rule),
    )
    counts = {level: 0 for level in LEVELS}
    for finding in kept:
        counts[_level(finding.level)] += 1
    limit = 0 if threshold == "none" else LEVELS.index(threshold) + 1
    failing = [f for f in kept if _rank(f.level) < limit]
    status = modelimage.LintStatus(
        errors=counts["error"],
        warnings=counts["warning"],
        infos=counts["info"],
        styles=counts["style"],
        findings=[
            modelimage.LintFinding(
                rule=f.rule,
                line=f.line,
                level=_level(f.level),
                message=_cut(f.message, MAX_MESSAGE),
            )
            for f in kept[:MAX_FINDINGS]
        ],
    )
    summary = ", ".join(_count(counts[level], level) for level in LEVELS)
    summary += f" (failureThreshold {threshold})"
    if failing:
        listed = "; ".join(f"{f.rule} line {f.line}: {_cut(f.message, 120)}" for f in failing[:3])
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        condition = conditions.Condition(
            type=reasons.LINTED,
            status="False",
            reason=reasons.LINT_FAILED,
            message=(
                f"hadolint: {_count(len(failing), 'finding')} at or above {threshold}: "
                f"{listed}{more}. "
                f"Fix the Dockerfile, or list the rule in spec.lint.ignore. ({summary})"
            ),
        )
    else:
        condition = conditions.Condition(
            type=reasons.LINTED,
            status="True",
            reason=reasons.LINT_PASSED,
            message=f"hadolint: {summary}",
        )
    return Verdict(passed=not failing, status=status, failing=len(failing), condition=condition)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cut(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
