"""The container side of the testbed: Docker daemon, registry and Prometheus.

A Docker daemon or registry that already answers is reused and left alone by `down`; only what
the testbed started itself is stopped. Prometheus is always the testbed's own, configured to
scrape the operator and to load edgeferry's alert rules when they exist, and to scrape the
model Pods that run on real nodes (found through each cluster's API server, as users'
Prometheus finds Pods with `kubernetes_sd_configs`), so a rollout's analysis measures real
traffic.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import docker

from edgeferry_testbed import clusters, layout, pki, procs

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


def _model_pod_jobs(lay: layout.Layout, home: Path) -> str:
    """One scrape job per cluster with real nodes: Pods edgeferry manages, on a real node (kwok
    Pods run nothing), their container port named `http` (the model server's `/metrics`).

    Service discovery reads Pods from the cluster's API server with the testbed's CA and the
    cluster's admin token (a file of its own: Prometheus reads the bare token).
    """
    ca = pki.ensure_serving_certs(lay.state_dir / "pki", clusters.serving_addresses(lay)).ca_cert
    jobs = []
    for cluster in lay.clusters:
        if not cluster.real_nodes:
            continue
        token, _ = pki.ensure_admin_token(clusters.ClusterFiles(lay, cluster).dir)
        token_file = home / f"{cluster.name}.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        nodes = "|".join(n.name for n in cluster.real_nodes)
        jobs.append(
            f"  - job_name: model-pods-{cluster.name}\n"
            "    kubernetes_sd_configs:\n"
            "      - role: pod\n"
            f"        api_server: {clusters.api_url(lay, cluster)}\n"
            f"        tls_config: {{ca_file: {ca}}}\n"
            f"        authorization: {{credentials_file: {token_file}}}\n"
            "    relabel_configs:\n"
            "      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_managed_by]\n"
            "        regex: edgeferry\n"
            "        action: keep\n"
            "      - source_labels: [__meta_kubernetes_pod_node_name]\n"
            f"        regex: '{nodes}'\n"
            "        action: keep\n"
            "      - source_labels: [__meta_kubernetes_pod_container_port_name]\n"
            "        regex: http\n"
            "        action: keep\n"
            f"      - target_label: cluster\n        replacement: {cluster.name}\n"
            "      - source_labels: [__meta_kubernetes_namespace]\n"
            "        target_label: namespace\n"
            "      - source_labels: [__meta_kubernetes_pod_name]\n"
            "        target_label: pod\n"
            "      - source_labels: [__meta_kubernetes_pod_container_image]\n"
            "        target_label: image\n"
        )
    return "".join(jobs)


def prometheus_config(lay: layout.Layout, rules: Path | None, *, model_pods: str = "") -> str:
    """The whole configuration; `model_pods` are the scrape jobs of `_model_pod_jobs`."""
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
        f"{model_pods}"
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
    config = home / "prometheus.yml"
    wanted = prometheus_config(
        lay,
        RULES_FILE if RULES_FILE.exists() else None,
        model_pods=_model_pod_jobs(lay, home),
    )
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
