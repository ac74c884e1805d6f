"""Every Prometheus metric edgeferry exports, in one module.

One place means the alert rules, the Grafana dashboard and the docs can be checked against the
real list (a test does), and handlers never invent metric names on the fly. Label sets stay
small and bounded: namespace/name of our own resources and fixed enums, never digests or
finding ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

REGISTRY = CollectorRegistry(auto_describe=True)
"""Our own registry, so tests and the metrics server see only edgeferry's series."""

# --- ModelImage pipeline ------------------------------------------------------------------------
BUILDS = Counter(
    "edgeferry_image_builds_total",
    "Image builds run, by outcome (succeeded, failed).",
    ["namespace", "name", "outcome"],
    registry=REGISTRY,
)
BUILD_DURATION = Histogram(
    "edgeferry_image_build_duration_seconds",
    "Wall time of one image build through the Docker Engine API.",
    ["namespace", "name"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
PUSH_BYTES_UPLOADED = Counter(
    "edgeferry_image_push_uploaded_bytes_total",
    "Layer bytes image pushes sent to the registry; layers the registry had already (the model "
    "layer after a server-only rebuild) send none.",
    ["namespace", "name"],
    registry=REGISTRY,
)
STAGE_RETRIES = Counter(
    "edgeferry_image_stage_retries_total",
    "Pipeline stages that failed for a reason that passes and wait for their next attempt, by "
    "stage and reason (DockerUnavailable, RegistryUnavailable, ScanFailed).",
    ["stage", "reason"],
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "edgeferry_image_stage_duration_seconds",
    "Wall time of one pipeline stage (lint, build, smoketest, scan, push).",
    ["stage"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
LINT_FINDINGS = Gauge(
    "edgeferry_image_lint_findings",
    "hadolint findings of the current Dockerfile, by level (error, warning, info, style).",
    ["namespace", "name", "level"],
    registry=REGISTRY,
)
VULNERABILITIES = Gauge(
    "edgeferry_image_vulnerabilities",
    "Vulnerabilities grype found in the current image, by severity.",
    ["namespace", "name", "severity"],
    registry=REGISTRY,
)
IMAGE_BLOCKED = Gauge(
    "edgeferry_image_blocked",
    "1 while the ModelImage is blocked by the gate (vulnerabilities, smoke test), else 0.",
    ["namespace", "name", "reason"],
    registry=REGISTRY,
)
GATE_DECISIONS = Counter(
    "edgeferry_gate_decisions_total",
    "Admission decisions taken by the gate, by decision (admitted, blocked).",
    ["namespace", "name", "decision"],
    registry=REGISTRY,
)
SCAN_DB_AGE = Gauge(
    "edgeferry_scan_db_age_seconds",
    "Age of the vulnerability database grype used for the last scan (from its build time).",
    registry=REGISTRY,
)
SCAN_DB_STALE_THRESHOLD = Gauge(
    "edgeferry_scan_db_stale_threshold_seconds",
    "EDGEFERRY_SCAN_DB_STALE_SECONDS: the database age the stale-database alert compares with.",
    registry=REGISTRY,
)
SCANS = Counter(
    "edgeferry_image_scans_total",
    "Scans run, by outcome (succeeded, failed) and trigger (build, interval, dbchange).",
    ["outcome", "trigger"],
    registry=REGISTRY,
)

# --- Targets and rollouts -----------------------------------------------------------------------
TARGET_UP = Gauge(
    "edgeferry_target_up",
    "1 when the last probe of the EdgeTarget reached its cluster with ready nodes, else 0.",
    ["namespace", "name", "type"],
    registry=REGISTRY,
)
ROLLOUT_TARGETS = Gauge(
    "edgeferry_rollout_targets",
    "Targets of a ModelDeployment per phase (Pending, Progressing, Ready, Failed, "
    "RolledBack, Deferred, Incompatible, Blocked).",
    ["namespace", "name", "phase"],
    registry=REGISTRY,
)
ROLLOUT_WAVE = Gauge(
    "edgeferry_rollout_current_wave",
    "Index (1-based) of the wave a ModelDeployment is rolling out; 0 before the first.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ROLLOUT_DEGRADED = Gauge(
    "edgeferry_rollout_degraded",
    "1 while the ModelDeployment is Degraded (a wave failed and was rolled back), else 0.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ROLLOUT_STALLED = Gauge(
    "edgeferry_rollout_stalled",
    "1 while the ModelDeployment is Stalled (kstatus) or waits on Blocked image, else 0.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ROLLOUT_BLOCKED_TARGETS = Gauge(
    "edgeferry_rollout_blocked_targets",
    "Targets of a ModelDeployment still running a digest the gate blocked after admission (a new "
    "advisory): onBlocked Keep, or no earlier release to roll back to.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "edgeferry_rollbacks_total",
    "Targets rolled back to their previous digest.",
    ["namespace", "name"],
    registry=REGISTRY,
)
TIME_TO_READY = Histogram(
    "edgeferry_rollout_time_to_ready_seconds",
    "From a new digest's first write to a target until that target is Ready.",
    ["namespace", "name"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)

TARGET_WATCHES = Gauge(
    "edgeferry_target_watches",
    "Watches open at target clusters (two per watched EdgeTarget: Deployments and Pods).",
    registry=REGISTRY,
)
TARGET_WATCH_RECONNECTS = Counter(
    "edgeferry_target_watch_reconnects_total",
    "Watches at target clusters that were lost and are reopened, by reason (error: the "
    "connection or the API server failed; gone: 410, relisted).",
    ["reason"],
    registry=REGISTRY,
)

# --- Operator health ----------------------------------------------------------------------------
RECONCILES = Counter(
    "edgeferry_reconciles_total",
    "Reconciles run, by resource kind and outcome (succeeded, failed, retried).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "edgeferry_reconcile_duration_seconds",
    "Wall time of one reconcile, by resource kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)


def forget(namespace: str, name: str, *families: MetricWrapperBase) -> None:
    """Drop every series of one resource from these families (after its deletion).

    Dashboards and alerts would otherwise show a deleted object forever. Goes through
    prometheus_client's public `remove_by_labels`, never its private `_metrics` map.
    """
    for family in families:
        family.remove_by_labels({"namespace": namespace, "name": name})
