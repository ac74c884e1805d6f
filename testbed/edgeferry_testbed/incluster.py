"""The operator as users install it: the Helm chart on the hub, the operator Pod on a real node.

`install` builds the operator image (`operator/Dockerfile`, cached in the registry by a digest of
what goes into it), pushes it to the registry the real nodes pull from, serves grype's database
from a mirror on the host address (the chart's air-gapped path, `scan.dbUpdateUrl`: the Pod has
no internet), and `helm upgrade --install`s the chart with the `dind` build backend onto the
hub's real node, with the chart's own ServiceAccount and RBAC (or, given a `host_socket`
daemon, the `hostSocket` backend on that daemon's socket). The demo and
tests/integration/test_incluster.py use it; the rest of the tests run the faster host-process
operator (`operator_process`), which serves every namespace. The two must never run at once
(both would reconcile the in-cluster operator's namespaces): test_incluster stops the host
operator while it runs, and the `operator` fixture uninstalls a release the demo left.

Why not let the host operator skip these namespaces (`EDGEFERRY_NAMESPACES=!edgeferry-*`)?
Kopf then watches namespace by namespace (and drops a namespace's watch once it looks deleted);
in the one run tried, a terminating test namespace's EdgeTargets were never finalized (their
deletion handler never ran, their timers kept running) and test_rollout's teardown timed out.
Not investigated further: cluster-wide is what the suite has always run.

Why the dind container is not `privileged`: this machine is itself a container without
CAP_SYS_RESOURCE, and runc refuses `privileged` there. The chart's `build.dind.securityContext`
gets every capability the machine has, no seccomp or AppArmor filter, and the node's
/sys/fs/cgroup (cgroup v1: the Pod's own cgroup mounts are read-only and its devices cgroup
denies what dockerd's containers need).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import docker
import yaml

from edgeferry.adapters import vulndb
from edgeferry_testbed import env, images, layout, operator_image, operator_process, procs, services
from edgeferry_testbed import host_socket as host_socket_module
from edgeferry_testbed import testbed as testbed_module

RELEASE = "edgeferry-incluster"
NAMESPACE = "edgeferry-incluster-system"
"""Not the shipped `edgeferry`/`edgeferry-system`: the host-process operator's ServiceAccount
and ClusterRoles (from `manifests/`) have those names, and Helm adopts nothing it did not make."""
WATCHED = ["edgeferry-demo", "edgeferry-incluster"]
"""What the in-cluster operator serves: the demo's namespace and test_incluster's. One install
serves both, so the demo's install is reused by the tests and the other way round."""
WORKLOADS = ["models", "edgeferry-incluster"]
"""Namespaces its Cloud targets deploy into (the demo's `models`, the test's own)."""
CHART = layout.REPO_ROOT / "charts" / "edgeferry"
MIRROR_PORT = 31088
"""grype DB mirror on the host address (plain HTTP, `python -m http.server`)."""
IMAGE_INPUTS = (
    layout.REPO_ROOT / "operator" / "edgeferry",
    layout.REPO_ROOT / "operator" / "Dockerfile",
    layout.REPO_ROOT / "pyproject.toml",
)
"""What the operator image is made of, besides the pinned wheels and the base image."""


def _say(message: str) -> None:
    print(f"incluster: {message}", flush=True)


def image_key(base_image: str) -> str:
    """Tag of the operator image built from this checkout: a digest of its inputs."""
    digest = hashlib.sha256()
    digest.update(operator_process.code_digest(IMAGE_INPUTS).encode())
    digest.update(operator_image.constraints().encode())
    digest.update(base_image.encode())
    return f"{operator_image.version()}-{digest.hexdigest()[:16]}"


def _manifest_digest(registry: str, repository: str, tag: str) -> str | None:
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json"
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])
    except OSError:
        return None


def ensure_operator_image(described: env.TestbedEnv) -> str:
    """`<pod registry>/edgeferry/operator@sha256:...`: built and pushed only when its inputs
    changed (the registry keeps it across `down`)."""
    base = described.base_images["pythonSklearn"]
    tag = image_key(base)
    found = _manifest_digest(described.registry, operator_image.REPOSITORY, tag)
    if found is None:
        started = time.monotonic()
        api = docker.APIClient(base_url=described.docker_host, timeout=900)
        try:
            operator_image.stage()
            built = operator_image.build(api, base)
            remote = f"{described.registry}/{operator_image.REPOSITORY}:{tag}"
            api.tag(built.image_id, remote)
            for line in api.push(remote, stream=True, decode=True):
                if "error" in line:
                    raise procs.TestbedError(f"push of {remote} failed: {line['error']}")
        finally:
            api.close()
        found = _manifest_digest(described.registry, operator_image.REPOSITORY, tag)
        if found is None:
            raise procs.TestbedError(f"{operator_image.REPOSITORY}:{tag} is not in the registry")
        _say(f"operator image {tag} built and pushed in {time.monotonic() - started:.0f} s")
    else:
        _say(f"operator image {tag}: cached")
    return f"{described.pod_registry}/{operator_image.REPOSITORY}@{found}"


