"""Pull mode on the testbed: an Agent target served by a real `edgeferry-agent` process.

The site is edge-2's real API server. This module's fleets have no push target there
(`fleet_without("edge-2")`), so the operator holds no credential for it at all: the Agent
EdgeTarget names no Secret, and no Secret it may read on the hub names edge-2's address. The
agent reaches the site as a site admin would run it outside the cluster, with a token of the
site's `edgeferry-edge` ServiceAccount (the shipped edge RBAC, `manifests/edge/`), and the hub
with its own ServiceAccount token only. edge-2's API server keeps an audit log of every request
not made with the testbed's admin token (`edgeferry_testbed.clusters.AUDIT_POLICY`); the rollout
tests end by reading it: every request at the site during the test came with the agent's token.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from edgeferry.models import target_release as tr
from edgeferry_testbed import clusters, operator_process
from tests.integration import _resources as res
from tests.integration.conftest import Fleet
from tests.integration.test_prepull import ONE_NODE_AT_A_TIME, PodWatch, assert_pre_pulled
from tests.integration.test_rollout import AMD64, apply_deployment, build_images, patch_deployment

pytestmark = [pytest.mark.integration, pytest.mark.fleet_without("edge-2")]

SITE = "edge-2"
"""The testbed cluster the agent's site is."""
SHOP_LABELS = {"region": "shop-1", "tier": "edge", "arch": "amd64", "hardware": "cpu"}
EVERYWHERE = {"matchLabels": {"hardware": "cpu"}}
"""Selects `cloud`, `edge-1` and the agent target: Cloud, K3s (push) and Agent (pull) together."""
OPERATOR = ":".join(
    ("system:serviceaccount", operator_process.OPERATOR_NAMESPACE, operator_process.SERVICE_ACCOUNT)
)
"""Who the (host-process) operator is on the hub."""
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
"""The audit event's `user.extra` key naming the token a request came with (`JTI=<jti>`)."""


def agent_target(name: str, *, site_namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgeferry.io/v1alpha1",
        "kind": "EdgeTarget",
        "metadata": {"name": name, "labels": SHOP_LABELS},
        "spec": {"type": "Agent", "namespace": site_namespace, "probeIntervalSeconds": 5},
    }


def registered(fleet: Fleet, name: str) -> str:
    """Wait until the operator registered Agent target `name`; return its hub namespace."""

    def found() -> str | None:
        obj = res.get_object(fleet.hub, fleet.namespace, "edgetargets", name)
        where = (obj or {}).get("status", {}).get("agentNamespace")
        if not where:
            return None
        got = fleet.hub.kubectl("-n", where, "get", "rolebinding", tr.SERVICE_ACCOUNT, check=False)
        return str(where) if got.returncode == 0 else None

    where: str = res.wait_until(f"agent namespace of {name}", found, timeout=60)
    return where


