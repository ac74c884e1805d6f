"""Real Kubernetes control planes on this host: one etcd, and per cluster a kube-apiserver,
kube-controller-manager, kube-scheduler, a kwok that plays the kubelets of fake nodes, and one
real node (`realnodes`). The API servers listen on the testbed's host address, which the real
nodes' Pods reach too (an in-cluster operator, say); etcd and the rest stay on 127.0.0.1.

The clusters share one etcd under distinct `--etcd-prefix`es (cheaper on 2 cores than one etcd
each, and still isolated at the API). Workloads really go through the controllers: a Deployment
gets a ReplicaSet, the scheduler binds Pods to the fake nodes, and kwok marks them Running/Ready,
or Failed when the chaos label asks for it.
"""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.request
from pathlib import Path

from edgeferry_testbed import layout, pki

CHAOS_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
"""Pods carrying this label (value "true") are driven from Running to Failed by kwok."""

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat/node-heartbeat.yaml",
    "pod/general/pod-create.yaml",
    "pod/general/pod-init-container-running.yaml",
    "pod/general/pod-init-container-completed.yaml",
    "pod/general/pod-ready.yaml",
    "pod/general/pod-complete.yaml",
    "pod/general/pod-delete.yaml",
    "pod/chaos/pod-container-running-failed.yaml",
)


def etcd_argv(lay: layout.Layout) -> list[str]:
    data = lay.state_dir / "etcd"
    return [
        str(lay.tool("etcd", layout.ETCD_VERSION)),
        "--name=testbed",
        f"--data-dir={data}",
        f"--listen-client-urls=http://127.0.0.1:{lay.etcd_client_port}",
        f"--advertise-client-urls=http://127.0.0.1:{lay.etcd_client_port}",
        f"--listen-peer-urls=http://127.0.0.1:{lay.etcd_peer_port}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{lay.etcd_peer_port}",
        f"--initial-cluster=testbed=http://127.0.0.1:{lay.etcd_peer_port}",
        "--listen-metrics-urls=",
        "--unsafe-no-fsync",
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


class ClusterFiles:
    """Where one cluster's credentials and configuration live."""

    def __init__(self, lay: layout.Layout, cluster: layout.ClusterLayout) -> None:
        self.dir = lay.state_dir / "clusters" / cluster.name
        self.kubeconfig = self.dir / "kubeconfig"
        self.kwok_config = self.dir / "kwok.yaml"
        self.audit_policy = self.dir / "audit-policy.yaml"
        self.audit_log = self.dir / "audit.log"
        """Edges only: one JSON audit event a line (`audit.k8s.io/v1`), rotated at 100 MB."""


AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # The testbed itself (tests, kwok, controller-manager, scheduler, kubelets): admin token.
  - level: None
    users: [{pki.ADMIN_USER}, system:apiserver]
  - level: Metadata
"""
"""Who else talks to an edge API server (the operator, agents) is logged at Metadata level."""


def prepare(lay: layout.Layout, cluster: layout.ClusterLayout) -> tuple[ClusterFiles, str]:
    """Credentials, kubeconfig and kwok stages of one cluster; returns the files and admin token."""
    files = ClusterFiles(lay, cluster)
    files.dir.mkdir(parents=True, exist_ok=True)
    certs = pki.ensure_serving_certs(lay.state_dir / "pki", serving_addresses(lay))
    token, _ = pki.ensure_admin_token(files.dir)
    pki.ensure_service_account_key(files.dir)
    pki.write_kubeconfig(
        files.kubeconfig,
        cluster=cluster.name,
        server=api_url(lay, cluster),
        ca_cert=certs.ca_cert,
        token=token,
    )
    stages_dir = lay.tool("kwok", layout.KWOK_VERSION).parent / "stages"
    docs = [(stages_dir / rel).read_text().strip() for rel in _STAGES]
    files.kwok_config.write_text("\n---\n".join(docs) + "\n")
    if cluster.role == "edge":
        files.audit_policy.write_text(AUDIT_POLICY)
    return files, token


def serving_addresses(lay: layout.Layout) -> tuple[str, ...]:
    """What the API servers' one certificate must be valid for, besides 127.0.0.1."""
    return (lay.host_address, *(c.kubernetes_service_ip for c in lay.clusters))


def api_url(lay: layout.Layout, cluster: layout.ClusterLayout) -> str:
    return f"https://{lay.host_address}:{cluster.apiserver_port}"


def apiserver_argv(lay: layout.Layout, cluster: layout.ClusterLayout) -> list[str]:
    files = ClusterFiles(lay, cluster)
    certs = pki.ServingCerts(
        ca_cert=lay.state_dir / "pki" / "ca.crt",
        cert=lay.state_dir / "pki" / "serving.crt",
        key=lay.state_dir / "pki" / "serving.key",
    )
    audit = (
        [
            f"--audit-policy-file={files.audit_policy}",
            f"--audit-log-path={files.audit_log}",
            "--audit-log-maxsize=100",
            "--audit-log-maxbackup=1",
        ]
        if cluster.role == "edge"
        else []
    )
    return [
        str(lay.tool("kubernetes", layout.KUBERNETES_VERSION, "kube-apiserver")),
        f"--bind-address={lay.host_address}",
        f"--advertise-address={lay.host_address}",
        f"--secure-port={cluster.apiserver_port}",
        f"--etcd-servers=http://127.0.0.1:{lay.etcd_client_port}",
        f"--etcd-prefix=/{cluster.name}/registry",
        f"--cert-dir={files.dir / 'apiserver-certs'}",
        f"--tls-cert-file={certs.cert}",
        f"--tls-private-key-file={certs.key}",
        f"--client-ca-file={certs.ca_cert}",
        f"--token-auth-file={files.dir / 'tokens.csv'}",
        f"--service-account-issuer=https://kubernetes.default.svc/{cluster.name}",
        f"--service-account-key-file={files.dir / 'sa.key'}",
        f"--service-account-signing-key-file={files.dir / 'sa.key'}",
        f"--service-cluster-ip-range={cluster.service_cidr}",
        "--authorization-mode=RBAC",
        # The `kubernetes` Service points at the host address: in-cluster clients reach it.
        "--endpoint-reconciler-type=lease",
        # logs/exec at the real node: the kubelet trusts the testbed CA for client certs.
        f"--kubelet-client-certificate={certs.cert}",
        f"--kubelet-client-key={certs.key}",
        # By IP: the real nodes' names are in no DNS the API server asks.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--allow-privileged=true",
        "--profiling=false",
        "--max-requests-inflight=800",
        "--max-mutating-requests-inflight=400",
        "--v=0",
        *audit,
    ]


def controller_manager_argv(lay: layout.Layout, cluster: layout.ClusterLayout) -> list[str]:
    files = ClusterFiles(lay, cluster)
    kc = str(files.kubeconfig)
    return [
        str(lay.tool("kubernetes", layout.KUBERNETES_VERSION, "kube-controller-manager")),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cluster.controller_manager_port}",
        f"--cert-dir={files.dir / 'kcm-certs'}",
        "--leader-elect=false",
        f"--cluster-name={cluster.name}",
        f"--service-account-private-key-file={files.dir / 'sa.key'}",
        f"--root-ca-file={lay.state_dir / 'pki' / 'ca.crt'}",
        "--use-service-account-credentials=false",
        "--concurrent-deployment-syncs=10",
        "--concurrent-replicaset-syncs=10",
        "--profiling=false",
        "--v=0",
    ]


