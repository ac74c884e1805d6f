"""Typed views of a ModelImage's spec and status (pydantic v2, camelCase on the wire).

Handlers get raw dicts from Kopf; everything below them works on these models, so a misspelt
field is a type error, not a silent `None`. The API server already validated the spec against the
CRD (`crds/modelimage.yaml`); the models repeat the invariants that matter to the operator anyway,
so a spec that slipped past (an older CRD, a unit test) fails loudly at parse time instead of
half-way through a build. Defaults here equal the CRD's defaults (a unit test compares them).

Status is written with JSON merge patches, which merge nested objects key by key. `to_patch()`
therefore spells out every field, unset ones as `null`, so a section that was cleared (say, the
image of an earlier run) really disappears on the server instead of surviving next to new values.

Longer than our ~400-line guide on purpose: it is one resource's whole wire schema, spec and
status side by side, mirroring `crds/modelimage.yaml` section by section, so the CRD-versus-model
tests and a reader compare one file with one file.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import pydantic

from edgeferry.models import conditions as status_conditions
from edgeferry.models import reasons, timestamps, wire

Severity = Literal["negligible", "low", "medium", "high", "critical"]
"""Vulnerability severities a policy can name, least severe first."""

LintLevel = Literal["error", "warning", "info", "style"]
"""hadolint's finding levels, most severe first."""

LintThreshold = Literal["error", "warning", "info", "style", "none"]
"""Lowest hadolint level that fails the lint stage; `none` never fails."""

Platform = Literal["linux/amd64", "linux/arm64"]
DEFAULT_PLATFORM: Platform = "linux/amd64"
"""What a ModelImage that names no platform is built for."""
Phase = Literal[
    "Pending",
    "Linting",
    "Building",
    "SmokeTesting",
    "Scanning",
    "Pushing",
    "Ready",
    "Blocked",
    "Failed",
]
SmokeTestResult = Literal["Passed", "Failed", "Skipped"]

STAGE_CONDITIONS = (
    reasons.LINTED,
    reasons.BUILT,
    reasons.SMOKE_TESTED,
    reasons.SCANNED,
    reasons.ADMITTED,
    reasons.PUSHED,
)
"""Condition types that describe one run of the pipeline (cleared when the inputs change)."""

SUMMARY_CONDITIONS = (reasons.READY, reasons.RECONCILING, reasons.STALLED)
"""kstatus-style conditions that summarise the resource as a whole."""

# The same patterns the CRD's CEL rules use (RE2 there, Python re here; both plain subsets).
SHA256_HEX = r"^[a-f0-9]{64}$"
PINNED_IMAGE = r"^[^@ ]+@sha256:[a-f0-9]{64}$"
DOCKER_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DURATION = r"^([0-9]+[hms])+$"
REGISTRY_HOST = (
    r"^([A-Za-z0-9-]+([.][A-Za-z0-9-]+)+(:[0-9]+)?|localhost(:[0-9]+)?|[A-Za-z0-9-]+:[0-9]+)/"
)
REPOSITORY_PATH = r"^[^/]+(/[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*)+$"
LINT_RULE = r"^(DL|SC)[0-9]{4}$"

MIN_RESCAN_INTERVAL = datetime.timedelta(minutes=1)
_DURATION_PART = re.compile(r"([0-9]+)([hms])")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> datetime.timedelta:
    """`24h`, `30m`, `1h30m`, `90s` as a timedelta (Go's units h/m/s, no days: `168h` is a week)."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"{text!r} is not a duration like 24h, 30m or 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return datetime.timedelta(seconds=seconds)


short_digest = timestamps.short_digest
"""Kept as a name of this module: status printer columns and messages use it."""


# --- spec -------------------------------------------------------------------------------------


class ConfigMapKeySelector(wire.Model):
    """One key of a ConfigMap in the ModelImage's namespace."""

    name: str
    key: str


