"""Typed view of the ModelDeployment resource: which image runs where, and how it gets there.

The spec names a ModelImage (rolled out by the digest the gate admitted, never by tag), a label
selector over EdgeTargets, a small pod template and the rollout strategy. The template is a
deliberate subset of a Pod spec: what a model server needs (replicas, one port, resources, env,
probes, extra labels and annotations). Everything that makes a workload safe (non-root, read-only
root filesystem, digest-pinned image, node architecture) is decided by edgeferry and cannot be
overridden here; a user who needs more writes their own Deployment.

The status is a summary a person reads with `kubectl get` and a tool reads with kstatus. It stays
bounded: counts per phase are always complete, per-target detail is capped (not-ready targets
first). The per-target memory a rollout needs to resume (what ran before, when the deadline
started, whether a target was rolled back) lives on each target's Deployment as `edgeferry.io/`
annotations, not here, so it scales with the fleet and survives a restart of the operator.

Defaults here equal the CRD's defaults (`crds/modeldeployment.yaml`); a unit test compares them.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

import pydantic
from pydantic import alias_generators

from edgeferry.models import timestamps, wire

TargetPhase = Literal[
    "Pending", "Progressing", "Ready", "Failed", "RolledBack", "Deferred", "Incompatible"
]
"""Where one target stands with respect to the digest being rolled out."""

TARGET_PHASES: tuple[TargetPhase, ...] = (
    "Pending",
    "Progressing",
    "Ready",
    "Failed",
    "RolledBack",
    "Deferred",
    "Incompatible",
)

DeploymentPhase = Literal["Blocked", "Progressing", "Ready", "Degraded", "Paused"]
"""The one-word story of a ModelDeployment, shown by `kubectl get md`."""

ClusterType = Literal["Cloud", "K3s", "Agent"]

OnBlocked = Literal["Keep", "RollBack"]
"""What targets already running a digest do when the gate blocks it after admission."""

_PERCENT = re.compile(r"^([1-9][0-9]?|100)%$")

DEFAULT_REPLICAS = 1
DEFAULT_PORT = 8080
DEFAULT_CANARY = 1
DEFAULT_MAX_PER_WAVE = "50%"
DEFAULT_MIN_READY_SECONDS = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 120
DEFAULT_MAX_FAILURES = 0
DEFAULT_OFFLINE_GRACE_SECONDS = 60
DEFAULT_PRE_PULL_DEADLINE_SECONDS = 600
DEFAULT_PRE_PULL_MAX_CONCURRENT_NODES = 10


Timestamp = Annotated[
    datetime.datetime,
    pydantic.AfterValidator(
        lambda v: v if v.tzinfo is not None else v.replace(tzinfo=datetime.UTC)
    ),
    pydantic.PlainSerializer(timestamps.format_rfc3339, return_type=str, when_used="json"),
]
"""A point in time; naive values are read as UTC; written as Kubernetes writes them."""


# --- spec ----------------------------------------------------------------------------------------
class ImageRef(wire.Model):
    """A ModelImage in the ModelDeployment's namespace."""

    name: str


class LabelSelectorRequirement(wire.Model):
    """One `matchExpressions` entry of a Kubernetes label selector."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: `NotIn` and `DoesNotExist` match objects without the key."""
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


class LabelSelector(wire.Model):
    """A Kubernetes label selector over EdgeTarget labels."""

    match_labels: dict[str, str] = pydantic.Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @pydantic.model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.match_labels and not self.match_expressions:
            raise ValueError("targets.selector must not be empty (it would select every target)")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels is selected (all terms must hold)."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


class TargetSelection(wire.Model):
    """Which EdgeTargets (in the same namespace) the model goes to."""

    selector: LabelSelector


class EnvVar(wire.Model):
    """An environment variable of the model container: a literal value or a `valueFrom` source."""

    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None

    def to_manifest(self) -> dict[str, Any]:
        """The variable as the container spec wants it."""
        out: dict[str, Any] = {"name": self.name}
        if self.value_from is not None:
            out["valueFrom"] = self.value_from
        else:
            out["value"] = self.value or ""
        return out


Quantity = int | str


class Resources(wire.Model):
    """Requests and limits of the model container (Kubernetes quantities)."""

    requests: dict[str, Quantity] = pydantic.Field(default_factory=dict)
    limits: dict[str, Quantity] = pydantic.Field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """The resources block, unset halves left out."""
        out: dict[str, Any] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