def scheduler_argv(lay: layout.Layout, cluster: layout.ClusterLayout) -> list[str]:
    files = ClusterFiles(lay, cluster)
    kc = str(files.kubeconfig)
    return [
        str(lay.tool("kubernetes", layout.KUBERNETES_VERSION, "kube-scheduler")),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cluster.scheduler_port}",
        f"--cert-dir={files.dir / 'scheduler-certs'}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=0",
    ]


def kwok_argv(lay: layout.Layout, cluster: layout.ClusterLayout) -> list[str]:
    files = ClusterFiles(lay, cluster)
    return [
        str(lay.tool("kwok", layout.KWOK_VERSION)),
        f"--kubeconfig={files.kubeconfig}",
        f"--config={files.kwok_config}",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{cluster.kwok_port}",
        f"--cidr={cluster.pod_cidr}",
        "--node-ip=127.0.0.1",
    ]


def kwok_env(lay: layout.Layout, cluster: layout.ClusterLayout) -> dict[str, str]:
    """kwok always reads `~/.kwok/kwok.yaml` first: give it a home of its own."""
    home = ClusterFiles(lay, cluster).dir / "kwok-home"
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "KWOK_WORKDIR": str(home)}


def api_get(lay: layout.Layout, cluster: layout.ClusterLayout, path: str, token: str) -> bytes:
    """GET an apiserver path with the admin token, trusting the testbed CA only."""
    ctx = ssl.create_default_context(cafile=str(lay.state_dir / "pki" / "ca.crt"))
    req = urllib.request.Request(
        f"{api_url(lay, cluster)}{path}",
        headers={"Authorization": f"Bearer {token}"},
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    with opener.open(req, timeout=3) as resp:
        return bytes(resp.read())


def node_manifest(node: layout.FakeNode) -> dict[str, object]:
    """A Node object kwok will adopt (by annotation) and keep Ready."""
    capacity: dict[str, str] = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    if node.gpus:
        capacity["nvidia.com/gpu"] = str(node.gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": node.arch,
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": node.name,
                "beta.kubernetes.io/arch": node.arch,
                "beta.kubernetes.io/os": "linux",
                "type": "kwok",
                **node.labels,
            },
        },
        "spec": {"taints": [dict(t) for t in node.taints]},
        "status": {
            "allocatable": capacity,
            "capacity": capacity,
            "nodeInfo": {
                "architecture": node.arch,
                "operatingSystem": "linux",
                "kubeletVersion": node.kubelet_version,
                "kubeProxyVersion": node.kubelet_version,
                "containerRuntimeVersion": "containerd://1.7.0-k3s1",
                "osImage": "K3s simulated by kwok"
                if "k3s" in node.kubelet_version
                else "Cloud node simulated by kwok",
                "kernelVersion": "6.1.0",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def ready_node_names(lay: layout.Layout, cluster: layout.ClusterLayout, token: str) -> set[str]:
    body = json.loads(api_get(lay, cluster, "/api/v1/nodes", token))
    ready = set()
    for item in body.get("items", []):
        for cond in item.get("status", {}).get("conditions", []) or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready.add(item["metadata"]["name"])
    return ready


def wipe_state(lay: layout.Layout) -> None:
    """Forget the clusters' data (etcd) so a fresh `up` starts from empty clusters."""
    shutil.rmtree(lay.state_dir / "etcd", ignore_errors=True)


def kubeconfig_path(lay: layout.Layout, cluster: layout.ClusterLayout) -> Path:
    return ClusterFiles(lay, cluster).kubeconfig
