"""ModelDeployment rollouts on the testbed: the real operator, real ModelImages, three clusters.

Targets (see `conftest.fleet`): `cloud`, the hub's CPU pool (amd64); `edge-1`, a K3s-shaped site
with arm64 nodes; `edge-2`, one with amd64 nodes. Targets are ordered by name, so with `canary: 1`
the canary wave is `cloud`. Most images here are built for linux/amd64 (a busybox server that
really runs in the smoke test), so they go to `cloud` and `edge-2`; a two-platform image (an OCI
index of amd64 and arm64) shows one digest reaching all three, and an arm64-only one shows the
architecture check.

Every test checks the result where it matters: the Deployment and the Pods at each target cluster,
by digest, not only the ModelDeployment's own status.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from edgeferry.adapters import target_workloads
from edgeferry.decisions import workload
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import release, target_objects
from edgeferry_testbed import clusters, handles, layout, testbed
from tests.integration import _resources as res
from tests.integration.conftest import EXTERNAL_OPERATOR, Fleet, operator_metric

pytestmark = pytest.mark.integration

AMD64 = {"matchLabels": {"arch": "amd64"}}
"""Selects `cloud` and `edge-2`."""
EVERYWHERE = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["cloud", "edge"]}]}
"""Selects all three targets."""


def build_images(fleet: Fleet, **wanted: str) -> dict[str, str]:
    """Create ModelImages (name -> kind: server, arm64, multiarch, vulnerable); wait for each.

    Returns name -> `repository@sha256:...` for the admitted ones (the blocked get "").
    """
    base = fleet.bed.env.base_images["busybox"]
    registry = fleet.bed.registry
    for name, kind in wanted.items():
        variant = f"{fleet.namespace}/{name}"
        if kind == "server":
            manifests = res.server_image(name, base=base, registry=registry, variant=variant)
        elif kind == "arm64":
            manifests = res.scratch_image(
                name, registry=registry, variant=variant, platforms=("linux/arm64",)
            )
        elif kind == "multiarch":
            manifests = res.scratch_image(
                name, registry=registry, variant=variant, platforms=("linux/amd64", "linux/arm64")
            )
        else:
            manifests = res.vulnerable_image(name, base=base, registry=registry, variant=variant)
        res.create_model_image(fleet.hub, fleet.namespace, manifests)
    refs = {}
    for name, kind in wanted.items():
        phase = "Blocked" if kind == "vulnerable" else "Ready"
        obj = res.wait_model_image(fleet.hub, fleet.namespace, name, phase=phase)
        refs[name] = res.image_reference(obj) if phase == "Ready" else ""
    return refs


def running_digest(fleet: Fleet, target: str, name: str) -> str | None:
    """The image of our Deployment at a target (None when there is none)."""
    found = res.deployment_at(fleet.cluster_of(target), fleet.namespace, name)
    if found is None:
        return None
    image: str = found["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def ready_everywhere(
    fleet: Fleet, name: str, reference: str, targets: list[str]
) -> dict[str, set[str]]:
    """Wait until every target's ready Pods run exactly `reference`; return images per target."""

    def check() -> dict[str, set[str]] | None:
        found = {t: res.pod_images(fleet.cluster_of(t), fleet.namespace, name) for t in targets}
        return found if all(images == {reference} for images in found.values()) else None

    result: dict[str, set[str]] = res.wait_until(
        f"Pods of {name} to run {reference} at {targets}", check, timeout=60
    )
    return result


def expect_events(fleet: Fleet, name: str, *reasons: str) -> None:
    """Fail unless events of each of `reasons` about `name` come (they follow the status)."""
    res.wait_events(fleet.hub, fleet.namespace, name, *reasons)


def apply_deployment(fleet: Fleet, doc: Mapping[str, Any]) -> None:
    res.apply(fleet.hub, fleet.namespace, doc)


def patch_deployment(fleet: Fleet, name: str, patch: Mapping[str, Any]) -> None:
    fleet.hub.kubectl(
        "-n",
        fleet.namespace,
        "patch",
        "modeldeployment",
        name,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )


