"""What one probe of an EdgeTarget means for its conditions, message, up-ness and events."""

from __future__ import annotations

import dataclasses

from edgeferry.decisions import target_health
from edgeferry.models import conditions
from edgeferry.models import edgetarget as et

CLOUD = et.EdgeTargetSpec(type="Cloud", namespace="models", cloud={"nodeSelector": {"pool": "gpu"}})
K3S = et.EdgeTargetSpec(
    type="K3s", namespace="models", k3s={"kubeconfigSecretRef": {"name": "edge-1"}}
)

NEVER = et.EdgeTargetStatus()
"""A target never probed before."""


@dataclasses.dataclass(frozen=True)
class Found:
    kubernetes_version: str = "v1.31.0"
    ready_nodes: int = 2
    total_nodes: int = 3
    architectures: tuple[str, ...] = ("amd64", "arm64")


def by_type(health: target_health.Health) -> dict[str, conditions.Condition]:
    return {c.type: c for c in health.conditions}


def shown(
    health: target_health.Health, *, before: list[dict[str, str]] | None = None
) -> dict[str, tuple[str, str]]:
    """The conditions as `kubectl get -o yaml` shows them once the verdict is merged."""
    merged = conditions.merge(before, health.conditions, generation=1, now="2026-12-01T00:00:00Z")
    return {c["type"]: (c["status"], c["reason"]) for c in merged}


def test_a_target_with_a_ready_usable_node_is_up_and_says_how_many_of_which_arch() -> None:
    health = target_health.reached(Found(), spec=K3S)
    assert health.up
    assert health.message == "2/3 usable nodes Ready (amd64, arm64), Kubernetes v1.31.0"
    ready = by_type(health)["Ready"]
    assert (ready.status, ready.reason, ready.message) == (
        "True",
        "TargetReachable",
        health.message,
    )
    assert by_type(health)["Stalled"].status == "False"


def test_a_probe_records_which_cluster_it_reached() -> None:
    health = target_health.reached(Found(), spec=K3S, cluster_id="6f1d3c2a")
    assert health.fields["clusterID"] == "6f1d3c2a"


def test_a_probe_that_could_not_identify_the_cluster_keeps_the_last_identity() -> None:
    """A merge patch without the field leaves the recorded clusterID in place."""
    assert "clusterID" not in target_health.reached(Found(), spec=K3S).fields
    gone = target_health.unreachable("no answer", reason="Unreachable", previous=NEVER)
    assert "clusterID" not in gone.fields


def test_a_probe_is_never_shown_as_reconciling() -> None:
    for health in (
        target_health.reached(Found(), spec=K3S),
        target_health.unreachable("no route", reason="Unreachable", previous=NEVER),
        target_health.unusable("refused", reason="CredentialsInvalid", previous=NEVER),
        target_health.invalid_spec(error_count=1, first_error="Field required"),
    ):
        assert "Reconciling" not in shown(health)
        assert "Reconciling" not in shown(
            health, before=[{"type": "Reconciling", "status": "True", "reason": "x"}]
        )


def test_a_healthy_target_shows_only_ready_and_a_fixed_one_stops_being_stalled() -> None:
    healthy = target_health.reached(Found(), spec=K3S)
    assert shown(healthy) == {"Ready": ("True", "TargetReachable")}
    stalled = [{"type": "Stalled", "status": "True", "reason": "CredentialsInvalid"}]
    assert shown(healthy, before=stalled) == {"Ready": ("True", "TargetReachable")}


def test_no_usable_node_at_a_cloud_target_stalls_and_names_its_node_selector() -> None:
    health = target_health.reached(Found(ready_nodes=0, total_nodes=0), spec=CLOUD)
    assert not health.up
    assert "no node matches cloud.nodeSelector {'pool': 'gpu'} and tolerates its taints" in (
        health.message
    )
    assert "kubectl get nodes --show-labels" in health.message
    assert by_type(health)["Ready"].reason == "NoUsableNodes"
    stalled = by_type(health)["Stalled"]
    assert (stalled.status, stalled.reason, stalled.message) == (
        "True",
        "NoUsableNodes",
        health.message,
    )


def test_no_usable_node_at_a_k3s_target_with_placement_names_its_k3s_node_selector() -> None:
    section = {"kubeconfigSecretRef": {"name": "edge-1"}, "nodeSelector": {"hardware": "gpu"}}
    spec = et.EdgeTargetSpec(type="K3s", namespace="models", k3s=section)
    health = target_health.reached(Found(ready_nodes=0, total_nodes=0), spec=spec)
    assert "no node matches k3s.nodeSelector {'hardware': 'gpu'} and tolerates its taints" in (
        health.message
    )
    assert by_type(health)["Stalled"].reason == "NoUsableNodes"


def test_no_usable_node_at_a_k3s_target_blames_the_taints() -> None:
    health = target_health.reached(Found(ready_nodes=0, total_nodes=0), spec=K3S)
    assert "every node is tainted NoSchedule/NoExecute" in health.message
    assert by_type(health)["Stalled"].status == "True"


def test_usable_nodes_that_are_all_not_ready_are_down_but_not_stalled() -> None:
    health = target_health.reached(Found(ready_nodes=0, total_nodes=2), spec=K3S)
    assert not health.up
    assert "none of its 2 usable nodes is Ready" in health.message
    assert shown(health) == {"Ready": ("False", "NoReadyNodes")}


def test_a_ready_target_without_known_architectures_says_none() -> None:
    health = target_health.reached(Found(architectures=()), spec=K3S)
    assert "(none)" in health.message


