"""Fleet figures (issue 13, item 4): N push targets x D ModelDeployments on the testbed's edges,
side by side with a minimal script doing the same writes (the raw limit), in one run.

What is real and what is simulated:

- Targets are `K3s` EdgeTargets on the hub, alternating between the testbed's two edge API
  servers (edge-1, edge-2), one namespace each there (`fb-<i>`), reached with the operator's
  edge identity (`manifests/edge/`); the operator is this checkout's `python -m edgeferry`,
  started as the tests start it (host process, its ServiceAccount's RBAC), with the settings
  given by `--env`. Pods run on kwok nodes (Ready, nothing executes): the edges' kwok nodes get
  `--pods-per-node` pod capacity so that 10,000 Pods fit.
- The raw limit: a script that, per target and deployment, creates the namespace, applies the
  same Deployment and Service (server-side apply, same replicas and readiness probe) with the
  same edge credentials and the operator's parallelism (16), then waits until every Deployment
  is Available, listing each edge every second. It runs first, in namespaces `raw-<i>`.
- Then the ModelDeployments are created at once (canary 1, then the rest in one wave) and the
  clock stops when every one is `Ready`.

With `--mode agent` (pull mode) the targets are `Agent` EdgeTargets instead, one site namespace
each at edge-1/edge-2 as above, and their agents are `bench/agent_swarm.py`: one process
running one `edgeferry.agent.loop.Agent` per target, each with its own hub identity (the token
of its own `edgeferry-agent` ServiceAccount, so the hub authenticates, authorizes and serves
each one as a real agent), every `--agent-interval` seconds (10, as the real agent), on
`--agent-workers` threads. Simulated: the sites share the two edge API servers and one process;
the swarm's CPU is reported apart (it is the sites', on their own machines in real life). The
raw limit is the same script as in push mode (the site state the agents end in, written
directly), run before the swarm starts.

Measured: both times; the operator's peak RSS (VmHWM) and RSS; its CPU over `--rest-seconds`
once everything is Ready; the hub API server's request rate (its `apiserver_request_total`,
all clients) while idle before, during the rollout and at rest; the largest status object
(ModelDeployment and EdgeTarget). Prints one JSON document (and progress on stderr).

Run on a testbed that is up, inside the testbed lock, e.g.
`PYTHONPATH=. .venv/bin/python bench/fleet_bench.py --targets 200 --deployments 1`.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions
from tests.integration import _resources as res

from edgeferry.models import target_release as tr
from edgeferry_testbed import env, handles, operator_process, pytest_plugin, testbed

HUB_NS = "fleet-bench"
EDGES = ("edge-1", "edge-2")
SELECTOR = {"matchLabels": {"fleet-bench": "yes"}}
PARALLEL = 16


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait(what: str, check: Callable[[], bool], *, timeout: float, every: float = 1.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)
    return time.monotonic() - started


# --- the process ---------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            out[key] = int(value.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hub_requests(hub: handles.Cluster) -> float:
    """Sum of the hub API server's apiserver_request_total (all verbs, all clients)."""
    text = hub.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("apiserver_request_total{")
    )


# --- the testbed ---------------------------------------------------------------------------------
def raise_pod_capacity(bed: handles.Testbed, pods: int) -> None:
    for name in EDGES:
        with bed.cluster(name).api_client() as api:
            core = k8s_client.CoreV1Api(api)
            for node in core.list_node(label_selector="type=kwok").items:
                patch = {
                    "status": {"capacity": {"pods": str(pods)}, "allocatable": {"pods": str(pods)}}
                }
                core.patch_node_status(node.metadata.name, patch)
    say(f"edge kwok nodes: {pods} pods each")


def edge_client(bed: handles.Testbed, name: str) -> k8s_client.ApiClient:
    return k8s_config.new_client_from_config(config_file=bed.cluster(name).target_kubeconfig)