def apply_and_time_to_ready(fleet: Fleet, *docs: Mapping[str, Any]) -> dict[str, float]:
    """Apply ModelDeployments together; seconds from the apply until each reported Ready."""
    started = time.monotonic()
    for doc in docs:
        apply_deployment(fleet, doc)
    seconds: dict[str, float] = {}
    pending = {str(doc["metadata"]["name"]) for doc in docs}

    def all_ready() -> bool:
        for name in sorted(pending):
            obj = res.get_object(fleet.hub, fleet.namespace, "modeldeployments", name)
            status = (obj or {}).get("status", {})
            if status.get("phase") == "Ready" and status.get("observedGeneration") == (
                (obj or {}).get("metadata", {}).get("generation")
            ):
                seconds[name] = time.monotonic() - started
                pending.discard(name)
        return not pending

    what = f"{', '.join(sorted(pending))} to be Ready"
    res.wait_until(what, all_ready, timeout=180, interval=0.2)
    return seconds


# --- lower bound for the timing report -----------------------------------------------------------
def _apply_and_wait_available(
    cluster: handles.Cluster, rendered: target_objects.Workload, *, timeout: float = 120
) -> float:
    """Server-side apply one Deployment+Service, wait until Available; seconds it took."""
    started = time.monotonic()
    with cluster.api_client() as api:
        target_workloads.apply(
            api, rendered, md_namespace="baseline", md_name="baseline", timeout=10, creating=False
        )
        name = rendered.deployment["metadata"]["name"]
        namespace = rendered.deployment["metadata"]["namespace"]
        apps = k8s_client.AppsV1Api(api)
        deadline = started + timeout
        while time.monotonic() < deadline:
            dep = apps.read_namespaced_deployment(name, namespace)
            wanted = dep.spec.replicas
            status = dep.status
            if (
                (status.observed_generation or 0) >= dep.metadata.generation
                and (status.updated_replicas or 0) == wanted
                and (status.available_replicas or 0) == wanted
            ):
                return time.monotonic() - started
            time.sleep(0.25)
    raise AssertionError(f"baseline {namespace}/{name} not Available in {timeout}s")


