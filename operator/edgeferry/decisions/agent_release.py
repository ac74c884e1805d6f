"""What a pull-mode target's TargetRelease and Lease mean, on both sides of the hub API.

The hub never talks to an Agent target; it reads what the site's agent wrote and turns it into
the same facts push mode reads from a Deployment, so `waves.next_actions` cannot tell the two
apart. Rules, and why:

- **Not picked up yet is in progress, not absent.** Right after the hub writes a release the
  agent has not reported it (its `observedGeneration` is behind). The hub then reads the record
  from the spec it wrote, like push mode reads back the Deployment it just applied, so the
  progress deadline runs from the write and the release is not rewritten every round.
- **Silence is unreachability, heard once per site.** The site's only heartbeat is the agent's
  Lease: the EdgeTarget is Ready only while it is fresh (else unreachable, and the rollout's
  offline grace and `Deferred` apply as to a push target that stopped answering), and it
  carries what the agent found at the site's nodes (version, nodes, architectures, cluster id)
  since the hub cannot probe. A release's status is written only when what it says changes
  (`report_changed`), so 10 releases at 1,000 settled sites cost the hub no writes.
- **Apply on change, and now and then.** The agent applies a release when its spec moved on,
  when the site's Deployment is missing or carries another record or image, after its own
  restart, and every `reapply_seconds` (drift someone made at the site); else it only looks
  (`needs_apply`).
- **The agent applies only what is its own.** A release must put a Deployment and a Service,
  labelled as edgeferry's for the release's ModelDeployment, into the agent's one site
  namespace; anything else is refused and said in status, never applied (a hub that was
  tampered with cannot send the site into another namespace or another kind).
- **Pre-pull is asked, not done, by the hub.** With `rollout.prePull` the hub writes the
  release's `spec.prePull` (digest, bound, the DaemonSet un-narrowed) and keeps the Deployment
  at the running digest; the agent picks the nodes it alone can see by the operator's own rules
  (`decisions.prepull`), applies the narrowed DaemonSet and reports its progress in
  `status.prePull`; the hub switches once that report says every usable node is done. The
  deadline counts on the hub's clock from its ask. A report for another digest or generation,
  or one not yet about the current spec, reads as "asked, not started" (`prepull_observed`).
- **The agent removes only after the hub said so.** Workloads of ours at the site with no
  TargetRelease on the hub are removed only after a successful list; a hub that cannot be
  reached, also after an agent restart, leaves everything running (edge autonomy).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

from edgeferry.decisions import nodes, prepull, workload_health
from edgeferry.models import reasons, release, target_objects, timestamps
from edgeferry.models import target_release as tr

LEASE_PREFIX = "edgeferry.io/"
HEARTBEAT = LEASE_PREFIX + "heartbeat"
KUBERNETES_VERSION = LEASE_PREFIX + "kubernetes-version"
READY_NODES = LEASE_PREFIX + "ready-nodes"
TOTAL_NODES = LEASE_PREFIX + "total-nodes"
ARCHITECTURES = LEASE_PREFIX + "architectures"
CLUSTER_ID = LEASE_PREFIX + "cluster-id"

GRACE = LEASE_PREFIX + "grace-seconds"
"""On the Lease: the silence after which the agent itself says it is offline (three of its
intervals), so a site that reports every minute is not called silent after 30 s."""

DEFAULT_STALE_AFTER_SECONDS = 30.0
"""Silence after which the hub counts an agent offline: three missed 10-second reports; also
the least grace an agent may ask for."""
MAX_STALE_AFTER_SECONDS = 3600.0
"""The most grace an agent may ask for: a site offline for an hour is offline."""


# --- hub side: a release's status ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Seen:
    """What the hub concludes about one Agent target's release."""

    observation: workload_health.Observation | None
    """The facts for the rollout."""
    error: str | None = None


def observed(release_object: Mapping[str, Any] | None) -> Seen:
    """The rollout's facts from a TargetRelease as read from the hub (None: there is none).

    Whether the site is online is the EdgeTarget's (its Lease), not the release's: a settled
    release's status is old on purpose."""
    if release_object is None:
        return Seen(workload_health.Observation(exists=False))
    meta = release_object.get("metadata", {})
    generation = int(meta.get("generation") or 0)
    status = tr.parse_status(release_object.get("status"))
    if (status.observed_generation or 0) < generation:
        written = (release_object.get("spec") or {}).get("deployment") or {}
        annotations = (written.get("metadata") or {}).get("annotations")
        return Seen(
            workload_health.Observation(
                exists=status.exists, record=release.record_from_annotations(annotations)
            )
        )
    if status.phase == "Refused":
        return Seen(
            workload_health.Observation(exists=status.exists, foreign=status.foreign),
            error=f"the site's agent refused the release: {status.message}",
        )
    return Seen(
        workload_health.Observation(
            exists=status.exists,
            foreign=status.foreign,
            record=release.record_from_annotations(status.record),
            available=status.available,
            ready_replicas=status.ready_replicas,
            replicas=status.replicas,
            failing=status.failing,
            failure=status.failure,
            crashing=status.crashing,
            stuck=status.stuck,
            image=status.image,
        ),
        error=f"the site's agent could not apply the release: {status.message}"
        if status.phase == "Unapplied"
        else None,
    )


