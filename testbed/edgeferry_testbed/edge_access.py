"""The operator's access to the testbed's edge clusters: the shipped edge RBAC, set up as a site
admin would, so every test that reaches an edge through the operator proves that RBAC enough.

Each edge cluster gets `manifests/edge/all-namespaces/` applied with the pinned kubectl (the real
files, `kubectl apply -k`), and the kubeconfig EdgeTargets are given is printed by the shipped
`manifests/edge/kubeconfig.sh` from the token Secret the site's kube-controller-manager fills in.
`all-namespaces` rather than a RoleBinding per namespace because every test names a new target
namespace and the operator creates it. The admin kubeconfig stays what tests assert with.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from edgeferry_testbed import clusters, layout, procs

EDGE_RBAC = layout.REPO_ROOT / "manifests" / "edge" / "all-namespaces"
KUBECONFIG_SCRIPT = layout.REPO_ROOT / "manifests" / "edge" / "kubeconfig.sh"
SERVICE_ACCOUNT = "system:serviceaccount:edgeferry-system:edgeferry-edge"
"""The user the operator is at an edge (`manifests/edge/base/serviceaccount.yaml`)."""


def kubeconfig_path(lay: layout.Layout, cluster: layout.ClusterLayout) -> Path:
    """Where the edge's kubeconfig for EdgeTargets lives (beside its admin kubeconfig)."""
    return clusters.ClusterFiles(lay, cluster).dir / "edgeferry-edge.kubeconfig"


def ensure(lay: layout.Layout, cluster: layout.ClusterLayout) -> Path:
    """Apply the edge RBAC at `cluster` and write the kubeconfig of its token; idempotent."""
    kubectl = str(lay.tool("kubernetes", layout.KUBERNETES_VERSION, "kubectl"))
    admin = clusters.kubeconfig_path(lay, cluster)
    env = {**os.environ, "KUBECONFIG": str(admin), "KUBECTL": kubectl}
    _run([kubectl, "apply", "-k", str(EDGE_RBAC)], env=env, what=f"{cluster.name}: edge RBAC")
    server = yaml.safe_load(admin.read_text())["clusters"][0]["cluster"]["server"]
    printed = _run(
        ["sh", str(KUBECONFIG_SCRIPT), server, cluster.name],
        env=env,
        what=f"{cluster.name}: {KUBECONFIG_SCRIPT.name}",
    )
    path = kubeconfig_path(lay, cluster)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(printed)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def _run(argv: list[str], *, env: dict[str, str], what: str) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise procs.TestbedError(
            f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return result.stdout