MODEL_FILE_NAME = r"^[-._a-zA-Z0-9]+$"
"""A file name in the build context's `model/` folder (the ConfigMap key rule)."""
OCI_DIGEST = r"^sha256:[a-f0-9]{64}$"
HTTP_URL = r"^https?://[^/?# ]+[^ ]*$"
DEFAULT_MODEL_FILE = "model"
"""Name of a model file in `model/` when an `oci` or `http` source names none."""


def _model_file_name(value: str) -> str:
    if not re.fullmatch(MODEL_FILE_NAME, value) or value in {".", ".."}:
        raise ValueError("fileName must be a file name: letters, digits, '-', '_' and '.'")
    return value


class OciModelSource(wire.Model):
    """A model stored as an OCI artifact (one layer), pulled by manifest digest.

    The way KServe modelcars and Docker Model Runner keep models: a registry already serves
    large blobs with auth, mirrors and garbage collection, which etcd cannot.
    """

    repository: str
    digest: Annotated[str, pydantic.StringConstraints(pattern=OCI_DIGEST)]
    """The artifact's manifest digest: a tag could move under the pinned sha256."""
    credentials_secret: str | None = None
    file_name: str = DEFAULT_MODEL_FILE

    @pydantic.field_validator("repository")
    @classmethod
    def _has_host(cls, value: str) -> str:
        if not re.match(REGISTRY_HOST, value) or "@" in value:
            raise ValueError(
                "model.source.oci.repository must be host[:port]/path, without tag or digest"
            )
        return value

    _file_name = pydantic.field_validator("file_name")(_model_file_name)


class HttpModelSource(wire.Model):
    """A model file at an HTTP(S) URL; TLS is verified, against `ca_bundle` when given."""

    url: Annotated[str, pydantic.StringConstraints(pattern=HTTP_URL, max_length=2048)]
    ca_bundle: str | None = None
    """PEM certificates the server's chain must lead to (instead of the system's roots)."""
    credentials_secret: str | None = None
    """A Secret with `token` (sent as a bearer token) or `username` and `password` (basic)."""
    file_name: str = DEFAULT_MODEL_FILE

    _file_name = pydantic.field_validator("file_name")(_model_file_name)


class ModelSource(wire.Model):
    """Where the model artifact comes from: exactly one of a ConfigMap (up to 1 MiB), an OCI
    artifact or an HTTP(S) URL."""

    config_map: ConfigMapKeySelector | None = None
    oci: OciModelSource | None = None
    http: HttpModelSource | None = None

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if sum(s is not None for s in (self.config_map, self.oci, self.http)) != 1:
            raise ValueError("set exactly one of model.source.configMap, oci or http")
        return self

    @property
    def file_name(self) -> str:
        """The model's file name in the build context's `model/` folder."""
        if self.config_map is not None:
            return self.config_map.key
        remote = self.oci or self.http
        assert remote is not None
        return remote.file_name


class ModelArtifact(wire.Model):
    """The model file the image serves, and the digest it must have."""

    format: Literal["sklearn", "onnx", "custom"]
    source: ModelSource
    sha256: Annotated[str, pydantic.StringConstraints(pattern=SHA256_HEX)]


TemplateName = Literal["sklearn-http", "onnx-http"]
TEMPLATE_FORMATS: dict[str, str] = {"sklearn-http": "sklearn", "onnx-http": "onnx"}
"""The `model.format` each runtime template serves (the CRD's CEL rule says the same)."""


class RuntimeTemplate(wire.Model):
    """Generate the Dockerfile from one of the operator's runtime templates."""

    template: TemplateName
    base_image: Annotated[str, pydantic.StringConstraints(pattern=PINNED_IMAGE)]
    python_path: Annotated[str, pydantic.StringConstraints(pattern=r"^/")] = "/usr/bin/python3"


class ConfigMapReference(wire.Model):
    """A whole ConfigMap in the ModelImage's namespace."""

    name: str


class ContextSource(wire.Model):
    """Extra build-context files: each key of the ConfigMap becomes a file of that name."""

    config_map: ConfigMapReference