def baseline_seconds(fleet: Fleet, spec_doc: Mapping[str, Any], reference: str) -> float:
    """The same Deployments, applied to the same targets by a minimal script, all at once."""
    spec = md.parse_spec(spec_doc["spec"])
    targets = {
        "cloud": et.parse_spec(
            {
                "type": "Cloud",
                "namespace": fleet.namespace,
                "cloud": {"nodeSelector": {"edgeferry.io/pool": "cpu"}},
            }
        ),
        "edge-2": et.parse_spec(
            {
                "type": "K3s",
                "namespace": fleet.namespace,
                "k3s": {"kubeconfigSecretRef": {"name": "unused"}},
            }
        ),
    }
    record = release.TargetRecord(digest=reference, architectures=("amd64",))
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [
            pool.submit(
                _apply_and_wait_available,
                fleet.cluster_of(name),
                workload.render(
                    namespace="baseline",
                    name="baseline",
                    spec=spec,
                    target=target,
                    record=record,
                ),
            )
            for name, target in targets.items()
        ]
        for future in futures:
            future.result()
    return time.monotonic() - started


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the behaviours ------------------------------------------------------------------------------
def test_admitted_image_reaches_every_selected_target_by_digest(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    refs = build_images(fleet, server="server", multi="multiarch")
    amd = res.model_deployment("model", image="server", selector=AMD64)
    everywhere = res.model_deployment("model-all", image="multi", selector=EVERYWHERE)

    seconds = apply_and_time_to_ready(fleet, amd, everywhere)
    obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
    all_obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model-all", phase="Ready")

    status = obj["status"]
    assert status["digest"] == refs["server"]
    assert "@sha256:" in status["digest"]
    assert status["counts"]["ready"] == status["counts"]["total"] == 2
    assert status["readyTargets"] == "2/2"
    assert {line["name"]: line["phase"] for line in status["targets"]} == {
        "cloud": "Ready",
        "edge-2": "Ready",
    }
    assert res.condition(obj, "Ready")["status"] == "True"
    assert res.condition(obj, "Stalled") == {}, "Stalled is written only while True (kstatus)"

    # One admitted image, one digest (the index), on the hub and both edge clusters.
    all_status = all_obj["status"]
    assert all_status["digest"] == refs["multi"]
    assert all_status["readyTargets"] == "3/3"
    for target in ("cloud", "edge-1", "edge-2"):
        line = res.target_line(all_obj, target)
        assert (line["phase"], line["digest"]) == ("Ready", refs["multi"]), line

    # At the targets themselves: every Pod by digest, on nodes of the target's architecture.
    ready_everywhere(fleet, "model", refs["server"], ["cloud", "edge-2"])
    ready_everywhere(fleet, "model-all", refs["multi"], ["cloud", "edge-1", "edge-2"])
    for target, arch in (("cloud", "amd64"), ("edge-1", "arm64"), ("edge-2", "amd64")):
        found = res.deployment_at(fleet.cluster_of(target), fleet.namespace, "model-all")
        assert found is not None, target
        assert found["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == arch
    hub_deployment = res.deployment_at(fleet.hub, fleet.namespace, "model")
    assert hub_deployment is not None
    pod_spec = hub_deployment["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"]["edgeferry.io/pool"] == "cpu"
    assert pod_spec["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert hub_deployment["metadata"]["annotations"]["edgeferry.io/digest"] == refs["server"]
    expect_events(fleet, "model", "WaveStarted", "WaveSucceeded", "RolloutComplete")

    labels = {"namespace": fleet.namespace, "name": "model"}
    bed = testbed_handle
    assert operator_metric(bed, "edgeferry_rollout_targets", **labels, phase="Ready") == 2
    assert operator_metric(bed, "edgeferry_rollout_time_to_ready_seconds_count", **labels) == 2

    # Numbers for the report: the same image in one wave, and a minimal script doing the same
    # writes (server-side apply, wait for Available) as the lower bound.
    one_wave = res.model_deployment(
        "model-one-wave", image="server", selector=AMD64, rollout={"canary": 0}
    )
    one_wave_seconds = apply_and_time_to_ready(fleet, one_wave)["model-one-wave"]
    lower_bound = baseline_seconds(fleet, amd, refs["server"])
    managed = None if os.environ.get(EXTERNAL_OPERATOR) else testbed.Testbed().sup.find("operator")
    report = {
        "apply_to_ready_seconds_canary_then_rest": round(seconds["model"], 1),
        "apply_to_ready_seconds_one_wave": round(one_wave_seconds, 1),
        "apply_to_ready_seconds_two_platform_image_three_targets": round(seconds["model-all"], 1),
        "minimal_script_apply_to_available_seconds": round(lower_bound, 1),
        "setup": "targets cloud (hub) + edge-2; 2 replicas; minReadySeconds 2; kwok start delays",
        "operator_rss_mib": round(_rss_mib(managed.pid), 1) if managed else None,
    }
    out = layout.default_layout().state_dir / "reports" / "rollout-timing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nrollout timing: {json.dumps(report)}")


def test_blocked_image_reaches_no_target_and_targets_keep_their_digest(fleet: Fleet) -> None:
    refs = build_images(fleet, server="server", legacy="vulnerable")
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=AMD64))
    apply_deployment(fleet, res.model_deployment("fresh", image="legacy", selector=AMD64))

    fresh = res.wait_deployment_phase(fleet.hub, fleet.namespace, "fresh", phase="Blocked")
    blocked = res.condition(fresh, "Blocked")
    assert blocked["status"] == "True"
    assert blocked["reason"] == "VulnerabilitiesFound"
    assert "GHSA-x84v-xcm2-53pg" in blocked["message"]
    assert res.condition(fresh, "Ready")["status"] == "False"
    expect_events(fleet, "fresh", "ImageBlocked")

    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
    patch_deployment(fleet, "model", {"spec": {"imageRef": {"name": "legacy"}}})
    obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Blocked")
    time.sleep(8)  # a few more reconciles: still nothing may move

    for target in ("cloud", "edge-2"):
        assert running_digest(fleet, target, "fresh") is None, target
        assert running_digest(fleet, target, "model") == refs["server"], target
        deployment = res.deployment_at(fleet.cluster_of(target), fleet.namespace, "model")
        assert deployment is not None
        assert deployment["metadata"]["annotations"]["edgeferry.io/digest"] == refs["server"]
        line = res.target_line(obj, target)
        assert line["digest"] == refs["server"]
        assert "keeps running" in line["message"]
    ready_everywhere(fleet, "model", refs["server"], ["cloud", "edge-2"])
    assert "digest" not in obj["status"]


