"""HTTP checks made inside the Docker daemon's host, from a probe in the tested container's network.

A port the daemon publishes lives on the daemon's host: the operator's own loopback only when
both share one network namespace (a host process on the host socket). With a remote Engine, a
dind sidecar or a daemon whose containers have no network at all, the operator cannot reach it.
Every daemon can do one thing: start a second container in the first one's network namespace
(``network_mode=container:<id>``). That probe only sleeps; each check is one ``docker exec`` of
BusyBox ``nc`` against ``127.0.0.1:<port>``, and the raw HTTP/1.0 answer is parsed here, so a
failed prediction still reports its status and body (BusyBox ``wget`` drops the body of an
error). The latency is timed inside the probe with BusyBox ``ts`` (microseconds, the daemon
host's clock), so the exec round trip to a distant daemon is not counted in it.

The price: a probe image on the daemon (any BusyBox 1.31 or later: sh, nc, base64, timeout,
ts), pulled when missing, and an exec's overhead (tens of ms) per health poll.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import io
import math
import urllib.parse
from collections.abc import Mapping

import docker
import docker.errors
import docker.utils

BODY_LIMIT = 2048
"""Response bodies are cut to this many characters."""
_SCRIPT = (
    # fd 4: the exec's stdout (the raw response); fd 3: a pipe into ts, which stamps the two
    # marks as they pass and writes them to stderr. nc's own complaints go to stderr unstamped.
    '{ { echo sent >&3; printf %s "$EDGEFERRY_REQUEST" | base64 -d'
    ' | timeout "$EDGEFERRY_TIMEOUT" nc 127.0.0.1 "$EDGEFERRY_PORT";'
    ' echo "done $?" >&3; } 3>&1 1>&4 | ts %.s >&2; } 4>&1'
)
_SAFE_PATH = "/?&=%:@!$'()*+,;~-._"
"""Characters of a request path sent as they are; anything else (spaces, controls) is quoted."""
_PROBE_USER = "65534:65534"
"""nobody: the probe needs no rights, and runs in the tested container's network."""


class ProbeError(RuntimeError):
    """The probe itself could not run (image missing, not a BusyBox with the needed applets)."""


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One request as the probe saw it."""

    status_code: int | None
    """None: no HTTP answer at all (refused, timed out, garbage); ``error`` says which."""
    body: str
    latency_ms: float
    """From sending the request until the connection closed, on the daemon host's clock."""
    answered_at: float
    """When the answer was complete, in seconds since the epoch on the daemon host's clock."""
    error: str | None = None


def ensure_image(api: docker.APIClient, image: str) -> None:
    """Pull the probe image unless the daemon has it (a remote or dind daemon starts empty)."""
    try:
        api.inspect_image(image)
        return
    except docker.errors.ImageNotFound:
        pass
    repository, tag = docker.utils.parse_repository_tag(image)
    try:
        api.pull(repository, tag=tag or "latest")
        api.inspect_image(image)
    except docker.errors.APIError as error:
        raise ProbeError(
            f"smoke-test probe image {image} is not on the daemon and could not be pulled: "
            f"{error.explanation}"
        ) from error


