"""Real worker nodes: per cluster one kubelet with its own containerd, runc and a CNI bridge.

kwok nodes run nothing; on these, Pods really pull the pushed digest from the testbed registry,
really start the model server, and the kubelet really calls the readiness probe. Several
kubelets share this one host, so everything that is global by default is made per node: the
containerd socket, root, state and runc root; the CNI configuration, bridge and IPAM data; the
kubelet's root, Pod log directory, ports and cgroup root.

What the host allows, and how we live with it (each found by running it here):
- cgroup v1 only: kubelet >= 1.35 refuses it unless `failCgroupV1: false`, which we set.
- No CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj (the Pod sandbox asks for -998):
  containerd's `restrict_oom_score_adj` clamps it to containerd's own score.
- A fresh v1 cpuset cgroup has empty `cpus`/`mems` and nothing can join it: the cgroup root of
  each node is created with its parent's values.
- Debian's containerd 1.6 has no `RuntimeConfig` call: the kubelet logs that once and uses
  its own `cgroupDriver: cgroupfs`.
- No cluster DNS: Pods use IP addresses (the testbed's are all fixed).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from edgeferry_testbed import layout, procs

CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
CNI_BIN_DIR = Path("/usr/lib/cni")
"""Debian's `containernetworking-plugins`."""


class NodeFiles:
    """Where one real node keeps its configuration and state."""

    def __init__(self, lay: layout.Layout, cluster: layout.ClusterLayout) -> None:
        self.dir = lay.state_dir / "nodes" / cluster.name
        self.containerd_config = self.dir / "containerd.toml"
        self.containerd_socket = self.dir / "containerd.sock"
        self.containerd_root = self.dir / "containerd-root"
        self.containerd_state = self.dir / "containerd-state"
        self.runc_root = self.dir / "runc"
        self.registry_hosts = self.dir / "certs.d"
        self.cni_conf_dir = self.dir / "cni"
        self.cni_ipam_dir = self.dir / "cni-ipam"
        self.kubelet_config = self.dir / "kubelet.yaml"
        self.kubelet_root = self.dir / "kubelet"
        self.kubelet_certs = self.dir / "kubelet-certs"
        self.pod_logs = self.dir / "pod-logs"
        self.kube_proxy_config = self.dir / "kube-proxy.yaml"


def cgroup_root(cluster: layout.ClusterLayout) -> str:
    return f"/edgeferry-{cluster.name}"


