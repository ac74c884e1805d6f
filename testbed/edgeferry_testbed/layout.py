"""What the testbed is made of: clusters, their fake nodes, ports and paths.

Everything is fixed and explicit (ports included) so that a second `up` finds the first one's
processes, and an error can say which port of which component is taken. Ports sit in the
31000-31500 range, away from the defaults of services a developer may run (microk8s: 16443).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
GRYPE_VERSION = "v0.121.2"
HELM_VERSION = "v3.22.0"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
"""Release whose ServiceMonitor/PrometheusRule CRDs validate our monitoring manifests."""

REPO_ROOT = Path(__file__).resolve().parents[2]

HOST_ADDRESS = "10.255.0.1"
"""The testbed's own address on `lo`: the API servers, kubelets and the Pods' registry listen
there. Pods reach it through their bridge's gateway (a local address is local on any interface),
the host reaches it like 127.0.0.1, and nothing outside this machine routes to it."""

REAL_NODE_TAINT = {"key": "edgeferry.io/real-node", "value": "true", "effect": "NoSchedule"}
"""Keeps workloads that did not ask for a real node on the kwok nodes, where tests expect them."""
REAL_NODE_LABEL = "edgeferry.io/node-kind"


@dataclasses.dataclass(frozen=True)
class FakeNode:
    """A kwok node: its name, CPU architecture, labels and taints."""

    name: str
    arch: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    gpus: int = 0
    kubelet_version: str = KUBERNETES_VERSION


@dataclasses.dataclass(frozen=True)
class RealNode:
    """A real kubelet with its own containerd: Pods there pull the image and run it."""

    name: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ClusterLayout:
    """One control plane: the hub (where the operator runs) or a K3s-shaped edge site."""

    name: str
    role: str  # "hub" or "edge"
    index: int
    nodes: tuple[FakeNode, ...]
    real_nodes: tuple[RealNode, ...] = ()

    @property
    def apiserver_port(self) -> int:
        return 31443 + self.index

    @property
    def controller_manager_port(self) -> int:
        return 31453 + self.index

    @property
    def scheduler_port(self) -> int:
        return 31463 + self.index

    @property
    def kwok_port(self) -> int:
        return 31473 + self.index

    @property
    def kubelet_port(self) -> int:
        return 31483 + self.index

    @property
    def kubelet_healthz_port(self) -> int:
        return 31493 + self.index

    @property
    def kube_proxy_healthz_port(self) -> int:
        return 31503 + self.index

    @property
    def kube_proxy_metrics_port(self) -> int:
        return 31513 + self.index

    @property
    def real_pod_subnet(self) -> str:
        """Pod addresses of the real node (its CNI bridge); apart from kwok's `pod_cidr`."""
        return f"10.{210 + self.index}.0.0/24"

    @property
    def bridge(self) -> str:
        return f"ef-{self.name}"[:15]

    @property
    def kubernetes_service_ip(self) -> str:
        """The first address of the service range: the `kubernetes` Service of this cluster."""
        return f"10.{96 + self.index}.0.1"

    @property
    def service_cidr(self) -> str:
        return f"10.{96 + self.index}.0.0/16"

    @property
    def pod_cidr(self) -> str:
        return f"10.{200 + self.index}.0.0/16"

    @property
    def architectures(self) -> list[str]:
        return sorted({n.arch for n in self.nodes})


def _k3s_node(cluster: str, i: int, arch: str) -> FakeNode:
    name = f"{cluster}-node-{i}"
    labels = {
        "node.kubernetes.io/instance-type": "k3s",
        "k3s.io/hostname": name,
        "topology.kubernetes.io/region": "edge",
        "topology.kubernetes.io/zone": cluster,
    }
    if i == 1:
        labels["node-role.kubernetes.io/control-plane"] = "true"
        labels["node-role.kubernetes.io/master"] = "true"
    return FakeNode(
        name=name, arch=arch, labels=labels, kubelet_version=f"{KUBERNETES_VERSION}+k3s1"
    )