def start(
    api: docker.APIClient,
    image: str,
    *,
    target_id: str,
    lifetime_s: float,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Start a probe in ``target_id``'s network namespace; returns its container id.

    It sleeps ``lifetime_s`` and exits, so a probe left behind by a crashed operator ends by
    itself; the caller removes it as soon as it is done.
    """
    host_config = api.create_host_config(
        network_mode=f"container:{target_id}", mem_limit="64m", read_only=True
    )
    container = api.create_container(
        image,
        entrypoint=["sleep"],
        command=[str(math.ceil(lifetime_s))],
        user=_PROBE_USER,
        labels=dict(labels or {}),
        host_config=host_config,
    )
    probe_id = str(container["Id"])
    try:
        api.start(probe_id)
    except docker.errors.APIError:
        remove(api, probe_id)
        raise
    return probe_id


def request(
    api: docker.APIClient,
    probe_id: str,
    *,
    port: int,
    path: str,
    timeout_s: float,
    body: bytes | None = None,
    content_type: str | None = None,
) -> Exchange:
    """GET ``path`` (or POST ``body``) on the tested container's 127.0.0.1:``port``."""
    raw = _request_bytes(port, path, body=body, content_type=content_type)
    exec_id = api.exec_create(
        probe_id,
        ["sh", "-c", _SCRIPT],
        stdout=True,
        stderr=True,
        user=_PROBE_USER,
        environment={
            "EDGEFERRY_REQUEST": base64.b64encode(raw).decode(),
            "EDGEFERRY_TIMEOUT": str(max(1, math.ceil(timeout_s))),
            "EDGEFERRY_PORT": str(port),
        },
    )["Id"]
    stdout, stderr = api.exec_start(exec_id, demux=True)
    return parse_exchange(stdout or b"", (stderr or b"").decode("utf-8", errors="replace"))


def remove(api: docker.APIClient, container_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_container(container_id, force=True, v=True)


def _request_bytes(port: int, path: str, *, body: bytes | None, content_type: str | None) -> bytes:
    target = urllib.parse.quote(path, safe=_SAFE_PATH)
    method = "GET" if body is None else "POST"
    lines = [
        f"{method} {target} HTTP/1.0",
        f"Host: 127.0.0.1:{port}",
        "User-Agent: edgeferry-smoke-test",
        "Connection: close",
    ]
    if body is not None:
        lines += [f"Content-Type: {content_type or 'application/octet-stream'}"]
        lines += [f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def parse_exchange(stdout: bytes, stderr: str) -> Exchange:
    """The probe's output as an Exchange: the raw response on stdout, the stamped marks and any
    complaint of nc or timeout on stderr."""
    sent = done = None
    exit_code: int | None = None
    complaints: list[str] = []
    for line in stderr.splitlines():
        stamp, _, mark = line.strip().partition(" ")
        moment = _microseconds(stamp)
        if moment is not None and mark == "sent":
            sent = moment
        elif moment is not None and mark.startswith("done "):
            done, exit_code = moment, _int(mark.removeprefix("done "))
        elif line.strip():
            complaints.append(line.strip())
    if sent is None or done is None:
        detail = "; ".join(complaints) or "no output"
        raise ProbeError(
            "the smoke-test probe printed no timing marks (it needs BusyBox 1.31 or later with "
            f"sh, nc, base64, timeout and ts): {detail}"[:500]
        )
    latency_ms = max(done - sent, 0) / 1000
    status, text, error = _parse_response(stdout)
    if status is None:
        if exit_code in (124, 143):  # timeout's own code, or nc killed by its TERM
            error = "no complete answer in time"
        elif not stdout:
            error = _connect_error(complaints) or f"no answer (nc exited {exit_code})"
    return Exchange(
        status_code=status, body=text, latency_ms=latency_ms, answered_at=done / 1e6, error=error
    )


class _Received:
    """Just enough of a socket for `http.client.HTTPResponse` to read bytes we already have."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, *_args: object, **_kwargs: object) -> io.BytesIO:
        return io.BytesIO(self._data)


def _parse_response(raw: bytes) -> tuple[int | None, str, str | None]:
    if not raw:
        return None, "", None
    response = http.client.HTTPResponse(_Received(raw))  # type: ignore[arg-type]
    try:
        response.begin()
    except (http.client.HTTPException, ValueError) as error:
        return (
            None,
            raw[:BODY_LIMIT].decode("utf-8", errors="replace"),
            (f"not an HTTP answer ({type(error).__name__})"),
        )
    try:
        content = response.read()
    except http.client.IncompleteRead as partial:
        content = partial.partial
    except http.client.HTTPException:
        content = b""
    return response.status, content.decode("utf-8", errors="replace")[:BODY_LIMIT], None


def _connect_error(complaints: list[str]) -> str | None:
    for line in complaints:
        if "refused" in line.lower():
            return "connection refused"
    return complaints[-1][:200] if complaints else None


def _microseconds(stamp: str) -> int | None:
    """``ts %.s``'s ``<seconds>.<microseconds>`` as whole microseconds (exact, unlike a float)."""
    seconds, dot, fraction = stamp.partition(".")
    if not seconds.isdigit() or not (fraction.isdigit() or not dot):
        return None
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None