class HttpGetAction(wire.Model):
    """Probe by HTTP GET; `port` defaults to the model's port."""

    path: str = "/"
    port: int | str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"


class TcpSocketAction(wire.Model):
    """Probe by opening a TCP connection; `port` defaults to the model's port."""

    port: int | str | None = None


class ExecAction(wire.Model):
    """Probe by running a command in the container."""

    command: tuple[str, ...]


class GrpcAction(wire.Model):
    """Probe by the gRPC health checking protocol."""

    port: int
    service: str | None = None


class Probe(wire.Model):
    """A readiness or liveness probe: exactly one handler, plus the usual timings."""

    http_get: HttpGetAction | None = None
    tcp_socket: TcpSocketAction | None = None
    exec: ExecAction | None = None
    grpc: GrpcAction | None = None
    initial_delay_seconds: int | None = None
    period_seconds: int | None = None
    timeout_seconds: int | None = None
    success_threshold: int | None = None
    failure_threshold: int | None = None

    @pydantic.model_validator(mode="after")
    def _one_handler(self) -> Self:
        handlers = [self.http_get, self.tcp_socket, self.exec, self.grpc]
        if sum(h is not None for h in handlers) != 1:
            raise ValueError("a probe needs exactly one of httpGet, tcpSocket, exec, grpc")
        return self

    def to_manifest(self, *, default_port: int | str) -> dict[str, Any]:
        """The probe as the container spec wants it, with the model's port filled in."""
        out = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for handler in ("httpGet", "tcpSocket"):
            if handler in out and "port" not in out[handler]:
                out[handler]["port"] = default_port
        return out


class PodTemplate(wire.Model):
    """What runs at each target."""

    replicas: int = pydantic.Field(default=DEFAULT_REPLICAS, ge=1, le=1000)
    port: int = pydantic.Field(default=DEFAULT_PORT, ge=1, le=65535)
    resources: Resources = pydantic.Field(default_factory=Resources)
    env: tuple[EnvVar, ...] = ()
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)


MaxPerWave = int | str

DEFAULT_ANALYSIS_INTERVAL_SECONDS = 60
DEFAULT_ANALYSIS_COUNT = 5
DEFAULT_ANALYSIS_FAILURE_LIMIT = 0
DEFAULT_ANALYSIS_INCONCLUSIVE_LIMIT = 2

QUERY_PLACEHOLDERS = ("target", "namespace", "name", "digest", "wave")
"""What `{{ ... }}` in an analysis query may name (see `decisions.analysis.render`)."""

QUERY_PATTERN = r"^([^{]|\{[^{]|\{$|\{\{ *(" + "|".join(QUERY_PLACEHOLDERS) + r") *\}\})*$"
"""A query whose every `{{` opens a known placeholder; the CRD's CEL rule holds the same."""

