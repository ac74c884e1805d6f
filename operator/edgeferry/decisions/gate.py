"""The admission gate: may this scanned image be pushed and deployed?

The scanner reports every match; this module applies the ModelImage's policy to them:

- A finding blocks when its severity is at or above `failOn` (negligible < low < medium < high <
  critical). Findings of *unknown* severity cannot be ranked, so they block only under the
  strictest policy, `failOn: negligible` ("block anything the scanner reports"); otherwise they
  are counted and shown but do not block. Silently admitting them under `negligible` would make
  the strictest setting leakier than it reads.
- With `onlyFixed`, a finding blocks only when a fixed version exists (nothing to upgrade to
  means nothing the image's owner can do today); it is still counted.
- An exception covers a finding when its id equals the finding's id or any of its aliases, case
  insensitively, so an exception for a CVE also covers the GHSA advisory grype reports for a
  Python package, and the other way round. It applies up to, not including, its `expires` date
  (UTC). An expired exception no longer covers anything: every expired exception is listed, and
  a finding it would have covered says so, so the status tells the user why an image that was
  admitted yesterday is blocked today.

The verdict is bounded for status: at most `MAX_BLOCKING` blocking findings, worst first
(severity, then fixable before unfixable, then id), with the total alongside. The same finding
reported twice (several matchers, several locations) counts once.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Iterable, Sequence

from edgeferry.models import conditions, modelimage, reasons, vulnerabilities

MAX_BLOCKING = 20
"""Blocking findings kept in status (worst first); `Decision.blocking_total` has the rest."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """The gate's verdict on one scan."""

    admitted: bool
    blocking: tuple[modelimage.BlockingFinding, ...]
    """At most `MAX_BLOCKING`, worst first, for `status.scan.blocking`."""
    blocking_total: int
    excepted: tuple[vulnerabilities.Finding, ...]
    """Findings an active exception covered (all of them, for events and logs)."""
    applied_exceptions: tuple[modelimage.ScanException, ...]
    """Active exceptions that covered at least one finding, for `status.scan.excepted`."""
    expired_exceptions: tuple[str, ...]
    """Ids of every expired exception in the spec, for `status.scan.expiredExceptions`."""
    counts: modelimage.SeverityCounts
    """Findings per severity before policy, for `status.scan.counts`."""
    condition: conditions.Condition
    """`Admitted`, with the blocking findings (or why none block) in its message."""


def decide(
    findings: Iterable[vulnerabilities.Finding],
    *,
    today: datetime.date,
    fail_on: modelimage.Severity = "high",
    only_fixed: bool = False,
    exceptions: Sequence[modelimage.ScanException] = (),
) -> Decision:
    """Apply the scan policy to a scan's findings on `today` (UTC)."""
    unique = _dedupe(findings)
    active = [e for e in exceptions if e.active_on(today)]
    expired = [e for e in exceptions if not e.active_on(today)]

    blocking: list[tuple[vulnerabilities.Finding, datetime.date | None]] = []
    excepted: list[vulnerabilities.Finding] = []
    applied: dict[str, modelimage.ScanException] = {}
    for finding in unique:
        covering = _covering(finding, active)
        if covering is not None:
            excepted.append(finding)
            applied.setdefault(covering.id, covering)
            continue
        if not _blocks(finding, fail_on=fail_on, only_fixed=only_fixed):
            continue
        lapsed = _covering(finding, expired)
        blocking.append((finding, lapsed.expires if lapsed is not None else None))

    blocking.sort(key=lambda item: _worst_first(item[0]))
    shown = tuple(_blocking_status(f, expired_on) for f, expired_on in blocking[:MAX_BLOCKING])
    counts = _counts(unique)
    decision_applied = tuple(e for e in exceptions if e.id in applied)
    expired_ids = tuple(e.id for e in expired)
    return Decision(
        admitted=not blocking,
        blocking=shown,
        blocking_total=len(blocking),
        excepted=tuple(excepted),
        applied_exceptions=decision_applied,
        expired_exceptions=expired_ids,
        counts=counts,
        condition=_condition(
            shown,
            total=len(blocking),
            fail_on=fail_on,
            only_fixed=only_fixed,
            counts=counts,
            applied=decision_applied,
            expired=expired,
        ),
    )


def union(
    findings_per_image: Iterable[Iterable[vulnerabilities.Finding]],
) -> tuple[vulnerabilities.Finding, ...]:
    """The findings of several images (one per platform) as one list, each finding once.

    A multi-platform image is admitted or blocked as a whole: a finding in any platform counts,
    and a package present in every platform counts once (same id, package and version).
    """
    return tuple(_dedupe(itertools.chain.from_iterable(findings_per_image)))