class Build(wire.Model):
    """How the image is built: an inline Dockerfile XOR a runtime template."""

    dockerfile: Annotated[str, pydantic.StringConstraints(min_length=1)] | None = None
    runtime: RuntimeTemplate | None = None
    context_from: list[ContextSource] = []
    args: dict[str, str] = {}
    labels: dict[str, str] = {}
    platform: Platform | None = None
    """One platform (the field older resources use); see `target_platforms`."""
    platforms: Annotated[list[Platform], pydantic.Field(min_length=1, max_length=2)] | None = None
    """Several platforms, pushed as one OCI image index; not together with `platform`."""
    timeout_seconds: Annotated[int, pydantic.Field(ge=30, le=7200)] = 900

    @pydantic.model_validator(mode="after")
    def _exactly_one_source(self) -> Build:
        if (self.dockerfile is None) == (self.runtime is None):
            raise ValueError("set exactly one of build.dockerfile or build.runtime")
        if self.context_from and self.dockerfile is None:
            raise ValueError("build.contextFrom is only used with an inline build.dockerfile")
        if any(key.startswith("edgeferry.io/") for key in self.labels):
            raise ValueError("labels under edgeferry.io/ are set by the operator")
        if self.platform is not None and self.platforms is not None:
            raise ValueError("set build.platform or build.platforms, not both")
        if self.platforms is not None and len(set(self.platforms)) != len(self.platforms):
            raise ValueError("build.platforms must not repeat a platform")
        return self

    @property
    def target_platforms(self) -> tuple[Platform, ...]:
        """Every platform to build, first one first; `linux/amd64` when neither field is set.

        The first platform is the one `status.image.id/size/layers/platform` describe.
        """
        if self.platforms is not None:
            return tuple(self.platforms)
        return (self.platform or DEFAULT_PLATFORM,)


class PredictRequest(wire.Model):
    """One prediction request the smoke test sends once the server is healthy."""

    path: Annotated[str, pydantic.StringConstraints(pattern=r"^/")] = "/predict"
    body: str
    """A JSON document, sent as `application/json`."""


class SmokeTest(wire.Model):
    """Run the built image before admission: health endpoint, then one prediction."""

    enabled: bool = True
    port: Annotated[int, pydantic.Field(ge=1, le=65535)] = 8080
    health_path: Annotated[str, pydantic.StringConstraints(pattern=r"^/")] = "/healthz"
    predict: PredictRequest | None = None
    timeout_seconds: Annotated[int, pydantic.Field(ge=5, le=600)] = 60


class Lint(wire.Model):
    """hadolint policy."""

    failure_threshold: LintThreshold = "error"
    ignore: list[Annotated[str, pydantic.StringConstraints(pattern=LINT_RULE)]] = []


class ScanException(wire.Model):
    """An accepted finding: which, why, and until when (the expiry day no longer applies)."""

    id: str
    reason: Annotated[str, pydantic.StringConstraints(pattern=r"[A-Za-z0-9]")]
    expires: datetime.date

    def active_on(self, today: datetime.date) -> bool:
        """Whether the exception still applies: up to, not including, its expiry date (UTC)."""
        return today < self.expires


class Scan(wire.Model):
    """Vulnerability policy: what blocks admission, what is accepted, how often to rescan."""

    fail_on: Severity = "high"
    only_fixed: bool = False
    exceptions: list[ScanException] = []
    rescan_interval: str = "24h"

    @pydantic.field_validator("rescan_interval")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        if parse_duration(value) < MIN_RESCAN_INTERVAL:
            raise ValueError("scan.rescanInterval must be at least 1m")
        return value

    @pydantic.field_validator("exceptions")
    @classmethod
    def _unique_ids(cls, value: list[ScanException]) -> list[ScanException]:
        ids = [exception.id for exception in value]
        if len(set(ids)) != len(ids):
            raise ValueError("scan.exceptions ids must be unique")
        return value

    @property
    def rescan_every(self) -> datetime.timedelta:
        """`rescan_interval` as a timedelta."""
        return parse_duration(self.rescan_interval)