def workload(namespace: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    labels = {"app.kubernetes.io/name": name, "bench": "raw"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": "127.0.0.1:5000/bench/raw@sha256:" + "0" * 64,
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 2,
                            },
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]},
    }
    return deployment, service


def raw_limit(bed: handles.Testbed, targets: int, deployments: int, timeout: float) -> float:
    """Create namespaces, apply Deployments and Services, wait until all are Available."""
    clients = {name: edge_client(bed, name) for name in EDGES}

    def write(i: int) -> None:
        api = clients[EDGES[i % 2]]
        core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
        ns = f"raw-{i:04d}"
        try:
            core.create_namespace({"metadata": {"name": ns}})
        except k8s_exceptions.ApiException as exc:
            if exc.status != 409:
                raise
        for d in range(deployments):
            dep, svc = workload(ns, f"model-{d}")
            apps.patch_namespaced_deployment(
                dep["metadata"]["name"],
                ns,
                dep,
                field_manager="raw",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
            core.patch_namespaced_service(
                svc["metadata"]["name"],
                ns,
                svc,
                field_manager="raw",
                force=True,
                _content_type="application/apply-patch+yaml",
            )

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(write, range(targets)))
    written = time.monotonic() - started
    say(f"raw: {targets * deployments} Deployments written in {written:.1f}s")
    admins = {name: bed.cluster(name).api_client() for name in EDGES}

    def available() -> int:
        count = 0
        for api in admins.values():
            items = k8s_client.AppsV1Api(api).list_deployment_for_all_namespaces(
                label_selector="bench=raw", _preload_content=False
            )
            for item in json.loads(items.data)["items"]:
                status = item.get("status", {})
                if (
                    status.get("availableReplicas", 0) >= 1
                    and status.get("updatedReplicas", 0) >= 1
                ):
                    count += 1
        return count

    seen = [0]

    def done() -> bool:
        seen[0] = available()
        return seen[0] >= targets * deployments

    try:
        wait("raw Deployments Available", done, timeout=timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc} ({seen[0]}/{targets * deployments} Available)") from exc
    return time.monotonic() - started


# --- edgeferry -----------------------------------------------------------------------------------
def start_operator(bed: testbed.Testbed, described: env.TestbedEnv, extra: dict[str, str]) -> int:
    operator_process.stop(bed)
    operator_process.install_crds(described)
    operator_process.ensure_offline_grype_db(bed.layout)
    operator_process.service_account_kubeconfig(bed.layout, described)
    environment = operator_process.operator_env(bed.layout, described) | extra
    managed = bed.sup.start(
        "operator", [sys.executable, "-m", "edgeferry"], env=environment, cwd=Path.cwd()
    )
    port = bed.layout.operator_metrics_port
    wait(
        "operator /metrics",
        lambda: _http_ok(f"http://127.0.0.1:{port}/metrics"),
        timeout=60,
    )
    return managed.pid


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def create_agent_targets(bed: handles.Testbed, targets: int) -> None:
    pytest_plugin.make_namespace(bed.hub, HUB_NS)
    operator_process.grant_namespace(bed.env, HUB_NS)
    with bed.hub.api_client() as api:
        custom = k8s_client.CustomObjectsApi(api)

        def create(i: int) -> None:
            doc = {
                "apiVersion": f"{res.GROUP}/{res.VERSION}",
                "kind": "EdgeTarget",
                "metadata": {"name": f"t-{i:04d}", "labels": {"fleet-bench": "yes"}},
                "spec": {"type": "Agent", "namespace": f"fb-{i:04d}", "probeIntervalSeconds": 30},
            }
            custom.create_namespaced_custom_object(
                res.GROUP, res.VERSION, HUB_NS, "edgetargets", doc
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(targets)))