def agent_kubeconfig(fleet: Fleet, hub_namespace: str, path: Path, *, server: str = "") -> Path:
    """What a site admin builds: the hub's address and CA with the agent's token."""
    token = fleet.hub.kubectl(
        "-n", hub_namespace, "create", "token", tr.SERVICE_ACCOUNT, "--duration=1h"
    ).stdout.strip()
    config = yaml.safe_load(Path(fleet.hub.kubeconfig).read_text())
    config["users"] = [{"name": "agent", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "agent"
    if server:
        config["clusters"][0]["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclasses.dataclass(frozen=True)
class SiteCredential:
    """The agent's kubeconfig for its site, and the token's id the site's audit log names."""

    kubeconfig: Path
    credential_id: str


def site_credential(fleet: Fleet, path: Path) -> SiteCredential:
    """What a site admin hands an agent run outside the cluster: the site's address and CA with
    a token of its `edgeferry-edge` ServiceAccount (`manifests/edge/`, applied by the testbed)."""
    site = fleet.bed.cluster(SITE)
    token = site.kubectl(
        "-n", "edgeferry-system", "create", "token", "edgeferry-edge", "--duration=1h"
    ).stdout.strip()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    config = yaml.safe_load(Path(site.kubeconfig).read_text())
    config["users"] = [{"name": "agent", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "agent"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return SiteCredential(kubeconfig=path, credential_id=f"JTI={claims['jti']}")


def agent_site(
    fleet: Fleet, name: str, site_namespace: str, tmp_path: Path
) -> tuple[str, Path, SiteCredential, Path]:
    """Register Agent target `name` for the site's `site_namespace`: its hub namespace, the
    agent's hub kubeconfig, its site credential and where its log goes."""
    res.apply(fleet.hub, fleet.namespace, agent_target(name, site_namespace=site_namespace))
    hub_namespace = registered(fleet, name)
    config = agent_kubeconfig(fleet, hub_namespace, tmp_path / "agent.kubeconfig")
    return (
        hub_namespace,
        config,
        site_credential(fleet, tmp_path / "site.kubeconfig"),
        tmp_path / "agent.log",
    )


def site_requests(fleet: Fleet, since: datetime.datetime) -> list[dict[str, Any]]:
    """The site API server's audit events since `since` (everyone's but the testbed admin's)."""
    events = []
    for line in Path(fleet.bed.cluster(SITE).audit_log).read_text().splitlines():
        event = json.loads(line)
        if datetime.datetime.fromisoformat(event["requestReceivedTimestamp"]) >= since:
            events.append(event)
    return events


def assert_only_the_agent_reached_the_site(
    fleet: Fleet, credential: SiteCredential, since: datetime.datetime
) -> None:
    """The hub operator has no credential for the site, and the site saw only the agent."""
    server = fleet.bed.cluster(SITE).info.api_url
    secrets = json.loads(fleet.hub.kubectl("get", "secrets", "-A", "-o", "json").stdout)
    naming = [
        (s["metadata"]["namespace"], s["metadata"]["name"])
        for s in secrets["items"]
        if any(
            server in base64.b64decode(v).decode(errors="replace")
            for v in (s.get("data") or {}).values()
        )
    ]
    # Another module's leftover may name the site; what matters is that the operator cannot read it.
    readable = [
        f"{namespace}/{name}"
        for namespace, name in naming
        if fleet.hub.kubectl(
            "auth",
            "can-i",
            "get",
            f"secret/{name}",
            "-n",
            namespace,
            f"--as={OPERATOR}",
            check=False,
        ).stdout.strip()
        == "yes"
    ]
    assert not readable, (
        f"the operator may read Secrets naming the agent's site {server}: {readable}"
    )
    events = site_requests(fleet, since)
    others = [
        (e["user"].get("username"), e.get("userAgent"), e["verb"], e["requestURI"])
        for e in events
        if e["user"].get("extra", {}).get(CREDENTIAL_ID) != [credential.credential_id]
    ]
    assert not others, f"requests at the agent's site not made by the agent: {others[:20]}"
    verbs = {e["verb"] for e in events}
    # Not vacuous: the log holds the agent's own work (it read the nodes, applied the workload).
    assert {"list", "patch"} <= verbs, f"the agent's requests at the site: {sorted(verbs)}"


@contextlib.contextmanager
def agent_process(
    site: SiteCredential, hub_kubeconfig: Path, hub_namespace: str, site_namespace: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m edgeferry agent` as a process of its own, stopped by its pid."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeferry",
                "agent",
                f"--hub-kubeconfig={hub_kubeconfig}",
                f"--site-kubeconfig={site.kubeconfig}",
                f"--hub-namespace={hub_namespace}",
                f"--namespace={site_namespace}",
                "--interval=2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def can_i(kubeconfig: Path, kubectl: str, *args: str) -> bool:
    done = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "auth", "can-i", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() == "yes"


def site_deployment(fleet: Fleet, namespace: str) -> dict[str, Any] | None:
    return res.deployment_at(fleet.bed.cluster(SITE), namespace, "model")


def line_phase(fleet: Fleet, target: str, phase: str, **more: str) -> dict[str, Any] | None:
    obj = res.get_object(fleet.hub, fleet.namespace, "modeldeployments", "model")
    line = res.target_line(obj or {}, target)
    ok = line.get("phase") == phase and all(line.get(k) == v for k, v in more.items())
    return obj if ok else None


def available_release(fleet: Fleet, hub_namespace: str) -> dict[str, Any]:
    """The TargetRelease of `model` once its agent reports it Available (the agent's report
    follows the Pods it watches; the hub's status may have been written from the one before)."""
    name = tr.release_name(fleet.namespace, "model")

    def probe() -> dict[str, Any] | None:
        release = res.get_object(fleet.hub, hub_namespace, "targetreleases", name)
        phase = ((release or {}).get("status") or {}).get("phase")
        return release if phase == "Available" else None

    found: dict[str, Any] = res.wait_until(
        f"TargetRelease {name} to be Available", probe, timeout=60
    )
    return found


def diagnosis(fleet: Fleet, hub_namespace: str, log: Path) -> str:
    """What to read when a pull-mode assertion fails: events, the release, the agent's log."""
    release = res.get_object(
        fleet.hub, hub_namespace, "targetreleases", tr.release_name(fleet.namespace, "model")
    )
    annotations = ((release or {}).get("spec", {}).get("deployment") or {}).get("metadata", {})
    events = res.events(fleet.hub, fleet.namespace, "model")
    return json.dumps(
        {
            "events": events[-15:],
            "release_generation": (release or {}).get("metadata", {}).get("generation"),
            "release_spec_annotations": annotations.get("annotations"),
            "release_status": (release or {}).get("status"),
            "agent_log": log.read_text().splitlines()[-15:],
        },
        indent=1,
        default=str,
    )


@pytest.fixture
def site_namespace(fleet: Fleet) -> Iterator[str]:
    name = f"{fleet.namespace}-shop"
    yield name
    fleet.bed.cluster(SITE).kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_each_agent_reads_only_its_own_releases_and_no_secret(fleet: Fleet, tmp_path: Path) -> None:
    res.apply(
        fleet.hub,
        fleet.namespace,
        agent_target("shop-a", site_namespace="a"),
        agent_target("shop-b", site_namespace="b"),
    )
    mine, theirs = registered(fleet, "shop-a"), registered(fleet, "shop-b")
    assert mine != theirs
    config = agent_kubeconfig(fleet, mine, tmp_path / "agent-a.kubeconfig")
    kubectl = fleet.hub.kubectl_path
    assert can_i(config, kubectl, "list", "targetreleases.edgeferry.io", "-n", mine)
    assert can_i(
        config, kubectl, "patch", "targetreleases.edgeferry.io", "--subresource=status", "-n", mine
    )
    assert not can_i(config, kubectl, "patch", "targetreleases.edgeferry.io", "-n", mine)
    assert not can_i(config, kubectl, "list", "targetreleases.edgeferry.io", "-n", theirs)
    assert not can_i(config, kubectl, "get", "secrets", "-n", mine)
    assert not can_i(config, kubectl, "list", "secrets", "--all-namespaces")
    assert not can_i(config, kubectl, "list", "edgetargets.edgeferry.io", "-n", fleet.namespace)
    # And a real request, not only the access review: the hub's authorizer says no.
    denied = subprocess.run(
        [kubectl, f"--kubeconfig={config}", "-n", theirs, "get", "targetreleases"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    target = res.get_object(fleet.hub, fleet.namespace, "edgetargets", "shop-a")
    assert res.condition(target, "Ready")["reason"] == "AgentNotConnected"


def test_an_agent_target_is_rolled_out_through_its_agent_deferred_offline_and_caught_up(
    fleet: Fleet, site_namespace: str, tmp_path: Path
) -> None:
    since = datetime.datetime.now(datetime.UTC)
    # Built for both architectures: the arm64 push site edge-1 takes the same digest.
    refs = build_images(fleet, server="multiarch")
    hub_namespace, config, site, log = agent_site(fleet, "shop", site_namespace, tmp_path)
    doc = res.model_deployment(
        "model", image="server", selector=EVERYWHERE, rollout={"offlineGraceSeconds": 10}
    )

    with agent_process(site, config, hub_namespace, site_namespace, log):
        res.wait_targets_ready(fleet.hub, fleet.namespace, ["shop"], timeout=60)
        shop = res.get_object(fleet.hub, fleet.namespace, "edgetargets", "shop")
        assert shop is not None
        assert shop["status"]["architectures"] == ["amd64"], shop["status"]
        assert shop["status"]["clusterID"], "the agent reports which cluster the site is"

        # One ModelDeployment, the hub (cloud), a push site (edge-1) and the agent target (shop).
        apply_deployment(fleet, doc)
        obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
        line = res.target_line(obj, "shop")
        assert line["clusterType"] == "Agent" and line["digest"] == refs["server"], line
        pushed = res.target_line(obj, "edge-1")
        assert pushed["clusterType"] == "K3s" and pushed["digest"] == refs["server"], pushed
        at_push_site = res.deployment_at(fleet.cluster_of("edge-1"), fleet.namespace, "model")
        assert at_push_site is not None
        assert at_push_site["metadata"]["annotations"]["edgeferry.io/digest"] == refs["server"]
        assert "edgeferry" in {m["manager"] for m in at_push_site["metadata"]["managedFields"]}
        at_site = site_deployment(fleet, site_namespace)
        assert at_site is not None
        assert at_site["spec"]["template"]["spec"]["containers"][0]["image"] == refs["server"]
        assert at_site["metadata"]["annotations"]["edgeferry.io/digest"] == refs["server"]
        # Written by the agent, not by the operator (which applies as `edgeferry`).
        managers = {m["manager"] for m in at_site["metadata"]["managedFields"]}
        assert tr.AGENT_FIELD_MANAGER in managers and "edgeferry" not in managers, managers
        release = available_release(fleet, hub_namespace)
        assert release["status"]["digest"] == refs["server"]

    # The agent is stopped: the site keeps serving, the hub defers it after its grace.
    patch_deployment(fleet, "model", {"spec": {"template": {"labels": {"release": "two"}}}})
    obj = res.wait_until(
        "shop Deferred while edge-1 takes the new template",
        lambda: line_phase(fleet, "edge-1", "Ready") and line_phase(fleet, "shop", "Deferred"),
        timeout=150,
    )
    assert res.target_line(obj, "shop")["message"].startswith("deferred"), obj["status"]
    # The EdgeTarget says why at its next probe (every 5 s) once the agent's Lease is 30 s old;
    # the rollout may defer the site first, from its own unanswered release reads.
    res.wait_until(
        "EdgeTarget shop to say its agent is silent",
        lambda: (
            res.condition(
                res.get_object(fleet.hub, fleet.namespace, "edgetargets", "shop"), "Ready"
            ).get("reason")
            == "AgentSilent"
        ),
        timeout=60,
    )
    kept = site_deployment(fleet, site_namespace)
    assert kept is not None and "release" not in kept["spec"]["template"]["metadata"]["labels"]

    # Restarted while the hub is unreachable: it changes nothing at the site.
    nowhere = agent_kubeconfig(
        fleet, hub_namespace, tmp_path / "nowhere.kubeconfig", server="https://127.0.0.1:9"
    )
    with agent_process(site, nowhere, hub_namespace, site_namespace, log):
        res.wait_until(
            "the agent to fail to reach the hub",
            lambda: "the hub did not answer" in log.read_text(),
            timeout=60,
        )
    still = site_deployment(fleet, site_namespace)
    assert still is not None and still["metadata"]["uid"] == kept["metadata"]["uid"]
    assert still["metadata"]["annotations"] == kept["metadata"]["annotations"]

    # Back on the hub: it catches up from the hub's state.
    with agent_process(site, config, hub_namespace, site_namespace, log):
        obj = res.wait_deployment_phase(
            fleet.hub, fleet.namespace, "model", phase="Ready", timeout=180
        )
        assert res.target_line(obj, "shop")["templateHash"] == obj["status"]["templateHash"]
        caught = site_deployment(fleet, site_namespace)
        assert caught is not None
        assert caught["spec"]["template"]["metadata"]["labels"]["release"] == "two"
    assert_only_the_agent_reached_the_site(fleet, site, since)


def test_a_failing_canary_at_an_agent_target_is_rolled_back_through_its_agent(
    fleet: Fleet, site_namespace: str, tmp_path: Path
) -> None:
    since = datetime.datetime.now(datetime.UTC)
    # `a-shop` sorts before `cloud`: the agent target is the canary.
    refs = build_images(fleet, good="server", bad="server")
    hub_namespace, config, site, log = agent_site(fleet, "a-shop", site_namespace, tmp_path)
    with agent_process(site, config, hub_namespace, site_namespace, log):
        res.wait_targets_ready(fleet.hub, fleet.namespace, ["a-shop"], timeout=60)
        apply_deployment(fleet, res.model_deployment("model", image="good", selector=AMD64))
        res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")

        # The new digest arrives with Pods that kwok drives from Running to Failed.
        patch_deployment(
            fleet,
            "model",
            {
                "spec": {
                    "imageRef": {"name": "bad"},
                    "template": {"labels": {clusters.CHAOS_LABEL: "true"}},
                    "rollout": {"minReadySeconds": 5, "progressDeadlineSeconds": 20},
                }
            },
        )
        obj = res.wait_deployment_phase(
            fleet.hub, fleet.namespace, "model", phase="Degraded", timeout=150
        )
        canary = res.target_line(obj, "a-shop")
        if canary["phase"] != "RolledBack":
            print(json.dumps(obj["status"], indent=1), diagnosis(fleet, hub_namespace, log))
        assert canary["phase"] == "RolledBack", canary
        assert canary["digest"] == refs["good"] and "failed" in canary["lastError"], canary
        assert res.target_line(obj, "cloud")["phase"] == "Pending"

        def rolled_back_at_site() -> dict[str, Any] | None:
            found = site_deployment(fleet, site_namespace)
            annotations = (found or {}).get("metadata", {}).get("annotations", {})
            if annotations.get("edgeferry.io/rolled-back-from") == refs["bad"]:
                return found
            return None

        found = res.wait_until("the rollback at the site", rolled_back_at_site, timeout=60)
        assert found["spec"]["template"]["spec"]["containers"][0]["image"] == refs["good"]
        assert clusters.CHAOS_LABEL not in found["spec"]["template"]["metadata"]["labels"]
        cloud = res.deployment_at(fleet.hub, fleet.namespace, "model")
        assert cloud is not None
        image = cloud["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == refs["good"], "the later waves never got the bad digest"
    assert_only_the_agent_reached_the_site(fleet, site, since)


def _usable_site_nodes(fleet: Fleet) -> set[str]:
    """The site's Ready nodes without a taint (the real node is tainted): where the model's
    Pods, and so its pre-pull, may go."""
    with fleet.bed.cluster(SITE).api_client() as api:
        items = k8s_client.CoreV1Api(api).list_node().items
    return {
        n.metadata.name
        for n in items
        if not n.spec.taints
        and not n.spec.unschedulable
        and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }


def _site_prepull(fleet: Fleet, namespace: str) -> dict[str, Any] | None:
    with fleet.bed.cluster(SITE).api_client() as api:
        found = k8s_client.AppsV1Api(api).list_namespaced_daemon_set(namespace).items
        docs = [api.sanitize_for_serialization(d) for d in found]
    return next((d for d in docs if d["metadata"]["name"] == "model-prepull"), None)


def test_an_agent_target_pre_pulls_through_its_agent_one_node_at_a_time_then_switches(
    fleet: Fleet, site_namespace: str, tmp_path: Path
) -> None:
    since = datetime.datetime.now(datetime.UTC)
    refs = build_images(fleet, one="server", two="server")
    hub_namespace, config, site, log = agent_site(fleet, "shop", site_namespace, tmp_path)
    name = tr.release_name(fleet.namespace, "model")
    usable = _usable_site_nodes(fleet)
    assert len(usable) >= 2, f"the site needs two usable nodes for this test: {usable}"
    doc = res.model_deployment(
        "model",
        image="one",
        selector={"matchLabels": {"region": "shop-1"}},
        replicas=1,
        rollout=ONE_NODE_AT_A_TIME,
    )
    with agent_process(site, config, hub_namespace, site_namespace, log):
        res.wait_targets_ready(fleet.hub, fleet.namespace, ["shop"], timeout=60)
        apply_deployment(fleet, doc)
        res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
        assert _site_prepull(fleet, site_namespace) is None, "a first write is not pre-pulled"

        with PodWatch(fleet.bed.cluster(SITE), site_namespace) as pods:
            patch_deployment(fleet, "model", {"spec": {"imageRef": {"name": "two"}}})

            def asked_and_pulling() -> dict[str, Any] | None:
                release = res.get_object(fleet.hub, hub_namespace, "targetreleases", name)
                spec = (release or {}).get("spec") or {}
                report = ((release or {}).get("status") or {}).get("prePull") or {}
                if (spec.get("prePull") or {}).get("digest") == refs["two"] and report.get(
                    "planned"
                ):
                    return release
                return None

            release = res.wait_until(
                "the hub to ask for the pre-pull and the agent to report it",
                asked_and_pulling,
                timeout=90,
            )
            # The hub holds the Deployment at the running digest meanwhile.
            assert release["spec"]["digest"] == refs["one"], release["spec"]["digest"]
            managers = {m["manager"] for m in release["metadata"]["managedFields"]}
            assert tr.PREPULL_FIELD_MANAGER in managers, managers
            ready = res.wait_deployment_phase(
                fleet.hub,
                fleet.namespace,
                "model",
                phase="Ready",
                check=lambda o: res.target_line(o, "shop").get("digest") == refs["two"],
                timeout=240,
            )
            res.wait_until(
                "the site's pre-pull DaemonSet and its Pods to be gone after the switch",
                lambda: _site_prepull(fleet, site_namespace) is None and not pods.present,
                timeout=60,
            )
        if pods.failure is not None or pods.most != 1:
            print(diagnosis(fleet, hub_namespace, log))
        assert pods.failure is None, pods.failure
        assert pods.most == 1, f"{pods.most} pre-pull Pods at once"
        assert set(pods.nodes.values()) == usable, pods.nodes
        assert len(pods.nodes) == len(usable), f"a node pulled twice: {pods.nodes}"
        assert_pre_pulled(fleet.hub, fleet.namespace, "model", nodes=len(usable))
        assert res.target_line(ready, "shop")["phase"] == "Ready"
        after = res.get_object(fleet.hub, hub_namespace, "targetreleases", name) or {}
        assert "prePull" not in after.get("spec", {}), after.get("spec", {}).get("prePull")
        at_site = site_deployment(fleet, site_namespace)
        assert at_site is not None
        assert at_site["spec"]["template"]["spec"]["containers"][0]["image"] == refs["two"]
    assert_only_the_agent_reached_the_site(fleet, site, since)
