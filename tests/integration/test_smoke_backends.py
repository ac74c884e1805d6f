"""The smoke test on a daemon that is not the operator's neighbour: a real second dockerd.

The chart's `remote` and `dind` backends put the Docker Engine somewhere else than the operator:
what that daemon publishes is on *its* host, not on the operator's loopback. Here a second
dockerd runs from the testbed's own dind image, as a privileged container on the host daemon in
a network namespace of its own, its API published on the host's 127.0.0.1:<free port>, with
`--bridge=none --iptables=false` and its own data root (a volume). Its containers have no
network but their own loopback, so nothing they serve is reachable from this process: the smoke
test must pass and fail there for the image's own reasons, exactly as on the host socket. (Not
`--network host`: dockerd with `--bridge=none` deletes `docker0` in its network namespace, which
would then be the host's.) It cannot reach the registry on the host's loopback either, so the
busybox base is copied into it. The fixture stops and removes the daemon's container and volume.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from edgeferry.adapters import docker_build, smoke
from edgeferry_testbed import images
from tests.integration import _containers

pytestmark = pytest.mark.integration

HTTPD_DOCKERFILE = """\
FROM {base}
RUN mkdir -p /www/cgi-bin \\
 && echo ok > /www/healthz \\
 && printf '#!/bin/sh\\necho "Content-Type: application/json"\\necho\\ncat\\n' \\
      > /www/cgi-bin/predict \\
 && printf '#!/bin/sh\\necho "Status: 500 Error"\\necho\\necho model not loaded\\n' \\
      > /www/cgi-bin/broken \\
 && chmod 0755 /www/cgi-bin/predict /www/cgi-bin/broken
USER app
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""


@pytest.fixture(scope="module")
def host_api() -> Iterator[docker.APIClient]:
    client = _containers.docker_api()
    yield client
    client.close()


@pytest.fixture(scope="module")
def busybox_base(host_api: docker.APIClient, remote: docker.APIClient) -> str:
    """The testbed's busybox base, copied into the remote daemon and tagged there."""
    reference = images.ensure_busybox_base(host_api, _containers.registry_host())
    try:
        image_id = host_api.inspect_image(reference)["Id"]
    except docker.errors.ImageNotFound:
        repository, _, digest = reference.partition("@")
        host_api.pull(repository, tag=digest)
        image_id = host_api.inspect_image(reference)["Id"]
    remote.load_image(b"".join(host_api.get_image(image_id)))
    remote.tag(image_id, "edgeferry-test/busybox", "base")
    return "edgeferry-test/busybox:base"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def remote(host_api: docker.APIClient) -> Iterator[docker.APIClient]:
    """A second dockerd (the testbed's dind image) at tcp://127.0.0.1:<port>, no bridge."""
    # Its containers' network is `none`: what they publish goes nowhere this process can reach.
    reference = images.ensure_dind_image(host_api, _containers.registry_host())
    run_id = _containers.new_run_id()
    labels = {_containers.TEST_LABEL: run_id}
    port = _free_port()
    volume = host_api.create_volume(name=f"edgeferry-test-dind-{run_id}", labels=labels)["Name"]
    container_id: str | None = None
    try:
        container_id = str(
            host_api.create_container(
                reference,
                command=[
                    "--host=tcp://0.0.0.0:2375",
                    "--bridge=none",
                    "--iptables=false",
                    "--data-root=/var/lib/docker",
                ],
                labels=labels,
                ports=[2375],
                host_config=host_api.create_host_config(
                    port_bindings={2375: ("127.0.0.1", port)},
                    binds={
                        volume: {"bind": "/var/lib/docker", "mode": "rw"},
                        "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                    },
                    **_privileged_here(),
                ),
            )["Id"]
        )
        host_api.start(container_id)
        _wait_for_daemon(host_api, port, container_id)
        client = docker_build.connect(f"tcp://127.0.0.1:{port}", timeout_s=300)
        yield client
        client.close()
    finally:
        if container_id is not None:
            with contextlib.suppress(docker.errors.NotFound):
                host_api.stop(container_id, timeout=20)
                host_api.remove_container(container_id, force=True, v=True)
        with contextlib.suppress(docker.errors.NotFound):
            host_api.remove_volume(volume, force=True)


_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
]
"""Linux capabilities by bit number, as far as Engine 20.10 knows them."""


def _privileged_here() -> dict[str, object]:
    """What `privileged` means for dockerd, limited to the capabilities this machine has.

    `privileged: true` asks runc for every capability; where the machine is itself a container
    without some (this testbed lacks CAP_SYS_RESOURCE), runc refuses to start it. So: every
    capability in our bounding set, no seccomp or AppArmor filter, and (in the binds above) a
    writable cgroup tree.
    """
    status = Path("/proc/self/status").read_text()
    bounding = int(
        next(line for line in status.splitlines() if line.startswith("CapBnd:")).split()[1], 16
    )
    return {
        "cap_add": [name for bit, name in enumerate(_CAPABILITIES) if bounding >> bit & 1],
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    }


