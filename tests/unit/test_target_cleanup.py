"""What a deleted EdgeTarget takes with it at its target, and what it must leave alone."""

from __future__ import annotations

from collections.abc import Mapping

from edgeferry.decisions import target_cleanup
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import target_objects


def ours(namespace: str, name: str, *, kind: str = "Deployment") -> target_objects.Found:
    labels = {
        target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY,
        target_objects.DEPLOYMENT_LABEL: target_objects.owner_label(namespace, name),
    }
    return target_objects.Found(kind, target_objects.workload_name(name), labels)


def selector(**labels: str) -> md.LabelSelector:
    return md.LabelSelector(match_labels=labels)


def refs(found: tuple[target_objects.Found, ...]) -> list[str]:
    return sorted(f.ref for f in found)


def decide(
    *found: target_objects.Found,
    deployments: Mapping[str, md.LabelSelector | None] | None = None,
    siblings: tuple[Mapping[str, str], ...] = (),
) -> target_cleanup.Verdict:
    return target_cleanup.decide(
        found, namespace="team-a", deployments=deployments or {}, siblings=siblings
    )


def test_workloads_of_the_namespace_are_removed_even_after_their_deployment_is_gone() -> None:
    verdict = decide(
        ours("team-a", "iris"),
        ours("team-a", "iris", kind="Service"),
        ours("team-a", "gone.v2"),
        deployments={"iris": selector(arch="amd64")},
    )
    assert refs(verdict.remove) == ["Deployment/gone-v2", "Deployment/iris", "Service/iris"]


def test_another_namespaces_workloads_at_the_same_place_are_never_touched() -> None:
    verdict = decide(ours("team-b", "iris"), ours("team", "a.iris"))
    assert verdict.remove == ()


def test_objects_without_our_managed_by_label_are_never_touched() -> None:
    foreign = target_objects.Found(
        "Deployment",
        "iris",
        {target_objects.DEPLOYMENT_LABEL: target_objects.owner_label("team-a", "iris")},
    )
    verdict = decide(foreign, deployments={"iris": selector(arch="amd64")})
    assert verdict.remove == ()


def test_hashed_owner_label_of_a_long_namespace_is_recognised_through_its_deployment() -> None:
    namespace = "n" * 60
    long_name = "model-" + "x" * 40
    item = ours(namespace, long_name)
    assert "." not in item.labels[target_objects.DEPLOYMENT_LABEL]
    assert target_cleanup.owner_namespace(item.labels) is None
    found = target_cleanup.decide([item], namespace=namespace, deployments={long_name: None})
    assert refs(found.remove) == [f"Deployment/{item.name}"]
    unknown = target_cleanup.decide([item], namespace=namespace, deployments={})
    assert unknown.remove == ()


def test_deployment_that_still_selects_a_sibling_at_the_same_place_keeps_its_workload() -> None:
    verdict = decide(
        ours("team-a", "iris"),
        ours("team-a", "resnet"),
        deployments={"iris": selector(pool="gpu"), "resnet": selector(pool="cpu")},
        siblings=({"pool": "gpu"},),
    )
    assert refs(verdict.remove) == ["Deployment/resnet"]
    assert refs(verdict.kept_for_siblings) == ["Deployment/iris"]


def test_owner_namespace_is_the_part_before_the_first_dot() -> None:
    item = ours("team-a", "iris.v2")
    assert target_cleanup.owner_namespace(item.labels) == "team-a"
    assert target_cleanup.owner_namespace({target_objects.DEPLOYMENT_LABEL: "team-a.iris"}) is None


def target(**spec: object) -> et.EdgeTargetSpec:
    return et.EdgeTargetSpec.model_validate(spec)


def test_writers_are_the_deployments_whose_selector_picks_the_target() -> None:
    deployments = {"iris": selector(arch="amd64"), "resnet": selector(arch="arm64"), "bad": None}
    assert target_cleanup.writers(deployments, {"arch": "amd64"}) == ["iris"]


# --- what the deletion reports -------------------------------------------------------------------
def test_place_names_the_hub_for_cloud_and_the_site_for_k3s() -> None:
    cloud = target(type="Cloud", namespace="models")
    edge = target(type="K3s", namespace="edge", k3s={"kubeconfigSecretRef": {"name": "s"}})
    assert target_cleanup.place(cloud, "c") == "namespace models at the hub"
    assert target_cleanup.place(edge, "edge-1") == "namespace edge at edge-1"


def test_kept_workloads_are_reported_before_removed_ones() -> None:
    events = target_cleanup.pass_events(["Deployment/a"], ["Service/b"], "namespace m at the hub")
    assert [(e.type, e.reason) for e in events] == [
        ("Normal", "WorkloadsKept"),
        ("Normal", "WorkloadsRemoved"),
    ]
    assert events[1].message == "removed Deployment/a from namespace m at the hub"


def test_a_pass_that_did_nothing_says_nothing() -> None:
    assert target_cleanup.pass_events([], [], "anywhere") == []


def test_while_the_deadline_lasts_the_deletion_waits_and_says_why() -> None:
    waiting = target_cleanup.pending("namespace m at edge-1", cause="refused", left_seconds=42)
    assert waiting is not None
    message, conds = waiting
    assert "(refused); retrying for 42s more" in message
    assert [(c.type, c.status, c.reason) for c in conds] == [
        ("Ready", "False", "CleanupPending"),
        ("Reconciling", "True", "CleanupPending"),
    ]


def test_after_the_deadline_nothing_waits_any_more() -> None:
    assert target_cleanup.pending("x", cause="refused", left_seconds=0) is None


def test_left_behind_names_the_writers_and_the_command_for_them() -> None:
    event = target_cleanup.left_behind(
        namespace="team-a",
        spec=target(type="Cloud", namespace="models"),
        labels={"region": "eu"},
        deployments={"iris": selector(region="eu"), "other": selector(region="us")},
        deadline_seconds=300,
        cause="unreachable",
    )
    assert (event.type, event.reason) == ("Warning", "CleanupIncomplete")
    assert "ModelDeployment(s) iris (iris)" in event.message and "other" not in event.message
    assert "edgeferry.io/deployment in (team-a.iris)" in event.message
    assert event.message.endswith("Cause: unreachable")


def test_left_behind_without_known_writers_says_how_to_find_them() -> None:
    event = target_cleanup.left_behind(
        namespace="team-a",
        spec=target(type="Cloud", namespace="models"),
        labels={},
        deployments={},
        deadline_seconds=300,
        cause="unreachable",
    )
    assert "whose owner starts with team-a." in event.message
