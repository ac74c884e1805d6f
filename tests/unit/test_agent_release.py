"""Pull mode: what a TargetRelease and the agent's Lease mean, on the hub and at the site."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic
import pytest

from edgeferry.decisions import agent_release, nodes, same_place, workload, workload_health
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import release, target_objects, timestamps
from edgeferry.models import target_release as tr

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
DIGEST = "registry.local:5000/models/iris@sha256:" + "1" * 64
AGENT = et.EdgeTargetSpec.model_validate({"type": "Agent", "namespace": "models"})


def rendered(record: release.TargetRecord | None = None) -> target_objects.Workload:
    return workload.render(
        namespace="ml",
        name="iris",
        spec=md.ModelDeploymentSpec.model_validate(
            {
                "imageRef": {"name": "iris"},
                "targets": {"selector": {"matchLabels": {"site": "shop"}}},
            }
        ),
        target=AGENT,
        record=record or release.TargetRecord(digest=DIGEST, started_at=NOW),
    )


def release_spec(**changes: Any) -> tr.TargetReleaseSpec:
    wl = rendered()
    fields: dict[str, Any] = {
        "model_deployment": tr.DeploymentRef(namespace="ml", name="iris"),
        "namespace": "models",
        "digest": DIGEST,
        "deployment": wl.deployment,
        "service": wl.service,
        **changes,
    }
    return tr.TargetReleaseSpec(**fields)


def release_object(
    *, generation: int = 2, status: tr.TargetReleaseStatus | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "ml.iris", "generation": generation},
        "spec": release_spec().model_dump(by_alias=True, mode="json"),
        "status": status.model_dump(by_alias=True, mode="json") if status else None,
    }


def reported(found: workload_health.Observation, **kw: Any) -> tr.TargetReleaseStatus:
    deployment = rendered().deployment
    kw.setdefault("generation", 2)
    kw.setdefault("now", NOW)
    return agent_release.report(found, deployment=deployment, **kw)


# --- names --------------------------------------------------------------------------------------
def test_each_agent_target_has_its_own_hub_namespace() -> None:
    assert tr.hub_namespace("fleet", "shop-1") == "edgeferry-agent-fleet-shop-1"
    # "a-b"/"c" and "a"/"b-c" would join to the same string: a hash keeps them apart
    assert tr.hub_namespace("a-b", "c") != tr.hub_namespace("a", "b-c")


def test_hub_namespaces_stay_dns_labels() -> None:
    long = tr.hub_namespace("n" * 63, "t" * 63)
    assert len(long) <= 63 and long.startswith(tr.NAMESPACE_PREFIX)
    assert long != tr.hub_namespace("n" * 63, "t" * 62)


def test_an_agent_target_takes_neither_k3s_nor_cloud() -> None:
    with pytest.raises(pydantic.ValidationError, match="type Agent takes neither"):
        et.EdgeTargetSpec.model_validate({"type": "Agent", "namespace": "m", "cloud": {}})


def test_two_agent_targets_are_not_one_place_because_both_are_agents() -> None:
    a = same_place.of(AGENT, et.EdgeTargetStatus())
    b = same_place.of(AGENT, et.EdgeTargetStatus())
    assert not same_place.same(a, b)
    one = et.EdgeTargetStatus(cluster_id="c1")
    assert same_place.same(same_place.of(AGENT, one), same_place.of(AGENT, one))


# --- hub side: the release's status -------------------------------------------------------------
def test_no_release_yet_reads_as_nothing_there() -> None:
    seen = agent_release.observed(None, now=NOW)
    assert seen.observation == workload_health.Observation(exists=False)


def test_a_release_the_agent_has_not_picked_up_runs_the_deadline_from_the_write() -> None:
    seen = agent_release.observed(release_object(), now=NOW)
    assert seen.observation is not None
    assert seen.observation.record is not None
    assert seen.observation.record.digest == DIGEST
    assert seen.observation.record.started_at == NOW
    assert not seen.observation.available


def test_what_the_agent_reported_for_this_generation_is_what_the_rollout_sees() -> None:
    found = workload_health.Observation(exists=True, available=True, ready_replicas=2, replicas=2)
    seen = agent_release.observed(release_object(status=reported(found)), now=NOW)
    assert seen.observation is not None
    assert seen.observation.available and seen.observation.ready_replicas == 2
    assert seen.observation.record is not None and seen.observation.record.digest == DIGEST
    assert seen.error is None


def test_a_report_for_an_older_generation_is_not_trusted_to_be_available() -> None:
    found = workload_health.Observation(exists=True, available=True)
    stale = release_object(generation=3, status=reported(found, generation=2))
    seen = agent_release.observed(stale, now=NOW)
    assert seen.observation is not None and not seen.observation.available


def test_failing_pods_at_the_site_reach_the_rollout() -> None:
    found = workload_health.Observation(
        exists=True, failing=True, crashing=True, failure="pod x: CrashLoopBackOff"
    )
    status = reported(found)
    assert status.phase == "Failing"
    seen = agent_release.observed(release_object(status=status), now=NOW)
    assert seen.observation is not None
    assert seen.observation.crashing and seen.observation.failure == "pod x: CrashLoopBackOff"


def test_a_silent_agent_is_unreachable_since_its_last_heartbeat() -> None:
    found = workload_health.Observation(exists=True, available=True)
    earlier = NOW - dt.timedelta(seconds=31)
    seen = agent_release.observed(
        release_object(status=reported(found, now=earlier)), now=NOW, stale_after_seconds=30
    )
    assert seen.observation is None
    assert seen.silent_since == earlier
    assert seen.error is not None and "keeps running there" in seen.error


def test_a_refused_release_is_an_error_on_the_target_line() -> None:
    status = reported(workload_health.Observation(exists=False), refused="not ours")
    seen = agent_release.observed(release_object(status=status), now=NOW)
    assert status.phase == "Refused"
    assert seen.error == "the site's agent refused the release: not ours"


# --- hub side: the Lease ------------------------------------------------------------------------
PROBE = nodes.ProbeResult("v1.36.0", 2, 2, ("amd64", "arm64"))


def test_the_lease_carries_the_sites_nodes_to_the_hub() -> None:
    annotations = agent_release.lease_annotations(PROBE, cluster_id="uid-1", now=NOW)
    health = agent_release.lease_health(annotations, now=NOW + dt.timedelta(seconds=5))
    assert health.probe == PROBE
    assert health.cluster_id == "uid-1"


def test_no_lease_means_no_agent_connected_yet() -> None:
    health = agent_release.lease_health({}, now=NOW)
    assert health.probe is None and health.reason == "AgentNotConnected"


def test_a_stale_lease_means_the_agent_is_silent() -> None:
    annotations = agent_release.lease_annotations(PROBE, cluster_id=None, now=NOW)
    health = agent_release.lease_health(
        annotations, now=NOW + dt.timedelta(seconds=31), stale_after_seconds=30
    )
    assert health.probe is None and health.reason == "AgentSilent"
    assert timestamps.format_rfc3339(NOW) in health.message


# --- agent side ---------------------------------------------------------------------------------
def test_the_agent_applies_a_release_for_its_own_namespace() -> None:
    assert agent_release.refusal(release_spec(), namespace="models") is None


def test_the_agent_refuses_a_release_for_another_namespace() -> None:
    refused = agent_release.refusal(release_spec(), namespace="other")
    assert refused is not None and "this agent serves other" in refused


def test_the_agent_refuses_objects_that_point_elsewhere_or_are_another_kind() -> None:
    wl = rendered()
    moved = {**wl.deployment, "metadata": {**wl.deployment["metadata"], "namespace": "kube-system"}}
    assert "names namespace kube-system" in str(
        agent_release.refusal(release_spec(deployment=moved), namespace="models")
    )
    secret = {**wl.service, "kind": "Secret"}
    assert "expected a v1 Service" in str(
        agent_release.refusal(release_spec(service=secret), namespace="models")
    )


def test_the_agent_refuses_objects_not_labelled_for_the_releases_deployment() -> None:
    wl = rendered()
    meta = dict(wl.deployment["metadata"])
    meta["labels"] = {**meta["labels"], target_objects.DEPLOYMENT_LABEL: "ml.other"}
    refused = agent_release.refusal(
        release_spec(deployment={**wl.deployment, "metadata": meta}), namespace="models"
    )
    assert refused is not None and "not labelled as edgeferry's for ml/iris" in refused


def test_the_report_carries_the_sites_record_and_a_heartbeat() -> None:
    status = reported(workload_health.Observation(exists=True, available=True))
    assert status.phase == "Available"
    assert status.digest == DIGEST
    assert status.heartbeat_time == timestamps.format_rfc3339(NOW)
    assert status.observed_generation == 2
    assert set(status.record) <= {k for k in status.record if k.startswith("edgeferry.io/")}


def test_an_apply_error_is_reported_as_unapplied() -> None:
    status = reported(workload_health.Observation(exists=False), error="403")
    assert status.phase == "Unapplied" and status.message == "403"


def test_only_workloads_without_a_release_are_removed_at_the_site() -> None:
    labels = target_objects.selector_labels("ml", "iris") | {
        target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY
    }
    gone = target_objects.selector_labels("ml", "old") | {
        target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY
    }
    found = [
        target_objects.Found("Deployment", "iris", labels),
        target_objects.Found("Deployment", "old", gone),
        target_objects.Found("Deployment", "theirs", {"app": "x"}),
    ]
    stale = agent_release.stale_workloads(found, [tr.DeploymentRef(namespace="ml", name="iris")])
    assert [f.name for f in stale] == ["old"]


def test_nothing_is_removed_at_the_site_while_a_release_cannot_be_read() -> None:
    gone = target_objects.selector_labels("ml", "old") | {
        target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY
    }
    found = [target_objects.Found("Deployment", "old", gone)]
    assert agent_release.stale_workloads(found, [], unreadable=1) == []
    assert agent_release.stale_workloads(found, []) == found
