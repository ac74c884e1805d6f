"""Typed handles tests (and the demo) use to talk to the testbed's clusters and services."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import docker
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from edgeferry_testbed import env


@dataclasses.dataclass
class Cluster:
    """One cluster of the testbed: the hub or an edge site."""

    info: env.ClusterEnv
    kubectl_path: str

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kubeconfig(self) -> str:
        return self.info.kubeconfig

    @property
    def target_kubeconfig(self) -> str:
        """The kubeconfig to give an EdgeTarget for this edge: the operator's edge identity,
        limited to the shipped edge RBAC (`kubeconfig` is the admin's, for assertions)."""
        if self.info.target_kubeconfig is None:
            raise ValueError(f"{self.name} is not an edge: Cloud targets need no kubeconfig")
        return self.info.target_kubeconfig

    @property
    def audit_log(self) -> str:
        """The edge API server's audit log: requests of everyone but the testbed's admin."""
        if self.info.audit_log is None:
            raise ValueError(f"{self.name} keeps no audit log: only the edges do")
        return self.info.audit_log

    def api_client(self) -> k8s_client.ApiClient:
        return k8s_config.new_client_from_config(config_file=self.kubeconfig)

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the testbed's kubectl against this cluster."""
        return subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            text=True,
            capture_output=True,
            check=check,
            timeout=timeout,
        )

    def wait_deployment_available(
        self, namespace: str, name: str, *, timeout: float = 120
    ) -> dict[str, Any]:
        """Poll until the Deployment reports `Available=True`; return it as a dict."""
        with self.api_client() as api:
            apps = k8s_client.AppsV1Api(api)
            deadline = time.monotonic() + timeout
            last: Any = None
            while time.monotonic() < deadline:
                last = apps.read_namespaced_deployment(name, namespace)
                for cond in last.status.conditions or []:
                    if (
                        cond.type == "Available"
                        and cond.status == "True"
                        and (last.status.ready_replicas or 0) == last.spec.replicas
                    ):
                        return dict(api.sanitize_for_serialization(last))
                time.sleep(0.5)
        raise TimeoutError(
            f"{self.name}: deployment {namespace}/{name} not Available: "
            f"{last.status if last else None}"
        )


@dataclasses.dataclass
class Testbed:
    """Everything a test needs: the clusters, Docker, the registry, Prometheus."""

    env: env.TestbedEnv

    def cluster(self, name: str) -> Cluster:
        return Cluster(self.env.cluster(name), self.env.tools["kubectl"])

    @property
    def hub(self) -> Cluster:
        return Cluster(self.env.hub, self.env.tools["kubectl"])

    @property
    def edges(self) -> Sequence[Cluster]:
        return [Cluster(c, self.env.tools["kubectl"]) for c in self.env.edges]

    @property
    def registry(self) -> str:
        return self.env.registry

    def docker(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.env.docker_host, timeout=600)

    def process_env(self) -> dict[str, str]:
        """Environment for a child process (operator, CLI) pointed at this testbed."""
        return {
            **os.environ,
            "DOCKER_HOST": self.env.docker_host,
            "KUBECONFIG": self.env.hub.kubeconfig,
        }