def agents_registered(bed: handles.Testbed, targets: int, timeout: float) -> dict[int, str]:
    """Wait until the operator registered every Agent target; their hub namespaces."""
    found: dict[int, str] = {}

    def done() -> bool:
        with bed.hub.api_client() as api:
            items = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
                res.GROUP, res.VERSION, HUB_NS, "edgetargets"
            )["items"]
        for item in items:
            where = (item.get("status") or {}).get("agentNamespace")
            if where:
                found[int(item["metadata"]["name"][2:])] = where
        return len(found) >= targets

    wait("Agent targets registered", done, timeout=timeout, every=3)
    return found


def start_swarm(
    bed: handles.Testbed, registered: dict[int, str], *, interval: float, workers: int, work: Path
) -> subprocess.Popen[bytes]:
    """Mint each agent's hub token and start `agent_swarm.py` (see the module docstring)."""
    with bed.hub.api_client() as api:
        core = k8s_client.CoreV1Api(api)

        def token(where: str) -> str:
            request = {"spec": {"expirationSeconds": 6 * 3600}}
            made = core.create_namespaced_service_account_token(tr.SERVICE_ACCOUNT, where, request)
            return str(made.status.token)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            tokens = list(pool.map(token, [registered[i] for i in sorted(registered)]))
    agents = [
        {
            "hub_namespace": registered[i],
            "namespace": f"fb-{i:04d}",
            "token": t,
            "edge": EDGES[i % 2],
        }
        for i, t in zip(sorted(registered), tokens, strict=True)
    ]
    (work / "agents.json").write_text(json.dumps(agents))
    config = yaml.safe_load(Path(bed.hub.kubeconfig).read_text())["clusters"][0]["cluster"]
    ca = work / "hub-ca.crt"
    ca.write_bytes(base64.b64decode(config["certificate-authority-data"]))
    command = [
        sys.executable,
        str(Path(__file__).with_name("agent_swarm.py")),
        "--agents",
        str(work / "agents.json"),
        "--hub-server",
        config["server"],
        "--hub-ca",
        str(ca),
        "--interval",
        str(interval),
        "--workers",
        str(workers),
    ]
    for name in EDGES:
        command += ["--edge", f"{name}={bed.cluster(name).target_kubeconfig}"]
    out = (work / "swarm.out").open("wb")
    err = (work / "swarm.err").open("wb")
    environment = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "operator")}
    return subprocess.Popen(
        command, stdout=out, stderr=err, start_new_session=True, env=environment
    )


