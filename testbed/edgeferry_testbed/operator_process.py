"""Run the edgeferry operator against the testbed, as the demo and the integration tests do.

The operator runs as a plain process on the host (Kopf's standalone mode, the hub's admin
kubeconfig or a ServiceAccount token, the host's Docker daemon), started through the testbed's
supervisor so `make testbed-down` stops it with everything else. grype gets an offline database
built from the advisory fixtures and is told never to update it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from edgeferry_testbed import env, layout, procs, testbed

ADVISORIES = layout.REPO_ROOT / "tests" / "fixtures" / "advisories"
CRDS = layout.REPO_ROOT / "crds"


def crd_names() -> list[str]:
    """The names of the CRDs under `crds/` (the kustomization there lists the same files)."""
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind") == "CustomResourceDefinition":
            names.append(f"crd/{doc['metadata']['name']}")
    return names


def install_crds(described: env.TestbedEnv) -> None:
    """Server-side apply the CRDs (`kubectl apply -k crds/`) and wait until they are Established."""
    kubectl = described.tools["kubectl"]
    kc = f"--kubeconfig={described.hub.kubeconfig}"
    for argv in (
        [
            kubectl,
            kc,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=edgeferry-testbed",
            "-k",
            str(CRDS),
        ],
        [kubectl, kc, "wait", "--for=condition=Established", "--timeout=60s", *crd_names()],
    ):
        result = subprocess.run(argv, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise procs.TestbedError(f"{' '.join(argv[2:5])}: {result.stderr.strip()}")


def ensure_offline_grype_db(lay: layout.Layout) -> Path:
    """grype's DB cache dir holding a database built from the fixture advisories."""
    from edgeferry.adapters import grype_env, scanner, vulndb

    cache = lay.state_dir / "grype-db"
    config = scanner.ScannerConfig(grype=grype_env.GrypeSettings.offline(cache))
    status = scanner.db_status(config=config) if cache.exists() else None
    if status is None or not status.valid:
        vulndb.install_offline_db(ADVISORIES, lay.state_dir / "grype-db-build", config=config)
    return cache


MANIFESTS = layout.REPO_ROOT / "manifests"
CLEANUP_DEADLINE_SECONDS = 30
"""The operator's `EDGEFERRY_CLEANUP_DEADLINE_SECONDS` on the testbed (tests wait for it)."""
OPERATOR_NAMESPACE = "edgeferry-system"
SERVICE_ACCOUNT = "edgeferry"


def _kubectl(described: env.TestbedEnv, *args: str, stdin: str | None = None) -> str:
    argv = [described.tools["kubectl"], f"--kubeconfig={described.hub.kubeconfig}", *args]
    result = subprocess.run(argv, input=stdin, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise procs.TestbedError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def service_account_kubeconfig(lay: layout.Layout, described: env.TestbedEnv) -> str:
    """A kubeconfig holding a TokenRequest token of the operator's own ServiceAccount.

    The ServiceAccount and its cluster-wide RBAC come from `manifests/` exactly as users apply
    them, so a test run with this identity proves the shipped RBAC is sufficient.
    """
    _kubectl(
        described,
        "apply",
        "--server-side",
        "--field-manager=edgeferry-testbed",
        "-f",
        str(MANIFESTS / "namespace.yaml"),
        "-f",
        str(MANIFESTS / "serviceaccount.yaml"),
        "-f",
        str(MANIFESTS / "rbac"),
        "-n",
        OPERATOR_NAMESPACE,
    )
    token = _kubectl(
        described, "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=12h"
    ).strip()
    admin = yaml.safe_load(Path(described.hub.kubeconfig).read_text())
    admin["users"] = [{"name": "edgeferry-operator", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "edgeferry-operator"
    path = lay.state_dir / "operator-sa.kubeconfig"
    path.write_text(yaml.safe_dump(admin))
    path.chmod(0o600)
    return str(path)


def grant_namespace(described: env.TestbedEnv, namespace: str, *, workloads: bool = False) -> None:
    """What a platform team does per served namespace: bind `manifests/namespace-access/`
    (ConfigMaps, Secrets) and, for a Cloud target's namespace, `workload-access/`."""
    docs = [MANIFESTS / "namespace-access" / "rolebinding.yaml"]
    if workloads:
        docs.append(MANIFESTS / "workload-access" / "rolebinding.yaml")
    for doc in docs:
        _kubectl(
            described,
            "apply",
            "--server-side",
            "--field-manager=edgeferry-testbed",
            "-n",
            namespace,
            "-f",
            str(doc),
        )


def operator_env(
    lay: layout.Layout, described: env.TestbedEnv, *, kubeconfig: str | None = None
) -> dict[str, str]:
    grype = Path(described.tools["grype"])
    return {
        "KUBECONFIG": kubeconfig or described.hub.kubeconfig,
        "DOCKER_HOST": described.docker_host,
        "EDGEFERRY_METRICS_PORT": str(lay.operator_metrics_port),
        "EDGEFERRY_METRICS_HOST": "127.0.0.1",
        "EDGEFERRY_WORKDIR": str(lay.state_dir / "operator-work"),
        "GRYPE_DB_CACHE_DIR": str(lay.state_dir / "grype-db"),
        "GRYPE_DB_AUTO_UPDATE": "false",
        "GRYPE_DB_VALIDATE_AGE": "false",
        "GRYPE_CHECK_FOR_APP_UPDATE": "false",
        "EDGEFERRY_GRYPE": str(grype),
        "EDGEFERRY_LIVENESS": f"http://127.0.0.1:{lay.operator_metrics_port + 1}/healthz",
        # Tests wait for deletions to give up on dead sites: 30 s instead of the default 120 s.
        "EDGEFERRY_CLEANUP_DEADLINE_SECONDS": str(CLEANUP_DEADLINE_SECONDS),
        "PATH": f"{Path(sys.executable).parent}:{grype.parent}:/usr/local/sbin:/usr/local/bin:"
        "/usr/sbin:/usr/bin:/sbin:/bin",
    }


def start(
    bed: testbed.Testbed, described: env.TestbedEnv, *, identity: str = "serviceaccount"
) -> procs.Managed:
    """Start the operator (or find it running) and wait until its metrics endpoint answers.

    `identity` "serviceaccount" (the default) runs it with a TokenRequest token of its own
    ServiceAccount and the RBAC shipped in `manifests/`, as in a cluster; "admin" runs it with
    the testbed's admin kubeconfig.
    """
    if identity not in {"serviceaccount", "admin"}:
        raise ValueError(f"identity must be 'serviceaccount' or 'admin', not {identity!r}")
    lay = bed.layout
    install_crds(described)
    ensure_offline_grype_db(lay)
    kubeconfig = None
    if identity == "serviceaccount" and bed.sup.find("operator") is None:
        kubeconfig = service_account_kubeconfig(lay, described)
    managed = bed.sup.start(
        "operator",
        [sys.executable, "-m", "edgeferry"],
        env=operator_env(lay, described, kubeconfig=kubeconfig),
        cwd=layout.REPO_ROOT,
    )
    procs.wait_until(
        lambda: procs.http_ok(f"http://127.0.0.1:{lay.operator_metrics_port}/metrics"),
        timeout=60,
        what="the operator's /metrics",
        on_timeout=lambda: bed.sup.log_tail("operator"),
    )
    return managed


def stop(bed: testbed.Testbed) -> bool:
    return bed.sup.stop("operator", grace=15)
