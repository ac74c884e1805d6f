"""Process entry of `edgeferry-agent` (`python -m edgeferry agent`): flags, clients, the loop.

The hub credential is a kubeconfig holding the token of the agent's ServiceAccount on the hub
(docs/pull-mode.md says how a site admin fetches it); the site is reached in-cluster, or with
`--site-kubeconfig` outside a cluster (the tests, a site admin's laptop).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from types import FrameType

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from edgeferry.agent import loop

DEFAULT_INTERVAL_SECONDS = 10.0


def _site_client(kubeconfig: str | None) -> k8s_client.ApiClient:
    if kubeconfig:
        return k8s_config.new_client_from_config(config_file=kubeconfig)
    configuration = k8s_client.Configuration()
    k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s_client.ApiClient(configuration)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="edgeferry-agent", description="pull a site's model releases from the edgeferry hub"
    )
    env = os.environ.get
    parser.add_argument("--hub-kubeconfig", default=env("EDGEFERRY_AGENT_HUB_KUBECONFIG"))
    parser.add_argument("--site-kubeconfig", default=env("EDGEFERRY_AGENT_SITE_KUBECONFIG"))
    parser.add_argument(
        "--hub-namespace",
        default=env("EDGEFERRY_AGENT_HUB_NAMESPACE"),
        help="the EdgeTarget's status.agentNamespace",
    )
    parser.add_argument(
        "--namespace",
        default=env("EDGEFERRY_AGENT_NAMESPACE"),
        help="the site namespace it serves (the EdgeTarget's spec.namespace)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=float(env("EDGEFERRY_AGENT_INTERVAL_SECONDS", DEFAULT_INTERVAL_SECONDS)),
    )
    args = parser.parse_args(argv)
    for flag in ("hub_kubeconfig", "hub_namespace", "namespace"):
        if not getattr(args, flag):
            parser.error(f"--{flag.replace('_', '-')} is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    agent = loop.Agent(
        hub=k8s_config.new_client_from_config(config_file=args.hub_kubeconfig),
        site=_site_client(args.site_kubeconfig),
        hub_namespace=args.hub_namespace,
        namespace=args.namespace,
        timeout=min(10.0, args.interval),
        interval=args.interval,
    )
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log = logging.getLogger("edgeferry.agent")
    log.info("serving %s at the site from hub namespace %s", args.namespace, args.hub_namespace)
    while not stopping.is_set():
        done = loop.run_once(agent)
        if done.hub_reached:
            log.info(
                "round: applied %s, refused %s, removed %s",
                list(done.applied),
                list(done.refused),
                list(done.removed),
            )
        stopping.wait(args.interval if done.settled else min(args.interval, loop.FOLLOW_UP_SECONDS))
