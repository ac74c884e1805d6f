"""The per-ModelImage gauges: set after each step, and re-exported from status at rest.

Re-exporting from status means a restarted operator exports the same verdicts (and alerts
keep firing) without rescanning anything.
"""

from __future__ import annotations

import datetime

from edgeferry import metrics
from edgeferry.decisions import gate, scan_step
from edgeferry.models import modelimage, reasons, timestamps


def linted(lint: modelimage.LintStatus, *, namespace: str, name: str) -> None:
    for level in ("error", "warning", "info", "style"):
        metrics.LINT_FINDINGS.labels(namespace, name, level).set(getattr(lint, f"{level}s"))


def gated(
    decision: gate.Decision,
    *,
    db_built: datetime.datetime | None,
    namespace: str,
    name: str,
    now: datetime.datetime,
) -> None:
    """After a scan: its counts, the DB's age, the verdict; a smoke test no longer blocks."""
    for severity, count in decision.counts.model_dump().items():
        metrics.VULNERABILITIES.labels(namespace, name, severity).set(count)
    if db_built is not None:
        metrics.SCAN_DB_AGE.set((now - db_built).total_seconds())
    verdict = "admitted" if decision.admitted else "blocked"
    metrics.GATE_DECISIONS.labels(namespace, name, verdict).inc()
    metrics.IMAGE_BLOCKED.labels(namespace, name, reasons.VULNERABILITIES_FOUND).set(
        0 if decision.admitted else 1
    )
    metrics.IMAGE_BLOCKED.labels(namespace, name, reasons.SMOKE_TEST_FAILED).set(0)


def from_status(
    status: modelimage.ModelImageStatus, *, namespace: str, name: str, now: datetime.datetime
) -> None:
    """Every gauge of one ModelImage as its status says, at rest."""
    blocked_by = scan_step.blocked_by(status)
    for reason in (reasons.VULNERABILITIES_FOUND, reasons.SMOKE_TEST_FAILED):
        metrics.IMAGE_BLOCKED.labels(namespace, name, reason).set(1 if blocked_by == reason else 0)
    if status.scan is not None:
        for severity, count in status.scan.counts.model_dump().items():
            metrics.VULNERABILITIES.labels(namespace, name, severity).set(count)
        built = timestamps.parse_rfc3339(status.scan.db_built)
        if built is not None:
            metrics.SCAN_DB_AGE.set((now - built).total_seconds())
    if status.lint is not None:
        linted(status.lint, namespace=namespace, name=name)
