"""Operator settings, read once from the environment at start-up.

Grouped by the part of the operator they steer, each field documented, so the Helm values, the
kustomize Deployment and `docs/` can name the same variables. Defaults are the safe production
choices (online grype DB updates, metrics on their own port); the testbed overrides what it must.
A value that cannot work (a zero deadline, a word where a number goes, zero parallel targets)
stops the start-up with `SettingsError` naming the variable, rather than surfacing later as a
hang, a busy loop or a silently different value. Paths are made absolute here, once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot run with."""


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a number; set seconds, e.g. {default:g}"
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise SettingsError(f"{name}={raw!r} must be a positive number of seconds")
    return value


def _count(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int,
    what: str,
    maximum: int | None = None,
) -> int:
    """A whole number in [`minimum`, `maximum`]; a value outside is refused, never clamped."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a whole number; set {what}, e.g. {default}"
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise SettingsError(f"{name}={raw!r} must be {bound} ({what})")
    return value


def _absolute(raw: str) -> Path:
    """A configured path made absolute against the start-up working directory, once.

    Adapters run tools in other working directories; a relative path kept as given would name a
    different place in each of them.
    """
    return Path(raw).expanduser().absolute()


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    docker_host: str
    """Docker Engine API endpoint (`DOCKER_HOST`), e.g. unix:///var/run/docker.sock or tcp://dind:2375."""
    workdir: Path
    """Scratch space for SBOMs and build contexts (`EDGEFERRY_WORKDIR`)."""
    insecure_registries: tuple[str, ...]
    """Registry hosts reached over plain HTTP (`EDGEFERRY_INSECURE_REGISTRIES`, comma-separated);
    loopback registries are always plain HTTP."""
    skip_emulated_smoke_tests: bool = False
    """Leave platforms the daemon would emulate out of the smoke test
    (`EDGEFERRY_SKIP_EMULATED_SMOKE_TESTS`, default off): for a daemon whose host has no
    qemu-user-static in binfmt_misc. Off, every platform of an image is smoke-tested."""
    model_cache_bytes: int = 20 * 2**30
    """Upper bound of the model cache under the workdir, in bytes
    (`EDGEFERRY_MODEL_CACHE_BYTES`, default 20 GiB); least recently used models go first."""
    model_fetch_timeout_seconds: float = 1800.0
    """Longest one model download may take (`EDGEFERRY_MODEL_FETCH_TIMEOUT_SECONDS`); a stalled
    or slower one is dropped and retried with backoff."""
    smoke_probe_image: str = "docker.io/library/busybox:1.36"
    """The image whose container makes the smoke test's HTTP checks from inside the tested
    container's network (`EDGEFERRY_SMOKE_PROBE_IMAGE`), so they work on any daemon, remote or
    dind; any BusyBox 1.31 or later. Pulled by the daemon when missing: mirror it for
    air-gapped installs and pin it by digest."""


