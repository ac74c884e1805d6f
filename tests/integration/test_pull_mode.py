"""Pull mode on the testbed: an Agent target served by a real `edgeferry-agent` process.

The site is edge-2's real API server; the agent reaches it with the site's admin kubeconfig
(its "local" credentials) and the hub with its own ServiceAccount token only. The operator has
no kubeconfig for that site: the Agent EdgeTarget names no Secret, and `clusters.Clients`
refuses to build a client for it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeferry.models import target_release as tr
from edgeferry_testbed import clusters, handles
from tests.integration import _resources as res
from tests.integration.conftest import Fleet
from tests.integration.test_rollout import AMD64, apply_deployment, build_images, patch_deployment

pytestmark = pytest.mark.integration

SITE = "edge-2"
"""The testbed cluster the agent's site is."""
SHOP_LABELS = {"region": "shop-1", "tier": "edge", "arch": "amd64", "hardware": "cpu"}


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


@contextlib.contextmanager
def agent_process(
    bed: handles.Testbed, hub_kubeconfig: Path, hub_namespace: str, site_namespace: str, log: Path
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
                f"--site-kubeconfig={bed.cluster(SITE).kubeconfig}",
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
    refs = build_images(fleet, server="server")
    res.apply(fleet.hub, fleet.namespace, agent_target("shop", site_namespace=site_namespace))
    hub_namespace = registered(fleet, "shop")
    config = agent_kubeconfig(fleet, hub_namespace, tmp_path / "agent.kubeconfig")
    log = tmp_path / "agent.log"
    doc = res.model_deployment(
        "model", image="server", selector=AMD64, rollout={"offlineGraceSeconds": 10}
    )

    with agent_process(fleet.bed, config, hub_namespace, site_namespace, log):
        res.wait_targets_ready(fleet.hub, fleet.namespace, ["shop"], timeout=60)
        shop = res.get_object(fleet.hub, fleet.namespace, "edgetargets", "shop")
        assert shop is not None
        assert shop["status"]["architectures"] == ["amd64"], shop["status"]
        assert shop["status"]["clusterID"], "the agent reports which cluster the site is"

        # One ModelDeployment, push targets (cloud, edge-2) and the agent target (shop).
        apply_deployment(fleet, doc)
        obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
        line = res.target_line(obj, "shop")
        assert line["clusterType"] == "Agent" and line["digest"] == refs["server"], line
        assert res.target_line(obj, "edge-2")["clusterType"] == "K3s"
        at_site = site_deployment(fleet, site_namespace)
        assert at_site is not None
        assert at_site["spec"]["template"]["spec"]["containers"][0]["image"] == refs["server"]
        assert at_site["metadata"]["annotations"]["edgeferry.io/digest"] == refs["server"]
        # Written by the agent, not by the operator (which applies as `edgeferry`).
        managers = {m["manager"] for m in at_site["metadata"]["managedFields"]}
        assert tr.AGENT_FIELD_MANAGER in managers and "edgeferry" not in managers, managers
        release = res.get_object(
            fleet.hub, hub_namespace, "targetreleases", f"{fleet.namespace}.model"
        )
        assert release is not None
        assert release["status"]["phase"] == "Available", release["status"]
        assert release["status"]["digest"] == refs["server"]

    # The agent is stopped: the site keeps serving, the hub defers it after its grace.
    patch_deployment(fleet, "model", {"spec": {"template": {"labels": {"release": "two"}}}})
    obj = res.wait_until(
        "shop Deferred while edge-2 takes the new template",
        lambda: line_phase(fleet, "edge-2", "Ready") and line_phase(fleet, "shop", "Deferred"),
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
    with agent_process(fleet.bed, nowhere, hub_namespace, site_namespace, log):
        res.wait_until(
            "the agent to fail to reach the hub",
            lambda: "the hub did not answer" in log.read_text(),
            timeout=60,
        )
    still = site_deployment(fleet, site_namespace)
    assert still is not None and still["metadata"]["uid"] == kept["metadata"]["uid"]
    assert still["metadata"]["annotations"] == kept["metadata"]["annotations"]

    # Back on the hub: it catches up from the hub's state.
    with agent_process(fleet.bed, config, hub_namespace, site_namespace, log):
        obj = res.wait_deployment_phase(
            fleet.hub, fleet.namespace, "model", phase="Ready", timeout=180
        )
        assert res.target_line(obj, "shop")["templateHash"] == obj["status"]["templateHash"]
        caught = site_deployment(fleet, site_namespace)
        assert caught is not None
        assert caught["spec"]["template"]["metadata"]["labels"]["release"] == "two"


def test_a_failing_canary_at_an_agent_target_is_rolled_back_through_its_agent(
    fleet: Fleet, site_namespace: str, tmp_path: Path
) -> None:
    # `a-shop` sorts before `cloud`: the agent target is the canary.
    refs = build_images(fleet, good="server", bad="server")
    res.apply(fleet.hub, fleet.namespace, agent_target("a-shop", site_namespace=site_namespace))
    hub_namespace = registered(fleet, "a-shop")
    config = agent_kubeconfig(fleet, hub_namespace, tmp_path / "agent.kubeconfig")
    log = tmp_path / "agent.log"
    with agent_process(fleet.bed, config, hub_namespace, site_namespace, log):
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