def _wait_for_daemon(host_api: docker.APIClient, port: int, container_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/_ping", timeout=2).text == "OK":
                return
        state = host_api.inspect_container(container_id)["State"]
        if not state.get("Running") or time.monotonic() > deadline:
            log = host_api.logs(container_id, tail=30).decode(errors="replace")
            pytest.fail(f"the second dockerd did not answer (state {state}):\n{log}")
        time.sleep(0.5)


@pytest.fixture
def run_id() -> str:
    return _containers.new_run_id()


@pytest.fixture
def leftovers(remote: docker.APIClient, run_id: str) -> Iterator[None]:
    with _containers.cleanup(remote, run_id):
        yield


@pytest.fixture(scope="module")
def httpd_image(remote: docker.APIClient, busybox_base: str) -> str:
    """The tiny busybox httpd server, built by the remote daemon itself (from the registry)."""
    built = docker_build.build_image(
        remote,
        HTTPD_DOCKERFILE.format(base=busybox_base),
        labels={_containers.TEST_LABEL: "smoke-backends"},
    )
    return built.image_id


def _build(remote: docker.APIClient, dockerfile: str, run_id: str) -> str:
    built = docker_build.build_image(remote, dockerfile, labels={_containers.TEST_LABEL: run_id})
    return built.image_id


def _smoke(
    api: docker.APIClient,
    image: str,
    run_id: str,
    probe: str,
    *,
    timeout_s: float,
    prediction: smoke.PredictionRequest | None = None,
) -> smoke.SmokeResult:
    return smoke.smoke_test(
        api,
        image,
        probe_image=probe,
        prediction=prediction,
        labels={_containers.TEST_LABEL: run_id},
        timeout_s=timeout_s,
    )


def test_what_the_remote_daemon_publishes_is_not_reachable_from_here(
    remote: docker.APIClient, httpd_image: str, run_id: str, leftovers: None
) -> None:
    """The premise: the operator's old way (a published port on its loopback) cannot work."""
    container = remote.create_container(
        httpd_image,
        ports=[8080],
        labels={_containers.TEST_LABEL: run_id},
        host_config=remote.create_host_config(port_bindings={8080: ("127.0.0.1",)}),
    )
    remote.start(container["Id"])
    bindings = remote.port(container["Id"], 8080) or []
    ports = [int(b["HostPort"]) for b in bindings if b.get("HostPort")]
    assert [port for port in ports if _answers(port)] == []


def _answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def test_a_healthy_image_passes_on_the_remote_daemon_and_answers_a_prediction(
    remote: docker.APIClient, httpd_image: str, busybox_base: str, run_id: str, leftovers: None
) -> None:
    body = b'{"instances": [[1, 2, 3, 4]]}'
    result = _smoke(
        remote,
        httpd_image,
        run_id,
        busybox_base,
        prediction=smoke.PredictionRequest(body=body, path="/cgi-bin/predict"),
        timeout_s=30,
    )
    assert result.passed, result
    assert result.reason == "Passed"
    assert result.startup_ms is not None and result.startup_ms > 0
    assert result.health_latency_ms is not None and result.health_latency_ms > 0
    assert result.prediction is not None
    assert result.prediction.status_code == 200
    assert json.loads(result.prediction.body) == {"instances": [[1, 2, 3, 4]]}
    assert result.prediction.latency_ms > 0
    assert _containers.containers_labelled(remote, run_id) == []


def test_a_prediction_error_on_the_remote_daemon_reports_its_status_and_body(
    remote: docker.APIClient, httpd_image: str, busybox_base: str, run_id: str, leftovers: None
) -> None:
    result = _smoke(
        remote,
        httpd_image,
        run_id,
        busybox_base,
        prediction=smoke.PredictionRequest(body=b"{}", path="/cgi-bin/broken"),
        timeout_s=30,
    )
    assert (result.passed, result.reason) == (False, "PredictionFailed")
    assert result.prediction is not None
    assert result.prediction.status_code == 500
    assert "model not loaded" in result.prediction.body
    assert "answered 500" in result.message
    assert _containers.containers_labelled(remote, run_id) == []


def test_an_image_that_never_gets_healthy_fails_on_the_remote_daemon_with_its_log(
    remote: docker.APIClient, busybox_base: str, run_id: str, leftovers: None
) -> None:
    dockerfile = (
        f"FROM {busybox_base}\n"
        'CMD ["sh", "-c", "echo loading model; echo model file is corrupt >&2; sleep 600"]\n'
    )
    result = _smoke(remote, _build(remote, dockerfile, run_id), run_id, busybox_base, timeout_s=5)
    assert (result.passed, result.reason) == (False, "HealthTimeout")
    assert "/healthz did not answer 2xx within 5s" in result.message
    assert "connection refused" in result.message
    assert "model file is corrupt" in result.log_tail
    assert _containers.containers_labelled(remote, run_id) == []


def test_an_image_that_exits_fails_on_the_remote_daemon_with_its_exit_code(
    remote: docker.APIClient, busybox_base: str, run_id: str, leftovers: None
) -> None:
    dockerfile = f'FROM {busybox_base}\nCMD ["sh", "-c", "echo cannot bind port >&2; exit 7"]\n'
    result = _smoke(remote, _build(remote, dockerfile, run_id), run_id, busybox_base, timeout_s=30)
    assert (result.passed, result.reason) == (False, "ContainerExited")
    assert "code 7" in result.message
    assert result.log_tail == ("cannot bind port",)
    assert _containers.containers_labelled(remote, run_id) == []
