"""Smoke-test a built image: run it, wait for health, ask for one prediction, always clean up.

A scanner cannot tell that a model server crashes on start or answers garbage; running it can.
The container runs detached on the operator's Docker daemon, and the HTTP checks are made by a
probe container in its network namespace (`smoke_probe`), never through a published port: that
would only work when the operator shares the daemon's network, not with a remote Engine or a
dind sidecar. Whether the image passed is an *outcome* (`SmokeResult.passed`), because "did not
come up healthy" is exactly what this step exists to find; only trouble with Docker itself (or
with the probe) raises `SmokeError`. Either way both containers are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping

import docker
import docker.errors

from edgeferry.adapters import smoke_probe
from edgeferry.models import reasons, timestamps

DEFAULT_TAIL_LINES = 40
_PROBE_SLACK_S = 60.0
"""How long a probe outlives the test's own deadline before it exits by itself."""


class SmokeError(RuntimeError):
    """Docker could not run the smoke test at all (image missing, daemon unreachable, no probe)."""


@dataclasses.dataclass(frozen=True)
class PredictionRequest:
    """One request to send once the server is healthy."""

    body: bytes
    path: str = "/predict"
    content_type: str = "application/json"


@dataclasses.dataclass(frozen=True)
class PredictionOutcome:
    """What the server answered to the prediction request."""

    status_code: int
    body: str
    """Response body, cut to a couple of KiB."""
    latency_ms: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclasses.dataclass(frozen=True)
class SmokeResult:
    """The outcome of one smoke test. ``reason`` is CamelCase, fit for a condition."""

    passed: bool
    reason: str
    """``Passed``, ``ContainerExited``, ``HealthTimeout``, ``PredictionFailed``, ``StartFailed``."""
    message: str
    container_id: str | None
    port: int
    """The container port the checks went to, on the container's own 127.0.0.1."""
    startup_ms: float | None
    """From container start until the health endpoint first answered 2xx (daemon's clock)."""
    health_latency_ms: float | None
    """Latency of that first successful health request."""
    prediction: PredictionOutcome | None
    log_tail: tuple[str, ...]
    """Last lines of the container log; captured on failure only."""


def smoke_test(
    api: docker.APIClient,
    image: str,
    *,
    probe_image: str,
    port: int = 8080,
    health_path: str = "/healthz",
    prediction: PredictionRequest | None = None,
    timeout_s: float = 60.0,
    request_timeout_s: float = 10.0,
    labels: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
    command: list[str] | None = None,
    mem_limit: str | None = None,
    tail_lines: int = DEFAULT_TAIL_LINES,
    platform: str | None = None,
) -> SmokeResult:
    """Run ``image``, wait until ``health_path`` answers 2xx, then send ``prediction`` if given.

    The checks come from a ``probe_image`` container (pulled if the daemon lacks it) in the
    tested container's network. Both carry ``labels`` (so callers can find strays) and are
    force-removed at the end whatever happened. ``platform`` (``linux/arm64``) is the one the
    tested container runs as: the daemon refuses an image of another platform, and runs a
    foreign one under emulation if its host has it (the probe always runs natively).
    """
    container_id: str | None = None
    probe_id: str | None = None
    try:
        smoke_probe.ensure_image(api, probe_image)
        try:
            container_id = _start(
                api,
                image,
                labels=labels,
                environment=environment,
                command=command,
                mem_limit=mem_limit,
                platform=platform,
            )
        except docker.errors.ImageNotFound as error:
            raise SmokeError(f"image {image} not found: {error.explanation}") from error
        except docker.errors.APIError as error:
            return _failed(
                reasons.START_FAILED,
                f"container did not start: {error.explanation}",
                container_id=None,
                port=port,
                log_tail=(),
            )
        started_at = _started_at(api, container_id)
        deadline = time.monotonic() + timeout_s
        try:
            probe_id = smoke_probe.start(
                api,
                probe_image,
                target_id=container_id,
                lifetime_s=timeout_s + 2 * request_timeout_s + _PROBE_SLACK_S,
                labels=labels,
            )
        except docker.errors.APIError:
            if _running(api, container_id):
                raise
            waited: _Healthy | _Unhealthy = _exited(api, container_id, health_path)
        else:
            waited = _wait_healthy(
                api,
                probe_id,
                container_id,
                port=port,
                path=health_path,
                started_at=started_at,
                deadline=deadline,
                timeout_s=timeout_s,
                request_timeout_s=request_timeout_s,
            )
        if isinstance(waited, _Unhealthy):
            return _failed(
                waited.reason,
                waited.message,
                container_id=container_id,
                port=port,
                log_tail=_log_tail(api, container_id, tail_lines),
            )
        assert probe_id is not None  # healthy means the probe ran
        outcome = None
        if prediction is not None:
            outcome = _predict(api, probe_id, port, prediction, timeout_s=request_timeout_s)
            if not outcome.ok:
                return _failed(
                    reasons.PREDICTION_FAILED,
                    f"POST {prediction.path} answered {outcome.status_code}: {outcome.body[:200]}",
                    container_id=container_id,
                    port=port,
                    log_tail=_log_tail(api, container_id, tail_lines),
                    healthy=waited,
                    prediction=outcome,
                )
        message = f"healthy after {waited.startup_ms:.0f} ms"
        if outcome is not None:
            message += f"; prediction answered {outcome.status_code} in {outcome.latency_ms:.0f} ms"
        return SmokeResult(
            passed=True,
            reason=reasons.SMOKE_TEST_PASSED,
            message=message,
            container_id=container_id,
            port=port,
            startup_ms=waited.startup_ms,
            health_latency_ms=waited.latency_ms,
            prediction=outcome,
            log_tail=(),
        )
    except smoke_probe.ProbeError as error:
        raise SmokeError(str(error)) from error
    except docker.errors.APIError as error:
        raise SmokeError(f"Docker failed during the smoke test: {error.explanation}") from error
    finally:
        for created in (probe_id, container_id):
            if created is not None:
                _remove(api, created)


