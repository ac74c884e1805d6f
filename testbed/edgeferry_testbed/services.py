"""The container side of the testbed: Docker daemon, registry and Prometheus.

A Docker daemon or registry that already answers is reused and left alone by `down`; only what
the testbed started itself is stopped. Prometheus is always the testbed's own, configured to
scrape the operator and to load edgeferry's alert rules when they exist, and to scrape the
model Pods on real nodes that a test lists (`write_model_pods`, read through `file_sd_configs`:
Debian's Prometheus has no Kubernetes service discovery), so a rollout's analysis measures
real traffic.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

import docker

from edgeferry_testbed import layout, procs

DOCKER_SOCKET = "unix:///var/run/docker.sock"
RULES_FILE = layout.REPO_ROOT / "manifests" / "monitoring" / "edgeferry-rules.yaml"


def docker_answers(host: str = DOCKER_SOCKET) -> bool:
    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def ensure_docker(sup: procs.Supervisor, lay: layout.Layout) -> str:
    """A usable Docker daemon: the running one, or a dockerd the testbed starts (and owns)."""
    if docker_answers():
        return "reused"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise procs.TestbedError("dockerd is not installed: `apt-get install docker.io`")
    run = lay.state_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    sup.start("dockerd", [dockerd, f"--host={DOCKER_SOCKET}", f"--pidfile={run / 'dockerd.pid'}"])
    procs.wait_until(
        docker_answers,
        timeout=60,
        what="dockerd to answer on /var/run/docker.sock",
        on_timeout=lambda: sup.log_tail("dockerd"),
    )
    return "started"


def registry_answers(lay: layout.Layout) -> bool:
    return procs.http_ok(f"http://{lay.registry}/v2/")


def ensure_registry(sup: procs.Supervisor, lay: layout.Layout) -> str:
    """The Debian `docker-registry` on 127.0.0.1, storing under the user cache (images survive
    `down`, so base images are not rebuilt on every run), and a second process on the same
    storage at the host address for Pods (dind in the operator's Pod, containerd of real nodes)."""
    how = _ensure_registry_process(sup, lay, "registry", lay.registry)
    pods = _ensure_registry_process(sup, lay, "registry-pods", lay.pod_registry)
    return f"{how}; for Pods at {lay.pod_registry}: {pods}"


def _ensure_registry_process(
    sup: procs.Supervisor, lay: layout.Layout, name: str, address: str
) -> str:
    if procs.http_ok(f"http://{address}/v2/"):
        return "reused"
    host, _, port = address.rpartition(":")
    if not procs.port_is_free(int(port), host):
        raise procs.TestbedError(f"port {address} is taken by something that is not a registry")
    binary = shutil.which("docker-registry")
    if binary is None:
        raise procs.TestbedError(
            "docker-registry is not installed: `apt-get install docker-registry`"
        )
    config = lay.state_dir / f"{name}.yml"
    storage = lay.cache_dir / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        "http:\n"
        f"  addr: {address}\n"
    )
    sup.start(name, [binary, "serve", str(config)])
    procs.wait_until(
        lambda: procs.http_ok(f"http://{address}/v2/"),
        timeout=30,
        what=f"the registry at {address}",
        on_timeout=lambda: sup.log_tail(name),
    )
    return "started"


MODEL_POD_LABELS = ("cluster", "namespace", "pod", "image")
"""Labels every scraped model-Pod series carries: the testbed cluster, the Pod's namespace and
name, and its container image (`repository@sha256:...`, so a query can select a release by
`image=~".*@{{ digest }}"`)."""


def model_pods_dir(lay: layout.Layout) -> Path:
    """Where `file_sd_configs` of job `model-pods` looks for target files (`*.json`)."""
    return lay.state_dir / "prometheus" / "model-pods"


