"""Build images through the Docker Engine API, from a context assembled on the side.

Why the Engine API rather than the `docker` CLI: the operator gets the build log as structured
JSON (so a failure can quote the last lines in an event), the image id without parsing text, and
no dependency on a CLI binary inside the operator image. The context is a tar written to a
temporary file from the Dockerfile text and a name→bytes-or-file mapping, with fixed mtimes and
owners, so the same inputs always send the same bytes (and hit the daemon's layer cache), and a
model of several GB is copied through the disk, never held in memory.

The build log is streamed and only a bounded tail is kept: a status message must stay small, and
a runaway build must not grow the operator's memory.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import re
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests
import urllib3.exceptions

DEFAULT_TAIL_LINES = 40


_DAEMON_TROUBLE = re.compile(
    r"context canceled|libnetwork|shutting down|use of closed network connection|"
    r"connection refused|connection reset|error reading from server",
    re.IGNORECASE,
)
"""Build errors that come from the daemon itself, never from the Dockerfile: a daemon that
shuts down mid-build cancels it, or fails its RUN container's network set-up ("failed to update
store for object type *libnetwork.endpoint", seen when dockerd restarts during a RUN)."""


_DOCKERFILE_ERROR = re.compile(
    r"returned a non-zero code|exec format error|COPY failed|ADD failed|"
    r"dockerfile parse error|unknown instruction|unknown flag|failed to process|"
    r"pull access denied|manifest unknown|manifest for .* not found|not found: manifest|"
    r"repository does not exist|invalid reference format|no build stage|"
    r"cannot locate specified dockerfile|failed to parse platform|no match for platform|"
    r"is not a valid|invalid (argument|value)|unable to prepare context|"
    r"forbidden path outside the build context|no source files were specified|"
    r"when using COPY with more than one source|does not match the specified platform",
    re.IGNORECASE,
)
"""What the classic builder says when the Dockerfile, its context or its base is at fault."""


def is_daemon_trouble(message: str) -> bool:
    """Whether a build error the daemon reported is its own trouble, not the Dockerfile's.

    Decided by exclusion: the classic builder's errors that the Dockerfile, its context or its
    base image cause are few and well known (`_DOCKERFILE_ERROR`); a daemon stopping mid-build
    fails it with whatever it was doing ("Error processing tar file(signal: terminated)",
    "failed to update store for object type *libnetwork.endpoint", "context canceled"), so
    anything else is treated as the daemon's and retried with backoff, its message shown.
    """
    if _DAEMON_TROUBLE.search(message):
        return True
    return not _DOCKERFILE_ERROR.search(message)


def daemon_answers(api: docker.APIClient) -> bool:
    """Whether the daemon answers a ping now (after a failure: did it go away meanwhile?)."""
    try:
        return bool(api.ping())
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False


