"""Pre-pull at an Agent target: the hub asks in `spec.prePull`, the agent pulls and reports.

The last test plays hub, agent and the site's DaemonSet controller and kubelets against each
other through the TargetRelease's wire form (what the API server stores), so a field lost on the
way (an alias, a default) shows as a pre-pull that never switches.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from edgeferry.decisions import agent_release, prepull, workload_health
from edgeferry.models import release, target_objects
from edgeferry.models import target_release as tr
from tests.unit.test_agent_release import DIGEST, NOW, release_spec, rendered
from tests.unit.test_prepull_bound import GPU, named, node

NEW = "registry.local:5000/models/iris@sha256:" + "2" * 64
LATER = NOW + dt.timedelta(seconds=30)


def daemonset(digest: str = NEW, *, generation: int = 3) -> dict[str, Any]:
    return prepull.render(
        rendered(release.TargetRecord(digest=digest, started_at=NOW)).deployment,
        md_namespace="ml",
        md_name="iris",
        digest=digest,
        generation=generation,
    )


def intent(digest: str = NEW, *, generation: int = 3, **kw: Any) -> tr.PrePullIntent:
    kw.setdefault("asked", None)
    kw.setdefault("now", NOW)
    return agent_release.prepull_intent(
        daemonset(digest, generation=generation),
        digest=digest,
        generation=generation,
        bound=kw.pop("bound", 2),
        **kw,
    )


def stored(
    ask: tr.PrePullIntent | None,
    *,
    generation: int = 5,
    status: tr.TargetReleaseStatus | None = None,
) -> dict[str, Any]:
    """The TargetRelease as the API server returns it."""
    spec = release_spec(pre_pull=ask)
    return {
        "metadata": {"name": "ml.iris", "generation": generation},
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": status.to_status() if status else None,
    }


def report(seen: prepull.Observed | None, *, generation: int = 5) -> tr.TargetReleaseStatus:
    return agent_release.report(
        workload_health.Observation(exists=True, available=True),
        generation=generation,
        deployment=rendered().deployment,
        now=NOW,
        pre_pull=seen,
    )


# --- what the hub reads ------------------------------------------------------------------------
def test_no_ask_means_no_pre_pull() -> None:
    assert agent_release.prepull_observed(None) is None
    assert agent_release.prepull_observed(stored(None)) is None


def test_an_ask_not_picked_up_yet_is_started_not_absent() -> None:
    seen = agent_release.prepull_observed(
        stored(intent(), generation=5, status=report(None, generation=4))
    )
    assert seen is not None
    assert (seen.digest, seen.generation, seen.started_at) == (NEW, 3, NOW)
    assert not seen.planned
    step = prepull.next_step(seen, digest=NEW, generation=3, deadline_seconds=600, now=LATER)
    assert step.action == "wait"  # asked again would restart the deadline and repeat the event


def test_the_agents_report_is_read_but_the_deadline_runs_on_the_hubs_clock() -> None:
    at_site = prepull.Observed(
        digest=NEW,
        generation=3,
        started_at=NOW + dt.timedelta(hours=5),  # the site's clock is off
        planned=True,
        done=("a",),
        pulling=("b",),
        waiting=("c",),
        holding=("b",),
        errors=("b: ErrImagePull: manifest unknown",),
        errors_since=NOW,
    )
    seen = agent_release.prepull_observed(stored(intent(), status=report(at_site)))
    assert seen is not None
    assert seen == prepull.Observed(
        digest=NEW,
        generation=3,
        started_at=NOW,
        planned=True,
        done=("a",),
        pulling=("b",),
        waiting=("c",),
        holding=("b",),
        errors=("b: ErrImagePull: manifest unknown",),
        errors_since=NOW,
    )
    late = NOW + dt.timedelta(seconds=601)
    step = prepull.next_step(seen, digest=NEW, generation=3, deadline_seconds=600, now=late)
    assert step.action == "fail"


def test_a_report_of_another_digest_is_not_this_ask() -> None:
    old = prepull.Observed(digest=DIGEST, generation=3, started_at=NOW, planned=True)
    seen = agent_release.prepull_observed(stored(intent(), status=report(old)))
    assert seen is not None and seen.digest == NEW and not seen.planned


def test_a_failed_ask_is_remembered_by_the_hub() -> None:
    failed = intent(failed="b: ErrImagePull: manifest unknown")
    seen = agent_release.prepull_observed(stored(failed, status=report(None)))
    assert seen is not None and seen.failed == "b: ErrImagePull: manifest unknown"
    same = prepull.next_step(seen, digest=NEW, generation=3, deadline_seconds=600, now=LATER)
    edited = prepull.next_step(seen, digest=NEW, generation=4, deadline_seconds=600, now=LATER)
    assert (same.action, edited.action) == ("fail", "restart")


def test_the_same_ask_keeps_its_time_another_is_asked_anew() -> None:
    first = intent()
    seen = agent_release.prepull_observed(stored(first))
    assert intent(asked=seen, now=LATER).requested_at == first.requested_at
    assert intent(generation=4, asked=seen, now=LATER).requested_at != first.requested_at
    assert intent(DIGEST, asked=seen, now=LATER).requested_at != first.requested_at


# --- what the agent applies --------------------------------------------------------------------
def test_the_agent_applies_its_own_pre_pull() -> None:
    assert agent_release.refusal(release_spec(pre_pull=intent()), namespace="models") is None


def test_a_mirror_reference_of_the_same_digest_is_its_own() -> None:
    ds = daemonset()
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    container["image"] = "mirror.shop:5000/models/iris@" + NEW.rpartition("@")[2]
    ask = intent().model_copy(update={"daemon_set": ds})
    assert agent_release.refusal(release_spec(pre_pull=ask), namespace="models") is None


def _changed(edit: Any) -> str | None:
    ds = daemonset()
    edit(ds)
    ask = intent().model_copy(update={"daemon_set": ds})
    return agent_release.refusal(release_spec(pre_pull=ask), namespace="models")


def test_the_agent_refuses_a_pre_pull_that_is_not_its_own() -> None:
    def kind(ds: dict[str, Any]) -> None:
        ds["kind"] = "Pod"

    def namespace(ds: dict[str, Any]) -> None:
        ds["metadata"]["namespace"] = "kube-system"

    def labels(ds: dict[str, Any]) -> None:
        ds["metadata"]["labels"][target_objects.DEPLOYMENT_LABEL] = "other.app"

    def name(ds: dict[str, Any]) -> None:
        ds["metadata"]["name"] = "node-exporter"

    def image(ds: dict[str, Any]) -> None:
        ds["spec"]["template"]["spec"]["containers"][0]["image"] = "evil.example/miner:latest"

    assert "apps/v1 DaemonSet" in (_changed(kind) or "")
    assert "namespace kube-system" in (_changed(namespace) or "")
    assert "not labelled" in (_changed(labels) or "")
    assert "named node-exporter" in (_changed(name) or "")
    assert "evil.example/miner:latest" in (_changed(image) or "")


def test_a_pre_pull_daemonset_nothing_asks_for_is_removed_at_the_site() -> None:
    ref = tr.DeploymentRef(namespace="ml", name="iris")
    labels = {
        target_objects.MANAGED_BY_LABEL: target_objects.MANAGED_BY,
        target_objects.DEPLOYMENT_LABEL: target_objects.owner_label("ml", "iris"),
    }
    found = [
        target_objects.Found("Deployment", "iris", labels),
        target_objects.Found("Service", "iris", labels),
        target_objects.Found(
            "DaemonSet", "iris-prepull", {**labels, target_objects.PREPULL_LABEL: "iris"}
        ),
    ]
    asked = agent_release.stale_workloads(found, [ref], pre_pulling=[ref])
    done = agent_release.stale_workloads(found, [ref])
    assert asked == [] and [f.ref for f in done] == ["DaemonSet/iris-prepull"]


# --- hub, agent and site together --------------------------------------------------------------
class Site:
    """The site's DaemonSet controller and kubelets: a Pod on every node the DaemonSet's
    affinity names, its image pulled one round later, Pods of nodes no longer named gone a round
    after that."""

    def __init__(self) -> None:
        self.daemonset: dict[str, Any] | None = None
        self.pods: dict[str, int] = {}  # node -> rounds it has existed
        self.most = 0
        self.pulled: list[str] = []

    def apply(self, ds: dict[str, Any]) -> dict[str, Any]:
        self.daemonset = {
            **ds,
            "metadata": {
                **ds["metadata"],
                "uid": "u1",
                "creationTimestamp": "2026-12-01T12:00:00Z",
            },
        }
        return self.daemonset

    def tick(self) -> None:
        wanted = set(named(self.daemonset)) if self.daemonset else set()
        for n in list(self.pods):
            if n not in wanted:
                del self.pods[n]
            else:
                self.pods[n] += 1
        for n in wanted - set(self.pods):
            self.pods[n] = 0
            self.pulled.append(n)
        self.most = max(self.most, len(self.pods))

    def pod_objects(self) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"ownerReferences": [{"uid": "u1"}]},
                "spec": {"nodeName": n},
                "status": {
                    "containerStatuses": [
                        {"name": prepull.CONTAINER_NAME, "imageID": "sha256:x" if age else ""}
                    ]
                },
            }
            for n, age in sorted(self.pods.items())
        ]


def test_hub_and_agent_pull_every_usable_node_within_the_bound_then_switch() -> None:
    site, generation, status = Site(), 1, None
    site_nodes = [node(n, taints=(GPU,)) for n in "abcde"] + [node("f", cordoned=True)]
    deployment = rendered().deployment
    deployment["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    ask: tr.PrePullIntent | None = None
    for round_ in range(40):
        now = NOW + dt.timedelta(seconds=round_)
        # hub
        seen = agent_release.prepull_observed(stored(ask, generation=generation, status=status))
        step = prepull.next_step(seen, digest=NEW, generation=3, deadline_seconds=600, now=now)
        if step.action == "switch":
            break
        assert step.action in ("start", "wait"), step
        new = intent(asked=seen, now=now, bound=2)
        if new != ask:
            ask, generation = new, generation + 1
        # agent
        assert ask is not None
        spec = tr.parse_spec(stored(ask, generation=generation)["spec"])
        assert spec.pre_pull is not None
        assert agent_release.refusal(spec, namespace="models") is None
        at_site = prepull.observe(site.daemonset, site.pod_objects())
        eligible = prepull.eligible(site_nodes, deployment)
        applied = site.apply(
            prepull.advance(
                spec.pre_pull.daemon_set,
                at_site,
                eligible=eligible,
                bound=spec.pre_pull.max_concurrent_nodes,
            )
        )
        reported = report(prepull.observe(applied, site.pod_objects()), generation=generation)
        status = tr.parse_status(reported.to_status())
        site.tick()
    else:
        raise AssertionError("never switched")
    assert seen is not None and seen.done == ("a", "b", "c", "d", "e")
    assert sorted(site.pulled) == ["a", "b", "c", "d", "e"]  # each once, the cordoned one never
    assert site.most == 2
    assert generation == 2  # asked once: the same ask is not rewritten each round