_QUERY = re.compile(QUERY_PATTERN)
QUERY_PLACEHOLDER = re.compile(r"\{\{ *(" + "|".join(QUERY_PLACEHOLDERS) + r") *\}\}")
"""One placeholder in a query; group 1 is its name."""
_METRIC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SuccessCondition(wire.Model):
    """The range a measured value must fall in (Flagger's `thresholdRange`): `min`, `max` or
    both, inclusive."""

    min: float | None = None
    max: float | None = None

    @pydantic.model_validator(mode="after")
    def _bounded(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("successCondition needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("successCondition.min must not be greater than max")
        return self

    def holds(self, value: float) -> bool:
        """Whether `value` passes (inclusive bounds)."""
        low = self.min is None or value >= self.min
        return low and (self.max is None or value <= self.max)

    def describe(self) -> str:
        """The condition in words for messages, e.g. `<= 0.05` or `0.9..1`."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        return f"<= {self.max:g}"


class AnalysisMetric(wire.Model):
    """One Prometheus query measured at each target of a wave, and the range it must stay in."""

    name: str = pydantic.Field(min_length=1, max_length=63)
    query: str = pydantic.Field(min_length=1, max_length=4096)
    success_condition: SuccessCondition

    @pydantic.field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _METRIC_NAME.match(value):
            raise ValueError("analysis metric names are DNS labels (a-z, 0-9, '-')")
        return value

    @pydantic.field_validator("query")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        if not _QUERY.match(value):
            names = ", ".join("{{ " + n + " }}" for n in QUERY_PLACEHOLDERS)
            raise ValueError(f"an analysis query may only use the placeholders {names}")
        return value


class Analysis(wire.Model):
    """Metric analysis of each target of a wave, after it is Available (Argo Rollouts'
    AnalysisTemplate, Flagger's metric checks): `count` measurements `intervalSeconds` apart."""

    metrics: tuple[AnalysisMetric, ...] = pydantic.Field(min_length=1, max_length=10)
    interval_seconds: int = pydantic.Field(default=DEFAULT_ANALYSIS_INTERVAL_SECONDS, ge=1, le=3600)
    count: int = pydantic.Field(default=DEFAULT_ANALYSIS_COUNT, ge=1, le=100)
    failure_limit: int = pydantic.Field(default=DEFAULT_ANALYSIS_FAILURE_LIMIT, ge=0, le=100)
    inconclusive_limit: int = pydantic.Field(
        default=DEFAULT_ANALYSIS_INCONCLUSIVE_LIMIT, ge=0, le=100
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("analysis metric names must be unique")
        if self.failure_limit >= self.count:
            raise ValueError("analysis.failureLimit must be less than count")
        return self


class PrePull(wire.Model):
    """Pull the new digest onto the target's nodes before its Deployment is switched."""

    enabled: bool = False
    """Off by default: it costs a DaemonSet per target and wave (and the right to write one
    there), and on nodes that have the image already it only adds a round trip."""
    deadline_seconds: int = pydantic.Field(
        default=DEFAULT_PRE_PULL_DEADLINE_SECONDS, ge=10, le=86400
    )
    """How long every node may take to pull; past it the target is Failed, nothing switched."""
    max_concurrent_nodes: int = pydantic.Field(
        default=DEFAULT_PRE_PULL_MAX_CONCURRENT_NODES, ge=1, le=1000
    )
    """How many of a target's nodes pull at a time: a site behind one thin link (or one registry
    mirror) should not have every node fetch the model at once."""


class RolloutStrategy(wire.Model):
    """How a new digest travels: a canary wave, then waves of at most `maxPerWave` targets,
    each gated on health, soak and (when set) metric analysis."""

    canary: int = pydantic.Field(default=DEFAULT_CANARY, ge=0, le=1000)
    max_per_wave: MaxPerWave = DEFAULT_MAX_PER_WAVE
    min_ready_seconds: int = pydantic.Field(default=DEFAULT_MIN_READY_SECONDS, ge=0, le=3600)
    progress_deadline_seconds: int = pydantic.Field(
        default=DEFAULT_PROGRESS_DEADLINE_SECONDS, ge=1, le=86400
    )
    max_failures: int = pydantic.Field(default=DEFAULT_MAX_FAILURES, ge=0, le=1000)
    paused: bool = False
    auto_rollback: bool = True
    offline_grace_seconds: int = pydantic.Field(
        default=DEFAULT_OFFLINE_GRACE_SECONDS, ge=0, le=86400
    )
    analysis: Analysis | None = None
    """Metric analysis a target must pass, besides health and soak, to count Ready."""
    pre_pull: PrePull = pydantic.Field(default_factory=PrePull)
    """Pull the new digest onto a push target's nodes before switching its Deployment."""

    @pydantic.field_validator("max_per_wave")
    @classmethod
    def _int_or_percent(cls, value: MaxPerWave) -> MaxPerWave:
        if isinstance(value, bool):
            raise ValueError("maxPerWave must be an integer or a percentage")
        if isinstance(value, int):
            if value < 1:
                raise ValueError("maxPerWave must be at least 1")
            return value
        if not _PERCENT.match(value):
            raise ValueError('maxPerWave must be an integer >= 1 or a percentage "1%".."100%"')
        return value

    @pydantic.model_validator(mode="after")
    def _deadline_after_min_ready(self) -> Self:
        if self.progress_deadline_seconds <= self.min_ready_seconds:
            raise ValueError("progressDeadlineSeconds must be greater than minReadySeconds")
        return self


class ModelDeploymentSpec(wire.Model):
    """What the user declares."""

    image_ref: ImageRef
    targets: TargetSelection
    template: PodTemplate = pydantic.Field(default_factory=PodTemplate)
    rollout: RolloutStrategy = pydantic.Field(default_factory=RolloutStrategy)
    on_blocked: OnBlocked = "Keep"
    """Targets running a digest the gate blocks after admission (a new advisory): `Keep` it
    (a Warning and an alert), or `RollBack` to the release that ran there before it."""


# --- status --------------------------------------------------------------------------------------
class TargetStatus(wire.Model):
    """One target's line in `.status.targets`."""

    name: str
    cluster_type: ClusterType | None = None
    phase: TargetPhase
    digest: str | None = None
    previous_digest: str | None = None
    template_hash: str | None = None
    ready_replicas: int = 0
    wave: int | None = None
    available_since: Timestamp | None = None
    last_transition_time: Timestamp | None = None
    message: str | None = None
    last_error: str | None = None


MAX_ANALYSIS_TALLIES = 100
"""Entries of `status.analysis` at most (the CRD's `maxItems`): one per metric and target being
analysed, so the status stays small whatever `count` says."""


class AnalysisTally(wire.Model):
    """What the measurements of one metric at one target's release came to so far: enough to
    go on with the analysis after an operator restart (`decisions.analysis.add`), a fixed size
    however many measurements were taken."""

    target: str = pydantic.Field(max_length=253)
    metric: str = pydantic.Field(max_length=63)
    digest: str = pydantic.Field(max_length=512)
    template_hash: str | None = pydantic.Field(default=None, max_length=64)
    passed: int = pydantic.Field(default=0, ge=0)
    """Values within the metric's successCondition."""
    failed: int = pydantic.Field(default=0, ge=0)
    """Values outside it."""
    inconclusive: int = pydantic.Field(default=0, ge=0)
    """Measurements without a value."""
    last_at: Timestamp
    """When the last measurement was taken."""
    last_value: float | None = None
    """The last measurement's value (None: it had none)."""
    failed_value: float | None = None
    """The last value outside the condition."""
    failed_query: str | None = pydantic.Field(default=None, max_length=4096)
    """The query as sent that gave `failed_value`."""
    inconclusive_error: str | None = pydantic.Field(default=None, max_length=1024)
    """Why the last inconclusive measurement had no value."""
    inconclusive_query: str | None = pydantic.Field(default=None, max_length=4096)
    """The query as sent that gave no value."""


class PhaseCounts(wire.Model):
    """How many selected targets are in each phase; always complete, whatever the list shows."""

    total: int = 0
    pending: int = 0
    progressing: int = 0
    ready: int = 0
    failed: int = 0
    rolled_back: int = 0
    deferred: int = 0
    incompatible: int = 0
    serving: int = 0
    """Targets with at least one ready Pod of our Deployment, whatever release they run: after
    a rollback `ready` counts 0 on the new digest while these still serve the previous one."""

    def of(self, phase: TargetPhase) -> int:
        """The count for one phase, by its name in `TargetPhase`."""
        return int(getattr(self, alias_generators.to_snake(phase)))


class ModelDeploymentStatus(wire.Model):
    """The summary written to `.status`."""

    observed_generation: int | None = None
    phase: DeploymentPhase | None = None
    digest: str | None = None
    template_hash: str | None = None
    current_wave: int = 0
    total_waves: int = 0
    counts: PhaseCounts = pydantic.Field(default_factory=PhaseCounts)
    targets: tuple[TargetStatus, ...] = ()
    targets_not_listed: int = 0
    analysis: tuple[AnalysisTally, ...] = ()
    """The metric analysis under way (`decisions.analysis.kept`), so a restart goes on with it."""
    message: str | None = None
    conditions: tuple[dict[str, Any], ...] = ()

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def ready_targets(self) -> str:
        """`ready/total` for the printer column."""
        return f"{self.counts.ready}/{self.counts.total}"

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def serving_targets(self) -> str:
        """`serving/total` for the printer column: up, whatever release (`ready_targets`
        counts only the release being rolled out)."""
        return f"{self.counts.serving}/{self.counts.total}"

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def wave(self) -> str:
        """`current/total` for the printer column."""
        return f"{self.current_wave}/{self.total_waves}"


parse_spec = ModelDeploymentSpec.from_wire
"""Load `.spec` of a ModelDeployment body (a mapping from Kopf or the API)."""


parse_status = ModelDeploymentStatus.from_wire
"""Load `.status` of a ModelDeployment body; a missing status reads as a fresh one."""
