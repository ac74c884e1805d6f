"""How the container adapters read what hadolint, the Docker daemon and registries print."""

from __future__ import annotations

import io
import json
import pathlib
import tarfile
from typing import Any

import pytest

from edgeferry.adapters import docker_build, hadolint, registry
from edgeferry_testbed import images

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


# -- hadolint -----------------------------------------------------------------------------------

HADOLINT_JSON = json.dumps(
    [
        {
            "code": "DL3006",
            "column": 1,
            "file": "-",
            "level": "warning",
            "line": 1,
            "message": "Always tag the version of an image explicitly",
        },
        {
            "code": "DL3009",
            "column": 1,
            "file": "-",
            "level": "info",
            "line": 2,
            "message": "Delete the apt lists (/var/lib/apt/lists) after installing something",
        },
        {
            "code": "DL4000",
            "column": 1,
            "file": "-",
            "level": "error",
            "line": 4,
            "message": "MAINTAINER is deprecated",
        },
    ]
)


def test_hadolint_findings_are_typed_and_most_severe_first() -> None:
    findings = hadolint.parse_findings(HADOLINT_JSON)
    assert [(f.rule, f.level, f.line) for f in findings] == [
        ("DL4000", "error", 4),
        ("DL3006", "warning", 1),
        ("DL3009", "info", 2),
    ]
    assert findings[0].message == "MAINTAINER is deprecated"


def test_hadolint_parse_error_is_an_error_finding() -> None:
    output = (
        '[{"code":"DL1000","column":4,"file":"/dev/stdin","level":"error","line":2,'
        '"message":"missing whitespace"}]'
    )
    (finding,) = hadolint.parse_findings(output)
    assert (finding.rule, finding.level, finding.line, finding.column) == ("DL1000", "error", 2, 4)


def test_hadolint_clean_dockerfile_has_no_findings() -> None:
    assert hadolint.parse_findings("[]") == ()
    assert hadolint.parse_findings("") == ()


def test_hadolint_unknown_level_counts_as_error() -> None:
    (finding,) = hadolint.parse_findings('[{"code":"X1","line":1,"level":"fatal","message":"m"}]')
    assert finding.level == "error"


@pytest.mark.parametrize("output", ["not json", '{"code": "DL3006"}', '[{"line": 1}]'])
def test_hadolint_output_we_cannot_read_raises(output: str) -> None:
    with pytest.raises(hadolint.HadolintError):
        hadolint.parse_findings(output)


def test_missing_hadolint_binary_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(hadolint.HadolintError, match="missing or not executable"):
        hadolint.find_binary(str(tmp_path / "hadolint"))


# -- docker build stream ------------------------------------------------------------------------


def test_build_log_joins_text_split_across_chunks_and_keeps_the_image_id() -> None:
    log = docker_build.BuildLog()
    chunks: list[dict[str, Any]] = [
        {"stream": "Step 1/2 : FROM base\n"},
        {"stream": " ---> 0ade2f8a2c24\nStep 2/2 : RUN ec"},
        {"stream": "ho hi\n"},
        {"aux": {"ID": "sha256:" + "c" * 64}},
        {"stream": "Successfully built cccccccccccc\n"},
    ]
    for chunk in chunks:
        log.feed(chunk)
    assert log.image_id == "sha256:" + "c" * 64
    assert log.error is None
    assert log.tail() == (
        "Step 1/2 : FROM base",
        " ---> 0ade2f8a2c24",
        "Step 2/2 : RUN echo hi",
        "Successfully built cccccccccccc",
    )


def test_build_log_error_ends_the_tail() -> None:
    log = docker_build.BuildLog()
    log.feed({"stream": "Step 2/2 : RUN false\n"})
    log.feed({"stream": " ---> Running in 1234\n"})
    log.feed(
        {
            "errorDetail": {
                "code": 1,
                "message": "The command '/bin/sh -c false' returned a non-zero code: 1",
            },
            "error": "ignored when errorDetail has one",
        }
    )
    assert log.error == "The command '/bin/sh -c false' returned a non-zero code: 1"
    assert log.tail()[-1].startswith("ERROR: The command")
    assert log.image_id is None


def test_build_log_skips_pull_progress_but_keeps_milestones() -> None:
    log = docker_build.BuildLog()
    log.feed({"status": "Downloading", "progressDetail": {"current": 1, "total": 9}, "id": "ab"})
    log.feed({"status": "Pull complete", "progressDetail": {}, "id": "ab"})
    log.feed({"status": "Digest: " + DIGEST_A})
    assert log.tail() == ("ab: Pull complete", "Digest: " + DIGEST_A)


def test_build_log_tail_is_bounded() -> None:
    log = docker_build.BuildLog(max_lines=3)
    for number in range(100):
        log.feed({"stream": f"line {number}\n"})
    assert log.tail() == ("line 97", "line 98", "line 99")


def test_build_error_message_quotes_the_tail() -> None:
    error = docker_build.BuildError("build failed: boom", log_tail=("a", "b"))
    assert str(error) == "build failed: boom\na\nb"


