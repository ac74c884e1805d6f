"""`.testbed/env.json`: the description of a running testbed that tests, the demo and people read.

Plain JSON with camelCase keys so shell scripts (`jq`) read it as easily as Python does.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class ClusterEnv:
    name: str
    role: str
    kubeconfig: str
    api_url: str
    architectures: list[str]
    nodes: list[str]
    real_nodes: list[str] = dataclasses.field(default_factory=list)
    """Nodes with a real kubelet and containerd (tainted; see `layout.REAL_NODE_TAINT`)."""
    target_kubeconfig: str | None = None
    """Edges: the kubeconfig EdgeTargets get, with the token of the shipped edge RBAC
    (`edge_access`); `kubeconfig` is the admin's. None for the hub."""
    audit_log: str | None = None
    """Edges: the API server's audit log of every request not made with the admin's token
    (`clusters.AUDIT_POLICY`). None for the hub."""


@dataclasses.dataclass(frozen=True)
class TestbedEnv:
    clusters: list[ClusterEnv]
    registry: str
    docker_host: str
    prometheus_url: str
    operator_metrics_port: int
    base_images: dict[str, str]
    tools: dict[str, str]
    state_dir: str
    host_address: str = ""
    """The testbed's address on `lo` that Pods reach too (API servers, the Pods' registry)."""
    pod_registry: str = ""
    """The registry as Pods reach it (same storage as `registry`)."""

    def cluster(self, name: str) -> ClusterEnv:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def hub(self) -> ClusterEnv:
        return next(c for c in self.clusters if c.role == "hub")

    @property
    def edges(self) -> list[ClusterEnv]:
        return [c for c in self.clusters if c.role == "edge"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)


def _to_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {_camel(f.name): _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_to_json(x) for x in obj]
    return obj


def save(described: TestbedEnv, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_to_json(described), indent=2) + "\n")
    tmp.replace(path)


def load(path: Path) -> TestbedEnv:
    raw = json.loads(path.read_text())
    data = {_snake(k): v for k, v in raw.items()}
    data["clusters"] = [ClusterEnv(**{_snake(k): v for k, v in c.items()}) for c in raw["clusters"]]
    return TestbedEnv(**data)
