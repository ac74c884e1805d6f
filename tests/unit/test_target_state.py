"""What the rollout knows about one selected target: from its EdgeTarget, and from a look."""

from __future__ import annotations

import datetime as dt
from typing import Any

from edgeferry.decisions import rollout_types, target_state, workload_health
from edgeferry.models import edgetarget as et
from edgeferry.models import target_objects

CREATED = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
OURS = {
    target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY,
    target_objects.DEPLOYMENT_LABEL: target_objects.owner_label("ml", "iris"),
}


def spec(**doc: Any) -> et.EdgeTargetSpec:
    return et.EdgeTargetSpec.model_validate(
        {"type": "K3s", "namespace": "models", **doc}
        | {"k3s": {"kubeconfigSecretRef": {"name": "edge"}}}
    )


def status(**doc: Any) -> et.EdgeTargetStatus:
    return et.EdgeTargetStatus.model_validate(doc)


def assess(labels: dict[str, str]) -> workload_health.Observation:
    deployment = {
        "metadata": {"name": "iris", "labels": labels, "generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
        },
    }
    return workload_health.assess(deployment, [], md_namespace="ml", md_name="iris")


def test_the_edgetarget_gives_type_architectures_and_budget() -> None:
    base = target_state.from_edgetarget(
        "edge-1", spec(imageSizeBudgetBytes=1000), status(architectures=["arm64"])
    )
    assert (base.cluster_type, base.architectures, base.size_budget_bytes) == (
        "K3s",
        ("arm64",),
        1000,
    )


def test_an_invalid_spec_is_not_contacted_and_says_where_to_look() -> None:
    base = target_state.from_edgetarget("edge-1", None, status())
    state, error = target_state.not_contacted(base, None, status()) or (base, "")
    assert not state.reachable and state.unreachable_since is None
    assert error == "the EdgeTarget's spec is invalid; see its status"


def test_unreachable_at_the_last_probe_counts_from_the_ready_flip() -> None:
    probed = status(
        reachable=False,
        message="dial tcp: connection refused",
        conditions=[
            {"type": "Ready", "status": "False", "lastTransitionTime": "2025-06-01T00:00:00Z"}
        ],
    )
    base = target_state.from_edgetarget("edge-1", spec(), probed)
    state, error = target_state.not_contacted(base, spec(), probed) or (base, "")
    assert not state.reachable and state.unreachable_since == CREATED
    assert error == "dial tcp: connection refused"


def test_a_reachable_or_never_probed_target_is_looked_at() -> None:
    base = target_state.from_edgetarget("edge-1", spec(), status())
    assert target_state.not_contacted(base, spec(), status()) is None
    assert target_state.not_contacted(base, spec(), status(reachable=True)) is None


def test_no_answer_counts_from_the_first_failed_look() -> None:
    base = target_state.from_edgetarget("edge-1", spec(), status(reachable=True))
    state, error = target_state.unanswered(base, since=CREATED, error="edge-1: observe: timeout")
    assert not state.reachable and state.unreachable_since == CREATED
    assert error == "edge-1: observe: timeout"


def test_state_of_a_target_that_answered_carries_what_was_found() -> None:
    base = rollout_types.TargetState(name="edge-1", architectures=("arm64",))
    found = assess(OURS)
    state, problem = target_state.answered(
        base, found, namespace="models", name="iris", unreachable_since=CREATED
    )
    assert problem is None
    assert state.reachable and state.available and state.record == found.record
    assert state.unreachable_since == CREATED and state.architectures == ("arm64",)


def test_a_foreign_deployment_makes_the_target_unusable_and_says_why() -> None:
    base = rollout_types.TargetState(name="edge-1")
    found = assess({})
    state, problem = target_state.answered(
        base, found, namespace="models", name="iris", unreachable_since=None
    )
    assert not state.reachable
    assert problem is not None and "models/iris" in problem and "did not create" in problem
