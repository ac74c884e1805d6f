"""The Helm chart: lints strictly, and its values schema rejects what a typo would produce."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from edgeferry import settings
from tests.unit import _binaries

CHART = _binaries.REPO / "charts" / "edgeferry"
OPEN_OBJECTS = {
    "global",  # Helm's own, shared with parent charts
    "affinity.nodeAffinity",  # Kubernetes types, passed through as they are
    "affinity.podAffinity",
    "affinity.podAntiAffinity",
    "extraEnv[].valueFrom",
    "build.dind.extraVolumes[]",
}
"""Schema paths allowed to accept any keys; everything else must list its properties."""


def _template(*values: str) -> subprocess.CompletedProcess[str]:
    command = [_binaries.helm(), "template", "edgeferry", str(CHART), "-n", "edgeferry-system"]
    for value in values:
        command += ["--set", value]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("monitoring.enabled=true",),
        ("build.backend=dind", "monitoring.enabled=true"),
        ("build.backend=hostSocket", "build.hostSocket.socketGroup=998"),
    ],
    ids=["defaults", "monitoring", "dind+monitoring", "hostSocket"],
)
def test_chart_passes_strict_lint(values: tuple[str, ...]) -> None:
    command = [_binaries.helm(), "lint", "--strict", str(CHART)]
    for value in values:
        command += ["--set", value]
    out = _binaries.run(command)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    "typo",
    [
        "monitoring.enabeld=true",
        "image.tagg=1.0",
        "build.backend=kaniko",
        "build.hostSocket.socketGroup=docker",
        "build.dind.extraArgs={debug}",
        "rbac.namespace={a}",
        "resources.limits.memroy=1Gi",
        "watchNamespaces={Team_A}",
        "image.digest=latest",
    ],
)
def test_values_schema_rejects_typos(typo: str) -> None:
    done = _template(typo)
    assert done.returncode != 0, f"--set {typo} was accepted"
    assert "schema" in done.stderr


def test_every_schema_object_lists_its_properties() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    unchecked = [
        path
        for path, node in schema_objects(schema, "")
        if path not in OPEN_OBJECTS
        and node.get("additionalProperties") is not False
        and not isinstance(node.get("additionalProperties"), dict)
    ]
    assert unchecked == [], f"schema objects that accept any key: {unchecked}"


def schema_objects(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path or "<root>", node)] if node.get("type") == "object" else []
    for name, child in (node.get("properties") or {}).items():
        found += schema_objects(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        found += schema_objects(node["items"], f"{path}[]")
    for alternative in node.get("anyOf", []):
        found += schema_objects(alternative, path)
    return found


def test_every_default_value_is_described_by_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])
    assert _template().returncode == 0


def test_dind_backend_keeps_the_operator_container_unprivileged() -> None:
    done = _template(
        "build.backend=dind", "build.dind.image=registry.local/docker@sha256:" + "a" * 64
    )
    assert done.returncode == 0, done.stderr
    deployment = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment")
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"operator", "dind"}
    operator = containers["operator"]
    env = {e["name"]: e["value"] for e in operator["env"]}
    assert env["DOCKER_HOST"] == "tcp://127.0.0.1:2375"
    assert operator["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    assert containers["dind"]["image"].endswith("@sha256:" + "a" * 64)
    assert containers["dind"]["securityContext"]["privileged"] is True


def _deployment(*values: str) -> dict[str, Any]:
    done = _template(*values)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = next(
        d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment"
    )
    return found


def test_dind_security_context_and_extra_volumes_replace_privileged_where_nodes_refuse_it() -> None:
    """What the testbed installs with: no `privileged`, the capabilities listed, the node's
    cgroup tree mounted; the operator container is untouched."""
    values = (
        "build.backend=dind",
        "build.dind.securityContext.privileged=false",
        "build.dind.securityContext.capabilities.add={SYS_ADMIN,NET_ADMIN}",
        "build.dind.securityContext.seccompProfile.type=Unconfined",
        "build.dind.extraVolumes[0].name=cgroup",
        "build.dind.extraVolumes[0].hostPath.path=/sys/fs/cgroup",
        "build.dind.extraVolumeMounts[0].name=cgroup",
        "build.dind.extraVolumeMounts[0].mountPath=/sys/fs/cgroup",
    )
    pod = _deployment(*values)["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["dind"]["securityContext"] == {
        "privileged": False,
        "runAsNonRoot": False,  # the defaults not overridden stay (Helm merges maps)
        "runAsUser": 0,
        "capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]},
        "seccompProfile": {"type": "Unconfined"},
    }
    assert {"name": "cgroup", "mountPath": "/sys/fs/cgroup"} in containers["dind"]["volumeMounts"]
    assert {"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup"}} in pod["volumes"]
    assert containers["operator"]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_dind_listens_on_the_pod_loopback_with_its_storage_in_an_empty_dir() -> None:
    pod = _deployment(
        "build.backend=dind",
        "build.insecureRegistries={10.255.0.1:5000,registry.lab:5000}",
        "build.dind.extraArgs={--registry-mirror=http://mirror.lab}",
    )["spec"]["template"]["spec"]
    dind = next(c for c in pod["containers"] if c["name"] == "dind")
    assert dind["args"] == [
        "--host=tcp://127.0.0.1:2375",
        "--tls=false",
        "--data-root=/var/lib/docker",
        "--insecure-registry=10.255.0.1:5000",
        "--insecure-registry=registry.lab:5000",
        "--registry-mirror=http://mirror.lab",
    ]
    assert {"name": "dind-storage", "mountPath": "/var/lib/docker"} in dind["volumeMounts"]
    storage = next(v for v in pod["volumes"] if v["name"] == "dind-storage")
    assert storage == {"name": "dind-storage", "emptyDir": {"sizeLimit": "20Gi"}}
    operator = next(c for c in pod["containers"] if c["name"] == "operator")
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["EDGEFERRY_INSECURE_REGISTRIES"] == "10.255.0.1:5000,registry.lab:5000"
    assert all("docker.sock" not in str(v) for v in pod["volumes"])


def test_host_socket_mounts_the_nodes_socket_with_its_group_and_nothing_privileged() -> None:
    pod = _deployment("build.backend=hostSocket", "build.hostSocket.socketGroup=998")["spec"][
        "template"
    ]["spec"]
    (operator,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert {"name": "docker-socket", "mountPath": "/var/run/docker.sock"} in operator[
        "volumeMounts"
    ]
    socket = next(v for v in pod["volumes"] if v["name"] == "docker-socket")
    assert socket["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    assert pod["securityContext"]["supplementalGroups"] == [998]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert operator["securityContext"]["privileged"] is False


def test_host_socket_without_the_sockets_group_is_refused_saying_how_to_find_it() -> None:
    done = _template("build.backend=hostSocket")
    assert done.returncode != 0
    assert "build.hostSocket.socketGroup" in done.stderr
    assert "stat -c %g" in done.stderr


@pytest.mark.parametrize("backend", ["remote", "dind", "hostSocket"])
def test_every_backend_gives_the_operator_the_smoke_probe_image(backend: str) -> None:
    probe = "registry.lab/busybox@sha256:" + "d" * 64
    pod = _deployment(
        f"build.backend={backend}",
        "build.hostSocket.socketGroup=998",
        f"build.smokeProbeImage={probe}",
    )["spec"]["template"]["spec"]
    operator = next(c for c in pod["containers"] if c["name"] == "operator")
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["EDGEFERRY_SMOKE_PROBE_IMAGE"] == probe
    assert "EDGEFERRY_INSECURE_REGISTRIES" not in env
    assert [c["name"] for c in pod["containers"]] == (
        ["operator", "dind"] if backend == "dind" else ["operator"]
    )


def test_the_smoke_probe_image_defaults_to_the_operators_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["build"]["smokeProbeImage"] == settings.BuildSettings.smoke_probe_image


def test_remote_backend_passes_docker_host_through() -> None:
    done = _template("build.remote.dockerHost=tcp://builder.ci.svc:2375")
    deployment = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment")
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in operator["env"]}
    assert env["DOCKER_HOST"] == "tcp://builder.ci.svc:2375"


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "b" * 64
    done = _template(f"image.digest={digest}", "image.tag=9.9.9")
    deployment = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/edgeferry/operator@{digest}"


def _operator_env(*values: str) -> dict[str, str | None]:
    done = _template(*values)
    assert done.returncode == 0, done.stderr
    deployment = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment")
    container = next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
    )
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize(
    ("value", "variable", "expected"),
    [
        ("scan.dbStaleSeconds=86400", "EDGEFERRY_SCAN_DB_STALE_SECONDS", "86400"),
        (
            "scan.dbUpdateUrl=https://mirror.example/latest.json",
            "GRYPE_DB_UPDATE_URL",
            "https://mirror.example/latest.json",
        ),
        ("targets.allowInsecureSkipTLSVerify=true", "EDGEFERRY_ALLOW_INSECURE_TARGET_TLS", "true"),
    ],
)
def test_scan_and_target_values_reach_the_operator(
    value: str, variable: str, expected: str
) -> None:
    assert _operator_env(value)[variable] == expected


def test_without_an_update_url_grype_keeps_its_default_host() -> None:
    env = _operator_env()
    assert "GRYPE_DB_UPDATE_URL" not in env
    assert env["EDGEFERRY_SCAN_DB_STALE_SECONDS"] == "172800"
    assert env["EDGEFERRY_ALLOW_INSECURE_TARGET_TLS"] == "false"


@pytest.mark.parametrize(
    "bad", ["scan.dbStaleSeconds=0", "targets.allowInsecureSkipTLSVerify=yes", "targets.x=1"]
)
def test_values_schema_rejects_bad_scan_and_target_values(bad: str) -> None:
    done = _template(bad)
    assert done.returncode != 0, f"--set {bad} was accepted"


def test_analysis_prometheus_and_its_secret_reach_the_operator() -> None:
    done = _template(
        "analysis.prometheus.url=https://prometheus.monitoring:9090",
        "analysis.prometheus.username=edgeferry",
        "analysis.prometheus.credentialsSecret.name=prom-creds",
        "analysis.prometheus.credentialsSecret.passwordKey=pw",
        "analysis.prometheus.credentialsSecret.caKey=ca",
    )
    assert done.returncode == 0, done.stderr
    deployment = next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    operator = next(c for c in pod["containers"] if c["name"] == "operator")
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["EDGEFERRY_PROMETHEUS_URL"] == "https://prometheus.monitoring:9090"
    assert env["EDGEFERRY_PROMETHEUS_USERNAME"] == "edgeferry"
    assert env["EDGEFERRY_PROMETHEUS_PASSWORD_FILE"] == "/etc/edgeferry/prometheus/password"
    assert env["EDGEFERRY_PROMETHEUS_CA_FILE"] == "/etc/edgeferry/prometheus/ca.crt"
    assert "EDGEFERRY_PROMETHEUS_BEARER_TOKEN_FILE" not in env
    (volume,) = [v for v in pod["volumes"] if v["name"] == "prometheus-credentials"]
    assert volume["secret"] == {
        "secretName": "prom-creds",
        "items": [{"key": "pw", "path": "password"}, {"key": "ca", "path": "ca.crt"}],
    }
    # The operator reads what the chart sets.
    config = settings.from_env({k: v for k, v in env.items() if v is not None}).analysis
    assert str(config.password_file) == "/etc/edgeferry/prometheus/password"


def test_without_a_prometheus_url_the_operator_gets_none() -> None:
    env = _operator_env()
    assert "EDGEFERRY_PROMETHEUS_URL" not in env
    assert settings.from_env({k: v for k, v in env.items() if v}).analysis.prometheus_url is None


@pytest.mark.parametrize(
    "bad",
    [
        ["analysis.prometheus.url=prometheus:9090"],
        ["analysis.prometheus.username=edgeferry"],
        ["analysis.prometheus.credentialsSecret.tokenKey=token"],
    ],
)
def test_unusable_prometheus_values_are_refused(bad: list[str]) -> None:
    assert _template(*bad).returncode != 0, f"--set {bad} was accepted"