def _blocks(
    finding: vulnerabilities.Finding, *, fail_on: modelimage.Severity, only_fixed: bool
) -> bool:
    if only_fixed and not finding.fixable:
        return False
    level = finding.level
    if level is None:
        return fail_on == "negligible"
    return vulnerabilities.SEVERITY_ORDER.index(level) >= vulnerabilities.SEVERITY_ORDER.index(
        fail_on
    )


def _covering(
    finding: vulnerabilities.Finding, exceptions: Sequence[modelimage.ScanException]
) -> modelimage.ScanException | None:
    """The first exception whose id is the finding's id or one of its aliases."""
    ids = finding.ids()
    for exception in exceptions:
        if exception.id.upper() in ids:
            return exception
    return None


def _dedupe(findings: Iterable[vulnerabilities.Finding]) -> list[vulnerabilities.Finding]:
    """One finding per (id, package, installed version), aliases merged, first seen wins."""
    merged: dict[tuple[str, str, str], vulnerabilities.Finding] = {}
    for finding in findings:
        key = (finding.id.upper(), finding.package, finding.installed)
        seen = merged.get(key)
        if seen is None:
            merged[key] = finding
        else:
            aliases = tuple(sorted({*seen.aliases, *finding.aliases}))
            fixed_in = seen.fixed_in or finding.fixed_in
            merged[key] = dataclasses.replace(seen, aliases=aliases, fixed_in=fixed_in)
    return list(merged.values())


def _worst_first(finding: vulnerabilities.Finding) -> tuple[int, int, str, str]:
    return (
        -vulnerabilities.rank(finding.severity),
        0 if finding.fixable else 1,
        finding.id,
        finding.package,
    )


def _blocking_status(
    finding: vulnerabilities.Finding, expired_on: datetime.date | None
) -> modelimage.BlockingFinding:
    return modelimage.BlockingFinding(
        id=finding.id,
        severity=finding.level or "unknown",
        package=finding.package,
        installed=finding.installed,
        fixed_in=", ".join(finding.fixed_in) or None,
        exception_expired=expired_on,
    )


def _counts(findings: Sequence[vulnerabilities.Finding]) -> modelimage.SeverityCounts:
    tally = dict.fromkeys((*vulnerabilities.SEVERITY_ORDER, "unknown"), 0)
    for finding in findings:
        tally[finding.level or "unknown"] += 1
    return modelimage.SeverityCounts.model_validate(tally)


def _describe(finding: modelimage.BlockingFinding) -> str:
    text = f"{finding.id} ({finding.severity}) in {finding.package} {finding.installed}"
    text += f", fixed in {finding.fixed_in}" if finding.fixed_in else ", no fix yet"
    if finding.exception_expired is not None:
        text += f"; its exception expired on {finding.exception_expired.isoformat()}"
    return text


def _condition(
    shown: Sequence[modelimage.BlockingFinding],
    *,
    total: int,
    fail_on: modelimage.Severity,
    only_fixed: bool,
    counts: modelimage.SeverityCounts,
    applied: Sequence[modelimage.ScanException],
    expired: Sequence[modelimage.ScanException],
) -> conditions.Condition:
    policy = f"failOn {fail_on}" + (", onlyFixed" if only_fixed else "")
    notes = []
    if applied:
        notes.append("excepted: " + ", ".join(e.id for e in applied))
    if expired:
        notes.append(
            "expired exceptions no longer apply: "
            + ", ".join(f"{e.id} (expired {e.expires.isoformat()})" for e in expired)
        )
    tail = f" ({'; '.join(notes)})" if notes else ""
    if total:
        listed = "; ".join(_describe(f) for f in shown[:5])
        more = f"; and {total - 5} more in status.scan.blocking" if total > 5 else ""
        return conditions.Condition(
            type=reasons.ADMITTED,
            status="False",
            reason=reasons.VULNERABILITIES_FOUND,
            message=(
                f"{total} finding{'s' if total != 1 else ''} block admission under {policy}: "
                f"{listed}{more}. Upgrade the packages, or add an exception with id, reason "
                f"and expires to spec.scan.exceptions.{tail}"
            ),
        )
    found = ", ".join(f"{n} {severity}" for severity, n in counts.model_dump().items() if n)
    return conditions.Condition(
        type=reasons.ADMITTED,
        status="True",
        reason=reasons.NO_BLOCKING_VULNERABILITIES,
        message=f"nothing blocks under {policy} (found: {found or 'none'}){tail}",
    )
