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
class ClusterLayout:
    """One control plane: the hub (where the operator runs) or a K3s-shaped edge site."""

    name: str
    role: str  # "hub" or "edge"
    index: int
    nodes: tuple[FakeNode, ...]

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
    )
    edge1 = ClusterLayout(
        "edge-1", "edge", 1, (_k3s_node("edge-1", 1, "arm64"), _k3s_node("edge-1", 2, "arm64"))
    )
    edge2 = ClusterLayout(
        "edge-2", "edge", 2, (_k3s_node("edge-2", 1, "amd64"), _k3s_node("edge-2", 2, "amd64"))
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
    prometheus_port: int = 31090
    operator_metrics_port: int = 31080

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

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