def ensure_host_address(lay: layout.Layout) -> str:
    """Put the testbed's host address on `lo` (idempotent); Pods and the host both reach it."""
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True
    ).stdout
    if f" {lay.host_address}/" in shown:
        return "present"
    done = subprocess.run(
        ["ip", "addr", "add", f"{lay.host_address}/32", "dev", "lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise procs.TestbedError(
            f"cannot add the testbed address {lay.host_address}/32 to lo (needs root / "
            f"CAP_NET_ADMIN): {done.stderr.strip()}"
        )
    return "added"


def ensure_cgroup_root(cluster: layout.ClusterLayout) -> None:
    """Create the node's cgroup root in every v1 hierarchy; cpuset gets its parent's CPUs and
    memory nodes, or no process could ever join it."""
    name = cgroup_root(cluster).lstrip("/")
    unified = CGROUP_V1_ROOT / "cgroup.controllers"
    if unified.exists():  # cgroup v2: one tree; the kubelet enables the controllers it needs
        (CGROUP_V1_ROOT / name).mkdir(exist_ok=True)
        return
    for hierarchy in sorted(CGROUP_V1_ROOT.iterdir()):
        if not (hierarchy / "cgroup.procs").exists() or hierarchy.name == "unified":
            continue
        node_dir = hierarchy / name
        node_dir.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if not (node_dir / knob).read_text().strip():
                    (node_dir / knob).write_text((hierarchy / knob).read_text())


def containerd_config(
    lay: layout.Layout, cluster: layout.ClusterLayout, *, sandbox_image: str
) -> str:
    files = NodeFiles(lay, cluster)
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return f"""version = 2
root = "{files.containerd_root}"
state = "{files.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{files.containerd_socket}"
[ttrpc]
  address = "{files.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

{cri}
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
{cri[:-1]}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri[:-1]}.containerd.runtimes.runc.options]
  Root = "{files.runc_root}"
  SystemdCgroup = false
{cri[:-1]}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{files.cni_conf_dir}"
{cri[:-1]}.registry]
  config_path = "{files.registry_hosts}"
"""


def registry_hosts(lay: layout.Layout) -> dict[str, str]:
    """containerd `hosts.toml` per registry name: the testbed registry speaks plain HTTP, under
    both names it has (127.0.0.1 for the host's images, the host address for the Pods'), and so
    does the site mirror a test may start (`layout.Layout.site_mirror`)."""
    local = f"http://{lay.registry}"
    mirror = f"http://{lay.site_mirror}"
    hosts = {
        name: f'server = "{local}"\n[host."{local}"]\n  capabilities = ["pull", "resolve"]\n'
        for name in (lay.registry, lay.pod_registry)
    }
    hosts[lay.site_mirror] = (
        f'server = "{mirror}"\n[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    return hosts


def cni_config(lay: layout.Layout, cluster: layout.ClusterLayout) -> str:
    files = NodeFiles(lay, cluster)
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": f"edgeferry-{cluster.name}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": cluster.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": cluster.real_pod_subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(files.cni_ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        },
        indent=2,
    )


def kubelet_config(lay: layout.Layout, cluster: layout.ClusterLayout) -> str:
    files = NodeFiles(lay, cluster)
    pki = lay.state_dir / "pki"
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root(cluster)}
containerRuntimeEndpoint: unix://{files.containerd_socket}
address: {lay.host_address}
port: {cluster.kubelet_port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {cluster.kubelet_healthz_port}
podLogsDir: {files.pod_logs}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {pki / "ca.crt"}}}
authorization: {{mode: AlwaysAllow}}
failSwapOn: false
resolvConf: ""
maxPods: 40
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}}
registerWithTaints:
- {json.dumps(layout.REAL_NODE_TAINT)}
"""


def node_labels(node: layout.RealNode) -> str:
    labels = {layout.REAL_NODE_LABEL: "real", "type": "real", **node.labels}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def prepare(
    lay: layout.Layout, cluster: layout.ClusterLayout, *, sandbox_image: str, kubeconfig: Path
) -> NodeFiles:
    """Write every configuration file of the cluster's real node; create its cgroup root."""
    files = NodeFiles(lay, cluster)
    for directory in (files.dir, files.cni_conf_dir, files.pod_logs, files.registry_hosts):
        directory.mkdir(parents=True, exist_ok=True)
    files.containerd_config.write_text(containerd_config(lay, cluster, sandbox_image=sandbox_image))
    for name, text in registry_hosts(lay).items():
        (files.registry_hosts / name).mkdir(exist_ok=True)
        (files.registry_hosts / name / "hosts.toml").write_text(text)
    (files.cni_conf_dir / "10-edgeferry.conflist").write_text(cni_config(lay, cluster))
    files.kubelet_config.write_text(kubelet_config(lay, cluster))
    if cluster.role == "hub":
        files.kube_proxy_config.write_text(kube_proxy_config(lay, cluster, kubeconfig))
    ensure_cgroup_root(cluster)
    return files