def test_an_unreachable_site_is_down_but_not_stalled_since_it_may_come_back() -> None:
    health = target_health.unreachable(
        "EdgeTarget edge-1: no answer within 5s", reason="Unreachable", previous=NEVER
    )
    assert not health.up
    assert health.message.startswith("EdgeTarget edge-1: no answer within 5s. Check the site's")
    assert "rollouts defer this target" in health.message
    ready = by_type(health)["Ready"]
    assert (ready.status, ready.reason, ready.message) == ("False", "Unreachable", health.message)
    assert shown(health) == {"Ready": ("False", "Unreachable")}


def test_refused_credentials_stall_with_the_error_reason() -> None:
    health = target_health.unusable(
        "the kubeconfig was refused", reason="CredentialsInvalid", previous=NEVER
    )
    assert not health.up
    assert (
        health.message == "the kubeconfig was refused. Rollouts skip this target until it is fixed."
    )
    for type_ in ("Ready", "Stalled"):
        assert by_type(health)[type_].reason == "CredentialsInvalid"
    assert by_type(health)["Stalled"].status == "True"


def test_an_invalid_spec_stalls_and_points_at_kubectl_explain() -> None:
    health = target_health.invalid_spec(error_count=2, first_error="Field required")
    assert health.message == (
        "the spec is not valid (2 errors, first: Field required); fix it, "
        "`kubectl explain edgetarget.spec` lists the fields"
    )
    assert shown(health) == {
        "Ready": ("False", "InvalidSpec"),
        "Stalled": ("True", "InvalidSpec"),
    }


def ready_was(status: str) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": status, "reason": "x", "message": ""}]


def test_the_first_probe_posts_an_event_either_way() -> None:
    healthy = target_health.reached(Found(), spec=K3S)
    assert target_health.event(None, healthy) == target_health.Event(
        "Normal", "TargetUp", healthy.message
    )
    down = target_health.event(
        [], target_health.unreachable("gone", reason="Unreachable", previous=NEVER)
    )
    assert down is not None and (down.type, down.reason) == ("Warning", "TargetDown")


def test_an_event_is_posted_only_when_up_ness_flips() -> None:
    healthy = target_health.reached(Found(), spec=K3S)
    gone = target_health.unreachable("gone", reason="Unreachable", previous=NEVER)
    assert target_health.event(ready_was("True"), healthy) is None
    assert target_health.event(ready_was("False"), gone) is None
    back = target_health.event(ready_was("False"), healthy)
    assert back == target_health.Event("Normal", "TargetUp", healthy.message)
    lost = target_health.event(ready_was("True"), gone)
    assert lost == target_health.Event("Warning", "TargetDown", gone.message)


def test_a_long_message_is_cut_for_the_event_but_not_for_the_status() -> None:
    health = target_health.unusable("x" * 2000, reason="CredentialsInvalid", previous=NEVER)
    event = target_health.event(None, health)
    assert event is not None
    assert len(event.message) == target_health.MAX_EVENT_MESSAGE
    assert len(health.message) > target_health.MAX_EVENT_MESSAGE


def test_a_reached_target_reports_what_it_found_for_the_printer_columns() -> None:
    fields = target_health.reached(Found(), spec=K3S).fields
    assert fields["reachable"] is True
    assert fields["kubernetesVersion"] == "v1.31.0"
    assert (fields["readyNodes"], fields["totalNodes"], fields["nodes"]) == (2, 3, "2/3")
    assert (fields["architectures"], fields["arch"]) == (["amd64", "arm64"], "amd64,arm64")


def test_an_unanswered_probe_keeps_the_last_version_and_architectures() -> None:
    before = et.EdgeTargetStatus(
        reachable=True, kubernetes_version="v1.31.0", total_nodes=3, architectures=("arm64",)
    )
    for health in (
        target_health.unreachable("gone", reason="Unreachable", previous=before),
        target_health.unusable("refused", reason="Forbidden", previous=before),
    ):
        assert health.fields == {
            "reachable": False,
            "message": health.message,
            "readyNodes": 0,
            "nodes": "0/3",
        }
    first = target_health.unreachable("gone", reason="Unreachable", previous=NEVER)
    assert first.fields["nodes"] == "0/0"


def test_an_invalid_spec_only_says_so_and_that_the_target_is_not_reached() -> None:
    health = target_health.invalid_spec(error_count=1, first_error="Field required")
    assert health.fields == {"reachable": False, "message": health.message}


# --- when a probe's status is written ---------------------------------------------------------
WRITTEN = {
    "lastProbeTime": "2026-12-01T12:00:00Z",
    "observedGeneration": 1,
    "reachable": True,
    "architectures": ["amd64", "arm64"],
    "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T11:00:00Z"}
    ],
}


def _probe(**changes: object) -> dict[str, object]:
    new = {**WRITTEN, "lastProbeTime": "2026-12-01T12:00:30Z", **changes}
    new["architectures"] = tuple(new["architectures"])  # type: ignore[arg-type]
    return new


def test_a_probe_that_found_the_same_writes_nothing() -> None:
    assert not target_health.status_due(WRITTEN, _probe(), since_written_seconds=30)


def test_a_probe_that_found_something_new_writes_at_once() -> None:
    assert target_health.status_due(WRITTEN, _probe(reachable=False), since_written_seconds=30)
    assert target_health.status_due(WRITTEN, _probe(observedGeneration=2), since_written_seconds=1)
    assert target_health.status_due(
        WRITTEN, _probe(architectures=["amd64"]), since_written_seconds=1
    )


def test_the_probe_time_is_refreshed_now_and_then_and_after_a_restart() -> None:
    assert target_health.status_due(WRITTEN, _probe(), since_written_seconds=None)
    assert target_health.status_due(
        WRITTEN, _probe(), since_written_seconds=target_health.STATUS_REFRESH_SECONDS
    )
    assert target_health.status_due(None, _probe(), since_written_seconds=30)