def for_pods(reference: str, described: env.TestbedEnv) -> str:
    """The same image as Pods (and the dind daemon in them) reach the registry."""
    return reference.replace(described.registry, described.pod_registry, 1)


def ensure_grype_mirror(bed: testbed_module.Testbed, *, build_dir: Path | None = None) -> str:
    """The URL of a `latest.json` listing the testbed's offline DB, as grype 0.121 reads it
    (status, schemaVersion, built, path relative to the listing, sha256 checksum).

    `build_dir` publishes another `vulndb.build_offline_db` output instead (a test's newer DB);
    calling it again without one publishes the testbed's DB again."""
    lay = bed.layout
    operator_process.ensure_offline_grype_db(lay)
    summary = vulndb.load_summary(build_dir or lay.state_dir / "grype-db-build")
    root = lay.state_dir / "grype-db-mirror"
    listing_dir = root / "v6"
    listing_dir.mkdir(parents=True, exist_ok=True)
    archive = listing_dir / vulndb.ARCHIVE_NAME
    # Replaced, never rewritten in place: grype may be downloading the one listed before.
    shutil.copyfile(summary.archive, listing_dir / f".{archive.name}.new")
    (listing_dir / f".{archive.name}.new").replace(archive)
    checksum = hashlib.sha256(archive.read_bytes()).hexdigest()
    schema = summary.schema_version
    listing = {
        "status": "active",
        "schemaVersion": schema if schema.startswith("v") else f"v{schema}",
        "built": summary.built.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "path": archive.name,
        "checksum": f"sha256:{checksum}",
    }
    (listing_dir / ".latest.json.new").write_text(json.dumps(listing, indent=1) + "\n")
    (listing_dir / ".latest.json.new").replace(listing_dir / "latest.json")
    url = f"http://{lay.host_address}:{MIRROR_PORT}/v6/latest.json"
    if bed.sup.find("grype-db-mirror") is None:
        argv = [sys.executable, "-m", "http.server", "--bind", lay.host_address]
        bed.sup.start("grype-db-mirror", [*argv, "--directory", str(root), str(MIRROR_PORT)])
    procs.wait_until(
        lambda: procs.http_ok(url),
        timeout=30,
        what="the grype DB mirror",
        on_timeout=lambda: bed.sup.log_tail("grype-db-mirror"),
    )
    return url


def _bounding_capabilities() -> list[str]:
    """The capabilities this machine can grant (`privileged` asks for all of them)."""
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("CapBnd:"))
    bounding = int(line.split()[1], 16)
    return [name for bit, name in enumerate(_CAPABILITIES) if bounding >> bit & 1]


_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
]
"""Linux capabilities by bit number, as far as Engine 20.10 knows them."""


def values(
    described: env.TestbedEnv,
    *,
    image: str,
    dind_image: str,
    mirror_url: str,
    host_socket: host_socket_module.HostSocket | None = None,
) -> dict[str, Any]:
    """The chart values of the testbed's install: the operator and its dind daemon on the hub's
    real node, images from the Pods' registry, grype from the mirror. With `host_socket`, the
    `hostSocket` backend on that daemon's socket instead of dind."""
    repository, _, digest = image.partition("@")
    chosen: dict[str, Any] = {
        "image": {"repository": repository, "digest": digest},
        "watchNamespaces": WATCHED,
        "rbac": {"workloadNamespaces": WORKLOADS},
        "nodeSelector": {"kubernetes.io/os": "linux", layout.REAL_NODE_LABEL: "real"},
        "tolerations": [{**layout.REAL_NODE_TAINT, "operator": "Equal"}],
        "build": {
            "backend": "dind",
            "smokeProbeImage": for_pods(described.base_images["busybox"], described),
            "insecureRegistries": [described.pod_registry],
            "dind": {
                "image": dind_image,
                "storageSize": "20Gi",
                "securityContext": {
                    "privileged": False,
                    "allowPrivilegeEscalation": True,
                    "runAsNonRoot": False,
                    "runAsUser": 0,
                    "capabilities": {"add": _bounding_capabilities()},
                    "seccompProfile": {"type": "Unconfined"},
                    "appArmorProfile": {"type": "Unconfined"},
                },
                "extraVolumes": [
                    {"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"}}
                ],
                "extraVolumeMounts": [{"name": "cgroup", "mountPath": "/sys/fs/cgroup"}],
            },
        },
        "scan": {"dbUpdateUrl": mirror_url},
        "rollout": {"cleanupDeadlineSeconds": operator_process.CLEANUP_DEADLINE_SECONDS},
    }
    if host_socket is not None:
        build = chosen["build"]
        del build["dind"]
        build["backend"] = "hostSocket"
        build["hostSocket"] = {"path": str(host_socket.path), "socketGroup": host_socket.group}
    return chosen


