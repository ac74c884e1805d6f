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
    seen = agent_release.observed(None)
    assert seen.observation == workload_health.Observation(exists=False)


def test_a_release_the_agent_has_not_picked_up_runs_the_deadline_from_the_write() -> None:
    seen = agent_release.observed(release_object())
    assert seen.observation is not None
    assert seen.observation.record is not None
    assert seen.observation.record.digest == DIGEST
    assert seen.observation.record.started_at == NOW
    assert not seen.observation.available


def test_what_the_agent_reported_for_this_generation_is_what_the_rollout_sees() -> None:
    found = workload_health.Observation(exists=True, available=True, ready_replicas=2, replicas=2)
    seen = agent_release.observed(release_object(status=reported(found)))
    assert seen.observation is not None
    assert seen.observation.available and seen.observation.ready_replicas == 2
    assert seen.observation.record is not None and seen.observation.record.digest == DIGEST
    assert seen.error is None


def test_a_report_for_an_older_generation_is_not_trusted_to_be_available() -> None:
    found = workload_health.Observation(exists=True, available=True)
    stale = release_object(generation=3, status=reported(found, generation=2))
    seen = agent_release.observed(stale)
    assert seen.observation is not None and not seen.observation.available


def test_failing_pods_at_the_site_reach_the_rollout() -> None:
    found = workload_health.Observation(
        exists=True, failing=True, crashing=True, failure="pod x: CrashLoopBackOff"
    )
    status = reported(found)
    assert status.phase == "Failing"
    seen = agent_release.observed(release_object(status=status))
    assert seen.observation is not None
    assert seen.observation.crashing and seen.observation.failure == "pod x: CrashLoopBackOff"


def test_an_old_report_is_not_silence_the_sites_lease_says_whether_it_is_online() -> None:
    found = workload_health.Observation(exists=True, available=True)
    long_ago = NOW - dt.timedelta(days=3)  # a settled release: its report has not changed since
    seen = agent_release.observed(release_object(status=reported(found, now=long_ago)))
    assert seen.observation is not None and seen.observation.available
    assert seen.error is None


def test_a_refused_release_is_an_error_on_the_target_line() -> None:
    status = reported(workload_health.Observation(exists=False), refused="not ours")
    seen = agent_release.observed(release_object(status=status))
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


def test_the_report_carries_the_sites_record_and_when_it_changed() -> None:
    status = reported(workload_health.Observation(exists=True, available=True))
    assert status.phase == "Available"
    assert status.digest == DIGEST
    assert status.last_change_time == timestamps.format_rfc3339(NOW)
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


# --- agent side: write and apply only what changed ---------------------------------------------
def _wire(status: tr.TargetReleaseStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def test_an_unchanged_report_is_not_written_again_however_much_later() -> None:
    found = workload_health.Observation(exists=True, available=True, ready_replicas=2, replicas=2)
    written = _wire(reported(found))
    later = reported(found, now=NOW + dt.timedelta(hours=1))
    assert not agent_release.report_changed(written, later)


def test_a_changed_report_is_written() -> None:
    ready = workload_health.Observation(exists=True, available=True, ready_replicas=2, replicas=2)
    written = _wire(reported(ready))
    one_down = workload_health.Observation(exists=True, ready_replicas=1, replicas=2)
    assert agent_release.report_changed(written, reported(one_down))
    assert agent_release.report_changed(written, reported(ready, generation=3))
    assert agent_release.report_changed(None, reported(ready))
    assert agent_release.report_changed({"phase": "Sideways"}, reported(ready))


def _needs(**kw: Any) -> bool:
    spec = release_spec()
    found = workload_health.Observation(exists=True, available=True)
    kw.setdefault("generation", 2)
    kw.setdefault("written", reported(found))
    kw.setdefault("deployment", spec.deployment)
    kw.setdefault("since_applied_seconds", 10.0)
    kw.setdefault("reapply_seconds", 300.0)
    return agent_release.needs_apply(spec, **kw)


def test_a_release_the_site_already_runs_is_only_looked_at() -> None:
    assert not _needs()


def test_a_new_spec_a_missing_deployment_or_a_restart_is_applied() -> None:
    assert _needs(generation=3)
    assert _needs(deployment=None)
    assert _needs(since_applied_seconds=None)  # this agent process has not applied it yet
    assert _needs(since_applied_seconds=300.0)  # now and then, for drift it cannot see


def test_drift_at_the_site_is_applied_back() -> None:
    spec = release_spec()
    other_image = workload.render(
        namespace="ml",
        name="iris",
        spec=md.ModelDeploymentSpec.model_validate(
            {
                "imageRef": {"name": "iris"},
                "targets": {"selector": {"matchLabels": {"site": "shop"}}},
            }
        ),
        target=AGENT,
        record=release.TargetRecord(digest=DIGEST.replace("1" * 64, "2" * 64), started_at=NOW),
    ).deployment
    assert _needs(deployment=other_image)
    edited = {**spec.deployment, "metadata": {**spec.deployment["metadata"], "annotations": {}}}
    assert _needs(deployment=edited)


def test_a_release_that_failed_to_apply_is_tried_again() -> None:
    unapplied = reported(workload_health.Observation(exists=False), error="403")
    refused = reported(workload_health.Observation(exists=False), refused="not ours")
    assert _needs(written=unapplied)
    assert _needs(written=refused)


# --- hub side: what the operator keeps of each release ------------------------------------------
def test_the_hubs_small_copy_of_a_release_reads_as_the_release() -> None:
    found = workload_health.Observation(exists=True, available=True, ready_replicas=2, replicas=2)
    for whole in (
        release_object(),
        release_object(status=reported(found)),
        release_object(generation=3, status=reported(found, generation=2)),
        release_object(status=reported(workload_health.Observation(exists=False), refused="no")),
    ):
        small = agent_release.release_view(whole)
        assert agent_release.observed(small) == agent_release.observed(whole)
        assert agent_release.prepull_observed(small) == agent_release.prepull_observed(whole)
        assert "service" not in small["spec"]
        assert set(small["spec"]["deployment"]) == {"metadata"}


def test_the_small_copy_keeps_a_pre_pull_ask() -> None:
    whole = release_object()
    whole["spec"]["prePull"] = {"digest": DIGEST, "generation": 1}
    assert agent_release.release_view(whole)["spec"]["prePull"] == whole["spec"]["prePull"]


def test_an_agent_that_reports_every_minute_is_not_silent_after_30_seconds() -> None:
    annotations = agent_release.lease_annotations(
        PROBE, cluster_id=None, now=NOW, interval_seconds=60
    )
    assert annotations[agent_release.GRACE] == "180"
    fine = agent_release.lease_health(annotations, now=NOW + dt.timedelta(seconds=170))
    assert fine.probe == PROBE
    silent = agent_release.lease_health(annotations, now=NOW + dt.timedelta(seconds=181))
    assert silent.probe is None and silent.reason == "AgentSilent"


def test_the_grace_an_agent_asks_for_is_bounded() -> None:
    short = agent_release.lease_annotations(PROBE, cluster_id=None, now=NOW, interval_seconds=1)
    assert agent_release.lease_health(short, now=NOW + dt.timedelta(seconds=29)).probe == PROBE
    endless = {**short, agent_release.GRACE: "999999"}
    late = NOW + dt.timedelta(seconds=agent_release.MAX_STALE_AFTER_SECONDS + 1)
    assert agent_release.lease_health(endless, now=late).probe is None
    garbled = {**short, agent_release.GRACE: "soon"}
    assert agent_release.lease_health(garbled, now=NOW + dt.timedelta(seconds=31)).probe is None
