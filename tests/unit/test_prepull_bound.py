"""Pre-pull at most `maxConcurrentNodes` nodes at a time: which nodes, how many, in what order.

The simulation plays the rounds of the operator against a DaemonSet controller and kubelets:
the DaemonSet controller puts a Pod on every node its node affinity names (tolerating cordons,
like a real one) and removes the others a round later; a kubelet reports the image after a few
rounds. Every round the operator observes, decides, lists the nodes and applies, as
`handlers.rollout_round` does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from edgeferry.decisions import nodes, prepull, workload
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import release
from tests.unit.test_waves import NEW, NOW

GPU = {"key": "gpu", "value": "true", "effect": "NoSchedule"}
OTHER = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}


def node(
    name: str,
    *,
    arch: str = "amd64",
    pool: str = "gpu",
    taints: tuple[dict[str, str], ...] = (GPU,),
    ready: bool = True,
    cordoned: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux", "pool": pool},
        },
        "spec": {"taints": [dict(t) for t in taints], "unschedulable": cordoned},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def deployment(architectures: tuple[str, ...] = ("amd64", "arm64")) -> dict[str, Any]:
    target = et.EdgeTargetSpec.from_wire(
        {
            "type": "Cloud",
            "namespace": "models",
            "cloud": {
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        }
    )
    spec = md.parse_spec(
        {"imageRef": {"name": "iris"}, "targets": {"selector": {"matchLabels": {"a": "b"}}}}
    )
    record = release.TargetRecord(digest=NEW, architectures=architectures)
    return workload.render(
        namespace="team", name="iris", spec=spec, target=target, record=record
    ).deployment


def daemonset(deploy: dict[str, Any]) -> dict[str, Any]:
    return prepull.render(deploy, md_namespace="team", md_name="iris", digest=NEW, generation=1)


def terms(ds: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    found: list[dict[str, Any]] = affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return found


def named(ds: dict[str, Any]) -> list[str]:
    """The nodes a narrowed DaemonSet names (checking the API server's one-value rule)."""
    pod = ds["spec"]["template"]["spec"]
    if pod["nodeSelector"].items() >= prepull.NONE_ADMITTED.items():
        return []
    names = []
    for term in terms(ds):
        (field,) = [f for f in term["matchFields"] if f["key"] == "metadata.name"]
        assert field["operator"] == "In" and len(field["values"]) == 1, field
        names.extend(field["values"])
    return names


# --- which nodes -------------------------------------------------------------------------------
def test_only_ready_uncordoned_tolerated_matching_nodes_are_pre_pulled() -> None:
    found = [
        node("a"),
        node("b", arch="arm64"),
        node("c", arch="riscv64"),
        node("d", pool="cpu"),
        node("e", taints=(GPU, OTHER)),
        node("f", cordoned=True),
        node("g", ready=False),
        node("h", taints=()),
    ]
    assert prepull.eligible(found, deployment()) == ("a", "b", "h")
    assert prepull.eligible(found, deployment(("arm64",))) == ("b",)


def test_affinity_operators_follow_kubernetes() -> None:
    arm = node("arm", arch="arm64")

    def usable(*expressions: dict[str, Any]) -> bool:
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
                }
            }
        }
        return bool(nodes.usable_by([arm], node_selector={}, affinity=affinity, tolerations=[GPU]))

    assert usable({"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]})
    assert not usable({"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]})
    assert usable({"key": "pool", "operator": "Exists"})
    assert not usable({"key": "zone", "operator": "Exists"})
    assert usable({"key": "zone", "operator": "DoesNotExist"})


# --- how many ----------------------------------------------------------------------------------
def test_admits_fills_free_places_in_name_order() -> None:
    assert prepull.admits((), (), ["c", "a", "b", "d"], 2) == ("a", "b")


def test_admits_keeps_the_pulling_and_skips_the_done() -> None:
    assert prepull.admits(["a"], ["b"], ["a", "b", "c", "d"], 2) == ("b", "c")


def test_a_pod_still_going_holds_its_place() -> None:
    assert prepull.admits(["a"], [], ["a", "b"], 1, holding=["a"]) == ()
    assert prepull.admits(["a"], [], ["a", "b"], 1) == ("b",)


def test_a_node_no_longer_usable_is_dropped_and_a_lower_bound_applies_at_once() -> None:
    assert prepull.admits([], ["a", "b", "c"], ["b", "c", "d"], 1) == ("b",)


# --- the DaemonSet -----------------------------------------------------------------------------
def test_narrowing_makes_one_term_per_node_with_the_deployments_expressions() -> None:
    ds = prepull.narrow(daemonset(deployment()), ["n1", "n2"])
    arch = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}
    assert terms(ds) == [
        {
            "matchExpressions": [arch],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
        },
        {
            "matchExpressions": [arch],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}],
        },
    ]


def test_narrowing_without_affinity_adds_only_the_node_names() -> None:
    ds = prepull.narrow(daemonset(deployment(("amd64",))), ["n1"])
    assert terms(ds) == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    ]
    assert ds["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == "amd64"


def test_no_node_admitted_is_a_node_selector_of_no_node() -> None:
    ds = prepull.narrow(daemonset(deployment()), [])
    selector = ds["spec"]["template"]["spec"]["nodeSelector"]
    assert selector.items() >= prepull.NONE_ADMITTED.items() and selector["pool"] == "gpu"


def test_narrowing_leaves_the_rendered_daemonset_alone() -> None:
    ds = daemonset(deployment())
    before = repr(ds)
    prepull.narrow(ds, ["n1"])
    assert repr(ds) == before


def test_progress_survives_a_restarted_operator() -> None:
    """Everything `advance` needs next round comes back from the DaemonSet it applied."""
    deploy = deployment()
    eligible = ("a", "b", "c")
    first = prepull.advance(daemonset(deploy), None, eligible=eligible, bound=2)
    seen = prepull.observe({**first, "metadata": {**first["metadata"], "uid": "u"}}, [])
    assert seen is not None and seen.planned
    assert (seen.done, seen.pulling, seen.waiting) == ((), ("a", "b"), ("c",))


# --- the simulation ----------------------------------------------------------------------------
def cluster() -> list[dict[str, Any]]:
    """22 nodes: 18 usable (amd64 and arm64), 2 with a taint not tolerated, 1 cordoned, 1 not
    ready."""
    found = [node(f"n{i:02}", arch="amd64" if i % 2 else "arm64") for i in range(18)]
    found += [node("tainted-1", taints=(GPU, OTHER)), node("tainted-2", taints=(OTHER,))]
    found += [node("cordoned", cordoned=True), node("not-ready", ready=False)]
    return found


def simulate(bound: int) -> tuple[int, dict[str, int], int]:
    """(most Pods at once, Pods created per node, rounds) until the switch."""
    found, deploy = cluster(), deployment()
    pods: dict[str, dict[str, Any]] = {}  # node -> Pod (with "rounds" left before the image)
    created: dict[str, int] = {}
    stored: dict[str, Any] | None = None
    most = 0
    for rounds in range(1, 500):
        listed = [p["pod"] for p in pods.values()]
        seen = prepull.observe(stored, listed)
        now = NOW + dt.timedelta(seconds=2 * rounds)
        step = prepull.next_step(seen, digest=NEW, generation=1, deadline_seconds=10**6, now=now)
        if step.action == "switch":
            return most, created, rounds
        assert step.action in ("start", "wait"), step
        eligible = prepull.eligible(found, deploy)
        stored = prepull.advance(daemonset(deploy), seen, eligible=eligible, bound=bound)
        stored["metadata"]["uid"] = "u1"
        # The DaemonSet controller: Pods that are not named go (gone by the next round), a
        # named node without a Pod gets one.
        admitted = named(stored)
        for name in [n for n in pods if n not in admitted]:
            if pods[name]["going"]:
                del pods[name]
            else:
                pods[name]["going"] = True
        for name in admitted:
            if name not in pods:
                created[name] = created.get(name, 0) + 1
                pods[name] = {"rounds": 1 + sum(map(ord, name)) % 3, "going": False}
                pods[name]["pod"] = {
                    "metadata": {"ownerReferences": [{"uid": "u1"}]},
                    "spec": {"nodeName": name},
                    "status": {"containerStatuses": [{"name": "prepull", "state": {}}]},
                }
        most = max(most, len(pods))
        # The kubelets: a Pod reports the image once its pull is over.
        for kubelet in pods.values():
            kubelet["rounds"] -= 1
            if kubelet["rounds"] <= 0:
                kubelet["pod"]["status"]["containerStatuses"][0]["state"] = {"running": {}}
    raise AssertionError("no switch in 500 rounds")


@pytest.mark.parametrize("bound", [1, 3, 7])
def test_never_more_than_the_bound_pull_and_every_usable_node_pulls_once(bound: int) -> None:
    most, created, _ = simulate(bound)
    assert most == bound
    assert created == {f"n{i:02}": 1 for i in range(18)}


def test_a_higher_bound_switches_sooner() -> None:
    rounds = [simulate(bound)[2] for bound in (1, 3, 7, 18)]
    assert rounds == sorted(rounds, reverse=True) and rounds[0] > rounds[-1]
