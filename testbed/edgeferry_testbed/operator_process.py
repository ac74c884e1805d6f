"""Run the edgeferry operator against the testbed, as the demo and the integration tests do.

The operator runs as a plain process on the host (Kopf's standalone mode, the hub's admin
kubeconfig or a ServiceAccount token, the host's Docker daemon), started through the testbed's
supervisor so `make testbed-down` stops it with everything else. grype gets an offline database
built from the advisory fixtures and is told never to update it.

An operator that is already running (left by `make demo`, or by an earlier test session) is
reused only when it is the operator this checkout would start: the same checkout, the same code
(a digest of `operator/edgeferry/` and `pyproject.toml`), the same interpreter, identity and
settings, recorded in a fingerprint when it was started. Anything else, an edit since, another
worktree's operator, other settings, an old ServiceAccount token, is stopped and started afresh,
so a test run never tests stale code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import time
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
CLEANUP_DEADLINE_SECONDS = 20
"""The operator's `EDGEFERRY_CLEANUP_DEADLINE_SECONDS` on the testbed: tests whose teardown deletes
from a site that is down wait for it, so it is short (two cleanup retries, 10 s apart)."""
OPERATOR_NAMESPACE = "edgeferry-system"
SERVICE_ACCOUNT = "edgeferry"
TOKEN_HOURS = 12
"""Lifetime of the ServiceAccount token the operator runs with (`kubectl create token`)."""
REUSE_HOURS = TOKEN_HOURS - 1
"""An operator started longer ago than this is restarted: its token is about to expire."""
CODE = (layout.REPO_ROOT / "operator" / "edgeferry", layout.REPO_ROOT / "pyproject.toml")
"""What the operator process runs, for the fingerprint."""


def _kubectl(described: env.TestbedEnv, *args: str, stdin: str | None = None) -> str:
    argv = [described.tools["kubectl"], f"--kubeconfig={described.hub.kubeconfig}", *args]
    result = subprocess.run(argv, input=stdin, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise procs.TestbedError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def service_account_kubeconfig(lay: layout.Layout, described: env.TestbedEnv) -> str:
    """A kubeconfig holding a TokenRequest token of the operator's own ServiceAccount.

    The ServiceAccount and its cluster-wide RBAC come from `manifests/` exactly as users apply
    them, so a test run with this identity proves the shipped RBAC is sufficient. An install
    test that just deleted `edgeferry-system` leaves it terminating for a while: wait for it to
    go rather than fail to create the ServiceAccount in it.
    """
    procs.wait_until(
        lambda: (
            "Terminating"
            not in _kubectl(
                described,
                "get",
                "namespace",
                OPERATOR_NAMESPACE,
                "--ignore-not-found",
                "-o",
                "jsonpath={.status.phase}",
            )
        ),
        timeout=120,
        what=f"namespace {OPERATOR_NAMESPACE} to finish terminating",
        interval=1.0,
    )
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
        described,
        "create",
        "token",
        SERVICE_ACCOUNT,
        "-n",
        OPERATOR_NAMESPACE,
        f"--duration={TOKEN_HOURS}h",
    ).strip()
    admin = yaml.safe_load(Path(described.hub.kubeconfig).read_text())
    admin["users"] = [{"name": "edgeferry-operator", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "edgeferry-operator"
    path = service_account_kubeconfig_path(lay)
    path.write_text(yaml.safe_dump(admin))
    path.chmod(0o600)
    return str(path)


def service_account_kubeconfig_path(lay: layout.Layout) -> Path:
    return lay.state_dir / "operator-sa.kubeconfig"


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
    lay: layout.Layout, described: env.TestbedEnv, *, identity: str = "serviceaccount"
) -> dict[str, str]:
    """The operator's environment: the settings the tests expect it to run with."""
    if identity not in {"serviceaccount", "admin"}:
        raise ValueError(f"identity must be 'serviceaccount' or 'admin', not {identity!r}")
    grype = Path(described.tools["grype"])
    kubeconfig = (
        str(service_account_kubeconfig_path(lay))
        if identity == "serviceaccount"
        else described.hub.kubeconfig
    )
    probe = described.base_images.get("busybox")
    return {
        "KUBECONFIG": kubeconfig,
        "DOCKER_HOST": described.docker_host,
        # No hub here: the smoke test's probe is the testbed's own busybox.
        **({"EDGEFERRY_SMOKE_PROBE_IMAGE": probe} if probe else {}),
        "EDGEFERRY_METRICS_PORT": str(lay.operator_metrics_port),
        "EDGEFERRY_METRICS_HOST": "127.0.0.1",
        "EDGEFERRY_WORKDIR": str(lay.state_dir / "operator-work"),
        # The site mirror of the mirror tests speaks plain HTTP on the host address.
        "EDGEFERRY_INSECURE_REGISTRIES": lay.site_mirror,
        "GRYPE_DB_CACHE_DIR": str(lay.state_dir / "grype-db"),
        "GRYPE_DB_AUTO_UPDATE": "false",
        "GRYPE_DB_VALIDATE_AGE": "false",
        "GRYPE_CHECK_FOR_APP_UPDATE": "false",
        "EDGEFERRY_LIVENESS": f"http://127.0.0.1:{lay.operator_metrics_port + 1}/healthz",
        # Rollout analysis queries the testbed's Prometheus (it scrapes real-node model Pods).
        "EDGEFERRY_PROMETHEUS_URL": described.prometheus_url,
        # Tests wait for deletions to give up on dead sites: 30 s instead of the default 120 s.
        "EDGEFERRY_CLEANUP_DEADLINE_SECONDS": str(CLEANUP_DEADLINE_SECONDS),
        "PATH": f"{Path(sys.executable).parent}:{grype.parent}:/usr/local/sbin:/usr/local/bin:"
        "/usr/sbin:/usr/bin:/sbin:/bin",
    }