class BuildError(RuntimeError):
    """The build failed; ``log_tail`` holds the last lines of the build log.

    ``transient`` is True when the Docker daemon went away (refused the connection, or the
    stream broke off mid-build, as when dockerd restarts): building again later may work. A
    failing ``RUN``, a bad Dockerfile or a build over its time limit is not transient.
    """

    def __init__(
        self, message: str, *, log_tail: tuple[str, ...] = (), transient: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail
        self.transient = transient

    def __str__(self) -> str:
        if not self.log_tail:
            return self.message
        return self.message + "\n" + "\n".join(self.log_tail)


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """What a successful build produced, in the words status uses."""

    image_id: str
    size_bytes: int
    layers: int
    """Number of filesystem layers (``RootFS.Layers``), base image included."""
    architecture: str
    os: str
    labels: Mapping[str, str]
    log_tail: tuple[str, ...]
    duration_s: float

    @property
    def platform(self) -> str:
        """``os/architecture``, the way specs name platforms."""
        return f"{self.os}/{self.architecture}"


@dataclasses.dataclass
class BuildLog:
    """Folds the daemon's JSON build stream into a bounded tail, the image id and any error.

    The stream mixes ``stream`` text (which can split or join lines arbitrarily), ``status``
    progress lines of base image pulls, ``aux`` records carrying the image id, and an ``error``.
    """

    max_lines: int = DEFAULT_TAIL_LINES
    image_id: str | None = None
    error: str | None = None
    _lines: collections.deque[str] = dataclasses.field(init=False)
    _partial: str = ""

    def __post_init__(self) -> None:
        self._lines = collections.deque(maxlen=self.max_lines)

    def feed(self, chunk: Mapping[str, Any]) -> None:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail")
            message = detail.get("message") if isinstance(detail, Mapping) else None
            self.error = str(message or chunk.get("error") or "unknown build error")
            self._flush()
            self._lines.append(f"ERROR: {self.error}")
            return
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        text = chunk.get("stream")
        if isinstance(text, str):
            self._add_text(text)
        status = chunk.get("status")
        if isinstance(status, str) and not chunk.get("progressDetail"):
            # Pull progress ("Downloading 3MB/9MB") carries a non-empty progressDetail; the
            # milestones ("Pull complete", "Digest: ...") are worth keeping.
            ident = chunk.get("id")
            self._flush()
            self._lines.append(f"{ident}: {status}" if ident else status)

    def tail(self) -> tuple[str, ...]:
        lines = list(self._lines)
        if self._partial.strip():
            lines.append(self._partial.rstrip())
        return tuple(lines[-self.max_lines :])

    def _add_text(self, text: str) -> None:
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()
        for piece in pieces:
            line = piece.rstrip("\r")
            if line.strip():
                self._lines.append(line)

    def _flush(self) -> None:
        if self._partial.strip():
            self._lines.append(self._partial.rstrip())
        self._partial = ""


def connect(docker_host: str | None = None, *, timeout_s: float = 120.0) -> docker.APIClient:
    """A low-level Engine API client for ``docker_host`` (or ``DOCKER_HOST``, or the socket)."""
    if docker_host:
        return docker.APIClient(base_url=docker_host, version="auto", timeout=int(timeout_s))
    client = docker.from_env(version="auto", timeout=int(timeout_s))
    api: docker.APIClient = client.api
    return api


def daemon_platform(api: docker.APIClient) -> str:
    """The platform the daemon runs natively (``linux/amd64``): others it can only emulate."""
    version = api.version()
    return f"{version.get('Os', 'linux')}/{version.get('Arch', '')}"


ContextFile = bytes | Path
"""A build-context file: bytes in memory (small: Dockerfile, scripts) or a file on disk (a
model of any size, streamed into the context, never read whole)."""


def write_context_tar(
    into: IO[bytes], dockerfile: str, files: Mapping[str, ContextFile] | None = None
) -> None:
    """Write a build context to `into`: ``Dockerfile`` plus the given files, deterministic."""
    files = dict(files or {})
    if "Dockerfile" in files:
        raise ValueError("pass the Dockerfile as text, not in files")
    with tarfile.open(fileobj=into, mode="w", format=tarfile.PAX_FORMAT) as archive:
        entries: dict[str, ContextFile] = {"Dockerfile": dockerfile.encode(), **files}
        for name in sorted(entries):
            clean = name.lstrip("/")
            if not clean or ".." in clean.split("/"):
                raise ValueError(f"context file name {name!r} escapes the context")
            info = tarfile.TarInfo(clean)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            content = entries[name]
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with content.open("rb") as source:
                    archive.addfile(info, source)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))


def context_tar(dockerfile: str, files: Mapping[str, ContextFile] | None = None) -> bytes:
    """A build context as tar bytes (see `write_context_tar`); for small contexts only."""
    buffer = io.BytesIO()
    write_context_tar(buffer, dockerfile, files)
    return buffer.getvalue()


def build_image(
    api: docker.APIClient,
    dockerfile: str,
    *,
    files: Mapping[str, ContextFile] | None = None,
    tag: str | None = None,
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    platform: str | None = None,
    pull: bool = False,
    nocache: bool = False,
    timeout_s: float = 900.0,
    tail_lines: int = DEFAULT_TAIL_LINES,
    scratch_dir: Path | None = None,
) -> BuildResult:
    """Build ``dockerfile`` with ``files`` as context; raise `BuildError` with the log tail.

    The context is written to a temporary file (in ``scratch_dir``, else the system's) and
    streamed to the daemon from there, so a large model never sits in memory.

    ``timeout_s`` bounds both the total build time (checked at every log line) and any silence
    of the daemon; closing the stream on timeout makes the daemon cancel the build.

    With ``platform``, the result must really be that platform. The classic builder of Engine
    20.10 does not check: its layer cache serves another platform's image for the same steps
    (seen with ``FROM scratch``), and a base image without that platform's variant is used as
    it is, so a ``RUN`` runs natively and the "arm64" image is amd64. The first case is retried
    without the cache; what is still the wrong platform then raises `BuildError`.
    """
    for without_cache in (True,) if nocache else (False, True):
        result = _build_once(
            api,
            dockerfile,
            files=files,
            tag=tag,
            build_args=build_args,
            labels=labels,
            platform=platform,
            pull=pull,
            nocache=without_cache,
            timeout_s=timeout_s,
            tail_lines=tail_lines,
            scratch_dir=scratch_dir,
        )
        if platform is None or result.platform == platform:
            return result
    raise BuildError(
        f"build for {platform} produced a {result.platform} image: a base image has no "
        f"{platform} variant (build {platform} images FROM scratch or from {platform} bases; "
        f"a daemon without emulation cannot RUN {platform} code either)",
        log_tail=result.log_tail,
    )