class Push(wire.Model):
    """Where an admitted image goes."""

    repository: str
    tags: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=DOCKER_TAG)]],
        pydantic.Field(min_length=1, max_length=16),
    ]
    credentials_secret: str | None = None

    @pydantic.field_validator("repository")
    @classmethod
    def _has_host_and_no_reference(cls, value: str) -> str:
        if not re.match(REGISTRY_HOST, value):
            raise ValueError("push.repository must start with a registry host (host[:port]/path)")
        if "@" in value or ":" in value.split("/", 1)[1]:
            raise ValueError("push.repository must not include a tag or digest")
        if not re.fullmatch(REPOSITORY_PATH, value):
            raise ValueError("push.repository path must be lowercase components like models/iris")
        return value


class ModelImageSpec(wire.Model):
    """What to build, the rules it must pass, and where it goes."""

    model: ModelArtifact
    build: Build
    smoke_test: SmokeTest = SmokeTest()
    lint: Lint = Lint()
    scan: Scan = Scan()
    push: Push

    @pydantic.model_validator(mode="after")
    def _runtime_fits_model(self) -> ModelImageSpec:
        runtime = self.build.runtime
        if runtime is not None and self.model.format != TEMPLATE_FORMATS[runtime.template]:
            wanted = TEMPLATE_FORMATS[runtime.template]
            raise ValueError(f"runtime template {runtime.template} serves model.format {wanted}")
        return self


parse_spec = ModelImageSpec.from_wire
"""The typed spec of a raw Kopf spec dict; raises `pydantic.ValidationError` when invalid."""


# --- status -----------------------------------------------------------------------------------


class StatusCondition(wire.Model):
    """One condition as stored in status (see `edgeferry.models.conditions`)."""

    type: str
    status: status_conditions.ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class LintFinding(wire.Model):
    """One hadolint finding, as shown in status."""

    rule: str
    line: int
    level: LintLevel
    message: str


class LintStatus(wire.Model):
    """hadolint's counts per level (ignored rules excluded) and the worst findings (max 10)."""

    errors: int = 0
    warnings: int = 0
    infos: int = 0
    styles: int = 0
    findings: list[LintFinding] = []


class PlatformImage(wire.Model):
    """One platform's image of this run: the local build, and its manifest once pushed."""

    platform: str
    id: str
    size: int | None = None
    layers: int | None = None
    digest: str | None = None
    """That platform's manifest digest in the registry (a child of the index when several)."""