def _k3s_real_node(cluster: str) -> RealNode:
    name = f"{cluster}-real-1"
    return RealNode(
        name,
        {
            "node.kubernetes.io/instance-type": "k3s",
            "k3s.io/hostname": name,
            "topology.kubernetes.io/region": "edge",
            "topology.kubernetes.io/zone": cluster,
        },
    )


def default_clusters() -> tuple[ClusterLayout, ...]:
    """The hub with cloud nodes (two CPU, one GPU) and two edge sites: arm64 and amd64."""
    cloud = {
        "node.kubernetes.io/instance-type": "cloud-standard-8",
        "topology.kubernetes.io/region": "cloud-eu-1",
    }
    hub = ClusterLayout(
        name="hub",
        role="hub",
        index=0,
        nodes=(
            FakeNode("hub-cpu-1", "amd64", {**cloud, "edgeferry.io/pool": "cpu"}),
            FakeNode("hub-cpu-2", "amd64", {**cloud, "edgeferry.io/pool": "cpu"}),
            FakeNode(
                "hub-gpu-1",
                "amd64",
                {
                    **cloud,
                    "edgeferry.io/pool": "gpu",
                    "nvidia.com/gpu.present": "true",
                    "node.kubernetes.io/instance-type": "cloud-gpu-a10",
                },
                taints=({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},),
                gpus=1,
            ),
        ),
        real_nodes=(RealNode("hub-real-1", {**cloud, "edgeferry.io/pool": "real"}),),
    )
    edge1 = ClusterLayout(
        "edge-1",
        "edge",
        1,
        (_k3s_node("edge-1", 1, "arm64"), _k3s_node("edge-1", 2, "arm64")),
        (_k3s_real_node("edge-1"),),
    )
    edge2 = ClusterLayout(
        "edge-2",
        "edge",
        2,
        (_k3s_node("edge-2", 1, "amd64"), _k3s_node("edge-2", 2, "amd64")),
        (_k3s_real_node("edge-2"),),
    )
    return (hub, edge1, edge2)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Paths and ports of one testbed instance."""

    state_dir: Path
    cache_dir: Path
    clusters: tuple[ClusterLayout, ...]
    etcd_client_port: int = 31379
    etcd_peer_port: int = 31380
    registry_port: int = 5000
    site_mirror_port: int = 5001
    prometheus_port: int = 31090
    operator_metrics_port: int = 31080
    host_address: str = HOST_ADDRESS

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def pod_registry(self) -> str:
        """The registry as Pods (and the daemons in them) reach it: the same storage as
        `registry`, served on the host address because a Pod's 127.0.0.1 is its own."""
        return f"{self.host_address}:{self.registry_port}"

    @property
    def site_mirror(self) -> str:
        """Where a test starts a second registry, with storage of its own, as an air-gapped
        site's `registryMirror` (on the host address, so real nodes' containerd pull from it);
        `up` does not start it, it only tells containerd it speaks plain HTTP."""
        return f"{self.host_address}:{self.site_mirror_port}"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env.json"

    def tool(self, tool: str, version: str, binary: str | None = None) -> Path:
        """Path of a Go-built tool in the cache (`testbed/tools/build.sh` puts it there)."""
        return self.bin_dir / f"{tool}-{version}" / (binary or tool)

    def cluster(self, name: str) -> ClusterLayout:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(f"no cluster named {name!r}; have {[c.name for c in self.clusters]}")


def default_layout() -> Layout:
    """The layout `make testbed-up` uses: state in `<repo>/.testbed`, tools in the user cache."""
    state = Path(os.environ.get("EDGEFERRY_TESTBED_DIR", REPO_ROOT / ".testbed"))
    cache = Path(os.environ.get("EDGEFERRY_CACHE", Path.home() / ".cache" / "edgeferry"))
    return Layout(state_dir=state.resolve(), cache_dir=cache, clusters=default_clusters())