def test_arm64_only_image_is_incompatible_on_amd64_and_runs_on_arm64(fleet: Fleet) -> None:
    refs = build_images(fleet, arm="arm64")
    apply_deployment(fleet, res.model_deployment("model", image="arm", selector=EVERYWHERE))
    obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")

    assert res.target_line(obj, "edge-1")["phase"] == "Ready"
    for target in ("cloud", "edge-2"):
        line = res.target_line(obj, target)
        assert line["phase"] == "Incompatible", line
        assert "linux/arm64" in line["message"] and "amd64" in line["message"], line
        assert running_digest(fleet, target, "model") is None, target
    assert obj["status"]["counts"]["incompatible"] == 2
    expect_events(fleet, "model", "IncompatibleTarget")

    ready_everywhere(fleet, "model", refs["arm"], ["edge-1"])
    edge1 = fleet.cluster_of("edge-1")
    with edge1.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        pods = core.list_namespaced_pod(
            fleet.namespace, label_selector="app.kubernetes.io/name=model"
        ).items
        arches = {
            core.read_node(p.spec.node_name).metadata.labels["kubernetes.io/arch"] for p in pods
        }
    assert arches == {"arm64"}


def test_an_image_over_a_targets_size_budget_is_not_attempted_there(fleet: Fleet) -> None:
    refs = build_images(fleet, server="server")
    image = res.get_object(fleet.hub, fleet.namespace, "modelimages", "server")
    assert image is not None
    size = int(image["status"]["image"]["size"])
    fleet.hub.kubectl(
        "-n",
        fleet.namespace,
        "patch",
        "edgetarget",
        "edge-2",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"imageSizeBudgetBytes": size // 2}}),
    )
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=AMD64))
    obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")

    line = res.target_line(obj, "edge-2")
    assert line["phase"] == "Incompatible", line
    assert "too large" in line["message"] and "imageSizeBudgetBytes" in line["message"], line
    assert running_digest(fleet, "edge-2", "model") is None
    ready_everywhere(fleet, "model", refs["server"], ["cloud"])
    expect_events(fleet, "model", "IncompatibleTarget")


