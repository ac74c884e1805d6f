"""What a watch at a target means for rollouts (`decisions.target_watch`), and the credentials
the watch (`adapters.target_watch`) connects with."""

from __future__ import annotations

import ssl

from edgeferry.adapters import clusters, target_watch
from edgeferry.decisions import target_watch as tw
from edgeferry.models import target_objects

EDGE = ("team-a", "edge-1")
MODEL = ("team-a", "model")
OTHER = ("team-a", "other")
ELSEWHERE = ("team-b", "model")


def where(name: str = "edge-1", namespace: str = "ml", secret: str = "kc") -> tw.Where:
    return tw.Where(target=("team-a", name), namespace=namespace, kind="K3s", secret=secret)


def test_an_event_wakes_only_the_model_deployment_named_in_its_owner_label() -> None:
    owner = target_objects.owner_label(*MODEL)
    assert tw.woken(EDGE, owner, [MODEL, OTHER]) == {MODEL}


def test_a_long_name_is_matched_through_its_hashed_owner_label() -> None:
    long = ("team-a", "m" * 80)
    owner = target_objects.owner_label(*long)
    assert tw.woken(EDGE, owner, [long, MODEL]) == {long}


def test_a_resync_wakes_every_model_deployment_of_the_edge_targets_namespace() -> None:
    assert tw.woken(EDGE, None, [MODEL, OTHER, ELSEWHERE]) == {MODEL, OTHER}


def test_a_model_deployment_of_another_namespace_is_never_woken() -> None:
    owner = target_objects.owner_label(*ELSEWHERE)
    assert tw.woken(EDGE, owner, [ELSEWHERE]) == set()


def test_a_place_two_rollouts_select_is_watched_once_and_stopped_when_none_does() -> None:
    shared, alone = where("edge-1"), where("edge-2")
    first = tw.changes({MODEL: [shared], OTHER: [shared, alone]}, [])
    assert first.start == (shared, alone) and first.stop == ()
    later = tw.changes({MODEL: [shared]}, [shared, alone])
    assert later.start == () and later.stop == (alone,)


def test_a_re_pointed_edge_target_gets_a_new_watch_and_loses_the_old() -> None:
    old, new = where(namespace="ml"), where(namespace="ml-2")
    moved = tw.changes({MODEL: [new]}, [old])
    assert moved.start == (new,) and moved.stop == (old,)


def reuse(**overrides: object) -> bool:
    facts: dict[str, object] = {
        "watched": True,
        "changed": False,
        "have_reading": True,
        "since_full_seconds": 10.0,
        "full_after_seconds": 600.0,
    }
    facts.update(overrides)
    return tw.reuse_reading(**facts)  # type: ignore[arg-type]


def test_a_quiet_watched_target_keeps_its_last_reading() -> None:
    assert reuse()


def test_a_target_is_looked_at_again_after_an_event_a_lost_watch_or_the_safety_resync() -> None:
    assert not reuse(changed=True)
    assert not reuse(watched=False)
    assert not reuse(have_reading=False)
    assert not reuse(since_full_seconds=600.0)


def test_a_settled_rollout_sleeps_the_safety_resync_only_when_every_target_is_watched() -> None:
    assert tw.settled_delay(all_watched=True, resync_seconds=20, watch_resync_seconds=600) == 600
    assert tw.settled_delay(all_watched=False, resync_seconds=20, watch_resync_seconds=600) == 20
    # a safety resync set below the polling resync never makes a watched rollout poll more
    assert tw.settled_delay(all_watched=True, resync_seconds=20, watch_resync_seconds=5) == 20


def test_the_watch_sends_the_kubeconfigs_token_and_verifies_with_its_ca() -> None:
    kubeconfig = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443"}}]
users: [{name: u, user: {token: abc123}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""
    api = clusters.client_from_kubeconfig(kubeconfig, source="a test")
    assert target_watch._headers(api.configuration) == {"authorization": "Bearer abc123"}
    assert isinstance(target_watch._ssl_context(api.configuration), ssl.SSLContext)