class ImageStatus(wire.Model):
    """The image(s) this run built; registry fields appear once pushed.

    `id`, `size`, `layers` and `platform` describe the first platform of `platforms` (so
    single-platform tools and printer columns keep working); `digest` is what deployments pull:
    the manifest for one platform, the OCI image index for several.
    """

    id: str | None = None
    repository: str | None = None
    tags: list[str] = []
    digest: str | None = None
    size: int | None = None
    layers: int | None = None
    platform: str | None = None
    platforms: list[PlatformImage] = []

    @property
    def platform_images(self) -> tuple[PlatformImage, ...]:
        """Every platform's image; a status written before `platforms` existed has only `id`."""
        if self.platforms:
            return tuple(self.platforms)
        if self.id:
            platform = self.platform or DEFAULT_PLATFORM
            return (
                PlatformImage(platform=platform, id=self.id, size=self.size, layers=self.layers),
            )
        return ()

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Local image ids of every platform, in spec order."""
        return tuple(p.id for p in self.platform_images)

    @pydantic.computed_field(alias="shortDigest")  # type: ignore[prop-decorator]
    @property
    def short_digest(self) -> str | None:
        """12 hex characters of the pushed digest, for `kubectl get`."""
        return short_digest(self.digest)

    @pydantic.computed_field(alias="reference")  # type: ignore[prop-decorator]
    @property
    def reference(self) -> str | None:
        """`repository@sha256:...`: the only way deployments refer to this image."""
        if self.repository and self.digest:
            return f"{self.repository}@{self.digest}"
        return None


class SmokeTestStatus(wire.Model):
    """Outcome of running the image once before admission."""

    result: SmokeTestResult | None = None
    health_latency_ms: float | None = None
    prediction_latency_ms: float | None = None
    prediction: str | None = None
    message: str | None = None


class SeverityCounts(wire.Model):
    """Findings per severity, before exceptions and policy (what the scanner saw)."""

    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    negligible: int = 0
    unknown: int = 0


class BlockingFinding(wire.Model):
    """A finding that keeps the image from being admitted."""

    id: str
    severity: Severity | Literal["unknown"]
    package: str
    installed: str
    fixed_in: str | None = None
    exception_expired: datetime.date | None = None
    """Set when an exception for this finding existed but expired on that date."""


class ScanStatus(wire.Model):
    """The last scan of this run's image and the gate's verdict on it."""

    syft_version: str | None = None
    grype_version: str | None = None
    db_built: datetime.datetime | None = None
    db_checksum: str | None = None
    scanned_at: datetime.datetime | None = None
    image_id: str | None = None
    """The first platform's image id (see `image_ids`)."""
    image_ids: list[str] = []
    """Every image the scan covered, one per platform; findings are their deduplicated union."""
    platforms: list[str] = []
    """The platforms of `image_ids`."""

    @property
    def scanned_ids(self) -> tuple[str, ...]:
        """The images this scan covered; a scan recorded before `imageIds` existed has one."""
        if self.image_ids:
            return tuple(self.image_ids)
        return (self.image_id,) if self.image_id else ()

    counts: SeverityCounts = SeverityCounts()
    blocking: list[BlockingFinding] = []
    blocking_total: int = 0
    excepted: list[ScanException] = []
    expired_exceptions: list[str] = []


class StageInputs(wire.Model):
    """Digests of what each stage last ran with, so a spec change re-runs only what it affects."""

    lint: str | None = None
    smoke_test: str | None = None
    scan: str | None = None
    push: str | None = None


class RetryStatus(wire.Model):
    """A stage that failed for a reason that passes (registry, Docker or scanner trouble).

    Kept in status, not in memory, so the backoff survives an operator restart and a person
    sees when the next attempt comes (`kubectl get mi -o yaml`).
    """

    stage: str
    """The pipeline step to run again (`Build`, `Pull`, `SmokeTest`, `Scan`, `Rescan`, `Push`)."""
    attempt: int = pydantic.Field(ge=1)
    """Failed attempts so far, in a row."""
    not_before: datetime.datetime
    """The next attempt runs at or after this time."""
    generation: int
    """The spec generation it failed for; a spec edit retries at once."""


class ModelImageStatus(wire.Model):
    """Everything the operator knows about a ModelImage; the only state that survives restarts."""

    observed_generation: int | None = None
    phase: Phase | None = None
    inputs_digest: str | None = None
    conditions: list[StatusCondition] = []
    lint: LintStatus | None = None
    image: ImageStatus | None = None
    smoke_test: SmokeTestStatus | None = None
    scan: ScanStatus | None = None
    stage_inputs: StageInputs = StageInputs()
    retry: RetryStatus | None = None

    def condition(self, type_: str) -> StatusCondition | None:
        """The condition of that type, if any."""
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None

    def with_conditions(
        self,
        updates: Iterable[status_conditions.Condition],
        *,
        generation: int | None,
        now: str | None = None,
    ) -> ModelImageStatus:
        """A copy with `updates` merged in (transition times move only on a real flip)."""
        merged = status_conditions.merge(
            [c.model_dump(by_alias=True, exclude_none=True) for c in self.conditions],
            updates,
            generation=generation,
            now=now,
        )
        return self.model_copy(
            update={"conditions": [StatusCondition.model_validate(c) for c in merged]}
        )

    def to_patch(self) -> dict[str, Any]:
        """The whole status for a merge patch, unset fields as `null` so stale ones are removed."""
        return self.model_dump(by_alias=True, mode="json")


parse_status = ModelImageStatus.from_wire
"""The typed status of a raw Kopf status dict (fields we do not own are ignored)."""
