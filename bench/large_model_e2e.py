"""A large model end to end: OCI artifact -> fetch -> build -> smoke test -> scan -> push ->
rollout to Ready on a real node, then a rebuild that changes only the server code.

Not a test (a 512 MiB model costs minutes; CI has no room for it): a figure to report. Runs on a
testbed (`up` if need be) with the host-process operator of this checkout, restarted so its peak
RSS (VmHWM) is this run's. Prints JSON:

- the model (random bytes, so no layer compresses it away and no earlier run's blob is reused)
  pushed as an OCI artifact by the package's CLI (`python -m edgeferry model push`);
- a ModelImage of format `custom`: an inline Dockerfile that copies the model first, then a small
  standard-library server from a `contextFrom` ConfigMap, which reads and hashes the whole model
  at start (so `/healthz` turns 200 only once all 512 MiB were read from the image) and answers
  `/predict` with that digest;
- seconds per stage: the model download (the cache's partial file appearing to the file renamed
  into `models/sha256/`, polled every 0.2 s), then lint, build, smoketest, scan and push from the
  operator's `edgeferry_image_stage_duration_seconds` sums, and apply to Ready;
- the operator's RSS idle and at its peak (`/proc/<pid>/status`, VmRSS and VmHWM);
- a ModelDeployment of it to the hub's real node (a real kubelet: containerd pulls the image,
  the readiness probe calls `/healthz`), apply to Ready;
- the rebuild: the spec points at a second ConfigMap with a changed server, nothing else; its
  uploaded bytes (`edgeferry_image_push_uploaded_bytes_total` of this ModelImage) and the
  operator's push log line, then the rollout of the new digest (the node has the model layer).

Run: `.venv/bin/python bench/large_model_e2e.py [MiB]` (default 512), under the testbed lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry_testbed import handles, layout, operator_process, pytest_plugin, testbed

NAMESPACE = "bench-large-model"
GROUP_VERSION = "edgeferry.io/v1alpha1"
SERVER = '''\
"""A model server for a large opaque model: reads and hashes it at start, answers with that."""
import hashlib
import http.server
import json
import os
import signal
import threading

VERSION = "@@VERSION@@"
MODEL = "/models/model.bin"
STATE = {}


def load():
    digest, size = hashlib.sha256(), 0
    with open(MODEL, "rb") as model:
        while chunk := model.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    STATE.update(sha256=digest.hexdigest(), size=size)
    print(f"loaded {size} bytes, sha256 {STATE['sha256']}", flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/healthz":
            return self.answer(404, {"error": "not found"})
        self.answer(200 if STATE else 503, {"status": "ok" if STATE else "loading"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/predict":
            return self.answer(404, {"error": "not found"})
        if not STATE:
            return self.answer(503, {"error": "model loading"})
        self.answer(200, {"predictions": [STATE["sha256"][:12]], "server": VERSION,
                          "modelBytes": STATE["size"]})


signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
threading.Thread(target=load, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''
STAGES = ("lint", "build", "smoketest", "scan", "push")


def make_model(path: Path, mib: int) -> str:
    """`mib` MiB of random bytes; their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def metrics_text(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(text: str, series: str, **labels: str) -> float:
    """The value of `series` with (at least) these labels, 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(series):
            continue
        sample, _, value = line.rpartition(" ")
        name, _, rest = sample.partition("{")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if name == series and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def stage_sums(port: int) -> dict[str, float]:
    text = metrics_text(port)
    return {s: metric(text, "edgeferry_image_stage_duration_seconds_sum", stage=s) for s in STAGES}


def proc_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def get(api: k8s_client.ApiClient, plural: str, name: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(
            "edgeferry.io", "v1alpha1", NAMESPACE, plural, name
        )
    except k8s_exceptions.ApiException:
        return {}
    return found


def apply(hub: handles.Cluster, *docs: dict[str, Any]) -> None:
    hub.kubectl("-n", NAMESPACE, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def server_config_map(name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"server.py": SERVER.replace("@@VERSION@@", version)},
    }


def model_image(
    bed: handles.Testbed, *, artifact: str, digest: str, sha256: str, server: str
) -> dict[str, Any]:
    base = bed.env.base_images["pythonSklearn"]
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "ModelImage",
        "metadata": {"name": "large"},
        "spec": {
            "model": {
                "format": "custom",
                "source": {
                    "oci": {"repository": artifact, "digest": digest, "fileName": "model.bin"}
                },
                "sha256": sha256,
            },
            "build": {
                "contextFrom": [{"configMap": {"name": server}}],
                "dockerfile": "\n".join(
                    [
                        f"FROM {base}",
                        "COPY model/model.bin /models/model.bin",
                        "COPY server.py /app/server.py",
                        "USER 10001:10001",
                        "EXPOSE 8080",
                        'CMD ["python3", "/app/server.py"]',
                        "",
                    ]
                ),
            },
            "smokeTest": {"predict": {"path": "/predict", "body": "{}"}, "timeoutSeconds": 120},
            "scan": {"failOn": "high"},
            "push": {"repository": f"{bed.registry}/bench/large-model", "tags": ["v1"]},
        },
    }


def targets_and_deployment() -> list[dict[str, Any]]:
    target = {
        "apiVersion": GROUP_VERSION,
        "kind": "EdgeTarget",
        "metadata": {"name": "real-cloud", "labels": {"bench": "large-model"}},
        "spec": {
            "type": "Cloud",
            "namespace": NAMESPACE,
            "probeIntervalSeconds": 5,
            "cloud": {
                "nodeSelector": {layout.REAL_NODE_LABEL: "real"},
                "tolerations": [{**layout.REAL_NODE_TAINT, "operator": "Equal"}],
            },
        },
    }
    deployment = {
        "apiVersion": GROUP_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": "large"},
        "spec": {
            "imageRef": {"name": "large"},
            "targets": {"selector": {"matchLabels": {"bench": "large-model"}}},
            "template": {
                "replicas": 1,
                "port": 8080,
                "resources": {"limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 1},
            },
            "rollout": {"canary": 1, "minReadySeconds": 1, "progressDeadlineSeconds": 600},
        },
    }
    return [target, deployment]


class Watcher:
    """Polls the ModelImage, the model cache and the operator's RSS until `done` holds."""

    def __init__(self, api: k8s_client.ApiClient, pid: int, cache: Path, sha256: str) -> None:
        self.api, self.pid, self.cache, self.sha256 = api, pid, cache, sha256
        self.phases: dict[str, float] = {}
        self.partial_seen: float | None = None
        self.cached_seen: float | None = None
        self.rss_peak_kib = 0

    def until(self, done: Any, *, plural: str, name: str, timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        obj: dict[str, Any] = {}
        while time.monotonic() - started < timeout:
            now = time.monotonic()
            if self.partial_seen is None and any(
                (self.cache / "partial").glob(self.sha256[:16] + ".*")
            ):
                self.partial_seen = now
            if self.cached_seen is None and (self.cache / "sha256" / self.sha256).exists():
                self.cached_seen = now
            self.rss_peak_kib = max(self.rss_peak_kib, proc_kib(self.pid)["VmRSS"])
            obj = get(self.api, plural, name)
            phase = obj.get("status", {}).get("phase")
            if phase and phase not in self.phases:
                self.phases[phase] = now
            if done(obj):
                return obj
            time.sleep(0.2)
        raise TimeoutError(f"{plural}/{name}: {json.dumps(obj.get('status'), indent=1)[:3000]}")


def ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status", {})
    return bool(
        status.get("phase") in ("Ready", "Blocked", "Failed")
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


def push_log_lines(log: Path, offset: int) -> list[str]:
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [
        line for line in text.splitlines() if "/bench/large-model:" in line and "pushed" in line
    ]


def main(mib: int) -> dict[str, Any]:
    bed_runner = testbed.Testbed()
    described = bed_runner.up()
    bed = handles.Testbed(described)
    hub = bed.hub
    lay = bed_runner.layout
    operator_process.stop(bed_runner)  # a fresh process: VmHWM is then this run's peak
    managed = operator_process.start(bed_runner, described)
    port = lay.operator_metrics_port
    cache = lay.state_dir / "operator-work" / "models"
    hub.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    pytest_plugin.make_namespace(hub, NAMESPACE)
    operator_process.grant_namespace(described, NAMESPACE, workloads=True)
    out: dict[str, Any] = {"model_mib": mib}
    with tempfile.TemporaryDirectory(dir=lay.state_dir) as scratch:
        model = Path(scratch) / "model.bin"
        sha256 = make_model(model, mib)
        artifact = f"{bed.registry}/bench/large-model-artifact"
        started = time.monotonic()
        pushed = subprocess.run(
            [sys.executable, "-m", "edgeferry", "model", "push", str(model), artifact],
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        out["artifact_push_s"] = round(time.monotonic() - started, 1)
    digest = next(
        line.split()[1] for line in pushed.stdout.splitlines() if line.startswith("digest: ")
    )
    out["artifact"] = f"{artifact}@{digest}"
    apply(hub, server_config_map("server-v1", "v1"), server_config_map("server-v2", "v2"))
    idle = proc_kib(managed.pid)
    out["operator_rss_idle_mib"] = round(idle["VmRSS"] / 1024, 1)
    watcher = Watcher(hub.api_client(), managed.pid, cache, sha256)
    before = stage_sums(port)
    log_offset = managed.log.stat().st_size
    doc = model_image(bed, artifact=artifact, digest=digest, sha256=sha256, server="server-v1")
    applied = time.monotonic()
    apply(hub, doc)
    first = watcher.until(ready, plural="modelimages", name="large", timeout=1800)
    finished = time.monotonic()
    if first["status"]["phase"] != "Ready":
        raise RuntimeError(json.dumps(first["status"], indent=1)[:4000])
    after = stage_sums(port)
    text = metrics_text(port)
    uploaded_first = metric(
        text, "edgeferry_image_push_uploaded_bytes_total", namespace=NAMESPACE, name="large"
    )
    out["first_build"] = {
        "fetch_s": (
            round(watcher.cached_seen - watcher.partial_seen, 1)
            if watcher.cached_seen and watcher.partial_seen
            else None
        ),
        **{f"{s}_s": round(after[s] - before[s], 1) for s in STAGES},
        "apply_to_ready_s": round(finished - applied, 1),
        "image_mib": round(first["status"]["image"]["size"] / 2**20),
        "uploaded_bytes": int(uploaded_first),
        "push_log": push_log_lines(managed.log, log_offset),
        "smoke_test": first["status"].get("smokeTest", {}).get("prediction"),
    }
    apply(hub, *targets_and_deployment())
    rolled = time.monotonic()
    watcher.until(
        lambda o: (
            o.get("status", {}).get("phase") == "Ready"
            and first["status"]["image"]["digest"] in o["status"].get("digest", "")
        ),
        plural="modeldeployments",
        name="large",
        timeout=900,
    )
    out["first_rollout_to_ready_s"] = round(time.monotonic() - rolled, 1)

    # The rebuild: only the server changes (another ConfigMap in contextFrom).
    before = stage_sums(port)
    log_offset = managed.log.stat().st_size
    doc["spec"]["build"]["contextFrom"] = [{"configMap": {"name": "server-v2"}}]
    applied = time.monotonic()
    apply(hub, doc)
    second = watcher.until(
        lambda o: (
            ready(o)
            and o["status"]["image"].get("digest") not in (None, first["status"]["image"]["digest"])
        ),
        plural="modelimages",
        name="large",
        timeout=1800,
    )
    finished = time.monotonic()
    after = stage_sums(port)
    text = metrics_text(port)
    uploaded_total = metric(
        text, "edgeferry_image_push_uploaded_bytes_total", namespace=NAMESPACE, name="large"
    )
    out["rebuild_server_only"] = {
        **{f"{s}_s": round(after[s] - before[s], 1) for s in STAGES},
        "apply_to_ready_s": round(finished - applied, 1),
        "uploaded_bytes": int(uploaded_total - uploaded_first),
        "push_log": push_log_lines(managed.log, log_offset),
        "smoke_test": second["status"].get("smokeTest", {}).get("prediction"),
    }
    rolled = time.monotonic()
    watcher.until(
        lambda o: (
            o.get("status", {}).get("phase") == "Ready"
            and second["status"]["image"]["digest"] in o["status"].get("digest", "")
        ),
        plural="modeldeployments",
        name="large",
        timeout=900,
    )
    out["second_rollout_to_ready_s"] = round(time.monotonic() - rolled, 1)
    pods = json.loads(hub.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout)
    out["pods"] = [
        {
            "node": p["spec"].get("nodeName"),
            "ready": all(s.get("ready") for s in p["status"].get("containerStatuses", [])),
            "imageID": [s.get("imageID") for s in p["status"].get("containerStatuses", [])],
        }
        for p in pods["items"]
        if p["status"].get("phase") == "Running"
    ]
    peak = proc_kib(managed.pid)
    out["operator_rss_peak_mib"] = round(max(peak["VmHWM"], watcher.rss_peak_kib) / 1024, 1)
    out["operator_rss_peak_over_idle_mib"] = round(
        out["operator_rss_peak_mib"] - out["operator_rss_idle_mib"], 1
    )
    hub.kubectl("-n", NAMESPACE, "delete", "modeldeployments", "--all", check=False, timeout=300)
    hub.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 512), indent=2))