def _build_once(
    api: docker.APIClient,
    dockerfile: str,
    *,
    files: Mapping[str, ContextFile] | None,
    tag: str | None,
    build_args: Mapping[str, str] | None,
    labels: Mapping[str, str] | None,
    platform: str | None,
    pull: bool,
    nocache: bool,
    timeout_s: float,
    tail_lines: int,
    scratch_dir: Path | None,
) -> BuildResult:
    if scratch_dir is not None:
        scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=scratch_dir) as context:
        write_context_tar(context, dockerfile, files)
        context.seek(0)
        return _send_build(
            api,
            context,
            tag=tag,
            build_args=build_args,
            labels=labels,
            platform=platform,
            pull=pull,
            nocache=nocache,
            timeout_s=timeout_s,
            tail_lines=tail_lines,
        )


def _send_build(
    api: docker.APIClient,
    context: IO[bytes],
    *,
    tag: str | None,
    build_args: Mapping[str, str] | None,
    labels: Mapping[str, str] | None,
    platform: str | None,
    pull: bool,
    nocache: bool,
    timeout_s: float,
    tail_lines: int,
) -> BuildResult:
    started = time.monotonic()
    log = BuildLog(max_lines=tail_lines)
    try:
        stream = api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            buildargs=dict(build_args or {}),
            labels=dict(labels or {}),
            platform=platform,
            pull=pull,
            nocache=nocache,
            rm=True,
            forcerm=True,
            decode=True,
            timeout=int(timeout_s),
        )
        _consume(stream, log, deadline=started + timeout_s)
    except docker.errors.APIError as error:
        raise BuildError(
            f"build request refused: {error.explanation}", log_tail=log.tail()
        ) from error
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        timed_out = isinstance(error, (requests.Timeout, urllib3.exceptions.TimeoutError))
        if timed_out:
            message = f"build did not finish within {timeout_s:.0f}s (the daemon cancels it)"
        else:
            message = f"build stream broke off: {error}"
        raise BuildError(message, log_tail=log.tail(), transient=not timed_out) from error
    if log.error is not None:
        raise BuildError(
            f"build failed: {log.error}",
            log_tail=log.tail(),
            transient=is_daemon_trouble(log.error),
        )
    if log.image_id is None:
        # The stream ended without an error or a result: the daemon went away mid-build.
        raise BuildError(
            "build finished without reporting an image id", log_tail=log.tail(), transient=True
        )
    return inspect_result(
        api, log.image_id, log_tail=log.tail(), duration_s=time.monotonic() - started
    )


def inspect_result(
    api: docker.APIClient, image: str, *, log_tail: tuple[str, ...] = (), duration_s: float = 0.0
) -> BuildResult:
    """Describe a local image the way a build result does (also for images built earlier)."""
    info = api.inspect_image(image)
    config = info.get("Config") or {}
    return BuildResult(
        image_id=str(info["Id"]),
        size_bytes=int(info.get("Size") or 0),
        layers=len((info.get("RootFS") or {}).get("Layers") or ()),
        architecture=str(info.get("Architecture", "")),
        os=str(info.get("Os", "")),
        labels=dict(config.get("Labels") or {}),
        log_tail=log_tail,
        duration_s=duration_s,
    )


def _consume(stream: Iterable[Mapping[str, Any]], log: BuildLog, *, deadline: float) -> None:
    chunks: Iterator[Mapping[str, Any]] = iter(stream)
    try:
        for chunk in chunks:
            log.feed(chunk)
            if time.monotonic() > deadline:
                raise BuildError(
                    "build did not finish in time (the daemon cancels it)", log_tail=log.tail()
                )
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