def _write(path: Path, text: str) -> None:
    """Write only what changed: kube-proxy exits when its configuration file is touched, and a
    second `up` must leave a running node alone."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def containerd_argv(lay: layout.Layout, cluster: layout.ClusterLayout) -> list[str]:
    return ["/usr/bin/containerd", f"--config={NodeFiles(lay, cluster).containerd_config}"]


def kubelet_argv(
    lay: layout.Layout, cluster: layout.ClusterLayout, node: layout.RealNode, kubeconfig: Path
) -> list[str]:
    files = NodeFiles(lay, cluster)
    return [
        str(lay.tool("kubernetes", layout.KUBERNETES_VERSION, "kubelet")),
        f"--config={files.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={files.kubelet_root}",
        f"--cert-dir={files.kubelet_certs}",
        f"--hostname-override={node.name}",
        f"--node-ip={lay.host_address}",
        f"--node-labels={node_labels(node)}",
        "--v=1",
    ]


def kube_proxy_config(lay: layout.Layout, cluster: layout.ClusterLayout, kubeconfig: Path) -> str:
    """Only the hub runs kube-proxy: its iptables chains are global to the host's one network
    namespace, so a second kube-proxy would fight the first. The hub needs it for the
    `kubernetes` Service that the in-cluster operator talks to."""
    node = cluster.real_nodes[0]
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {node.name}
clusterCIDR: {cluster.real_pod_subnet}
healthzBindAddress: 127.0.0.1:{cluster.kube_proxy_healthz_port}
metricsBindAddress: 127.0.0.1:{cluster.kube_proxy_metrics_port}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"""


def kube_proxy_argv(lay: layout.Layout, cluster: layout.ClusterLayout) -> list[str]:
    return [
        str(lay.tool("kubernetes", layout.KUBERNETES_VERSION, "kube-proxy")),
        f"--config={NodeFiles(lay, cluster).kube_proxy_config}",
    ]


def remove_proxy_rules(lay: layout.Layout, cluster: layout.ClusterLayout) -> None:
    """kube-proxy leaves its iptables chains behind when it stops: `--cleanup` removes them."""
    files = NodeFiles(lay, cluster)
    if files.kube_proxy_config.exists():
        subprocess.run(
            [*kube_proxy_argv(lay, cluster), "--cleanup"], capture_output=True, check=False
        )


def unmount_kubelet_root(lay: layout.Layout, cluster: layout.ClusterLayout) -> int:
    """Unmount what the kubelet left mounted under its root (after it stopped): it bind-mounts
    the root onto itself, and Pod volumes below it, and leaves them when it stops, so a later
    `rm -rf .testbed` (`make clean`) fails with "Device or resource busy". Deepest first,
    lazily; a layer stacked on another goes in the next pass. Returns how many it unmounted."""
    root = str(NodeFiles(lay, cluster).kubelet_root)
    count = 0
    for _ in range(10):
        try:
            lines = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return count
        points = {
            f[1].replace("\\040", " ") for f in (line.split() for line in lines) if len(f) > 1
        }
        mine = sorted((p for p in points if p == root or p.startswith(root + "/")), key=len)
        if not mine:
            break
        for point in reversed(mine):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            count += 1
    return count


def remove_pod_containers(lay: layout.Layout, cluster: layout.ClusterLayout) -> int:
    """Kill and delete every container of the node (before containerd stops), and unmount the
    network namespaces CNI made for its Pod sandboxes.

    The shims that run containers outlive containerd and the kubelet, so `down` would leave the
    model servers running without this. Only this node's containerd is asked, so only its
    containers (and the namespaces their specs name) go.
    """
    files = NodeFiles(lay, cluster)
    if not files.containerd_socket.exists():
        return 0
    ctr = ["ctr", f"--address={files.containerd_socket}", "--namespace=k8s.io"]

    def run(*args: str) -> str:
        done = subprocess.run([*ctr, *args], capture_output=True, text=True, check=False)
        return done.stdout

    ids = run("containers", "list", "--quiet").split()
    netns: set[str] = set()
    for cid in ids:
        try:
            spec = json.loads(run("containers", "info", cid)).get("Spec") or {}
        except ValueError:
            spec = {}
        for ns in (spec.get("linux") or {}).get("namespaces") or []:
            if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
                netns.add(ns["path"])
        run("tasks", "kill", "--signal=SIGKILL", cid)
    for cid in ids:
        for _ in range(20):  # a killed task needs a moment before it can be deleted
            run("tasks", "delete", "--force", cid)
            if not run("tasks", "list", "--quiet").split().count(cid):
                break
        run("containers", "delete", cid)
    for path in sorted(netns):
        subprocess.run(["umount", path], capture_output=True, check=False)
        Path(path).unlink(missing_ok=True)
    return len(ids)
