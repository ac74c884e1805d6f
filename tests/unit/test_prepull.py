"""Pre-pull (`rollout.prePull`): what a target's pre-pull DaemonSet says, and what comes next."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edgeferry.decisions import prepull, rollout_types, target_verdict, workload
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons, release, target_objects
from tests.unit.test_waves import NEW, NEWER, NOW, OLD, ago, fresh, phases, plan, running

ON: dict[str, Any] = {
    "prePull": {"enabled": True, "deadlineSeconds": 120},
    "canary": 0,
    "maxPerWave": "100%",
}


def seen(
    *,
    digest: str = NEW,
    generation: int = 1,
    started: float = 5,
    nodes: int = 2,
    pulled: int = 0,
    planned: bool = True,
    errors: tuple[str, ...] = (),
    failed: str | None = None,
) -> prepull.Observed:
    """A pre-pull on `nodes` nodes, all admitted, the first `pulled` of them done."""
    names = tuple(f"node-{i}" for i in range(1, nodes + 1))
    return prepull.Observed(
        digest=digest,
        generation=generation,
        started_at=ago(started),
        failed=failed,
        planned=planned,
        done=names[:pulled],
        pulling=names[pulled:] if planned else (),
        holding=names,
        errors=errors,
    )


def step(observed: prepull.Observed | None, **kw: Any) -> prepull.Step:
    kw.setdefault("digest", NEW)
    kw.setdefault("generation", 1)
    kw.setdefault("deadline_seconds", 120)
    return prepull.next_step(observed, now=NOW, **kw)


def switching(name: str = "a", observed: prepull.Observed | None = None) -> Any:
    """A target running OLD (Ready), whose pre-pull of NEW is as `observed`."""
    return dataclasses.replace(running(name, OLD, previous=None), prepull=observed)


# --- next step -----------------------------------------------------------------------------------
def test_no_daemonset_starts_one() -> None:
    assert step(None).action == "start"


def test_a_daemonset_for_another_digest_is_removed_first() -> None:
    assert step(seen(digest=NEWER)).action == "restart"


def test_pulling_waits_and_says_how_many_nodes_have_it() -> None:
    result = step(seen(pulled=1))
    assert result.action == "wait"
    assert "1/2 node(s) have it" in result.message and "deadline in 115s" in result.message


def test_every_node_having_the_image_switches() -> None:
    result = step(seen(pulled=2, started=7))
    assert result.action == "switch"
    assert "pulled on 2 node(s) in 7s" in result.message


def test_a_daemonset_without_our_progress_waits_for_its_first_narrowing() -> None:
    result = step(seen(planned=False))
    assert result.action == "wait" and "0/? node(s) have it" in result.message


def test_nodes_still_waiting_for_a_place_hold_the_switch() -> None:
    waiting = dataclasses.replace(seen(nodes=1, pulled=1), waiting=("node-2",))
    assert step(waiting).action == "wait"


def test_pull_errors_of_a_pod_admitted_late_get_their_own_grace() -> None:
    errors = ("node-2: ErrImagePull: registry blip",)
    late = dataclasses.replace(
        seen(started=300, errors=errors), errors_since=ago(prepull.STUCK_GRACE_SECONDS - 1)
    )
    assert step(late, deadline_seconds=600).action == "wait"
    stuck = dataclasses.replace(late, errors_since=ago(prepull.STUCK_GRACE_SECONDS))
    assert step(stuck, deadline_seconds=600).action == "fail"


def test_the_deadline_fails_the_pre_pull() -> None:
    result = step(seen(pulled=1, started=121))
    assert result.action == "fail"
    assert "not pulled on every node within 120s (1/2 node(s) have it, 1 pulling)" in result.message


def test_pull_errors_are_waited_for_during_the_grace_then_fail() -> None:
    errors = ("node-1: ErrImagePull: manifest unknown",)
    early = step(seen(errors=errors, started=prepull.STUCK_GRACE_SECONDS - 1))
    assert early.action == "wait" and "ErrImagePull" in early.message
    late = step(seen(errors=errors, started=prepull.STUCK_GRACE_SECONDS))
    assert late.action == "fail" and late.error == errors[0]


def test_the_pull_grace_is_the_one_a_deployment_gets() -> None:
    assert prepull.STUCK_GRACE_SECONDS == target_verdict.STUCK_GRACE_SECONDS


def test_a_failure_is_remembered_until_the_spec_changes() -> None:
    failed = seen(failed="node-1: ErrImagePull: not found", generation=3)
    assert step(failed, generation=3).action == "fail"
    assert step(failed, generation=4).action == "restart"


# --- what the DaemonSet says ---------------------------------------------------------------------
def pod(uid: str, node: str = "node-1", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"ownerReferences": [{"uid": uid}]},
        "spec": {"nodeName": node},
        "status": {"containerStatuses": [{"name": "prepull", **status}]},
    }


def daemonset(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": "2025-06-01T11:59:50Z",
            "annotations": {
                prepull.DIGEST_ANNOTATION: NEW,
                prepull.GENERATION_ANNOTATION: "2",
                **annotations,
            },
        },
        "status": {"observedGeneration": 1},
    }


def progress(done: str = "", pulling: str = "", waiting: str = "") -> dict[str, str]:
    return {
        prepull.DONE_ANNOTATION: done,
        prepull.PULLING_ANNOTATION: pulling,
        prepull.WAITING_ANNOTATION: waiting,
    }


def test_a_node_counts_once_the_kubelet_reports_the_image_even_if_the_command_failed() -> None:
    pods = [
        pod(
            "u1",
            "a",
            imageID="reg/iris@sha256:1",
            state={"waiting": {"reason": "CrashLoopBackOff"}},
        ),
        pod("u1", "b", state={"running": {}}),
        pod("u1", "c", state={"waiting": {"reason": "ContainerCreating"}}),
    ]
    found = prepull.observe(daemonset(**progress(pulling="a,b,c")), pods)
    assert found is not None
    assert (found.done, found.pulling, found.errors) == (("a", "b"), ("c",), ())
    assert (found.digest, found.generation, found.started_at) == (NEW, 2, ago(10))


def test_done_nodes_are_remembered_after_their_pods_are_gone() -> None:
    found = prepull.observe(daemonset(**progress(done="a", pulling="b", waiting="c")), [])
    assert found is not None and found.planned
    assert (found.done, found.pulling, found.waiting, found.holding) == (
        ("a",),
        ("b",),
        ("c",),
        (),
    )


def test_a_done_nodes_pod_still_holds_its_place() -> None:
    pods = [pod("u1", "a", state={"running": {}})]
    found = prepull.observe(daemonset(**progress(done="a", pulling="")), pods)
    assert found is not None and found.holding == ("a",) and found.pulling == ()


def test_pull_errors_name_the_node_and_the_registry_words() -> None:
    pods = [pod("u1", state={"waiting": {"reason": "ErrImagePull", "message": "not found"}})]
    pods[0]["metadata"]["creationTimestamp"] = "2025-06-01T11:59:58Z"
    found = prepull.observe(daemonset(**progress(pulling="node-1")), pods)
    assert found is not None and found.errors == ("node-1: ErrImagePull: not found",)
    assert found.errors_since == ago(2)


def test_pods_of_an_earlier_daemonset_do_not_count() -> None:
    found = prepull.observe(
        daemonset(**progress(pulling="node-1")), [pod("old", state={"running": {}})]
    )
    assert found is not None and found.done == () and found.holding == ()


def test_a_daemonset_without_progress_annotations_is_not_planned() -> None:
    found = prepull.observe(daemonset(), [])
    assert found is not None and not found.planned


def test_no_daemonset_is_nothing() -> None:
    assert prepull.observe(None, []) is None


# --- the DaemonSet -------------------------------------------------------------------------------
def rendered(record: release.TargetRecord, *, mirror: str | None = None) -> dict[str, Any]:
    target = et.EdgeTargetSpec.from_wire(
        {
            "type": "Cloud",
            "namespace": "models",
            "cloud": {
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
            **({"registryMirror": mirror} if mirror else {}),
        }
    )
    spec = md.parse_spec(
        {"imageRef": {"name": "iris"}, "targets": {"selector": {"matchLabels": {"a": "b"}}}}
    )
    return workload.render(
        namespace="team", name="iris", spec=spec, target=target, record=record
    ).deployment


def test_the_daemonset_pulls_the_deployments_image_on_the_deployments_nodes() -> None:
    record = release.TargetRecord(digest=NEW, architectures=("amd64",))
    deployment = rendered(record, mirror="mirror.site:5001")
    ds = prepull.render(deployment, md_namespace="team", md_name="iris", digest=NEW, generation=4)
    pod_spec = ds["spec"]["template"]["spec"]
    model = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["image"] == model["containers"][0]["image"]
    assert container["image"].startswith("mirror.site:5001/")
    assert container["command"] == prepull.COMMAND
    assert pod_spec["nodeSelector"] == model["nodeSelector"]
    assert pod_spec["tolerations"] == model["tolerations"]
    assert ds["metadata"]["name"] == target_objects.prepull_name("iris") == "iris-prepull"
    assert ds["metadata"]["annotations"] == {
        prepull.DIGEST_ANNOTATION: NEW,
        prepull.GENERATION_ANNOTATION: "4",
    }
    assert target_objects.is_ours(ds["metadata"]["labels"], namespace="team", name="iris")


def test_the_daemonsets_pods_are_never_the_deployments() -> None:
    deployment = rendered(release.TargetRecord(digest=NEW))
    ds = prepull.render(deployment, md_namespace="team", md_name="iris", digest=NEW, generation=1)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert not all(pod_labels.get(k) == v for k, v in selector.items())


def test_a_failed_pre_pull_keeps_its_daemonset_on_no_node() -> None:
    deployment = rendered(release.TargetRecord(digest=NEW))
    ds = prepull.render(
        deployment, md_namespace="team", md_name="iris", digest=NEW, generation=1, failed="x"
    )
    pod_spec = ds["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == prepull.NO_NODE and "tolerations" not in pod_spec
    assert ds["metadata"]["annotations"][prepull.FAILED_ANNOTATION] == "x"


def test_long_names_stay_within_63_characters() -> None:
    assert len(target_objects.prepull_name("m" * 80)) <= 63


# --- in the rollout ------------------------------------------------------------------------------
def test_off_by_default_the_switch_is_written_at_once() -> None:
    p = plan([switching()], canary=0, maxPerWave="100%")
    assert [w.target for w in p.writes if w.reason == "rollout"] == ["a"]
    assert p.prepulls == ()


def test_an_open_wave_starts_the_pre_pull_and_holds_the_switch() -> None:
    p = plan([switching()], **ON)
    assert [w.reason for w in p.writes] == ["maintain"]
    assert [w.record.digest for w in p.writes] == [OLD]
    ((action, digest),) = [(x.action, x.record.digest) for x in p.prepulls]
    assert (action, digest) == ("apply", NEW)
    assert phases(p) == {"a": "Progressing"}
    assert reasons.PRE_PULLING in [e.reason for e in p.events]
    (line,) = p.targets
    assert line.digest == OLD and "pre-pulling" in (line.message or "")


def test_the_switch_is_written_once_every_node_has_the_image_then_the_daemonset_goes() -> None:
    p = plan([switching(observed=seen(pulled=2))], **ON)
    assert [(w.reason, w.record.digest) for w in p.writes] == [("rollout", NEW)]
    assert [x.action for x in p.prepulls] == ["delete"]
    assert reasons.PRE_PULLED in [e.reason for e in p.events]
    (line,) = p.targets
    assert "after pre-pull" in (line.message or "")


def test_a_failed_pre_pull_fails_the_target_without_switching_it() -> None:
    late = seen(pulled=0, started=121, errors=("n: ErrImagePull: manifest unknown",))
    p = plan([switching(observed=late)], **ON)
    assert [(w.reason, w.record.digest) for w in p.writes] == [("maintain", OLD)]
    assert [(x.action, x.error) for x in p.prepulls] == [
        ("mark-failed", "n: ErrImagePull: manifest unknown")
    ]
    assert phases(p) == {"a": "Failed"}
    assert reasons.PRE_PULL_FAILED in [e.reason for e in p.events]


def test_a_remembered_failure_settles_the_wave_and_halts_the_rollout() -> None:
    failed = seen(failed="n: ErrImagePull: manifest unknown")
    p = plan([switching("a", failed), switching("b")], prePull=ON["prePull"], canary=1)
    assert phases(p)["a"] == "Failed"
    assert p.prepulls == ()  # nothing more is done at a, b waits for its wave
    assert not [w for w in p.writes if w.reason == "rollout"]
    assert p.phase == "Degraded"


def test_a_spec_edit_retries_a_failed_pre_pull() -> None:
    failed = seen(failed="n: ErrImagePull: manifest unknown", generation=1)
    p = plan([switching(observed=failed)], generation=2, **ON)
    assert [x.action for x in p.prepulls] == ["delete"]
    assert phases(p) == {"a": "Progressing"}


def test_a_first_write_is_not_pre_pulled() -> None:
    p = plan([fresh("a")], **ON)
    assert [w.reason for w in p.writes] == ["rollout"] and p.prepulls == ()


def test_agent_targets_are_pre_pulled_like_push_targets() -> None:
    agent = dataclasses.replace(switching(), cluster_type="Agent")
    p = plan([agent], **ON)
    assert [x.action for x in p.prepulls] == ["apply"]
    assert not [w for w in p.writes if w.reason == "rollout"]
    assert phases(p) == {"a": "Progressing"}


def test_a_waiting_wave_does_not_pre_pull_yet() -> None:
    p = plan([switching("a"), switching("b")], prePull=ON["prePull"], canary=1)
    assert [x.target for x in p.prepulls] == ["a"]


@pytest.mark.parametrize("bound", [0, 1001])
def test_max_concurrent_nodes_out_of_range_is_refused(bound: int) -> None:
    with pytest.raises(ValueError):
        md.RolloutStrategy.model_validate({"prePull": {"maxConcurrentNodes": bound}})


def test_ten_nodes_pull_at_a_time_by_default() -> None:
    assert md.RolloutStrategy().pre_pull.max_concurrent_nodes == 10


@pytest.mark.parametrize("deadline", [9, 86401])
def test_deadline_out_of_range_is_refused(deadline: int) -> None:
    with pytest.raises(ValueError):
        md.RolloutStrategy.model_validate({"prePull": {"deadlineSeconds": deadline}})


def test_rollout_types_carry_it() -> None:
    assert rollout_types.TargetState(name="a").prepull is None


def test_a_daemonset_left_after_the_switch_is_deleted() -> None:
    done = dataclasses.replace(running("a", NEW), prepull=seen(pulled=2))
    p = plan([done], **ON)
    assert [x.action for x in p.prepulls] == ["delete"]


def test_a_halted_rollout_deletes_the_pre_pulls_that_wait_for_their_switch() -> None:
    failed = seen(failed="n: ErrImagePull: manifest unknown")
    waiting = seen(pulled=0)
    p = plan(
        [switching("a", failed), switching("b", waiting)],
        prePull=ON["prePull"],
        canary=1,
        maxPerWave="100%",
    )
    assert [(x.target, x.action) for x in p.prepulls] == [("b", "delete")]


def test_a_paused_rollout_keeps_its_pre_pulls() -> None:
    p = plan([switching("a", seen(pulled=1))], paused=True, **ON)
    assert p.prepulls == ()