def stop_swarm(swarm: subprocess.Popen[bytes], work: Path) -> dict[str, Any]:
    """SIGTERM its process group, wait, and read its last line."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(swarm.pid, signal.SIGTERM)
    try:
        swarm.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(swarm.pid, signal.SIGKILL)
        swarm.wait()
    lines = (work / "swarm.out").read_text().splitlines()
    return dict(json.loads(lines[-1])) if lines else {}


def create_targets(bed: handles.Testbed, targets: int) -> None:
    hub = bed.hub
    pytest_plugin.make_namespace(hub, HUB_NS)
    operator_process.grant_namespace(bed.env, HUB_NS)
    docs: list[dict[str, Any]] = []
    for name in EDGES:
        docs.append(
            res.kubeconfig_secret(
                f"{name}-kubeconfig", Path(bed.cluster(name).target_kubeconfig).read_text()
            )
        )
    res.apply(hub, HUB_NS, *docs)
    with hub.api_client() as api:
        custom = k8s_client.CustomObjectsApi(api)

        def create(i: int) -> None:
            doc = res.edge_target(
                f"t-{i:04d}",
                workload_namespace=f"fb-{i:04d}",
                labels={"fleet-bench": "yes"},
                secret=f"{EDGES[i % 2]}-kubeconfig",
                probe_interval_seconds=30,
            )
            custom.create_namespaced_custom_object(
                res.GROUP, res.VERSION, HUB_NS, "edgetargets", doc
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(targets)))


def count_ready(hub: handles.Cluster, plural: str, check: Callable[[dict[str, Any]], bool]) -> int:
    with hub.api_client() as api:
        found = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
            res.GROUP, res.VERSION, HUB_NS, plural
        )
    return sum(1 for item in found.get("items", []) if check(item))


def largest_status(hub: handles.Cluster, plural: str) -> int:
    with hub.api_client() as api:
        found = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
            res.GROUP, res.VERSION, HUB_NS, plural
        )
    return max((len(json.dumps(i.get("status") or {})) for i in found.get("items", [])), default=0)


def largest_release_status(hub: handles.Cluster) -> int:
    with hub.api_client() as api:
        found = k8s_client.CustomObjectsApi(api).list_cluster_custom_object(
            res.GROUP, res.VERSION, tr.PLURAL
        )
    return max((len(json.dumps(i.get("status") or {})) for i in found.get("items", [])), default=0)


def main() -> None:
    result: dict[str, Any] = {}

    def stop(*_: object) -> None:
        result["stopped"] = "SIGTERM (the run's time limit)"
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, stop)
    try:
        run(result)
    finally:
        print(json.dumps(result, indent=2), flush=True)


def run(result: dict[str, Any]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--deployments", type=int, default=1)
    parser.add_argument("--rest-seconds", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--pods-per-node", type=int, default=6000)
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the operator")
    parser.add_argument("--mode", choices=("push", "agent"), default="push")
    parser.add_argument("--agent-interval", type=float, default=10.0)
    parser.add_argument("--agent-workers", type=int, default=32)
    args = parser.parse_args()
    result |= {"mode": args.mode, "targets": args.targets, "deployments": args.deployments}
    if args.mode == "agent":
        result |= {"agent_interval": args.agent_interval, "agent_workers": args.agent_workers}
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    swarms: list[subprocess.Popen[bytes]] = []
    try:
        _run(result, args, work, swarms)
    finally:
        for swarm in swarms:
            result["agent_swarm"] = stop_swarm(swarm, work)


def _run(
    result: dict[str, Any],
    args: argparse.Namespace,
    work: Path,
    swarms: list[subprocess.Popen[bytes]],
) -> None:
    """The run; the agent swarm it starts goes into `swarms`, for `run` to stop."""
    swarm: subprocess.Popen[bytes] | None = None
    tb = testbed.Testbed()
    described = env.load(tb.layout.env_file)
    bed = handles.Testbed(described)
    raise_pod_capacity(bed, args.pods_per_node)

    extra = dict(item.split("=", 1) for item in args.env)
    result["operator_env"] = extra
    pid = start_operator(tb, described, extra)
    say(f"operator pid {pid}")
    # The image first (Docker build and scan), so that neither timed part waits for it.
    if args.mode == "agent":
        create_agent_targets(bed, args.targets)
    else:
        create_targets(bed, args.targets)
    res.create_model_image(
        bed.hub,
        HUB_NS,
        res.scratch_image(
            "model",
            registry=bed.registry,
            variant=f"bench-{time.time()}",
            platforms=("linux/amd64", "linux/arm64"),
        ),
    )
    if not args.skip_raw:
        try:
            result["raw_seconds"] = round(
                raw_limit(bed, args.targets, args.deployments, args.timeout), 1
            )
        except TimeoutError as exc:
            result["raw_stalled"] = str(exc)
        say(f"raw limit: {result.get('raw_seconds')}s")
    if args.mode == "agent":
        registered = agents_registered(bed, args.targets, args.timeout)
        swarm = start_swarm(
            bed, registered, interval=args.agent_interval, workers=args.agent_workers, work=work
        )
        swarms.append(swarm)
        say(f"agent swarm pid {swarm.pid}: {len(registered)} agents")
    res.wait_model_image(bed.hub, HUB_NS, "model", phase="Ready", timeout=600)
    say("ModelImage Ready")

    def target_ready(item: dict[str, Any]) -> bool:
        return res.condition(item, "Ready").get("status") == "True"

    wait(
        "EdgeTargets Ready",
        lambda: count_ready(bed.hub, "edgetargets", target_ready) >= args.targets,
        timeout=args.timeout,
        every=3,
    )
    say("EdgeTargets Ready")
    base0, t0 = hub_requests(bed.hub), time.monotonic()
    time.sleep(30)
    result["hub_requests_per_second_before"] = round(
        (hub_requests(bed.hub) - base0) / (time.monotonic() - t0), 1
    )

    swarm_cpu0 = cpu_seconds(swarm.pid) if swarm else 0.0
    cpu0, req0, started = cpu_seconds(pid), hub_requests(bed.hub), time.monotonic()
    with bed.hub.api_client() as api:
        custom = k8s_client.CustomObjectsApi(api)
        for d in range(args.deployments):
            doc = res.model_deployment(
                f"model-{d}",
                image="model",
                selector=SELECTOR,
                replicas=1,
                rollout={"minReadySeconds": 0, "progressDeadlineSeconds": 600},
            )
            custom.create_namespaced_custom_object(
                res.GROUP, res.VERSION, HUB_NS, "modeldeployments", doc
            )

    def all_ready() -> bool:
        done = count_ready(
            bed.hub, "modeldeployments", lambda i: i.get("status", {}).get("phase") == "Ready"
        )
        rss = proc_status(pid)
        say(f"  {done}/{args.deployments} Ready, RSS {rss.get('VmRSS', 0):.0f} MiB")
        return done >= int(args.deployments)

    try:
        wait("ModelDeployments Ready", all_ready, timeout=args.timeout, every=2)
        result["edgeferry_seconds"] = round(time.monotonic() - started, 1)
    except TimeoutError as exc:
        result["edgeferry_seconds"] = None
        result["stalled"] = str(exc)
    rollout_seconds = time.monotonic() - started
    result["rollout_cpu_cores"] = round((cpu_seconds(pid) - cpu0) / rollout_seconds, 3)
    if swarm:
        result["swarm_rollout_cpu_cores"] = round(
            (cpu_seconds(swarm.pid) - swarm_cpu0) / rollout_seconds, 3
        )
    result["hub_requests_per_second_rollout"] = round(
        (hub_requests(bed.hub) - req0) / rollout_seconds, 1
    )
    if result.get("raw_seconds") and result["edgeferry_seconds"]:
        result["ratio"] = round(result["edgeferry_seconds"] / result["raw_seconds"], 2)
    say(f"edgeferry: {result['edgeferry_seconds']}s")

    time.sleep(20)
    swarm_cpu1 = cpu_seconds(swarm.pid) if swarm else 0.0
    cpu1, req1, t1 = cpu_seconds(pid), hub_requests(bed.hub), time.monotonic()
    time.sleep(args.rest_seconds)
    rest = time.monotonic() - t1
    result["rest_seconds"] = round(rest)
    result["rest_cpu_cores"] = round((cpu_seconds(pid) - cpu1) / rest, 4)
    if swarm:
        result["swarm_rest_cpu_cores"] = round((cpu_seconds(swarm.pid) - swarm_cpu1) / rest, 3)
        result["swarm_rss_mib"] = round(proc_status(swarm.pid)["VmRSS"], 1)
    result["hub_requests_per_second_rest"] = round((hub_requests(bed.hub) - req1) / rest, 1)
    status = proc_status(pid)
    result["operator_peak_rss_mib"] = round(status["VmHWM"], 1)
    result["operator_rss_mib_at_end"] = round(status["VmRSS"], 1)
    result["largest_status_bytes"] = {
        "modeldeployment": largest_status(bed.hub, "modeldeployments"),
        "edgetarget": largest_status(bed.hub, "edgetargets"),
    }
    if swarm:
        result["largest_status_bytes"]["targetrelease"] = largest_release_status(bed.hub)
    metrics = (
        urllib.request.urlopen(
            f"http://127.0.0.1:{tb.layout.operator_metrics_port}/metrics", timeout=5
        )
        .read()
        .decode()
    )
    result["operator_metrics"] = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith(("edgeferry_target_watch", "edgeferry_reconciles_total"))
    }


if __name__ == "__main__":
    main()
