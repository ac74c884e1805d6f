"""Operator memory while it handles a large model: download (HTTP), cache, build context.

Runs the operator's own code path for an `http` model source in this process (the model store,
the streaming download, the build-context tar that carries the model as a file) against a real
`python -m http.server` on 127.0.0.1 serving a generated file, and prints JSON: the model size,
seconds per step and this process's RSS when idle (after imports) and at its peak. No testbed
needed. Run: `.venv/bin/python bench/model_fetch_bench.py [MiB]` (default 1024).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeferry.adapters import docker_build, model_fetch, model_store


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main(mib: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        served = root / "served"
        served.mkdir()
        model = served / "model.bin"
        with model.open("wb") as out:
            block = os.urandom(1 << 20)
            for _ in range(mib):
                out.write(block)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=served,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            sha256 = model_fetch_sha(model)
            idle = rss_mib()
            started = time.monotonic()

            def fetch(into):  # type: ignore[no-untyped-def]
                return model_fetch.http(f"http://127.0.0.1:{port}/model.bin", into, timeout_s=600)

            with model_store.held(root / "cache", sha256, fetch=fetch, where="bench") as path:
                fetched = time.monotonic()
                with tempfile.TemporaryFile(dir=root) as context:
                    docker_build.write_context_tar(
                        context,
                        "FROM scratch\nCOPY model/model.bin /m\n",
                        {"model/model.bin": path},
                    )
                    tarred = time.monotonic()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
    print(
        json.dumps(
            {
                "model_mib": mib,
                "download_and_hash_s": round(fetched - started, 2),
                "context_tar_s": round(tarred - fetched, 2),
                "rss_idle_mib": round(idle, 1),
                "rss_peak_mib": round(peak, 1),
                "peak_over_idle_mib": round(peak - idle, 1),
            },
            indent=2,
        )
    )


def model_fetch_sha(path: Path) -> str:
    from edgeferry.adapters import model_artifact

    return model_artifact.file_sha256(path)[0]


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