def release_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What `agent_release.observed` and `prepull_observed` read of a TargetRelease, as plain
    data (not the whole rendered spec: 10,000 releases stay small in memory)."""
    spec = body.get("spec") or {}
    annotations = ((spec.get("deployment") or {}).get("metadata") or {}).get("annotations")
    view: dict[str, Any] = {
        "metadata": {"generation": (body.get("metadata") or {}).get("generation")},
        "spec": {"deployment": {"metadata": {"annotations": _plain(annotations or {})}}},
        "status": _plain(body.get("status") or {}),
    }
    if spec.get("prePull") is not None:
        view["spec"]["prePull"] = _plain(spec["prePull"])
    return view


def _plain(value: Any) -> Any:
    """A deep copy of Kopf's views as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def prepull_intent(
    daemonset: Mapping[str, Any],
    *,
    digest: str,
    generation: int,
    bound: int,
    asked: prepull.Observed | None,
    now: datetime.datetime,
    failed: str | None = None,
) -> tr.PrePullIntent:
    """The `spec.prePull` the hub writes: the same ask keeps its time (the deadline runs from
    the first), another digest or generation is asked anew."""
    same = asked is not None and (asked.digest, asked.generation) == (digest, generation)
    since = asked.started_at if same and asked is not None else None
    return tr.PrePullIntent(
        digest=digest,
        generation=generation,
        max_concurrent_nodes=bound,
        requested_at=timestamps.format_rfc3339(since or now),
        daemon_set=dict(daemonset),
        failed=failed,
    )


def prepull_observed(release_object: Mapping[str, Any] | None) -> prepull.Observed | None:
    """The pre-pull as the hub reads it from its release: None when it asks for none; the
    agent's report when that is about the current ask; else asked and not started."""
    if release_object is None:
        return None
    asking = (release_object.get("spec") or {}).get("prePull")
    if asking is None:
        return None
    intent = tr.PrePullIntent.from_wire(asking)
    asked = timestamps.parse_rfc3339(intent.requested_at)
    status = tr.parse_status(release_object.get("status"))
    generation = int(release_object.get("metadata", {}).get("generation") or 0)
    found = status.pre_pull
    current = (status.observed_generation or 0) >= generation
    if (
        not current
        or found is None
        or found.digest != intent.digest
        or found.generation != intent.generation
    ):
        return prepull.Observed(
            digest=intent.digest,
            generation=intent.generation,
            started_at=asked,
            failed=intent.failed,
        )
    return prepull.Observed(
        digest=found.digest,
        generation=found.generation,
        started_at=asked,
        failed=intent.failed,
        planned=found.planned,
        done=found.done,
        pulling=found.pulling,
        waiting=found.waiting,
        holding=found.holding,
        errors=found.errors,
        errors_since=timestamps.parse_rfc3339(found.errors_since),
    )


# --- hub side: the Lease ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AgentHealth:
    """The site as the agent's Lease tells it."""

    probe: nodes.ProbeResult | None
    """None: silent or never connected (see `reason`, `message`)."""
    cluster_id: str | None = None
    reason: str = ""
    message: str = ""


def lease_health(
    annotations: Mapping[str, str] | None,
    *,
    now: datetime.datetime,
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS,
) -> AgentHealth:
    """Whether the agent is connected, and what it found at the site's nodes; the grace is
    the agent's own (`GRACE`), between `stale_after_seconds` and `MAX_STALE_AFTER_SECONDS`."""
    found = annotations or {}
    stale_after_seconds = min(
        MAX_STALE_AFTER_SECONDS, max(stale_after_seconds, float(_int(found.get(GRACE))))
    )
    heartbeat = timestamps.parse_rfc3339(found.get(HEARTBEAT))
    if heartbeat is None:
        return AgentHealth(
            None,
            reason=reasons.AGENT_NOT_CONNECTED,
            message="no agent has reported for this target yet: fetch its token and start "
            "edgeferry-agent at the site",
        )
    silent = (now - heartbeat).total_seconds()
    if silent > stale_after_seconds:
        return AgentHealth(
            None,
            reason=reasons.AGENT_SILENT,
            message=f"the site's agent last reported at {found.get(HEARTBEAT)} ({silent:.0f}s ago)",
        )
    return AgentHealth(
        nodes.ProbeResult(
            kubernetes_version=found.get(KUBERNETES_VERSION) or "unknown",
            ready_nodes=_int(found.get(READY_NODES)),
            total_nodes=_int(found.get(TOTAL_NODES)),
            architectures=tuple(a for a in (found.get(ARCHITECTURES) or "").split(",") if a),
        ),
        cluster_id=found.get(CLUSTER_ID) or None,
    )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