def write_model_pods(
    lay: layout.Layout, key: str, pods: Iterable[tuple[str, Mapping[str, str]]]
) -> None:
    """Make Prometheus scrape these model Pods (`address:port`, labels), as file `key`.

    Debian's Prometheus is built without Kubernetes service discovery, so whoever knows which
    Pods run on the real nodes (a test) lists them here; Prometheus notices the file at once.
    The file is replaced whole (written aside, then renamed), so it never reads half of one.
    """
    directory = model_pods_dir(lay)
    directory.mkdir(parents=True, exist_ok=True)
    groups = [{"targets": [address], "labels": dict(labels)} for address, labels in pods]
    partial = directory / f".{key}.json.tmp"
    partial.write_text(json.dumps(groups, sort_keys=True))
    partial.replace(directory / f"{key}.json")


def forget_model_pods(lay: layout.Layout, key: str) -> None:
    """Stop scraping the Pods `write_model_pods` listed under `key`."""
    (model_pods_dir(lay) / f"{key}.json").unlink(missing_ok=True)


def prometheus_config(lay: layout.Layout, rules: Path | None) -> str:
    rule_files = f"rule_files:\n  - {rules}\n" if rules is not None else ""
    return (
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        f"{rule_files}"
        "scrape_configs:\n"
        "  - job_name: edgeferry-operator\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{lay.operator_metrics_port}']\n"
        "  - job_name: prometheus\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{lay.prometheus_port}']\n"
        "  - job_name: model-pods\n"
        "    file_sd_configs:\n"
        f"      - files: ['{model_pods_dir(lay)}/*.json']\n"
        "        refresh_interval: 5s\n"
        f"{_operator_pods_job(lay)}"
    )


OPERATOR_PODS_FILE = "operator-pods.json"
"""Beside prometheus.yml: the in-cluster operator Pod's address (`incluster.publish_to_prometheus`
writes it). Debian's Prometheus is built without Kubernetes service discovery, so the testbed
plays it: a file_sd target list, re-read by Prometheus whenever it changes."""


def _operator_pods_job(lay: layout.Layout) -> str:
    return (
        "  - job_name: edgeferry-operator-pods\n"
        "    file_sd_configs:\n"
        f"      - files: ['{lay.state_dir / 'prometheus' / OPERATOR_PODS_FILE}']\n"
    )


def prometheus_url(lay: layout.Layout) -> str:
    return f"http://127.0.0.1:{lay.prometheus_port}"


def ensure_prometheus(sup: procs.Supervisor, lay: layout.Layout) -> str:
    """Prometheus on 127.0.0.1 scraping the operator's metrics port, loading our alert rules.

    The configuration is rewritten on every `up`; a running Prometheus whose configuration
    changed (say, the rules file appeared) is told to reload it.
    """
    home = lay.state_dir / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    pods = home / OPERATOR_PODS_FILE
    if not pods.exists():
        pods.write_text("[]\n")
    config = home / "prometheus.yml"
    wanted = prometheus_config(lay, RULES_FILE if RULES_FILE.exists() else None)
    changed = not config.exists() or config.read_text() != wanted
    config.write_text(wanted)
    if sup.find("prometheus") is not None:
        if changed:
            request = urllib.request.Request(f"{prometheus_url(lay)}/-/reload", method="POST")
            with urllib.request.urlopen(request, timeout=10):
                pass
            return "reused, configuration reloaded"
        return "reused"
    if not procs.port_is_free(lay.prometheus_port):
        raise procs.TestbedError(f"port 127.0.0.1:{lay.prometheus_port} (Prometheus) is taken")
    binary = shutil.which("prometheus")
    if binary is None:
        raise procs.TestbedError("prometheus is not installed: `apt-get install prometheus`")
    sup.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{lay.prometheus_port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=2h",
        ],
    )
    procs.wait_until(
        lambda: procs.http_ok(f"{prometheus_url(lay)}/-/ready"),
        timeout=60,
        what="Prometheus",
        on_timeout=lambda: sup.log_tail("prometheus"),
    )
    return "started"
