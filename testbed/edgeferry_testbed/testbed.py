"""Bring the whole testbed up, describe it, and take it down again.

`up` is idempotent: what already runs is reused, what is missing is started, and `.testbed/
env.json` is rewritten to describe it all. `down` stops every process the testbed started (and
only those) and checks that none of their ports still listens.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import (
    clusters,
    edge_access,
    emulation,
    env,
    layout,
    pki,
    procs,
    realnodes,
    services,
)

# Stop order: consumers before what they consume; the data stores and daemons last.
_STOP_ORDER = (
    "operator",
    "kube-proxy",
    "kubelet",
    "kwok",
    "scheduler",
    "controller-manager",
    "apiserver",
    "containerd",
    "etcd",
    "prometheus",
    "registry",
    "dockerd",
)


def _say(msg: str) -> None:
    print(f"testbed: {msg}", flush=True)


@contextmanager
def _timed(step: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    _say(f"{step} in {time.monotonic() - start:.1f} s")


class Testbed:
    """One testbed instance, described by a Layout."""

    def __init__(self, lay: layout.Layout | None = None) -> None:
        self.layout = lay or layout.default_layout()
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        self.sup = procs.Supervisor(self.layout.state_dir)

    # --- up ---------------------------------------------------------------------------------
    def up(self, *, base_images: bool = True) -> env.TestbedEnv:
        started = time.monotonic()
        self._ensure_tools()
        self._ensure_docker_and_registry()
        with _timed("control planes ready"):
            self._ensure_control_planes()
        with _timed("edge RBAC applied"):
            for cluster in self.layout.clusters:
                if cluster.role == "edge":
                    edge_access.ensure(self.layout, cluster)
        with _timed("prometheus ready"):
            _say(
                f"prometheus {services.prometheus_url(self.layout)}: "
                f"{services.ensure_prometheus(self.sup, self.layout)}"
            )
        images: dict[str, str] = {}
        if base_images:
            with _timed("base images ready"):
                images = self._ensure_base_images()
        described = self.describe(images)
        env.save(described, self.layout.env_file)
        _say(f"up in {time.monotonic() - started:.1f} s; described in {self.layout.env_file}")
        return described

    def base_images(self) -> dict[str, str]:
        """Docker, the registry and the locally made base images, without any control plane.

        Needs none of the Go tools, so a cold machine can make the images (debootstrap: mostly
        downloads and unpacking) while the tools compile (CPU), instead of after them.
        """
        self._ensure_docker_and_registry()
        with _timed("base images ready"):
            return self._ensure_base_images()

    def _ensure_docker_and_registry(self) -> None:
        address = realnodes.ensure_host_address(self.layout)
        _say(f"host address {self.layout.host_address} on lo: {address}")
        with _timed("arm64 emulation ready"):  # before any image is made or run
            try:
                _say(emulation.ensure_arm64())
            except emulation.EmulationError as exc:
                raise procs.TestbedError(str(exc)) from exc
        with _timed("docker daemon ready"):
            _say(f"docker daemon: {services.ensure_docker(self.sup, self.layout)}")
        with _timed("registry ready"):
            how = services.ensure_registry(self.sup, self.layout)
            _say(f"registry {self.layout.registry}: {how}")

    def _ensure_tools(self) -> None:
        needed = [
            self.layout.tool("etcd", layout.ETCD_VERSION),
            self.layout.tool("kubernetes", layout.KUBERNETES_VERSION, "kube-apiserver"),
            self.layout.tool("kubernetes", layout.KUBERNETES_VERSION, "kubectl"),
            self.layout.tool("kwok", layout.KWOK_VERSION),
            self.layout.tool("kubernetes", layout.KUBERNETES_VERSION, "kubelet"),
            self.layout.tool("kubernetes", layout.KUBERNETES_VERSION, "kube-proxy"),
        ]
        if all(p.exists() for p in needed):
            return
        script = layout.REPO_ROOT / "testbed" / "tools" / "build.sh"
        _say(f"building missing tools with {script} (cold: tens of minutes on 2 cores)")
        result = subprocess.run(["bash", str(script), "etcd", "kwok", "kubernetes"], check=False)
        if result.returncode != 0:
            raise procs.TestbedError(f"building the Go tools failed (exit {result.returncode})")

    def _ensure_control_planes(self) -> None:
        lay = self.layout
        if self.sup.find("etcd") is None:
            self._check_ports_free()
            clusters.wipe_state(lay)
            self.sup.start("etcd", clusters.etcd_argv(lay))
        procs.wait_until(
            lambda: procs.http_ok(f"http://127.0.0.1:{lay.etcd_client_port}/health"),
            timeout=30,
            what="etcd",
            on_timeout=lambda: self.sup.log_tail("etcd"),
        )
        tokens = {c.name: clusters.prepare(lay, c)[1] for c in lay.clusters}
        self._sandbox_image = self._ensure_pause_image()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(lay.clusters)) as pool:
            futures = [pool.submit(self._ensure_cluster, c, tokens[c.name]) for c in lay.clusters]
            for fut in futures:
                fut.result()

    def _check_ports_free(self) -> None:
        lay = self.layout
        local, host = "127.0.0.1", lay.host_address
        ports = {
            "etcd client": (local, lay.etcd_client_port),
            "etcd peer": (local, lay.etcd_peer_port),
        }
        for c in lay.clusters:
            ports[f"{c.name} kube-apiserver"] = (host, c.apiserver_port)
            ports[f"{c.name} kube-controller-manager"] = (local, c.controller_manager_port)
            ports[f"{c.name} kube-scheduler"] = (local, c.scheduler_port)
            ports[f"{c.name} kwok"] = (local, c.kwok_port)
            if c.real_nodes:
                ports[f"{c.name} kubelet"] = (host, c.kubelet_port)
                ports[f"{c.name} kubelet healthz"] = (local, c.kubelet_healthz_port)
        taken = [
            f"{what} ({address}:{port})"
            for what, (address, port) in ports.items()
            if not procs.port_is_free(port, address)
        ]
        if taken:
            raise procs.TestbedError(
                "ports needed by the testbed are taken by processes it did not start: "
                + ", ".join(taken)
                + ". Stop them (or run `make testbed-down`) and retry."
            )

    def _ensure_cluster(self, cluster: layout.ClusterLayout, token: str) -> None:
        lay = self.layout
        self.start_apiserver(cluster.name)
        name = cluster.name
        self.sup.start(f"controller-manager-{name}", clusters.controller_manager_argv(lay, cluster))
        self.sup.start(f"scheduler-{name}", clusters.scheduler_argv(lay, cluster))
        self.sup.start(
            f"kwok-{name}", clusters.kwok_argv(lay, cluster), env=clusters.kwok_env(lay, cluster)
        )
        self._ensure_real_nodes(cluster)
        api = self.api_client(name)
        core = k8s_client.CoreV1Api(api)
        for node in cluster.nodes:
            try:
                core.create_node(clusters.node_manifest(node))
            except k8s_exceptions.ApiException as exc:
                if exc.status != 409:
                    raise
        wanted = {n.name for n in cluster.nodes}
        procs.wait_until(
            lambda: wanted <= clusters.ready_node_names(lay, cluster, token),
            timeout=90,
            what=f"{name}: fake nodes Ready ({', '.join(sorted(wanted))})",
            on_timeout=lambda: self.sup.log_tail(f"kwok-{name}"),
        )
        real = {n.name for n in cluster.real_nodes}
        procs.wait_until(
            lambda: real <= clusters.ready_node_names(lay, cluster, token),
            timeout=120,
            what=f"{name}: real nodes Ready ({', '.join(sorted(real))})",
            on_timeout=lambda: self.sup.log_tail(f"kubelet-{name}", 40),
        )
        procs.wait_until(
            lambda: _has_default_service_account(core),
            timeout=90,
            what=f"{name}: default ServiceAccount (kube-controller-manager)",
            on_timeout=lambda: self.sup.log_tail(f"controller-manager-{name}"),
        )
        api.close()
        _say(
            f"cluster {name} ({cluster.role}) ready at {clusters.api_url(lay, cluster)}"
            f" with nodes {', '.join(f'{n.name}/{n.arch}' for n in cluster.nodes)}"
            f" (kwok) and {', '.join(n.name for n in cluster.real_nodes) or 'none'} (real)"
        )

    def _ensure_pause_image(self) -> str:
        from edgeferry_testbed import images  # docker builds: only when asked

        client = docker.DockerClient(base_url=services.DOCKER_SOCKET, timeout=600)
        try:
            return images.ensure_pause_image(client, self.layout.registry)
        finally:
            client.close()

    def _ensure_real_nodes(self, cluster: layout.ClusterLayout) -> None:
        """containerd, then the kubelet (and on the hub kube-proxy) of the cluster's real node."""
        if not cluster.real_nodes:
            return
        lay, name = self.layout, cluster.name
        kubeconfig = clusters.kubeconfig_path(lay, cluster)
        files = realnodes.prepare(
            lay, cluster, sandbox_image=self._sandbox_image, kubeconfig=kubeconfig
        )
        self.sup.start(f"containerd-{name}", realnodes.containerd_argv(lay, cluster))
        procs.wait_until(
            files.containerd_socket.exists,
            timeout=30,
            what=f"{name}: containerd socket",
            on_timeout=lambda: self.sup.log_tail(f"containerd-{name}"),
        )
        node = cluster.real_nodes[0]
        self.sup.start(f"kubelet-{name}", realnodes.kubelet_argv(lay, cluster, node, kubeconfig))
        if cluster.role == "hub":
            self.sup.start(f"kube-proxy-{name}", realnodes.kube_proxy_argv(lay, cluster))

    def start_apiserver(self, name: str) -> None:
        """Start (or find running) one cluster's kube-apiserver and wait until it is ready."""
        lay = self.layout
        cluster = lay.cluster(name)
        token, _ = pki.ensure_admin_token(clusters.ClusterFiles(lay, cluster).dir)
        self.sup.start(f"apiserver-{name}", clusters.apiserver_argv(lay, cluster))

        def ready() -> bool:
            return clusters.api_get(lay, cluster, "/readyz", token) == b"ok"

        procs.wait_until(
            ready,
            timeout=120,
            what=f"{name}: kube-apiserver /readyz",
            on_timeout=lambda: self.sup.log_tail(f"apiserver-{name}"),
        )

    def stop_apiserver(self, name: str) -> None:
        """Take one cluster's API away (an edge site going offline), keeping its data."""
        self.sup.stop(f"apiserver-{name}")
        port = self.layout.cluster(name).apiserver_port
        procs.wait_until(
            lambda: procs.port_is_free(port, self.layout.host_address),
            timeout=30,
            what=f"{name}: kube-apiserver port to close",
        )

    def _ensure_base_images(self) -> dict[str, str]:
        from edgeferry_testbed import images  # docker builds: only when asked

        client = docker.DockerClient(base_url=services.DOCKER_SOCKET, timeout=600)
        try:
            return {
                "busybox": images.ensure_busybox_base(client, self.layout.registry),
                "pythonSklearn": images.ensure_python_sklearn_base(client, self.layout.registry),
                "pythonSklearnMultiarch": images.ensure_python_sklearn_multiarch_base(
                    client, self.layout.registry
                ),
                "pythonOnnxruntime": images.ensure_python_onnxruntime_base(
                    client, self.layout.registry
                ),
                "pythonOnnxruntimeMultiarch": images.ensure_python_onnxruntime_multiarch_base(
                    client, self.layout.registry
                ),
                "dind": images.ensure_dind_image(client, self.layout.registry),
            }
        finally:
            client.close()

    # --- describe ---------------------------------------------------------------------------
    def api_client(self, name: str) -> k8s_client.ApiClient:
        """A kubernetes client for one cluster, with its admin credentials."""
        path = clusters.kubeconfig_path(self.layout, self.layout.cluster(name))
        return k8s_config.new_client_from_config(config_file=str(path))

    def describe(self, base_images: dict[str, str] | None = None) -> env.TestbedEnv:
        lay = self.layout
        previous = env.load(lay.env_file) if lay.env_file.exists() else None
        images = base_images or (previous.base_images if previous else {})
        return env.TestbedEnv(
            clusters=[
                env.ClusterEnv(
                    name=c.name,
                    role=c.role,
                    kubeconfig=str(clusters.kubeconfig_path(lay, c)),
                    target_kubeconfig=str(edge_access.kubeconfig_path(lay, c))
                    if c.role == "edge"
                    else None,
                    audit_log=str(clusters.ClusterFiles(lay, c).audit_log)
                    if c.role == "edge"
                    else None,
                    api_url=clusters.api_url(lay, c),
                    architectures=c.architectures,
                    nodes=[n.name for n in c.nodes],
                    real_nodes=[n.name for n in c.real_nodes],
                )
                for c in lay.clusters
            ],
            registry=lay.registry,
            docker_host=services.DOCKER_SOCKET,
            prometheus_url=services.prometheus_url(lay),
            operator_metrics_port=lay.operator_metrics_port,
            base_images=images,
            tools={
                "kubectl": str(lay.tool("kubernetes", layout.KUBERNETES_VERSION, "kubectl")),
                "helm": str(lay.tool("helm", layout.HELM_VERSION)),
                "grype": str(lay.tool("grype", layout.GRYPE_VERSION)),
            },
            state_dir=str(lay.state_dir),
            host_address=lay.host_address,
            pod_registry=lay.pod_registry,
        )

    def status(self) -> list[dict[str, Any]]:
        """One row per managed process (running or not) plus the shared services."""
        rows: list[dict[str, Any]] = []
        names = ["etcd"] + [
            f"{kind}-{c.name}"
            for c in self.layout.clusters
            for kind in ("apiserver", "controller-manager", "scheduler", "kwok")
        ]
        names += [
            f"{kind}-{c.name}"
            for c in self.layout.clusters
            if c.real_nodes
            for kind in ("containerd", "kubelet")
        ]
        names += [f"kube-proxy-{c.name}" for c in self.layout.clusters if c.role == "hub"]
        names += ["prometheus", "registry", "registry-pods", "dockerd", "operator"]
        for name in names:
            found = self.sup.find(name)
            rows.append(
                {"name": name, "pid": found.pid if found else None, "running": found is not None}
            )
        rows.append({"name": "docker (any)", "running": services.docker_answers()})
        rows.append(
            {
                "name": f"registry {self.layout.registry} (any)",
                "running": services.registry_answers(self.layout),
            }
        )
        return rows

    # --- down -------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop everything the testbed started, consumers first; return what was stopped."""
        stopped: list[str] = []
        running = {m.name: m for m in self.sup.all()}

        def rank(name: str) -> int:
            for i, prefix in enumerate(_STOP_ORDER):
                if name == prefix or name.startswith(prefix + "-"):
                    return i
            return len(_STOP_ORDER)

        for name in sorted(running, key=lambda n: (rank(n), n)):
            if name.startswith("containerd-"):
                cluster = self.layout.cluster(name.removeprefix("containerd-"))
                removed = realnodes.remove_pod_containers(self.layout, cluster)
                if removed:
                    _say(f"{cluster.name}: removed {removed} Pod containers of the real node")
            if self.sup.stop(name):
                stopped.append(name)
            if name.startswith("kube-proxy-"):
                cluster = self.layout.cluster(name.removeprefix("kube-proxy-"))
                realnodes.remove_proxy_rules(self.layout, cluster)
            if name.startswith("kubelet-"):
                cluster = self.layout.cluster(name.removeprefix("kubelet-"))
                realnodes.unmount_kubelet_root(self.layout, cluster)
        leftovers = [m.name for m in self.sup.all()]
        if leftovers:
            raise procs.TestbedError(f"still running after down: {leftovers}")
        return stopped


def _has_default_service_account(core: k8s_client.CoreV1Api) -> bool:
    core.read_namespaced_service_account("default", "default")
    return True


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2)