# --- agent side ---------------------------------------------------------------------------------
def lease_annotations(
    probe: nodes.ProbeResult,
    *,
    cluster_id: str | None,
    now: datetime.datetime,
    interval_seconds: float = 10.0,
) -> dict[str, str]:
    """What the agent writes on its Lease each round (`lease_health` reads it back);
    `interval_seconds`: how often it renews (its grace is three of them)."""
    found = {
        HEARTBEAT: timestamps.format_rfc3339(now),
        GRACE: str(math.ceil(3 * interval_seconds)),
        KUBERNETES_VERSION: probe.kubernetes_version,
        READY_NODES: str(probe.ready_nodes),
        TOTAL_NODES: str(probe.total_nodes),
        ARCHITECTURES: ",".join(probe.architectures),
    }
    if cluster_id:
        found[CLUSTER_ID] = cluster_id
    return found


def refusal(spec: tr.TargetReleaseSpec, *, namespace: str) -> str | None:
    """Why the agent must not apply this release at a site serving `namespace`; None: apply."""
    owner = spec.model_deployment
    if spec.namespace != namespace:
        return f"the release is for namespace {spec.namespace}; this agent serves {namespace}"
    for kind, api_version, obj in (
        ("Deployment", "apps/v1", spec.deployment),
        ("Service", "v1", spec.service),
    ):
        meta = obj.get("metadata") or {}
        if obj.get("kind") != kind or obj.get("apiVersion") != api_version:
            got = f"{obj.get('apiVersion')} {obj.get('kind')}"
            return f"expected a {api_version} {kind}, got {got}"
        if meta.get("namespace") != namespace:
            return (
                f"the {kind} names namespace {meta.get('namespace')}; this agent serves {namespace}"
            )
        if not target_objects.is_ours(
            meta.get("labels"), namespace=owner.namespace, name=owner.name
        ):
            return f"the {kind} is not labelled as edgeferry's for {owner.namespace}/{owner.name}"
        if meta.get("name") != target_objects.workload_name(owner.name):
            return f"the {kind} is named {meta.get('name')}, not after its ModelDeployment"
    return None if spec.pre_pull is None else _prepull_refusal(spec, namespace=namespace)


def _prepull_refusal(spec: tr.TargetReleaseSpec, *, namespace: str) -> str | None:
    """Why the release's pre-pull DaemonSet is not the agent's to apply; None: apply it."""
    assert spec.pre_pull is not None
    owner, daemonset = spec.model_deployment, spec.pre_pull.daemon_set
    meta = daemonset.get("metadata") or {}
    if daemonset.get("kind") != "DaemonSet" or daemonset.get("apiVersion") != "apps/v1":
        got = f"{daemonset.get('apiVersion')} {daemonset.get('kind')}"
        return f"expected an apps/v1 DaemonSet for the pre-pull, got {got}"
    if meta.get("namespace") != namespace:
        return (
            f"the pre-pull DaemonSet names namespace {meta.get('namespace')}; "
            f"this agent serves {namespace}"
        )
    if not target_objects.is_ours(meta.get("labels"), namespace=owner.namespace, name=owner.name):
        return (
            "the pre-pull DaemonSet is not labelled as edgeferry's for "
            f"{owner.namespace}/{owner.name}"
        )
    if meta.get("name") != target_objects.prepull_name(owner.name):
        return f"the pre-pull DaemonSet is named {meta.get('name')}, not after its ModelDeployment"
    pod = daemonset.get("spec", {}).get("template", {}).get("spec", {})
    images = {str(c.get("image")) for c in pod.get("containers") or []}
    wanted = spec.pre_pull.digest.rpartition("@")[2]  # a mirror reference has the same digest
    if {i.rpartition("@")[2] for i in images} != {wanted}:
        return f"the pre-pull DaemonSet runs {', '.join(sorted(images))}, not {wanted}"
    return None


def prepull_report(seen: prepull.Observed | None) -> tr.PrePullReport | None:
    """What the agent reports of the site's pre-pull DaemonSet (`prepull_observed` reads it)."""
    if seen is None:
        return None
    return tr.PrePullReport(
        digest=seen.digest,
        generation=seen.generation,
        started_at=timestamps.format_rfc3339(seen.started_at) if seen.started_at else None,
        failed=seen.failed,
        planned=seen.planned,
        done=seen.done,
        pulling=seen.pulling,
        waiting=seen.waiting,
        holding=seen.holding,
        errors=seen.errors,
        errors_since=timestamps.format_rfc3339(seen.errors_since) if seen.errors_since else None,
    )