def test_build_context_is_deterministic_and_holds_the_dockerfile() -> None:
    first = docker_build.context_tar("FROM x\n", {"b.txt": b"B", "dir/a.txt": b"A"})
    second = docker_build.context_tar("FROM x\n", {"dir/a.txt": b"A", "b.txt": b"B"})
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        assert archive.getnames() == ["Dockerfile", "b.txt", "dir/a.txt"]
        dockerfile = archive.extractfile("Dockerfile")
        assert dockerfile is not None and dockerfile.read() == b"FROM x\n"


@pytest.mark.parametrize("name", ["Dockerfile", "../escape", "a/../../b", "/"])
def test_build_context_refuses_names_that_clash_or_escape(name: str) -> None:
    with pytest.raises(ValueError):
        docker_build.context_tar("FROM x\n", {name: b""})


# -- registry -----------------------------------------------------------------------------------


def test_push_digest_comes_from_the_aux_record() -> None:
    stream: list[dict[str, Any]] = [
        {"status": "The push refers to repository [127.0.0.1:5000/m]"},
        {"status": "Pushed", "progressDetail": {}, "id": "e037"},
        {"status": f"v1: digest: {DIGEST_A} size: 527"},
        {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": DIGEST_A, "Size": 527}},
    ]
    assert registry.digest_from_push_stream(stream) == (DIGEST_A, 527)


def test_push_digest_falls_back_to_the_status_line() -> None:
    stream = [{"status": f"v1: digest: {DIGEST_B} size: 1234"}]
    assert registry.digest_from_push_stream(stream) == (DIGEST_B, 1234)


def test_push_error_inside_the_stream_raises() -> None:
    stream: list[dict[str, Any]] = [
        {"status": "Preparing"},
        {"errorDetail": {"message": "denied: requested access"}, "error": "denied"},
    ]
    with pytest.raises(registry.RegistryError, match="denied"):
        registry.digest_from_push_stream(stream)


def test_push_without_a_digest_raises() -> None:
    with pytest.raises(registry.RegistryError, match="no digest"):
        registry.digest_from_push_stream([{"status": "Preparing"}])


def test_repository_names_split_into_host_and_path() -> None:
    name = registry.parse_repository("127.0.0.1:5000/models/iris")
    assert (name.host, name.name) == ("127.0.0.1:5000", "models/iris")
    assert registry.parse_repository("registry.example.com/a").host == "registry.example.com"


@pytest.mark.parametrize(
    "repository", ["models/iris", "iris", "127.0.0.1:5000/m:v1", "127.0.0.1:5000/"]
)
def test_repository_without_host_or_with_tag_is_refused(repository: str) -> None:
    with pytest.raises(ValueError):
        registry.parse_repository(repository)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("127.0.0.1", True),
        ("10.0.0.1:5000", False),
        ("registry.example.com", False),
    ],
)
def test_only_loopback_registries_are_plain_http_by_default(host: str, loopback: bool) -> None:
    assert registry.is_loopback(host) is loopback


def test_bearer_challenge_parameters() -> None:
    challenge = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:models/iris:pull"'
    )
    assert registry.parse_bearer_challenge(challenge) == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:models/iris:pull",
    }


# -- testbed: which Debian mirror the host uses -------------------------------------------------


def test_debian_mirror_comes_from_deb822_sources(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    (tmp_path / "sources.list.d/other.sources").write_text(
        "Types: deb\nURIs: http://third.party/repo\nSuites: nodistro\nComponents: main\n"
    )
    assert images.host_debian_mirror(sources_dir=tmp_path) == "http://mirror.example/debian"


def test_debian_mirror_comes_from_one_line_sources_preferring_http(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb https://secure.example/debian bookworm main\n"
        "deb [arch=amd64] http://plain.example/debian bookworm main\n"
        "# deb http://commented.example/debian bookworm main\n"
    )
    assert images.host_debian_mirror(sources_dir=tmp_path) == "http://plain.example/debian"


def test_no_debian_mirror_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(images.ImageRecipeError, match="no Debian mirror"):
        images.host_debian_mirror(sources_dir=tmp_path)


def test_a_push_counts_the_bytes_of_uploaded_layers_and_not_those_already_there() -> None:
    stream: list[dict[str, Any]] = [
        {"status": "Preparing", "progressDetail": {}, "id": "model"},
        {"status": "Preparing", "progressDetail": {}, "id": "server"},
        {"status": "Layer already exists", "progressDetail": {}, "id": "model"},
        {"status": "Pushing", "progressDetail": {"current": 512, "total": 2048}, "id": "server"},
        {"status": "Pushing", "progressDetail": {"current": 2048, "total": 2048}, "id": "server"},
        {"status": "Pushed", "progressDetail": {}, "id": "server"},
        {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": DIGEST_A, "Size": 527}},
    ]
    layers = registry.PushedLayers()
    assert registry.digest_from_push_stream(stream, layers) == (DIGEST_A, 527)
    assert layers.uploaded == {"server": 2048}
    assert layers.existing == {"model"}
    assert layers.uploaded_bytes == 2048