def test_failing_canary_is_rolled_back_and_no_further_wave_starts(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    refs = build_images(fleet, good="server", bad="server")
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
        fleet.hub, fleet.namespace, "model", phase="Degraded", timeout=120
    )

    canary = res.target_line(obj, "cloud")
    assert canary["phase"] == "RolledBack", canary
    assert canary["digest"] == refs["good"]
    assert "failed" in canary["lastError"]
    later = res.target_line(obj, "edge-2")
    assert later["phase"] == "Pending", later
    assert "halted" in later["message"]
    degraded = res.condition(obj, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolloutHalted"
    assert obj["status"]["currentWave"] == 1

    assert running_digest(fleet, "cloud", "model") == refs["good"]
    cloud = res.deployment_at(fleet.hub, fleet.namespace, "model")
    assert cloud is not None
    assert cloud["metadata"]["annotations"]["edgeferry.io/rolled-back-from"] == refs["bad"]
    time.sleep(8)  # later reconciles still start no wave
    assert running_digest(fleet, "edge-2", "model") == refs["good"]

    # Digest and template are one release: the rollback restored the template without the
    # chaos label at the canary, and the target still waiting for wave 2 never got it.
    for target in ("cloud", "edge-2"):
        found = res.deployment_at(fleet.cluster_of(target), fleet.namespace, "model")
        assert found is not None, target
        assert clusters.CHAOS_LABEL not in found["spec"]["template"]["metadata"]["labels"], target
    now = res.get_object(fleet.hub, fleet.namespace, "modeldeployments", "model")
    assert now is not None
    old_template = res.target_line(now, "edge-2")["templateHash"]
    assert res.target_line(now, "cloud")["templateHash"] == old_template
    assert now["status"]["templateHash"] != old_template
    ready_everywhere(fleet, "model", refs["good"], ["cloud", "edge-2"])
    events = res.wait_events(fleet.hub, fleet.namespace, "model", "RolledBack", "RolloutHalted")
    reasons = [(reason, message) for _, reason, message in events]
    assert not any(
        r == "WaveStarted" and "wave 2/2" in m and refs["bad"][:40] in m for r, m in reasons
    )

    labels = {"namespace": fleet.namespace, "name": "model"}
    assert (operator_metric(testbed_handle, "edgeferry_rollbacks_total", **labels) or 0) >= 1
    assert operator_metric(testbed_handle, "edgeferry_rollout_degraded", **labels) == 1


def test_crashing_canary_fails_before_its_deadline_and_the_fleet_keeps_serving(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    refs = build_images(fleet, good="server", bad="server")
    apply_deployment(fleet, res.model_deployment("model", image="good", selector=AMD64))
    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")

    # Pods that kwok drives to Failed, and a deadline far longer than they need to show it.
    deadline = 600
    patch_deployment(
        fleet,
        "model",
        {
            "spec": {
                "imageRef": {"name": "bad"},
                "template": {"labels": {clusters.CHAOS_LABEL: "true"}},
                "rollout": {"progressDeadlineSeconds": deadline},
            }
        },
    )
    started = time.monotonic()
    obj = res.wait_deployment_phase(
        fleet.hub, fleet.namespace, "model", phase="Degraded", timeout=deadline + 60
    )
    # Reported, not asserted: the status message below says it failed before the deadline.
    print(f"crashing canary failed {time.monotonic() - started:.0f}s after the patch")

    canary = res.target_line(obj, "cloud")
    assert canary["phase"] == "RolledBack", canary
    assert canary["digest"] == refs["good"]
    assert f"before its {deadline}s progress deadline" in canary["message"], canary
    assert "failed" in canary["lastError"], canary
    assert res.condition(obj, "Degraded")["reason"] == "RolloutHalted"
    res.wait_events(
        fleet.hub,
        fleet.namespace,
        "model",
        where=lambda _, r, m: r == "RolledBack" and "clearly fail" in m,
    )

    # READY counts the new release (none), SERVING every target up on any release (all).
    ready_everywhere(fleet, "model", refs["good"], ["cloud", "edge-2"])
    serving = res.wait_until(
        "both targets to count as serving",
        lambda: (
            found
            if (found := res.get_object(fleet.hub, fleet.namespace, "modeldeployments", "model"))
            and found["status"].get("servingTargets") == "2/2"
            else None
        ),
        timeout=60,
    )
    assert serving["status"]["readyTargets"] == "0/2"
    assert serving["status"]["counts"]["serving"] == 2
    table = fleet.hub.kubectl("-n", fleet.namespace, "get", "modeldeployment", "model").stdout
    header, row = table.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert (columns["READY"], columns["SERVING"]) == ("0/2", "2/2"), table


def test_a_selector_matching_no_target_is_stalled_not_ready(
    fleet: Fleet, testbed_handle: handles.Testbed
) -> None:
    build_images(fleet, server="server")
    nowhere = {"matchLabels": {"tier": "nowhere"}}
    apply_deployment(fleet, res.model_deployment("model", image="server", selector=nowhere))
    obj = res.wait_deployment_phase(
        fleet.hub,
        fleet.namespace,
        "model",
        phase="Degraded",
        check=lambda o: res.condition(o, "Stalled").get("status") == "True",
    )
    stalled = res.condition(obj, "Stalled")
    assert stalled["reason"] == "NoTargetsSelected", stalled
    ready = res.condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoTargetsSelected"), ready
    assert "selector" in obj["status"]["message"]
    assert obj["status"]["servingTargets"] == "0/0"

    labels = {"namespace": fleet.namespace, "name": "model"}
    res.wait_until(
        "the stalled gauge",
        lambda: operator_metric(testbed_handle, "edgeferry_rollout_stalled", **labels) == 1,
        timeout=30,
    )
    assert operator_metric(testbed_handle, "edgeferry_rollout_degraded", **labels) == 0


def test_offline_edge_is_deferred_and_catches_up_when_back(fleet: Fleet) -> None:
    refs = build_images(fleet, server="server")
    bed = testbed.Testbed()
    doc = res.model_deployment(
        "model", image="server", selector=AMD64, rollout={"offlineGraceSeconds": 10}
    )
    apply_deployment(fleet, doc)
    bed.stop_apiserver("edge-2")
    try:

        def deferred() -> dict[str, Any] | None:
            obj = res.get_object(fleet.hub, fleet.namespace, "modeldeployments", "model")
            lines = {
                line["name"]: line for line in (obj or {}).get("status", {}).get("targets", [])
            }
            if (
                lines.get("cloud", {}).get("phase") == "Ready"
                and lines.get("edge-2", {}).get("phase") == "Deferred"
                and res.condition(obj, "Progressing").get("reason") == "WaitingForDeferredTargets"
            ):
                return obj
            return None

        obj = res.wait_until("cloud Ready and edge-2 Deferred", deferred, timeout=120)
        assert obj["status"]["phase"] == "Progressing"
        assert "updated when back: edge-2" in obj["status"]["message"]
        assert res.target_line(obj, "edge-2")["message"].startswith("deferred")
        assert running_digest(fleet, "cloud", "model") == refs["server"]
        target = res.get_object(fleet.hub, fleet.namespace, "edgetargets", "edge-2")
        assert target is not None and target["status"]["reachable"] is False
        assert res.condition(target, "Ready")["reason"] == "Unreachable"
        expect_events(fleet, "model", "TargetDeferred")
    finally:
        bed.start_apiserver("edge-2")

    obj = res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready", timeout=300)
    assert res.target_line(obj, "edge-2")["phase"] == "Ready"
    ready_everywhere(fleet, "model", refs["server"], ["cloud", "edge-2"])
    expect_events(fleet, "edge-2", "TargetDown", "TargetUp")


def test_manual_edits_are_reverted_and_deletion_cleans_up_targets(fleet: Fleet) -> None:
    refs = build_images(fleet, server="server")
    apply_deployment(
        fleet, res.model_deployment("model", image="server", selector=AMD64, replicas=2)
    )
    res.wait_deployment_phase(fleet.hub, fleet.namespace, "model", phase="Ready")
    # Both targets are watched (EDGEFERRY_TARGET_WATCH defaults on): the settled rollout now
    # sleeps the 600 s safety resync, so only the watches can bring the edits below back soon.
    res.wait_until(
        "the targets' watches to be open",
        lambda: (operator_metric(fleet.bed, "edgeferry_target_watches") or 0) >= 4,
        timeout=30,
    )
    edited = time.monotonic()

    edge2 = fleet.cluster_of("edge-2")
    edge2.kubectl("-n", fleet.namespace, "scale", "deployment/model", "--replicas=5")
    edge2.kubectl(
        "-n", fleet.namespace, "set", "image", "deployment/model", "model=busybox:handmade"
    )
    fleet.hub.kubectl("-n", fleet.namespace, "scale", "deployment/model", "--replicas=0")

    def reverted() -> bool:
        for target in ("cloud", "edge-2"):
            found = res.deployment_at(fleet.cluster_of(target), fleet.namespace, "model")
            if found is None or found["spec"]["replicas"] != 2:
                return False
            if found["spec"]["template"]["spec"]["containers"][0]["image"] != refs["server"]:
                return False
        return True

    res.wait_until("hand edits to be reverted", reverted, timeout=60)
    took = time.monotonic() - edited
    assert took < 15, f"reverted after {took:.0f}s: by a resync, not woken by the target watches"
    ready_everywhere(fleet, "model", refs["server"], ["cloud", "edge-2"])

    fleet.hub.kubectl("-n", fleet.namespace, "delete", "modeldeployment", "model", "--timeout=90s")
    for target in ("cloud", "edge-2"):
        cluster = fleet.cluster_of(target)
        assert res.deployment_at(cluster, fleet.namespace, "model") is None, target
        with cluster.api_client() as api:
            services = k8s_client.CoreV1Api(api).list_namespaced_service(
                fleet.namespace, label_selector="app.kubernetes.io/managed-by=edgeferry"
            )
        assert services.items == [], target
    expect_events(fleet, "model", "WorkloadsRemoved")
