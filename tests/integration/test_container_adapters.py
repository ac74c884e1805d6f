"""The container adapters against the real Docker daemon, registry and hadolint: no mocks."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator, Mapping

import docker
import pytest

from edgeferry.adapters import docker_build, hadolint, index_push, oci_index, registry, smoke
from edgeferry.decisions import smoke_platforms
from edgeferry_testbed import images
from tests.integration import _containers, _programs

pytestmark = pytest.mark.integration

HTTPD_DOCKERFILE = """\
FROM {base}
RUN mkdir -p /www/cgi-bin \\
 && echo ok > /www/healthz \\
 && printf '#!/bin/sh\\necho "Content-Type: application/json"\\necho\\ncat\\n' \\
      > /www/cgi-bin/predict \\
 && chmod 0755 /www/cgi-bin/predict
USER app
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""

SKLEARN_SERVER = """\
import json
import time
import pickle
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

with open("/model/model.pkl", "rb") as handle:
    MODEL = pickle.load(handle)


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/predict":
            self._send(404, {"error": "not found"})
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(200, {"predictions": MODEL.predict(request["instances"]).tolist()})


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""

SKLEARN_DOCKERFILE = """\
FROM {base}
COPY model.pkl /model/model.pkl
COPY server.py /app/server.py
USER 10001
EXPOSE 8080
CMD ["python3", "/app/server.py"]
"""


@pytest.fixture(scope="module")
def api() -> Iterator[docker.APIClient]:
    client = _containers.docker_api()
    yield client
    client.close()


@pytest.fixture(scope="module")
def registry_host() -> str:
    return _containers.registry_host()


@pytest.fixture(scope="module")
def busybox_base(api: docker.APIClient, registry_host: str) -> str:
    return images.ensure_busybox_base(api, registry_host)


@pytest.fixture
def run_id() -> str:
    return _containers.new_run_id()


@pytest.fixture
def pushed(api: docker.APIClient, run_id: str) -> Iterator[list[tuple[str, str]]]:
    """Pushes to delete afterwards; also removes this test's labelled containers and images."""
    with _containers.cleanup(api, run_id) as to_delete:
        yield to_delete


