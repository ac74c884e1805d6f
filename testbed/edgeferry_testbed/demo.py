"""`make demo`: the operator on the testbed with the samples, left running.

Starts (or reuses) the testbed and the operator, applies the sample ModelImages (one admitted,
one blocked), the EdgeTargets for the hub's cloud pool and both edge clusters (with their
kubeconfig Secrets) and a ModelDeployment of the admitted image; waits until everything has
settled, prints what `kubectl get` shows and returns. `make testbed-down` stops it all.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
import time
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import env, operator_process, procs, samples, testbed

NAMESPACE = "edgeferry-demo"
WORKLOADS = "models"
"""Where the sample EdgeTargets put workloads (on the hub's cloud pools and at the edges)."""
GROUP, VERSION = "edgeferry.io", "v1alpha1"


def kubectl(described: env.TestbedEnv, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [described.tools["kubectl"], f"--kubeconfig={described.hub.kubeconfig}", *args],
        input=stdin,
        text=True,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise procs.TestbedError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def kubeconfig_secrets(described: env.TestbedEnv) -> list[dict[str, Any]]:
    """One Secret per edge cluster holding the kubeconfig of its edgeferry token (the shipped
    edge RBAC, `edge_access`), as a site would hand it over; never the admin's."""
    secrets = []
    for cluster in described.edges:
        if cluster.target_kubeconfig is None:
            raise procs.TestbedError(f"{cluster.name}: no edge kubeconfig; run `up` again")
        with open(cluster.target_kubeconfig, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": f"{cluster.name}-kubeconfig", "namespace": NAMESPACE},
                "data": {"kubeconfig": data},
            }
        )
    return secrets


def wait_phase(
    described: env.TestbedEnv, plural: str, name: str, phases: set[str], *, timeout: float
) -> dict[str, Any]:
    api = k8s_config.new_client_from_config(config_file=described.hub.kubeconfig)
    custom = k8s_client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
        except k8s_exceptions.ApiException:
            obj = {}
        if obj.get("status", {}).get("phase") in phases:
            api.close()
            return obj
        time.sleep(2)
    api.close()
    raise procs.TestbedError(
        f"{plural}/{name} did not reach {sorted(phases)} in {timeout:.0f}s: "
        f"{obj.get('status', {}).get('phase')}"
    )


def target_report(rollout: dict[str, Any]) -> str:
    """One line per target of a Ready ModelDeployment; raises unless every target is Ready."""
    status = rollout.get("status", {})
    lines = [
        f"  {t['name']:<14} {t.get('clusterType', ''):<6} {t['phase']:<12} "
        f"{t.get('readyReplicas', 0)} ready  {t.get('digest', '')}"
        for t in status.get("targets", [])
    ]
    counts = status.get("counts", {})
    if not counts.get("total") or counts.get("ready") != counts.get("total"):
        raise procs.TestbedError(f"not every target is Ready: {counts}\n" + "\n".join(lines))
    return f"demo: iris Ready on {counts['ready']}/{counts['total']} targets:\n" + "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    bed = testbed.Testbed()
    described = bed.up()
    operator_process.start(bed, described)
    print(
        f"demo: operator running (log {bed.sup.logs / 'operator.log'}, metrics "
        f"http://127.0.0.1:{bed.layout.operator_metrics_port}/metrics)",
        flush=True,
    )
    api = k8s_config.new_client_from_config(config_file=described.hub.kubeconfig)
    try:
        samples.install_inputs(api, NAMESPACE, bed.layout, described)
        with contextlib.suppress(k8s_exceptions.ApiException):  # 409: it exists
            k8s_client.CoreV1Api(api).create_namespace({"metadata": {"name": WORKLOADS}})
    finally:
        api.close()
    # What a platform team does for each namespace edgeferry serves (docs/install.md).
    operator_process.grant_namespace(described, NAMESPACE)
    operator_process.grant_namespace(described, WORKLOADS, workloads=True)
    values = samples.placeholders(bed.layout, described)
    docs: list[dict[str, Any]] = []
    for name in ("modelimage-iris.yaml", "modelimage-vulnerable.yaml"):
        docs += samples.render(samples.SAMPLES / name, values)
    rollout_samples = [samples.SAMPLES / n for n in ("edgetargets.yaml", "modeldeployment.yaml")]
    with_rollout = all(p.exists() for p in rollout_samples)
    if with_rollout:
        docs += kubeconfig_secrets(described)
        for path in rollout_samples:
            docs += samples.render(path, values)
    kubectl(described, "-n", NAMESPACE, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    print("demo: applied the samples; waiting for them to settle", flush=True)
    wait_phase(described, "modelimages", "iris", {"Ready"}, timeout=600)
    wait_phase(described, "modelimages", "legacy-scorer", {"Blocked"}, timeout=600)
    if with_rollout:
        rollout = wait_phase(described, "modeldeployments", "iris", {"Ready"}, timeout=600)
        print(target_report(rollout))
    print(
        kubectl(
            described,
            "-n",
            NAMESPACE,
            "get",
            "modelimages,edgetargets,modeldeployments" if with_rollout else "modelimages",
        )
    )
    print(
        f"demo: ready in {time.monotonic() - started:.0f} s. Try:\n"
        f"  {described.tools['kubectl']} --kubeconfig {described.hub.kubeconfig} "
        f"-n {NAMESPACE} describe modelimage legacy-scorer\n"
        f"  Prometheus: {described.prometheus_url}\n"
        "  make testbed-down   # stops everything the demo started"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except procs.TestbedError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(1)