def report(
    found: workload_health.Observation,
    *,
    generation: int,
    deployment: Mapping[str, Any] | None,
    now: datetime.datetime,
    error: str | None = None,
    refused: str | None = None,
    pre_pull: prepull.Observed | None = None,
) -> tr.TargetReleaseStatus:
    """The status the agent writes for one release after applying (or not) and looking;
    `pre_pull`: the site's pre-pull DaemonSet, read while the release asks for one."""
    record = _record(deployment or {})
    if refused is not None:
        phase: tr.ReleasePhase = "Refused"
    elif error is not None:
        phase = "Unapplied"
    elif found.failing:
        phase = "Failing"
    elif found.available:
        phase = "Available"
    else:
        phase = "Applied"
    return tr.TargetReleaseStatus(
        observed_generation=generation,
        last_change_time=timestamps.format_rfc3339(now),
        phase=phase,
        digest=record.get(release.DIGEST),
        exists=found.exists,
        foreign=found.foreign,
        available=found.available,
        ready_replicas=found.ready_replicas,
        replicas=found.replicas,
        failing=found.failing,
        failure=found.failure,
        crashing=found.crashing,
        stuck=found.stuck,
        image=found.image,
        record=record,
        message=refused or error,
        pre_pull=prepull_report(pre_pull),
    )


def report_changed(written: Mapping[str, Any] | None, new: tr.TargetReleaseStatus) -> bool:
    """Whether `new` says something the release's status as `written` on the hub does not
    (`lastChangeTime` aside): only then is it written."""
    try:
        before = tr.parse_status(written)
    except ValueError:  # a status that does not parse (hand-edited): write ours
        return True
    ignore = {"last_change_time"}
    return before.model_dump(exclude=ignore) != new.model_dump(exclude=ignore)


DEFAULT_REAPPLY_SECONDS = 300.0
"""How often the agent applies a release that did not change, to undo drift at the site."""


def needs_apply(
    spec: tr.TargetReleaseSpec,
    *,
    generation: int,
    written: tr.TargetReleaseStatus,
    deployment: Mapping[str, Any] | None,
    since_applied_seconds: float | None,
    reapply_seconds: float = DEFAULT_REAPPLY_SECONDS,
) -> bool:
    """Whether the agent applies this release now, or only looks (see the module's rules).

    `written`: the release's status on the hub; `deployment`: the site's, as read (None: none);
    `since_applied_seconds`: since this agent process last applied it (None: not yet).
    """
    if since_applied_seconds is None or since_applied_seconds >= reapply_seconds:
        return True
    if written.observed_generation != generation or written.phase in {"Refused", "Unapplied"}:
        return True
    if deployment is None:
        return True
    return _record(deployment) != _record(spec.deployment) or _images(deployment) != _images(
        spec.deployment
    )


def _record(deployment: Mapping[str, Any]) -> dict[str, str]:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return {str(k): str(v) for k, v in annotations.items() if str(k).startswith(release.PREFIX)}


def _images(deployment: Mapping[str, Any]) -> list[str]:
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [str(c.get("image")) for c in pod.get("containers") or []]


def stale_workloads(
    found: Iterable[target_objects.Found],
    releases: Iterable[tr.DeploymentRef],
    *,
    unreadable: int = 0,
    pre_pulling: Iterable[tr.DeploymentRef] = (),
) -> list[target_objects.Found]:
    """Objects of ours at the site whose ModelDeployment has no TargetRelease on the hub, and
    pre-pull DaemonSets whose release asks for no pre-pull (`pre_pulling`: those that do).

    Call only with a list the hub answered: an empty list because the hub is unreachable would
    remove everything the site serves. `unreadable` releases (a spec that does not parse) may
    own any of them, so while there is one nothing is stale.
    """
    if unreadable:
        return []
    wanted = {target_objects.owner_label(r.namespace, r.name) for r in releases}
    pulling = {target_objects.owner_label(r.namespace, r.name) for r in pre_pulling}
    return [
        f
        for f in found
        if f.labels.get(target_objects.MANAGED_BY_LABEL) == target_objects.MANAGED_BY
        and (
            f.labels.get(target_objects.DEPLOYMENT_LABEL) not in wanted
            or (
                f.kind == "DaemonSet"
                and target_objects.PREPULL_LABEL in f.labels
                and f.labels.get(target_objects.DEPLOYMENT_LABEL) not in pulling
            )
        )
    ]
