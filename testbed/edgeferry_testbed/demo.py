"""`make demo`: the operator as users install it, with the samples, left running.

Starts (or reuses) the testbed, installs the operator with the Helm chart on the hub
(`incluster`: the operator Pod on the hub's real node, the chart's ServiceAccount and RBAC, a
Docker-in-Docker build daemon beside it), pushes the iris model to the registry as an OCI
artifact with `python -m edgeferry model push`, applies the sample ModelImages (one admitted,
its model from that artifact by digest and sha256; one blocked), the EdgeTargets for the hub's
pools and both edge clusters (with their kubeconfig Secrets), a pull-mode site `shop-1` whose
agent it runs in edge-1 from `manifests/edge/agent/` (`agent_site`), and a ModelDeployment of the
admitted image, which lands on the real nodes of the hub and of edge-site-2 (on kwok nodes
elsewhere); waits until everything has settled, sends one prediction through edge-2's API
server, prints what `kubectl get` shows and where to send predictions, and returns.
`make testbed-down` stops it all.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import subprocess
import sys
import time
import urllib.request
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import (
    agent_site,
    env,
    incluster,
    layout,
    operator_process,
    procs,
    samples,
    testbed,
)

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


IRIS_REQUEST = '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
CA_CERT = layout.default_layout().state_dir / "pki" / "ca.crt"
"""The testbed's CA, which signed the API servers' certificate."""
PREDICT_PATH = f"/api/v1/namespaces/{WORKLOADS}/services/iris:http/proxy/predict"
"""The model's Service at an edge, through that edge's API server (the testbed has no ingress)."""


def predict(kubeconfig: str) -> tuple[str, str]:
    """POST the sample request to the iris Service through the API server's service proxy;
    returns the answer and a curl command that sends the same request."""
    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    conf = api.configuration
    token = conf.auth_settings()["BearerToken"]["value"]
    url = f"{conf.host}{PREDICT_PATH}"
    request = urllib.request.Request(
        url,
        data=IRIS_REQUEST.encode(),
        headers={"Authorization": token, "Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=conf.ssl_ca_cert)),
    )
    try:
        with opener.open(request, timeout=30) as response:
            answer = response.read().decode().strip()
    except OSError as exc:
        raise procs.TestbedError(f"prediction at {url}: {exc}") from exc
    finally:
        api.close()
    curl = (
        f"curl --cacert {CA_CERT} -H 'Authorization: {token}' "
        f"-H 'Content-Type: application/json' -d '{IRIS_REQUEST}' {url}"
    )
    return answer, curl


def main() -> int:
    started = time.monotonic()
    bed = testbed.Testbed()
    described = bed.up()
    if bed.sup.find("operator") is not None:
        # A host-process operator (left by a test session) would serve the demo's namespace too.
        print("demo: stopping the host-process operator a test session left", flush=True)
        operator_process.stop(bed)
    incluster.install(bed, described)
    print(
        f"demo: operator installed with Helm (release {incluster.RELEASE} in namespace "
        f"{incluster.NAMESPACE}, on the hub's real node)",
        flush=True,
    )
    api = k8s_config.new_client_from_config(config_file=described.hub.kubeconfig)
    try:
        samples.install_inputs(api, NAMESPACE, bed.layout, described)
        with contextlib.suppress(k8s_exceptions.ApiException):  # 409: it exists
            k8s_client.CoreV1Api(api).create_namespace({"metadata": {"name": WORKLOADS}})
    finally:
        api.close()
    artifact = samples.iris_artifact(bed.layout, described)
    print(
        "demo: pushed the iris model as an OCI artifact (python -m edgeferry model push): "
        f"{artifact.repository}@{artifact.digest}",
        flush=True,
    )
    # The operator's Pod and its build daemon reach the registry at the host address.
    values = {
        k: incluster.for_pods(v, described)
        for k, v in samples.placeholders(bed.layout, described).items()
    }
    docs: list[dict[str, Any]] = []
    for name in ("modelimage-iris.yaml", "modelimage-vulnerable.yaml"):
        docs += samples.render(samples.SAMPLES / name, values)
    docs += kubeconfig_secrets(described)
    for name in ("edgetargets.yaml", "modeldeployment.yaml"):
        docs += samples.render(samples.SAMPLES / name, values)
    kubectl(described, "-n", NAMESPACE, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    print("demo: applied the samples; waiting for them to settle", flush=True)
    agent_site.start(described, namespace=NAMESPACE, target="shop-1", site_namespace="shop")
    wait_phase(described, "modelimages", "iris", {"Ready"}, timeout=900)
    wait_phase(described, "modelimages", "legacy-scorer", {"Blocked"}, timeout=600)
    rollout = wait_phase(described, "modeldeployments", "iris", {"Ready"}, timeout=600)
    print(target_report(rollout))
    print(kubectl(described, "-n", NAMESPACE, "get", "modelimages,edgetargets,modeldeployments"))
    answer, curl = predict(described.cluster("edge-2").kubeconfig)
    print(f"demo: a prediction from iris at edge-site-2: {answer}")
    kubectl_binary = described.tools["kubectl"]
    print(
        f"demo: ready in {time.monotonic() - started:.0f} s. Try:\n"
        f"  {curl}\n"
        f"  {kubectl_binary} --kubeconfig {described.hub.kubeconfig} "
        f"-n {NAMESPACE} describe modelimage legacy-scorer\n"
        f"  {kubectl_binary} --kubeconfig {described.hub.kubeconfig} "
        f"-n {incluster.NAMESPACE} logs deploy/{incluster.RELEASE} -c operator\n"
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
