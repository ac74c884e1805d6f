"""Many edge agents in one process, for `fleet_bench.py --mode agent` (issue 13, item 4).

Each simulated site is one `edgeferry.agent.loop.Agent` with its OWN hub client: the token of
its own `edgeferry-agent` ServiceAccount in its own hub namespace (a TokenRequest), so the hub
sees as many agent identities, RBAC checks and requests as there are sites, exactly as from
real agents. What is simulated: the sites share the testbed's two edge API servers (one site
namespace each, reached with the edges' `edgeferry-edge` token, one client per edge), and the
agents share one process and a pool of `--workers` threads instead of a process each. Every
agent runs `loop.run_once` every `--interval` seconds, staggered over the interval; a round
that comes due while the pool is busy waits (the JSON line at the end says how late rounds
ran). SIGTERM stops it after the rounds in flight.

Input: a JSON file `[{"hub_namespace", "namespace", "token", "edge"}...]` and the hub's
server and CA; `edge` names a kubeconfig in `--edge NAME=PATH`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import heapq
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from edgeferry.agent import loop


def hub_client(server: str, ca_file: str, token: str) -> k8s_client.ApiClient:
    configuration = k8s_client.Configuration()
    configuration.host = server
    configuration.ssl_ca_cert = ca_file
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return k8s_client.ApiClient(configuration)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", required=True, help="the JSON file of agents")
    parser.add_argument("--hub-server", required=True)
    parser.add_argument("--hub-ca", required=True)
    parser.add_argument("--edge", action="append", default=[], help="NAME=KUBECONFIG")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    edges = {
        name: k8s_config.new_client_from_config(config_file=path)
        for name, path in (item.split("=", 1) for item in args.edge)
    }
    agents = [
        loop.Agent(
            hub=hub_client(args.hub_server, args.hub_ca, a["token"]),
            site=edges[a["edge"]],
            hub_namespace=a["hub_namespace"],
            namespace=a["namespace"],
            timeout=10.0,
            interval=args.interval,
        )
        for a in json.loads(Path(args.agents).read_text())
    ]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    start = time.monotonic()
    due = [(start + args.interval * i / len(agents), i) for i in range(len(agents))]
    heapq.heapify(due)
    running: set[int] = set()
    lock = threading.Lock()
    rounds, hub_missed, late = [0], [0], [0.0]

    def one(i: int, when: float) -> None:
        done = loop.run_once(agents[i])
        with lock:
            rounds[0] += 1
            hub_missed[0] += 0 if done.hub_reached else 1
            late[0] = max(late[0], time.monotonic() - when)
            running.discard(i)
            follow_up = time.monotonic() + loop.FOLLOW_UP_SECONDS
            heapq.heappush(due, (when + args.interval if done.settled else follow_up, i))

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        while not stopping.is_set():
            with lock:
                ready = due and due[0][0] <= time.monotonic() and len(running) < args.workers
                if ready:
                    when, i = heapq.heappop(due)
                    running.add(i)
            if ready:
                pool.submit(one, i, when)
            else:
                time.sleep(0.01)
    print(
        json.dumps(
            {
                "agents": len(agents),
                "rounds": rounds[0],
                "rounds_without_hub": hub_missed[0],
                "latest_round_seconds_late": round(late[0], 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