@dataclasses.dataclass(frozen=True)
class ScanSettings:
    db_cache_dir: Path
    """Where grype keeps its vulnerability database (`GRYPE_DB_CACHE_DIR`)."""
    db_auto_update: bool
    """Let grype update its database before scans (`GRYPE_DB_AUTO_UPDATE`, default on);
    air-gapped installs and the tests turn it off and import a database instead."""
    db_validate_age: bool
    """Refuse a database older than grype's max age (`GRYPE_DB_VALIDATE_AGE`, default on)."""
    db_stale_after_seconds: int
    """Age past which the scan-DB-stale alert fires (`EDGEFERRY_SCAN_DB_STALE_SECONDS`). The
    operator exports it as `edgeferry_scan_db_stale_threshold_seconds` and the alert compares
    against that series, so the rule never holds a second copy of the number."""
    db_update_url: str | None = None
    """Where grype looks for database updates (`GRYPE_DB_UPDATE_URL`): a mirror's `latest.json`
    for clusters with their own DB host; unset keeps grype's default."""
    db_watch_seconds: int = 15
    """How often the one DB watch asks grype which database it has
    (`EDGEFERRY_SCAN_DB_WATCH_SECONDS`): a new or imported DB re-matches every admitted image's
    cached SBOM within this plus one reconcile."""
    db_update_seconds: int = 3600
    """With `db_auto_update`, how often the DB watch runs `grype db update`
    (`EDGEFERRY_SCAN_DB_UPDATE_SECONDS`), so a new DB arrives even while no image is scanned;
    the watch then sees it like any other change."""


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    max_parallel_targets: int
    """How many targets one reconcile talks to at once (`EDGEFERRY_MAX_PARALLEL_TARGETS`)."""
    target_timeout_seconds: float
    """Per-call timeout towards a target cluster (`EDGEFERRY_TARGET_TIMEOUT_SECONDS`): a dead
    site costs at most this, never the whole reconcile."""
    requeue_seconds: float
    """How often an unfinished rollout is looked at again (`EDGEFERRY_ROLLOUT_REQUEUE_SECONDS`)."""
    resync_seconds: float = 20.0
    """How often a settled rollout looks at its targets again (`EDGEFERRY_ROLLOUT_RESYNC_SECONDS`):
    remote Pods send the hub no events, so a crash or a hand edit at a site is only seen by
    looking."""
    watch_targets: bool = True
    """Watch our Deployments and Pods at push-mode targets (`EDGEFERRY_TARGET_WATCH`): a change
    there wakes its rollout at once, and a settled rollout whose targets are all watched looks
    again only every `watch_resync_seconds`. Off, rollouts poll every `resync_seconds`."""
    watch_resync_seconds: float = 600.0
    """The safety resync of a settled rollout whose targets are all watched
    (`EDGEFERRY_ROLLOUT_WATCH_RESYNC_SECONDS`): a full look at every target, in case a watch
    missed something."""
    cleanup_deadline_seconds: float = 120.0
    """How long deleting a ModelDeployment or an EdgeTarget retries unreachable targets before
    it lets the object go and reports what was left behind
    (`EDGEFERRY_CLEANUP_DEADLINE_SECONDS`)."""
    agent_cluster_role: str = "edgeferry-agent"
    """The ClusterRole the operator binds to each Agent target's ServiceAccount in that target's
    hub namespace (`EDGEFERRY_AGENT_CLUSTER_ROLE`): the Helm chart names it after its release,
    so two installs (or the chart beside the kustomize base) never claim one object."""
    allow_insecure_target_tls: bool = False
    """Accept `insecure-skip-tls-verify: true` in K3s kubeconfig Secrets
    (`EDGEFERRY_ALLOW_INSECURE_TARGET_TLS`, default off). Off, such a target is refused with the
    reason `InsecureTLSRefused`: whoever can write the Secret could otherwise point the operator,
    with the credentials in it, at any server that answers."""


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    prometheus_url: str | None = None
    """The Prometheus that `rollout.analysis` queries are sent to (`EDGEFERRY_PROMETHEUS_URL`,
    e.g. http://prometheus.monitoring:9090; its `/api/v1/query` is used). Unset: every analysis
    measurement is inconclusive, so a ModelDeployment with an analysis cannot pass it."""
    bearer_token_file: Path | None = None
    """A file holding a bearer token for Prometheus (`EDGEFERRY_PROMETHEUS_BEARER_TOKEN_FILE`;
    the chart mounts it from a Secret), read at each query so a rotated token is picked up."""
    username: str | None = None
    """Basic-auth user for Prometheus (`EDGEFERRY_PROMETHEUS_USERNAME`), with the password in
    `EDGEFERRY_PROMETHEUS_PASSWORD_FILE`."""
    password_file: Path | None = None
    """A file holding the basic-auth password (`EDGEFERRY_PROMETHEUS_PASSWORD_FILE`)."""
    ca_file: Path | None = None
    """CA bundle that signs Prometheus' certificate (`EDGEFERRY_PROMETHEUS_CA_FILE`); unset: the
    system's CAs."""
    timeout_seconds: float = 10.0
    """Longest one query may take (`EDGEFERRY_PROMETHEUS_TIMEOUT_SECONDS`); a slower one is an
    inconclusive measurement."""


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return _absolute(raw) if raw else None