def _build(
    api: docker.APIClient,
    dockerfile: str,
    run_id: str,
    *,
    files: Mapping[str, bytes] | None = None,
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> docker_build.BuildResult:
    """Build with this test's label, so the cleanup finds the image."""
    return docker_build.build_image(
        api,
        dockerfile,
        files=files,
        build_args=build_args,
        labels={**(labels or {}), _containers.TEST_LABEL: run_id},
    )


# -- hadolint -----------------------------------------------------------------------------------


def test_hadolint_reports_the_rules_a_bad_dockerfile_breaks() -> None:
    findings = hadolint.lint(
        "FROM debian\nMAINTAINER someone\nRUN cd /tmp && apt-get install -y curl\n"
    )
    by_rule = {finding.rule: finding for finding in findings}
    assert by_rule["DL4000"].level == "error"
    assert by_rule["DL4000"].line == 2
    assert by_rule["DL3006"].level == "warning"
    assert {"DL3003", "DL3008", "DL3015"} <= by_rule.keys()
    assert findings[0].level == "error"


def test_hadolint_ignores_the_rules_it_is_told_to() -> None:
    findings = hadolint.lint("FROM debian\nMAINTAINER someone\n", ignore=["DL4000", "DL3006"])
    assert findings == ()


def test_hadolint_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(hadolint.HadolintError, match="missing"):
        hadolint.lint("FROM scratch\n", binary="/nonexistent/hadolint")


# -- build --------------------------------------------------------------------------------------


def test_build_from_the_local_base_applies_build_args_and_labels(
    api: docker.APIClient, busybox_base: str, run_id: str, pushed: list[tuple[str, str]]
) -> None:
    dockerfile = (
        f"FROM {busybox_base}\n"
        "ARG GREETING=unset\n"
        'RUN echo "$GREETING" > /greeting.txt\n'
        "LABEL org.example.greeting=$GREETING\n"
    )
    result = _build(
        api,
        dockerfile,
        run_id,
        files={"unused.txt": b"context file"},
        build_args={"GREETING": "hello-edge"},
        labels={"edgeferry.io/inputs-digest": "sha256:abc"},
    )
    assert result.labels["edgeferry.io/inputs-digest"] == "sha256:abc"
    assert result.labels["org.example.greeting"] == "hello-edge"
    assert result.labels[_containers.TEST_LABEL] == run_id
    assert (result.architecture, result.os) == ("amd64", "linux")
    base_layers = docker_build.inspect_result(api, busybox_base).layers
    assert result.layers == base_layers + 1
    assert result.size_bytes > 1_000_000  # busybox itself is ~2 MB
    assert any("Successfully built" in line for line in result.log_tail)


def test_a_failing_build_raises_with_the_tail_of_its_log(
    api: docker.APIClient, busybox_base: str, run_id: str, pushed: list[tuple[str, str]]
) -> None:
    dockerfile = f"FROM {busybox_base}\nRUN echo about to fail && exit 3\n"
    with pytest.raises(docker_build.BuildError) as raised:
        _build(api, dockerfile, run_id)
    assert "returned a non-zero code: 3" in raised.value.message
    assert "about to fail" in raised.value.log_tail
    assert raised.value.log_tail[-1].startswith("ERROR:")


def test_a_build_over_its_timeout_is_cancelled_and_leaves_no_container(
    api: docker.APIClient, busybox_base: str, run_id: str, pushed: list[tuple[str, str]]
) -> None:
    dockerfile = f"FROM {busybox_base}\nRUN echo {run_id} && sleep 60\n"
    with pytest.raises(docker_build.BuildError) as raised:
        docker_build.build_image(api, dockerfile, timeout_s=3)
    assert "did not finish within 3s" in raised.value.message
    assert run_id in raised.value.log_tail
    deadline = time.monotonic() + 10
    while any(run_id in str(c.get("Command")) for c in api.containers(all=True)):
        assert time.monotonic() < deadline, "the cancelled build left its RUN container behind"
        time.sleep(0.5)


# -- push ---------------------------------------------------------------------------------------


def test_pushed_digest_is_the_one_the_registry_serves(
    api: docker.APIClient,
    busybox_base: str,
    registry_host: str,
    run_id: str,
    pushed: list[tuple[str, str]],
) -> None:
    built = _build(api, f"FROM {busybox_base}\nRUN echo {run_id} > /run-id\n", run_id)
    repository = f"{registry_host}/edgeferry-test/adapters"
    result = registry.push_image(api, built.image_id, repository, run_id)
    pushed.append((repository, result.digest))

    assert result.reference == f"{repository}@{result.digest}"
    assert registry.manifest_digest(repository, run_id) == result.digest
    assert registry.tag_exists(repository, run_id)
    assert not registry.tag_exists(repository, "never-pushed-" + run_id)
    with registry.RegistryClient() as client:
        assert client.platforms(repository, result.digest) == ("linux/amd64",)
        labels = client.config(repository, run_id)["config"]["Labels"]
    assert labels[_containers.TEST_LABEL] == run_id


def test_the_arm64_only_image_says_arm64_in_the_registry(
    api: docker.APIClient, registry_host: str
) -> None:
    reference = images.ensure_arm64_only_image(api, registry_host)
    repository, digest = reference.split("@")
    with registry.RegistryClient() as client:
        assert client.platforms(repository, digest) == ("linux/arm64",)
    assert images.ensure_arm64_only_image(api, registry_host) == reference  # cached


def test_scratch_build_for_arm64_is_arm64_even_when_amd64_is_cached(
    api: docker.APIClient, run_id: str
) -> None:
    dockerfile = "FROM scratch\nCOPY id.txt /id.txt\n"
    files = {"id.txt": run_id.encode()}
    amd64 = docker_build.build_image(api, dockerfile, files=files, platform="linux/amd64")
    arm64 = docker_build.build_image(api, dockerfile, files=files, platform="linux/arm64")
    assert (amd64.platform, arm64.platform) == ("linux/amd64", "linux/arm64")
    assert amd64.image_id != arm64.image_id


def test_arm64_build_from_an_amd64_only_base_is_refused_naming_the_platform(
    api: docker.APIClient, busybox_base: str, run_id: str
) -> None:
    dockerfile = f"FROM {busybox_base}\nRUN echo {run_id} > /id\n"
    with pytest.raises(
        docker_build.BuildError, match="build for linux/arm64 produced a linux/amd64"
    ):
        docker_build.build_image(api, dockerfile, platform="linux/arm64")


def test_two_platform_images_are_pushed_as_one_oci_index(
    api: docker.APIClient, registry_host: str, run_id: str
) -> None:
    builds = []
    for platform in ("linux/amd64", "linux/arm64"):
        result = docker_build.build_image(
            api,
            "FROM scratch\nCOPY id.txt /id.txt\n",
            files={"id.txt": run_id.encode()},
            platform=platform,
        )
        builds.append(index_push.PlatformBuild(platform, result.image_id))
    repository = f"{registry_host}/test/index-{run_id}"
    pushed = index_push.push_index(api, builds, repository, ["v1", "latest"])
    with registry.RegistryClient() as client:
        _, media_type = client.manifest(repository, pushed.digest)
        assert media_type == oci_index.INDEX_MEDIA_TYPE
        for tag in ("v1", "latest"):
            assert client.manifest_digest(repository, tag) == pushed.digest
        assert client.platforms(repository, "v1") == ("linux/amd64", "linux/arm64")
        for child in pushed.children:
            assert client.manifest_digest(repository, f"v1-{child.os}-{child.architecture}") == (
                child.digest
            )


# -- smoke --------------------------------------------------------------------------------------


def test_a_healthy_server_passes_the_smoke_test_and_answers_a_prediction(
    api: docker.APIClient, busybox_base: str, run_id: str, pushed: list[tuple[str, str]]
) -> None:
    built = _build(api, HTTPD_DOCKERFILE.format(base=busybox_base), run_id)
    body = b'{"instances": [[1, 2, 3, 4]]}'
    result = smoke.smoke_test(
        api,
        built.image_id,
        probe_image=busybox_base,
        prediction=smoke.PredictionRequest(body=body, path="/cgi-bin/predict"),
        labels={_containers.TEST_LABEL: run_id},
        timeout_s=30,
    )
    assert result.passed, result
    assert result.reason == "Passed"
    assert result.port == 8080
    assert result.startup_ms is not None and result.health_latency_ms is not None
    assert result.prediction is not None
    assert result.prediction.status_code == 200
    assert json.loads(result.prediction.body) == {"instances": [[1, 2, 3, 4]]}
    assert result.prediction.latency_ms > 0
    assert _containers.containers_labelled(api, run_id) == []


def test_a_server_that_never_gets_healthy_fails_with_its_log_and_leaves_nothing(
    api: docker.APIClient, busybox_base: str, run_id: str, pushed: list[tuple[str, str]]
) -> None:
    dockerfile = (
        f"FROM {busybox_base}\n"
        'CMD ["sh", "-c", "echo loading model; echo model file is corrupt >&2; sleep 600"]\n'
    )
    built = _build(api, dockerfile, run_id)
    result = smoke.smoke_test(
        api,
        built.image_id,
        probe_image=busybox_base,
        labels={_containers.TEST_LABEL: run_id},
        timeout_s=3,
    )
    assert not result.passed
    assert result.reason == "HealthTimeout"
    assert "/healthz did not answer 2xx within 3s" in result.message
    assert "model file is corrupt" in result.log_tail
    assert _containers.containers_labelled(api, run_id) == []


def test_a_server_that_exits_fails_at_once_with_its_exit_code(
    api: docker.APIClient, busybox_base: str, run_id: str, pushed: list[tuple[str, str]]
) -> None:
    dockerfile = f'FROM {busybox_base}\nCMD ["sh", "-c", "echo cannot bind port >&2; exit 7"]\n'
    built = _build(api, dockerfile, run_id)
    result = smoke.smoke_test(
        api,
        built.image_id,
        probe_image=busybox_base,
        labels={_containers.TEST_LABEL: run_id},
        timeout_s=60,
    )
    assert (result.passed, result.reason) == (False, "ContainerExited")
    assert "code 7" in result.message
    assert result.log_tail == ("cannot bind port",)
    assert _containers.containers_labelled(api, run_id) == []


def test_a_missing_image_is_a_smoke_error_not_an_outcome(
    api: docker.APIClient, busybox_base: str
) -> None:
    with pytest.raises(smoke.SmokeError, match="not found"):
        smoke.smoke_test(
            api,
            "127.0.0.1:5000/edgeferry-test/never-built:nope",
            probe_image=busybox_base,
            timeout_s=1,
        )


def test_a_probe_image_the_daemon_cannot_get_is_a_smoke_error_naming_it(
    api: docker.APIClient, busybox_base: str, run_id: str, pushed: list[tuple[str, str]]
) -> None:
    built = _build(api, HTTPD_DOCKERFILE.format(base=busybox_base), run_id)
    missing = "127.0.0.1:5000/edgeferry-test/no-such-probe:nope"
    with pytest.raises(smoke.SmokeError, match=r"probe image .*no-such-probe"):
        smoke.smoke_test(
            api,
            built.image_id,
            probe_image=missing,
            labels={_containers.TEST_LABEL: run_id},
            timeout_s=5,
        )
    assert _containers.containers_labelled(api, run_id) == []


# -- the real thing: a scikit-learn model served from the debootstrapped base -------------------


@pytest.mark.slow
def test_the_sklearn_base_serves_a_real_prediction(
    api: docker.APIClient,
    registry_host: str,
    busybox_base: str,
    run_id: str,
    pushed: list[tuple[str, str]],
) -> None:
    base = images.ensure_python_sklearn_base(api, registry_host)
    model = images.make_sklearn_model(api, base)
    dockerfile = SKLEARN_DOCKERFILE.format(base=base)
    assert [f for f in hadolint.lint(dockerfile) if f.level == "error"] == []
    built = _build(
        api, dockerfile, run_id, files={"model.pkl": model, "server.py": SKLEARN_SERVER.encode()}
    )
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
    body = json.dumps({"instances": [setosa, virginica]}).encode()
    result = smoke.smoke_test(
        api,
        built.image_id,
        probe_image=busybox_base,
        prediction=smoke.PredictionRequest(body=body),
        labels={_containers.TEST_LABEL: run_id},
        timeout_s=60,
    )
    assert result.passed, result
    assert result.prediction is not None
    assert json.loads(result.prediction.body) == {"predictions": [0, 2]}
    assert _containers.containers_labelled(api, run_id) == []


def _executable_tar(name: str, data: bytes) -> bytes:
    """A tar holding one executable file: `ADD` unpacks it with its mode (context files are
    0644, and FROM scratch has no chmod), so the kernel gets to say it cannot run the format."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o755
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_platform_the_daemon_cannot_emulate_reads_as_emulation_missing(
    api: docker.APIClient, run_id: str, busybox_base: str
) -> None:
    # No binfmt rule for riscv64 is registered here (only aarch64), so this daemon stands for one
    # without emulation: the decision must recognise what it really says.
    program = bytearray(_programs.arm64_program_exiting_42_bytes())
    program[18:20] = (243).to_bytes(2, "little")  # EM_RISCV
    built = docker_build.build_image(
        api,
        f'FROM scratch\nADD serve.tar /\nLABEL run={run_id}\nCMD ["/serve"]\n',
        files={"serve.tar": _executable_tar("serve", bytes(program))},
        platform="linux/riscv64",
    )
    result = smoke.smoke_test(
        api, built.image_id, probe_image=busybox_base, platform="linux/riscv64", timeout_s=30
    )
    assert (result.passed, result.reason) == (False, "ContainerExited"), result
    run = smoke_platforms.Run("linux/riscv64", built.image_id, emulated=True)
    reason, message = smoke_platforms.failure(
        run, reason=result.reason, message=result.message, log_tail=result.log_tail
    )
    assert reason == "EmulationMissing", (result.message, result.log_tail)
    assert message.startswith("linux/riscv64 (emulated): the Docker daemon cannot run"), message
