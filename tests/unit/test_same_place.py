"""Which EdgeTargets are the same place, and what that forbids: removing what a selected target
serves there, or writing one Deployment through two targets."""

from __future__ import annotations

import datetime as dt

from edgeferry.decisions import rollout_status, same_place, waves
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DIGEST = "registry.local:5000/models/iris@sha256:" + "1" * 64
HUB = "0b6f3d2e-hub"
SITE = "7c1a9e44-site"


def cloud(
    namespace: str = "models", *, cluster: str | None = HUB, pool: str = "cpu"
) -> same_place.Place:
    spec = et.EdgeTargetSpec.model_validate(
        {"type": "Cloud", "namespace": namespace, "cloud": {"nodeSelector": {"pool": pool}}}
    )
    return same_place.of(spec, et.EdgeTargetStatus(cluster_id=cluster))


def k3s(secret: str, *, cluster: str | None = SITE, namespace: str = "models") -> same_place.Place:
    spec = et.EdgeTargetSpec.model_validate(
        {"type": "K3s", "namespace": namespace, "k3s": {"kubeconfigSecretRef": {"name": secret}}}
    )
    return same_place.of(spec, et.EdgeTargetStatus(cluster_id=cluster))


# --- the same place ------------------------------------------------------------------------------
def test_cloud_targets_with_one_workload_namespace_are_the_same_place() -> None:
    assert same_place.same(cloud(pool="gpu"), cloud(pool="cpu"))
    assert same_place.same(cloud(cluster=None), cloud())
    assert not same_place.same(cloud("models"), cloud("other"))


def test_two_secrets_reaching_one_cluster_are_the_same_place_once_it_is_identified() -> None:
    assert same_place.same(k3s("site-a"), k3s("site-a-admin"))
    assert not same_place.same(k3s("site-a"), k3s("site-b", cluster="other-uid"))
    assert not same_place.same(k3s("site-a", namespace="other"), k3s("site-b"))


def test_one_secret_is_one_cluster_before_any_probe() -> None:
    assert same_place.same(k3s("site-a", cluster=None), k3s("site-a", cluster=None))
    assert not same_place.same(k3s("a", cluster=None), k3s("b", cluster=None))


def test_a_k3s_target_reaching_the_hub_is_the_same_place_as_a_cloud_target() -> None:
    assert same_place.same(k3s("hub-admin", cluster=HUB), cloud())
    assert not same_place.same(k3s("site-a"), cloud())


def test_an_unidentified_cluster_may_share_a_place_with_any_target_of_that_namespace() -> None:
    unknown = k3s("site-b", cluster=None)
    assert not same_place.same(unknown, k3s("site-a"))
    assert same_place.may_share(unknown, k3s("site-a"))
    assert not same_place.may_share(unknown, k3s("site-a", namespace="other"))
    assert not same_place.may_share(k3s("site-a"), cloud())


# --- releases ------------------------------------------------------------------------------------
def test_an_unselected_target_in_a_selected_targets_place_is_not_released() -> None:
    selected = [("cloud-cpu", cloud(pool="cpu"))]
    assert same_place.held_by(cloud(pool="gpu"), selected) == "cloud-cpu"


def test_an_unselected_target_elsewhere_is_released() -> None:
    selected = [("cloud-cpu", cloud()), ("edge-a", k3s("site-a"))]
    assert same_place.held_by(k3s("site-b", cluster="other-uid"), selected) is None
    assert same_place.held_by(cloud("other"), selected) is None


def test_release_waits_while_the_unselected_targets_cluster_is_unknown() -> None:
    selected = [("edge-a", k3s("site-a"))]
    assert same_place.held_by(k3s("site-b", cluster=None), selected) == "edge-a"


# --- collisions ----------------------------------------------------------------------------------
def test_the_later_of_two_targets_in_one_place_collides_with_the_first_by_name() -> None:
    placed = [
        ("edge-b", k3s("site-a-admin")),
        ("edge-a", k3s("site-a")),
        ("cloud-gpu", cloud(pool="gpu")),
        ("cloud-cpu", cloud(pool="cpu")),
        ("edge-c", k3s("site-c", cluster="other-uid")),
    ]
    assert same_place.collisions(placed) == {"cloud-gpu": "cloud-cpu", "edge-b": "edge-a"}


def test_three_targets_in_one_place_all_collide_with_the_first() -> None:
    placed = [(n, cloud(pool=n)) for n in ("c", "a", "b")]
    assert same_place.collisions(placed) == {"b": "a", "c": "a"}


def test_targets_in_different_places_do_not_collide() -> None:
    placed = [("a", cloud("one")), ("b", cloud("two")), ("c", k3s("s"))]
    assert same_place.collisions(placed) == {}


def _plan() -> rt.Plan:
    return waves.next_actions(
        [rt.TargetState(name="cloud-cpu", architectures=("amd64",))],
        image=rt.Image(name="iris", admitted=True, digest=DIGEST, platforms=("linux/amd64",)),
        rollout=md.RolloutStrategy(),
        generation=1,
        now=NOW,
    )


def test_a_collided_target_has_a_status_line_with_the_error_and_is_never_written() -> None:
    planned = same_place.with_collisions(
        _plan(), {"cloud-gpu": "cloud-cpu"}, {"cloud-gpu": cloud(pool="gpu")}, now=NOW
    )
    assert [w.target for w in planned.writes] == ["cloud-cpu"]
    (line,) = [t for t in planned.targets if t.name == "cloud-gpu"]
    assert line.phase == "Incompatible"
    assert line.cluster_type == "Cloud"
    assert line.error is not None
    assert "same place as EdgeTarget cloud-cpu (namespace models at the hub)" in line.error
    (event,) = [e for e in planned.events if e.reason == reasons.PLACE_TAKEN]
    assert event.type == "Warning"
    assert event.message.startswith("cloud-gpu: not written")
    status = rollout_status.build(planned, generation=1, existing_conditions=(), now=NOW)
    assert {t.name for t in status.targets} == {"cloud-cpu", "cloud-gpu"}


def test_a_collision_already_reported_is_not_announced_again() -> None:
    places = {"cloud-gpu": cloud(pool="gpu")}
    first = same_place.with_collisions(_plan(), {"cloud-gpu": "cloud-cpu"}, places, now=NOW)
    recorded = rollout_status.build(first, generation=1, existing_conditions=(), now=NOW)
    later = NOW + dt.timedelta(seconds=30)
    again = same_place.with_collisions(
        _plan(), {"cloud-gpu": "cloud-cpu"}, places, now=later, recorded=recorded
    )
    assert [e for e in again.events if e.reason == reasons.PLACE_TAKEN] == []
    (line,) = [t for t in again.targets if t.name == "cloud-gpu"]
    assert line.last_transition_time == NOW


def test_a_k3s_collision_names_the_cluster() -> None:
    planned = same_place.with_collisions(
        _plan(), {"edge-b": "edge-a"}, {"edge-b": k3s("site-a-admin")}, now=NOW
    )
    (line,) = [t for t in planned.targets if t.name == "edge-b"]
    assert line.cluster_type == "K3s"
    assert line.error is not None and f"of cluster {SITE[:8]}" in line.error


def test_no_collision_leaves_the_plan_alone() -> None:
    planned = _plan()
    assert same_place.with_collisions(planned, {}, {}, now=NOW) is planned


def test_an_unidentified_cluster_is_named_by_its_secret() -> None:
    where = same_place.describe(k3s("site-a", cluster=None))
    assert where == "namespace models of the cluster secret site-a/kubeconfig reaches"