@dataclasses.dataclass(frozen=True)
class Settings:
    build: BuildSettings
    scan: ScanSettings
    rollout: RolloutSettings
    metrics_port: int
    """Port of the Prometheus `/metrics` endpoint (`EDGEFERRY_METRICS_PORT`)."""
    metrics_host: str
    """Address the metrics endpoint binds (`EDGEFERRY_METRICS_HOST`, default 0.0.0.0 in-cluster)."""
    namespaces: tuple[str, ...]
    """Namespaces to serve (`EDGEFERRY_NAMESPACES`, comma-separated); empty means all."""
    analysis: AnalysisSettings = dataclasses.field(default_factory=AnalysisSettings)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from environment variables (see each field's docstring for the name).

    Raises SettingsError for a value the operator cannot run with.
    """
    e = os.environ if env is None else env
    workdir = _absolute(e.get("EDGEFERRY_WORKDIR") or "/tmp/edgeferry")
    insecure = tuple(h for h in e.get("EDGEFERRY_INSECURE_REGISTRIES", "").split(",") if h)
    namespaces = tuple(n for n in e.get("EDGEFERRY_NAMESPACES", "").split(",") if n)
    return Settings(
        build=BuildSettings(
            docker_host=e.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
            workdir=workdir,
            insecure_registries=insecure,
            skip_emulated_smoke_tests=_flag(e, "EDGEFERRY_SKIP_EMULATED_SMOKE_TESTS", False),
            model_cache_bytes=_count(
                e, "EDGEFERRY_MODEL_CACHE_BYTES", 20 * 2**30, minimum=1, what="bytes"
            ),
            model_fetch_timeout_seconds=_positive(e, "EDGEFERRY_MODEL_FETCH_TIMEOUT_SECONDS", 1800),
            smoke_probe_image=e.get("EDGEFERRY_SMOKE_PROBE_IMAGE")
            or BuildSettings.smoke_probe_image,
        ),
        scan=ScanSettings(
            db_cache_dir=_absolute(e.get("GRYPE_DB_CACHE_DIR") or str(workdir / "grype-db")),
            db_auto_update=_flag(e, "GRYPE_DB_AUTO_UPDATE", True),
            db_validate_age=_flag(e, "GRYPE_DB_VALIDATE_AGE", True),
            db_stale_after_seconds=_count(
                e, "EDGEFERRY_SCAN_DB_STALE_SECONDS", 172800, minimum=1, what="seconds"
            ),
            db_update_url=e.get("GRYPE_DB_UPDATE_URL") or None,
            db_watch_seconds=_count(
                e, "EDGEFERRY_SCAN_DB_WATCH_SECONDS", 15, minimum=1, what="seconds"
            ),
            db_update_seconds=_count(
                e, "EDGEFERRY_SCAN_DB_UPDATE_SECONDS", 3600, minimum=60, what="seconds"
            ),
        ),
        rollout=RolloutSettings(
            max_parallel_targets=_count(
                e, "EDGEFERRY_MAX_PARALLEL_TARGETS", 16, minimum=1, what="a number of targets"
            ),
            target_timeout_seconds=_positive(e, "EDGEFERRY_TARGET_TIMEOUT_SECONDS", 10),
            requeue_seconds=_positive(e, "EDGEFERRY_ROLLOUT_REQUEUE_SECONDS", 5),
            resync_seconds=_positive(e, "EDGEFERRY_ROLLOUT_RESYNC_SECONDS", 20),
            watch_targets=_flag(e, "EDGEFERRY_TARGET_WATCH", True),
            watch_resync_seconds=_positive(e, "EDGEFERRY_ROLLOUT_WATCH_RESYNC_SECONDS", 600),
            agent_cluster_role=e.get("EDGEFERRY_AGENT_CLUSTER_ROLE")
            or RolloutSettings.agent_cluster_role,
            cleanup_deadline_seconds=_positive(e, "EDGEFERRY_CLEANUP_DEADLINE_SECONDS", 120),
            allow_insecure_target_tls=_flag(e, "EDGEFERRY_ALLOW_INSECURE_TARGET_TLS", False),
        ),
        metrics_port=_count(
            e, "EDGEFERRY_METRICS_PORT", 8080, minimum=1, maximum=65535, what="a TCP port"
        ),
        metrics_host=e.get("EDGEFERRY_METRICS_HOST", "0.0.0.0"),
        namespaces=namespaces,
        analysis=_analysis(e),
    )


def _analysis(e: Mapping[str, str]) -> AnalysisSettings:
    url = (e.get("EDGEFERRY_PROMETHEUS_URL") or "").strip().rstrip("/") or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise SettingsError(f"EDGEFERRY_PROMETHEUS_URL={url!r} must be an http:// or https:// URL")
    username = e.get("EDGEFERRY_PROMETHEUS_USERNAME") or None
    password_file = _optional_path(e, "EDGEFERRY_PROMETHEUS_PASSWORD_FILE")
    if (username is None) != (password_file is None):
        raise SettingsError(
            "EDGEFERRY_PROMETHEUS_USERNAME and EDGEFERRY_PROMETHEUS_PASSWORD_FILE go together"
        )
    return AnalysisSettings(
        prometheus_url=url,
        bearer_token_file=_optional_path(e, "EDGEFERRY_PROMETHEUS_BEARER_TOKEN_FILE"),
        username=username,
        password_file=password_file,
        ca_file=_optional_path(e, "EDGEFERRY_PROMETHEUS_CA_FILE"),
        timeout_seconds=_positive(e, "EDGEFERRY_PROMETHEUS_TIMEOUT_SECONDS", 10),
    )