def _start(
    api: docker.APIClient,
    image: str,
    *,
    labels: Mapping[str, str] | None,
    environment: Mapping[str, str] | None,
    command: list[str] | None,
    mem_limit: str | None,
    platform: str | None,
) -> str:
    """Create and start the container; no port is published (the probe needs none)."""
    container = api.create_container(
        image,
        command=command,
        detach=True,
        labels=dict(labels or {}),
        environment=dict(environment or {}),
        host_config=api.create_host_config(mem_limit=mem_limit),
        platform=platform,
    )
    container_id = str(container["Id"])
    try:
        api.start(container_id)
    except docker.errors.APIError:
        _remove(api, container_id)
        raise
    return container_id


def _started_at(api: docker.APIClient, container_id: str) -> float:
    """When the container started, in epoch seconds on the daemon's clock (as the probe's)."""
    state = api.inspect_container(container_id).get("State") or {}
    moment = timestamps.parse_rfc3339(state.get("StartedAt"))
    return moment.timestamp() if moment is not None else time.time()


def _running(api: docker.APIClient, container_id: str) -> bool:
    state = api.inspect_container(container_id).get("State") or {}
    return bool(state.get("Running"))


@dataclasses.dataclass(frozen=True)
class _Healthy:
    startup_ms: float
    latency_ms: float


@dataclasses.dataclass(frozen=True)
class _Unhealthy:
    reason: str
    message: str


def _failed(
    reason: str,
    message: str,
    *,
    container_id: str | None,
    port: int,
    log_tail: tuple[str, ...],
    healthy: _Healthy | None = None,
    prediction: PredictionOutcome | None = None,
) -> SmokeResult:
    return SmokeResult(
        passed=False,
        reason=reason,
        message=message,
        container_id=container_id,
        port=port,
        startup_ms=healthy.startup_ms if healthy else None,
        health_latency_ms=healthy.latency_ms if healthy else None,
        prediction=prediction,
        log_tail=log_tail,
    )


def _exited(api: docker.APIClient, container_id: str, path: str) -> _Unhealthy:
    state = api.inspect_container(container_id).get("State") or {}
    return _Unhealthy(
        reasons.CONTAINER_EXITED,
        f"container exited with code {state.get('ExitCode')} before {path} answered",
    )


def _wait_healthy(
    api: docker.APIClient,
    probe_id: str,
    container_id: str,
    *,
    port: int,
    path: str,
    started_at: float,
    deadline: float,
    timeout_s: float,
    request_timeout_s: float,
) -> _Healthy | _Unhealthy:
    """Poll ``path`` until it answers 2xx, the container exits, or the deadline passes."""
    last = "no answer yet"
    while True:
        if not _running(api, container_id):
            return _exited(api, container_id, path)
        remaining = deadline - time.monotonic()
        exchange = smoke_probe.request(
            api,
            probe_id,
            port=port,
            path=path,
            timeout_s=min(request_timeout_s, max(remaining, 1.0)),
        )
        status = exchange.status_code
        if status is not None and 200 <= status < 300:
            startup_ms = max(exchange.answered_at - started_at, 0.0) * 1000
            return _Healthy(startup_ms, exchange.latency_ms)
        last = f"HTTP {status}" if status is not None else (exchange.error or "no answer")
        if time.monotonic() >= deadline:
            return _Unhealthy(
                reasons.HEALTH_TIMEOUT,
                f"{path} did not answer 2xx within {timeout_s:.0f}s (last: {last})",
            )
        time.sleep(0.2)


def _predict(
    api: docker.APIClient,
    probe_id: str,
    port: int,
    request: PredictionRequest,
    *,
    timeout_s: float,
) -> PredictionOutcome:
    exchange = smoke_probe.request(
        api,
        probe_id,
        port=port,
        path=request.path,
        timeout_s=timeout_s,
        body=request.body,
        content_type=request.content_type,
    )
    if exchange.status_code is None:
        return PredictionOutcome(
            status_code=0, body=exchange.error or "no answer", latency_ms=exchange.latency_ms
        )
    return PredictionOutcome(
        status_code=exchange.status_code, body=exchange.body, latency_ms=exchange.latency_ms
    )


def _log_tail(api: docker.APIClient, container_id: str, lines: int) -> tuple[str, ...]:
    try:
        raw = api.logs(container_id, stdout=True, stderr=True, tail=lines)
    except docker.errors.APIError:
        return ()
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    return tuple(line for line in text.splitlines() if line.strip())[-lines:]


def _remove(api: docker.APIClient, container_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_container(container_id, force=True, v=True)