def code_digest(paths: tuple[Path, ...] = CODE, *, root: Path = layout.REPO_ROOT) -> str:
    """sha256 over the operator's files (names relative to `root`, and bytes; caches left out)."""
    digest = hashlib.sha256()
    for top in paths:
        files = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(argv: list[str], environment: dict[str, str], *, identity: str) -> dict[str, str]:
    """What an operator process must have been started with to be reused by this checkout."""
    spec = importlib.util.find_spec("edgeferry")
    imported = Path(spec.origin).resolve() if spec and spec.origin else None
    package = (layout.REPO_ROOT / "operator" / "edgeferry").resolve()
    if imported is None or imported.parent != package:
        raise procs.TestbedError(
            f"{sys.executable} imports edgeferry from {imported}, not from the checkout under "
            f"test ({package}); run `make venv` in {layout.REPO_ROOT}"
        )
    return {
        "checkout": str(layout.REPO_ROOT),
        "code": code_digest(),
        "argv": json.dumps(argv),
        "identity": identity,
        "settings": hashlib.sha256(json.dumps(environment, sort_keys=True).encode()).hexdigest(),
    }


def fingerprint_path(lay: layout.Layout) -> Path:
    return lay.state_dir / "operator-fingerprint.json"


def why_not_reusable(lay: layout.Layout, wanted: dict[str, str], *, now: float) -> str | None:
    """Why the recorded operator is not the one `wanted` describes (None: it is)."""
    try:
        recorded = json.loads(fingerprint_path(lay).read_text())
    except (OSError, ValueError):
        return "it has no fingerprint (started by an older testbed or by hand)"
    differing = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if differing:
        return f"its {', '.join(differing)} differ from this checkout's"
    if now - float(recorded.get("started", 0)) > REUSE_HOURS * 3600:
        return f"it was started over {REUSE_HOURS} h ago and its token is about to expire"
    return None


def claim(sup: procs.Supervisor, lay: layout.Layout, wanted: dict[str, str], *, now: float) -> bool:
    """Stop a running operator that is not the one wanted; True if one that is may be reused."""
    if sup.find("operator") is None:
        return False
    reason = why_not_reusable(lay, wanted, now=now)
    if reason is None:
        return True
    print(f"testbed: restarting the running operator: {reason}", file=sys.stderr, flush=True)
    sup.stop("operator", grace=15)
    return False


def start(
    bed: testbed.Testbed,
    described: env.TestbedEnv,
    *,
    identity: str = "serviceaccount",
    overrides: dict[str, str] | None = None,
) -> procs.Managed:
    """Start the operator from this checkout, or reuse the running one if it is exactly that
    (see `fingerprint`), and wait until its metrics endpoint answers.

    `identity` "serviceaccount" (the default) runs it with a TokenRequest token of its own
    ServiceAccount and the RBAC shipped in `manifests/`, as in a cluster; "admin" runs it with
    the testbed's admin kubeconfig. `overrides` replace settings of `operator_env` (a test that
    needs other ones; the fingerprint then differs, so the next plain `start` restarts it).
    """
    lay = bed.layout
    environment = {**operator_env(lay, described, identity=identity), **(overrides or {})}
    argv = [sys.executable, "-m", "edgeferry"]
    wanted = fingerprint(argv, environment, identity=identity)
    install_crds(described)
    ensure_offline_grype_db(lay)
    managed = bed.sup.find("operator") if claim(bed.sup, lay, wanted, now=time.time()) else None
    if managed is None:
        if identity == "serviceaccount":
            service_account_kubeconfig(lay, described)
        if not procs.port_is_free(lay.operator_metrics_port):
            raise procs.TestbedError(
                f"port {lay.operator_metrics_port} (the operator's metrics) is taken by a process "
                "this testbed did not start, e.g. another checkout's operator; stop it first"
            )
        managed = bed.sup.start("operator", argv, env=environment, cwd=layout.REPO_ROOT)
        fingerprint_path(lay).write_text(json.dumps({**wanted, "started": time.time()}))
    procs.wait_until(
        lambda: procs.http_ok(f"http://127.0.0.1:{lay.operator_metrics_port}/metrics"),
        timeout=60,
        what="the operator's /metrics",
        on_timeout=lambda: bed.sup.log_tail("operator"),
    )
    if bed.sup.find("operator") is None:
        raise procs.TestbedError(f"the operator exited:\n{bed.sup.log_tail('operator')}")
    return managed


def stop(bed: testbed.Testbed) -> bool:
    fingerprint_path(bed.layout).unlink(missing_ok=True)
    return bed.sup.stop("operator", grace=15)
