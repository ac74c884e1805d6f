"""Smoke-test a built image: run it, wait for health, ask for one prediction, always clean up.

A scanner cannot tell that a model server crashes on start or answers garbage; running it can.
The container runs detached with its port published on 127.0.0.1 only, at a port the daemon picks
(no race between choosing a free port and binding it). Whether the image passed is an *outcome*
(`SmokeResult.passed`), because "did not come up healthy" is exactly what this step exists to
find; only trouble with Docker itself raises `SmokeError`. Either way the container is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping

import docker
import docker.errors
import requests

from edgeferry.models import reasons

DEFAULT_TAIL_LINES = 40
_BODY_LIMIT = 2048


class SmokeError(RuntimeError):
    """Docker could not run the smoke test at all (image missing, daemon unreachable...)."""


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
    host_port: int | None
    startup_ms: float | None
    """From container start until the health endpoint first answered 2xx."""
    health_latency_ms: float | None
    """Latency of that first successful health request."""
    prediction: PredictionOutcome | None
    log_tail: tuple[str, ...]
    """Last lines of the container log; captured on failure only."""


def smoke_test(
    api: docker.APIClient,
    image: str,
    *,
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

    The container carries ``labels`` (so callers can find strays) and is force-removed at the end
    whatever happened. ``platform`` (``linux/arm64``) is the one the container runs as: the
    daemon refuses an image of another platform, and runs a foreign one under emulation if its
    host has it.
    """
    container_id: str | None = None
    session = requests.Session()
    session.trust_env = False  # 127.0.0.1 must never go through a proxy
    try:
        try:
            container_id = _start(
                api,
                image,
                port=port,
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
                host_port=None,
                log_tail=(),
            )
        started = time.monotonic()
        waited = _wait_healthy(
            api,
            session,
            container_id,
            port=port,
            path=health_path,
            deadline=started + timeout_s,
            request_timeout_s=request_timeout_s,
        )
        if isinstance(waited, _Unhealthy):
            return _failed(
                waited.reason,
                waited.message,
                container_id=container_id,
                host_port=waited.host_port,
                log_tail=_log_tail(api, container_id, tail_lines),
            )
        outcome = None
        if prediction is not None:
            base_url = f"http://127.0.0.1:{waited.host_port}"
            outcome = _predict(session, base_url, prediction, timeout_s=request_timeout_s)
            if not outcome.ok:
                return _failed(
                    reasons.PREDICTION_FAILED,
                    f"POST {prediction.path} answered {outcome.status_code}: {outcome.body[:200]}",
                    container_id=container_id,
                    host_port=waited.host_port,
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
            host_port=waited.host_port,
            startup_ms=waited.startup_ms,
            health_latency_ms=waited.latency_ms,
            prediction=outcome,
            log_tail=(),
        )
    except docker.errors.APIError as error:
        raise SmokeError(f"Docker failed during the smoke test: {error.explanation}") from error
    finally:
        session.close()
        if container_id is not None:
            _remove(api, container_id)


def _start(
    api: docker.APIClient,
    image: str,
    *,
    port: int,
    labels: Mapping[str, str] | None,
    environment: Mapping[str, str] | None,
    command: list[str] | None,
    mem_limit: str | None,
    platform: str | None,
) -> str:
    host_config = api.create_host_config(
        port_bindings={port: ("127.0.0.1",)},  # empty HostPort: the daemon picks a free one
        mem_limit=mem_limit,
    )
    container = api.create_container(
        image,
        command=command,
        detach=True,
        ports=[port],
        labels=dict(labels or {}),
        environment=dict(environment or {}),
        host_config=host_config,
        platform=platform,
    )
    container_id = str(container["Id"])
    try:
        api.start(container_id)
    except docker.errors.APIError:
        _remove(api, container_id)
        raise
    return container_id


def _host_port(api: docker.APIClient, container_id: str, port: int) -> int:
    for binding in api.port(container_id, port) or ():
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    raise SmokeError(f"container {container_id[:12]} has no 127.0.0.1 binding for port {port}")


@dataclasses.dataclass(frozen=True)
class _Healthy:
    host_port: int
    startup_ms: float
    latency_ms: float


@dataclasses.dataclass(frozen=True)
class _Unhealthy:
    reason: str
    message: str
    host_port: int | None


def _failed(
    reason: str,
    message: str,
    *,
    container_id: str | None,
    host_port: int | None,
    log_tail: tuple[str, ...],
    healthy: _Healthy | None = None,
    prediction: PredictionOutcome | None = None,
) -> SmokeResult:
    return SmokeResult(
        passed=False,
        reason=reason,
        message=message,
        container_id=container_id,
        host_port=host_port,
        startup_ms=healthy.startup_ms if healthy else None,
        health_latency_ms=healthy.latency_ms if healthy else None,
        prediction=prediction,
        log_tail=log_tail,
    )


def _wait_healthy(
    api: docker.APIClient,
    session: requests.Session,
    container_id: str,
    *,
    port: int,
    path: str,
    deadline: float,
    request_timeout_s: float,
) -> _Healthy | _Unhealthy:
    """Poll ``path`` until it answers 2xx, the container exits, or the deadline passes."""
    started = time.monotonic()
    host_port: int | None = None
    last = "no answer yet"
    while True:
        state = api.inspect_container(container_id).get("State") or {}
        if not state.get("Running"):
            # An exited container has no port binding any more, so this comes first.
            return _Unhealthy(
                reasons.CONTAINER_EXITED,
                f"container exited with code {state.get('ExitCode')} before {path} answered",
                host_port,
            )
        if host_port is None:
            host_port = _host_port(api, container_id, port)
        sent = time.monotonic()
        try:
            response = session.get(
                f"http://127.0.0.1:{host_port}{path}",
                timeout=min(request_timeout_s, max(deadline - sent, 0.1)),
            )
            latency_ms = (time.monotonic() - sent) * 1000
            if 200 <= response.status_code < 300:
                return _Healthy(host_port, (time.monotonic() - started) * 1000, latency_ms)
            last = f"HTTP {response.status_code}"
        except requests.RequestException as error:
            last = type(error).__name__
        if time.monotonic() >= deadline:
            seconds = deadline - started
            return _Unhealthy(
                reasons.HEALTH_TIMEOUT,
                f"{path} did not answer 2xx within {seconds:.0f}s (last: {last})",
                host_port,
            )
        time.sleep(0.2)


def _predict(
    session: requests.Session, base_url: str, request: PredictionRequest, *, timeout_s: float
) -> PredictionOutcome:
    sent = time.monotonic()
    try:
        response = session.post(
            base_url + request.path,
            data=request.body,
            timeout=timeout_s,
            headers={"Content-Type": request.content_type},
        )
    except requests.RequestException as error:
        return PredictionOutcome(
            status_code=0,
            body=f"{type(error).__name__}: {error}"[:_BODY_LIMIT],
            latency_ms=(time.monotonic() - sent) * 1000,
        )
    return PredictionOutcome(
        status_code=response.status_code,
        body=response.text[:_BODY_LIMIT],
        latency_ms=(time.monotonic() - sent) * 1000,
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
