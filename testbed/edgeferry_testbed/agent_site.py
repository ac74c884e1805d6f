"""The demo's pull-mode site: `edgeferry-agent` in an edge cluster, from `manifests/edge/agent/`.

What a site admin does (docs/pull-mode.md), for the demo's Agent EdgeTarget: read the hub
namespace the operator registered for it, fetch a token of the agent's hub ServiceAccount, put
a kubeconfig with the hub's address, CA and that token into the Secret `edgeferry-agent-hub` at
the site, and `kubectl apply` the shipped kustomization with the two settings it asks for. The
agent then runs as a Pod of the operator image on the site's real node, as the site's
`edgeferry-edge` ServiceAccount, and reaches the hub outbound only.

What the testbed changes in the rendered manifest, and why:
- the image: the operator image this checkout built, from the registry the real nodes pull from;
- a nodeSelector and toleration for the real node (kwok's nodes run nothing, and edge-1's are
  arm64 while the operator image is amd64 only);
- `KUBERNETES_SERVICE_HOST`/`PORT`: the edges have no kube-proxy (`docs/testbed.md`), so the
  site's `kubernetes` Service does not route; the Pod reaches its API server at the host
  address, with the same in-cluster token and CA.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from typing import Any

import yaml

from edgeferry.models import target_release as tr
from edgeferry_testbed import env, incluster, layout, procs

SITE = "edge-1"
"""The cluster the demo's agent runs in: its real node is free (edge-site-2 uses edge-2's)."""
AGENT_MANIFESTS = layout.REPO_ROOT / "manifests" / "edge" / "agent"
AGENT_NAMESPACE = "edgeferry-system"
"""Where `manifests/edge/agent/` puts the agent (beside the `edgeferry-edge` ServiceAccount)."""
HUB_SECRET = "edgeferry-agent-hub"
TOKEN_DURATION = "8760h"


def _kubectl(described: env.TestbedEnv, kubeconfig: str, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [described.tools["kubectl"], f"--kubeconfig={kubeconfig}", *args],
        input=stdin or None,
        text=True,
        capture_output=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise procs.TestbedError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def _target(described: env.TestbedEnv, namespace: str, name: str) -> dict[str, Any]:
    hub = described.hub.kubeconfig
    return dict(
        json.loads(
            _kubectl(described, hub, "-n", namespace, "get", "edgetarget", name, "-o", "json")
        )
    )


def registered_namespace(
    described: env.TestbedEnv, namespace: str, name: str, *, timeout: float = 120
) -> str:
    """The hub namespace the operator made for Agent target `name`, once its credential exists."""
    hub = described.hub.kubeconfig
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        where = _target(described, namespace, name).get("status", {}).get("agentNamespace")
        if where:
            found = subprocess.run(
                [
                    described.tools["kubectl"],
                    f"--kubeconfig={hub}",
                    "-n",
                    where,
                    "get",
                    "rolebinding",
                    tr.SERVICE_ACCOUNT,
                ],
                capture_output=True,
                check=False,
            )
            if found.returncode == 0:
                return str(where)
        time.sleep(2)
    raise procs.TestbedError(f"EdgeTarget {name}: the operator registered no agent namespace")


def hub_kubeconfig(described: env.TestbedEnv, hub_namespace: str) -> str:
    """The hub's address and CA (from the admin's kubeconfig) with the agent's token."""
    hub = described.hub.kubeconfig
    token = _kubectl(
        described,
        hub,
        "-n",
        hub_namespace,
        "create",
        "token",
        tr.SERVICE_ACCOUNT,
        f"--duration={TOKEN_DURATION}",
    ).strip()
    with open(hub) as f:
        config = yaml.safe_load(f)
    config["users"] = [{"name": "edgeferry-agent", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "edgeferry-agent"
    return str(yaml.safe_dump(config))


def agent_manifests(
    rendered: list[dict[str, Any]],
    *,
    image: str,
    hub_namespace: str,
    site_namespace: str,
    site_api: str,
) -> list[dict[str, Any]]:
    """The rendered `manifests/edge/agent/` with the site's settings and the testbed's changes
    (see the module doc); `site_api` is the site API server's `host:port`."""
    host, _, port = site_api.rpartition(":")
    settings = {
        "EDGEFERRY_AGENT_HUB_NAMESPACE": hub_namespace,
        "EDGEFERRY_AGENT_NAMESPACE": site_namespace,
    }
    docs = copy.deepcopy(rendered)
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        pod["nodeSelector"] = {**pod.get("nodeSelector", {}), layout.REAL_NODE_LABEL: "real"}
        pod["tolerations"] = [{**layout.REAL_NODE_TAINT, "operator": "Equal"}]
        (container,) = pod["containers"]
        container["image"] = image
        for var in container["env"]:
            var["value"] = settings.get(var["name"], var["value"])
        container["env"] += [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
        ]
    return docs


def start(described: env.TestbedEnv, *, namespace: str, target: str, site_namespace: str) -> str:
    """Run the agent of Agent EdgeTarget `namespace/target` at the site; returns its Pod's name
    once the EdgeTarget reports the agent's site Ready."""
    started = time.monotonic()
    hub_namespace = registered_namespace(described, namespace, target)
    site = described.cluster(SITE).kubeconfig
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": HUB_SECRET, "namespace": AGENT_NAMESPACE},
        "stringData": {"kubeconfig": hub_kubeconfig(described, hub_namespace)},
    }
    rendered = _kubectl(described, site, "kustomize", str(AGENT_MANIFESTS))
    docs = [
        secret,
        *agent_manifests(
            [d for d in yaml.safe_load_all(rendered) if d],
            image=incluster.ensure_operator_image(described),
            hub_namespace=hub_namespace,
            site_namespace=site_namespace,
            site_api=described.cluster(SITE).api_url.removeprefix("https://"),
        ),
    ]
    _kubectl(described, site, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    _kubectl(
        described,
        site,
        "-n",
        AGENT_NAMESPACE,
        "rollout",
        "status",
        "deployment/edgeferry-agent",
        "--timeout=300s",
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = [
            c
            for c in _target(described, namespace, target).get("status", {}).get("conditions", [])
            if c.get("type") == "Ready"
        ]
        if ready and ready[0].get("status") == "True":
            break
        time.sleep(2)
    else:
        raise procs.TestbedError(f"EdgeTarget {target}: its agent at {SITE} never reported")
    pods = json.loads(
        _kubectl(
            described,
            site,
            "-n",
            AGENT_NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=agent",
            "-o",
            "json",
        )
    )
    name = " ".join(p["metadata"]["name"] for p in pods["items"])
    print(
        f"demo: agent {name} running at {SITE} (manifests/edge/agent/) serves {target}, "
        f"ready in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return name