def helm(described: env.TestbedEnv, *args: str) -> str:
    argv = [described.tools["helm"], f"--kubeconfig={described.hub.kubeconfig}", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise procs.TestbedError(f"helm {' '.join(args[:2])}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def install(
    bed: testbed_module.Testbed,
    described: env.TestbedEnv,
    *,
    host_socket: host_socket_module.HostSocket | None = None,
) -> dict[str, Any]:
    """`helm upgrade --install` the chart on the hub and wait for the operator Pod to be Ready;
    returns the chart values used. The `dind` backend, or `hostSocket` on `host_socket` (an
    upgrade of a dind release replaces the Pod: the Deployment's strategy is Recreate)."""
    started = time.monotonic()
    operator_process.install_crds(described)
    # The chart's RoleBindings go into these namespaces: they must exist first.
    for namespace in sorted({*WATCHED, *WORKLOADS}):
        kubectl = [described.tools["kubectl"], f"--kubeconfig={described.hub.kubeconfig}"]
        subprocess.run(
            [*kubectl, "create", "namespace", namespace], capture_output=True, check=False
        )
    image = ensure_operator_image(described)
    api = docker.APIClient(base_url=described.docker_host, timeout=900)
    try:
        dind = for_pods(images.ensure_dind_image(api, described.registry), described)
    finally:
        api.close()
    chosen = values(
        described,
        image=image,
        dind_image=dind,
        mirror_url=ensure_grype_mirror(bed),
        host_socket=host_socket,
    )
    values_file = bed.layout.state_dir / "incluster-values.yaml"
    values_file.write_text(yaml.safe_dump(chosen))
    helm(
        described,
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "300s",
    )
    procs.wait_until(
        lambda: operator_pod(described) is not None,
        timeout=300,
        what="the operator Pod to be Ready and serve /metrics",
        interval=1.0,
    )
    pod = operator_pod(described)
    if pod is None:
        raise procs.TestbedError("the operator Pod stopped serving /metrics")
    publish_to_prometheus(bed.layout, pod)
    name = pod["metadata"]["name"]
    backend = chosen["build"]["backend"]
    took = time.monotonic() - started
    _say(f"helm install of {RELEASE} ({backend}): {name} Ready in {took:.0f} s")
    return chosen


def operator_pod(described: env.TestbedEnv) -> dict[str, Any] | None:
    """The operator Pod, if exactly one is Ready and its /metrics answers at its IP.

    The Pod's Ready condition alone is not enough: after a `down` and `up`, etcd still holds
    the Pod as it was, Ready, until its kubelet is back and restarts it."""
    kubectl = [described.tools["kubectl"], f"--kubeconfig={described.hub.kubeconfig}"]
    done = subprocess.run(
        [*kubectl, "-n", NAMESPACE, "get", "pods", "-o", "json",
         "-l", "app.kubernetes.io/component=operator"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return None
    ready = [
        p for p in json.loads(done.stdout)["items"]
        if "deletionTimestamp" not in p["metadata"] and p["status"].get("podIP")
        and any(c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", []))
    ]  # fmt: skip
    if len(ready) != 1:
        return None
    (pod,) = ready
    return pod if _serves_operator_metrics(pod) else None


def _serves_operator_metrics(pod: dict[str, Any]) -> bool:
    """The operator's own series answer at the Pod's IP (a stale IP may be another Pod's)."""
    url = f"http://{pod['status']['podIP']}:{metrics_port(pod)}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return b"edgeferry_scan_db_stale_threshold_seconds" in response.read()
    except OSError:
        return False


def metrics_port(pod: dict[str, Any]) -> int:
    return int(
        next(
            port["containerPort"]
            for container in pod["spec"]["containers"]
            for port in container.get("ports", [])
            if port.get("name") == "metrics"
        )
    )


def publish_to_prometheus(lay: layout.Layout, pod: dict[str, Any]) -> None:
    """Point the testbed's Prometheus at the operator Pod (its IP on the real node's bridge
    routes from the host) with the labels Kubernetes service discovery would give it."""
    targets = [
        {
            "targets": [f"{pod['status']['podIP']}:{metrics_port(pod)}"],
            "labels": {
                "namespace": NAMESPACE,
                "pod": pod["metadata"]["name"],
                "node": pod["spec"]["nodeName"],
            },
        }
    ]
    path = lay.state_dir / "prometheus" / services.OPERATOR_PODS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets, indent=1) + "\n")
    tmp.replace(path)


def installed(described: env.TestbedEnv) -> bool:
    argv = [described.tools["helm"], f"--kubeconfig={described.hub.kubeconfig}"]
    done = subprocess.run(
        [*argv, "status", RELEASE, "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def uninstall(lay: layout.Layout, described: env.TestbedEnv) -> None:
    """`helm uninstall`, and Prometheus stops scraping the Pod (no false operator-down)."""
    helm(described, "uninstall", RELEASE, "--namespace", NAMESPACE, "--ignore-not-found", "--wait")
    (lay.state_dir / "prometheus" / services.OPERATOR_PODS_FILE).write_text("[]\n")
