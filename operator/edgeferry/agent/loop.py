"""One round of the agent: pull the site's releases from the hub, apply, look, report.

Glue only; what a release or a Lease means is in `decisions.agent_release`, the requests are
in `adapters.target_releases` (hub) and `adapters.target_workloads` (site). A round:

1. Read the site's nodes (the hub cannot probe a site behind NAT; the Lease carries them).
2. List the TargetReleases of the agent's hub namespace. If the hub does not answer, stop
   here: everything at the site keeps running as it is (edge autonomy), also after a restart,
   since the site's Deployments are the agent's only memory and the next round catches up.
3. Read the site namespace in four lists (Deployments, DaemonSets, our Services and Pods),
   however many releases it serves.
4. For each release: refuse what is not ours to apply; take its Deployment and Pods from that
   reading; server-side apply the Deployment and Service when `agent_release.needs_apply` says so (a
   new spec, drift, a restart, every `reapply_seconds`) and read them again; advance the
   pre-pull it asks for (`decisions.prepull`: the next nodes, the narrowed DaemonSet); write
   the status only when it changed (`agent_release.report_changed`).
5. Remove workloads of ours at the site that no release names any more (from the same
   reading), and pre-pull DaemonSets whose release no longer asks for one (pulled and
   switched, or given up).
6. Renew the Lease (the site's heartbeat).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from typing import Any

import pydantic
from kubernetes import client as k8s_client

from edgeferry.adapters import target_releases, target_workloads
from edgeferry.decisions import agent_release, nodes, prepull, workload_health
from edgeferry.models import edgetarget as et
from edgeferry.models import target_objects
from edgeferry.models import target_release as tr

_LOG = logging.getLogger("edgeferry.agent")


@dataclasses.dataclass(frozen=True)
class Agent:
    """Who the agent is and what it talks to."""

    hub: k8s_client.ApiClient
    """The hub API, with the agent's ServiceAccount token (its namespace only)."""
    site: k8s_client.ApiClient
    """The site's own API server, with the site's local credentials."""
    hub_namespace: str
    """The agent namespace on the hub (`EdgeTarget.status.agentNamespace`)."""
    namespace: str
    """The site namespace it serves (the EdgeTarget's `spec.namespace`)."""
    timeout: float = 10.0
    interval: float = 10.0
    """How often it runs a round (the Lease tells the hub, whose grace is three of them)."""
    reapply_seconds: float = agent_release.DEFAULT_REAPPLY_SECONDS
    applied_at: dict[str, float] = dataclasses.field(default_factory=dict)
    """When (monotonic) this process last applied each release, by name: its only memory."""


@dataclasses.dataclass(frozen=True)
class Round:
    """What one round did, for the log and the tests."""

    hub_reached: bool
    applied: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    settled: bool = True
    """False while a release is on its way at the site (applied, not yet Available) or being
    pre-pulled: the next round comes after `FOLLOW_UP_SECONDS`, not the full interval, so the
    hub hears of a ready Pod within seconds and its next wave does not wait a whole interval."""


FOLLOW_UP_SECONDS = 2.0


def _site_facts(agent: Agent) -> tuple[nodes.ProbeResult, str | None]:
    """The site's version and nodes, as the operator's probe would read them."""
    placement = et.Placement()
    try:
        read = target_workloads.probe(agent.site, placement=placement, timeout=agent.timeout)
    except Exception as exc:
        _LOG.warning("the site's API server did not answer: %s", exc)
        return nodes.ProbeResult("unknown", 0, 0, ()), None
    summary = nodes.summarize(read.kubernetes_version, read.nodes, placement=placement)
    return summary, read.cluster_id


def _serve(
    agent: Agent,
    item: dict[str, Any],
    now: datetime.datetime,
    site: target_workloads.SiteReading | Exception,
) -> tuple[str, bool, bool]:
    """Apply one release at the site and report it; returns its name, whether it applied and
    whether it is settled (see `Round.settled`). `site`: the namespace as read at the start of
    the round (or why it could not be)."""
    meta = item.get("metadata", {})
    name = str(meta.get("name"))
    generation = int(meta.get("generation") or 0)
    refused: str | None = None
    error: str | None = None
    try:
        spec = tr.parse_spec(item.get("spec") or {})
    except pydantic.ValidationError as exc:
        refused = f"the release does not parse: {exc.errors()[0]['msg']}"
        spec = None
    if spec is not None and refused is None:
        refused = agent_release.refusal(spec, namespace=agent.namespace)
    owner = spec.model_deployment if spec is not None else None
    found = workload_health.Observation(exists=False)
    deployment = None
    pulling: prepull.Observed | None = None
    if owner is not None:
        intent = spec.pre_pull if spec is not None and refused is None else None

        def look() -> target_workloads.Reading:
            assert owner is not None
            return target_workloads.observe(
                agent.site,
                namespace=agent.namespace,
                md_namespace=owner.namespace,
                md_name=owner.name,
                timeout=agent.timeout,
                prepull=intent is not None,
            )

        try:
            if isinstance(site, Exception):
                raise site
            reading = site.reading(
                md_namespace=owner.namespace, md_name=owner.name, prepull=intent is not None
            )
            if spec is not None and refused is None:
                refused, error, applied = _apply_if_needed(
                    agent, spec, name, generation, item, reading
                )
                if applied:
                    reading = look()
            deployment = reading.deployment
            found = workload_health.assess(
                reading.deployment, reading.pods, md_namespace=owner.namespace, md_name=owner.name
            )
        except Exception as exc:
            error = error or f"cannot read the workload at the site: {exc}"
        else:
            if intent is not None and spec is not None:
                pulling, failed = _pre_pull(agent, spec, owner, intent, reading)
                error = error or failed
    status = agent_release.report(
        found,
        generation=generation,
        deployment=deployment,
        now=now,
        error=error,
        refused=refused,
        pre_pull=pulling,
    )
    if agent_release.report_changed(item.get("status"), status):
        target_releases.patch_release_status(
            agent.hub, agent.hub_namespace, name, status, timeout=agent.timeout
        )
    settled = status.phase != "Applied" and (pulling is None or pulling.failed is not None)
    return name, refused is None and error is None, settled


def _apply_if_needed(
    agent: Agent,
    spec: tr.TargetReleaseSpec,
    name: str,
    generation: int,
    item: dict[str, Any],
    reading: target_workloads.Reading,
) -> tuple[str | None, str | None, bool]:
    """Apply the release at the site when `needs_apply`; (refused, error, whether applied)."""
    owner = spec.model_deployment
    written = tr.parse_status(item.get("status"))
    last = agent.applied_at.get(name)
    if not agent_release.needs_apply(
        spec,
        generation=generation,
        written=written,
        deployment=reading.deployment,
        since_applied_seconds=None if last is None else time.monotonic() - last,
        reapply_seconds=agent.reapply_seconds,
    ):
        return None, None, False
    try:
        target_workloads.apply(
            agent.site,
            target_objects.Workload(deployment=spec.deployment, service=spec.service),
            md_namespace=owner.namespace,
            md_name=owner.name,
            timeout=agent.timeout,
            creating=reading.deployment is None,
            field_manager=tr.AGENT_FIELD_MANAGER,
        )
    except target_workloads.ForeignObjectError as exc:
        return str(exc), None, False
    except Exception as exc:
        return None, f"apply at the site failed: {exc}", False
    agent.applied_at[name] = time.monotonic()
    return None, None, True


def _pre_pull(
    agent: Agent,
    spec: tr.TargetReleaseSpec,
    owner: tr.DeploymentRef,
    intent: tr.PrePullIntent,
    reading: target_workloads.Reading,
) -> tuple[prepull.Observed | None, str | None]:
    """Advance the release's pre-pull at the site as the operator does at a push target: admit
    the next usable nodes up to the bound and apply the narrowed DaemonSet (a failed ask: its
    failed form, which runs nowhere). Returns what to report and why it could not, if so."""
    seen = prepull.observe(reading.prepull, reading.prepull_pods)
    daemonset: dict[str, Any] = intent.daemon_set
    try:
        if intent.failed is None:
            pod = spec.deployment["spec"]["template"]["spec"]
            eligible = prepull.eligible(
                target_workloads.list_nodes(
                    agent.site, labels=pod.get("nodeSelector") or {}, timeout=agent.timeout
                ),
                spec.deployment,
            )
            daemonset = prepull.advance(
                daemonset, seen, eligible=eligible, bound=intent.max_concurrent_nodes
            )
        applied = target_workloads.apply_prepull(
            agent.site,
            daemonset,
            md_namespace=owner.namespace,
            md_name=owner.name,
            timeout=agent.timeout,
            field_manager=tr.AGENT_FIELD_MANAGER,
        )
    except target_workloads.ForeignObjectError as exc:
        return seen, str(exc)
    except Exception as exc:
        return seen, f"pre-pull at the site failed: {exc}"
    return prepull.observe(applied, reading.prepull_pods), None


def run_once(agent: Agent, *, now: datetime.datetime | None = None) -> Round:
    """One round; never raises for a hub or site that does not answer."""
    moment = now or datetime.datetime.now(datetime.UTC)
    probe, cluster_id = _site_facts(agent)
    try:
        items = target_releases.list_releases(agent.hub, agent.hub_namespace, timeout=agent.timeout)
    except Exception as exc:
        _LOG.warning("the hub did not answer (%s); the site keeps serving what it has", exc)
        return Round(hub_reached=False)
    site: target_workloads.SiteReading | Exception
    try:
        site = target_workloads.read_namespace(
            agent.site, namespace=agent.namespace, timeout=agent.timeout
        )
    except Exception as exc:
        site = exc
    applied: list[str] = []
    refused: list[str] = []
    settled = True
    for item in items:
        try:
            name, ok, quiet = _serve(agent, item, moment, site)
        except Exception as exc:
            _LOG.warning("release %s: %s", item.get("metadata", {}).get("name"), exc)
            continue
        (applied if ok else refused).append(name)
        settled = settled and quiet
    refs, pre_pulling = [], []
    for item in items:
        try:
            parsed = tr.parse_spec(item.get("spec") or {})
        except pydantic.ValidationError:
            continue
        refs.append(parsed.model_deployment)
        pre_pulling.extend([parsed.model_deployment] if parsed.pre_pull is not None else [])
    removed: list[str] = []
    try:
        if isinstance(site, Exception):
            raise site
        stale = agent_release.stale_workloads(
            site.managed(), refs, unreadable=len(items) - len(refs), pre_pulling=pre_pulling
        )
        removed = target_workloads.delete_found(
            agent.site, stale, namespace=agent.namespace, timeout=agent.timeout
        )
    except Exception as exc:
        _LOG.warning("cannot remove released workloads at the site: %s", exc)
    done = _renewed(agent, probe, cluster_id, moment, applied, refused, removed)
    return dataclasses.replace(done, settled=settled)


def _renewed(
    agent: Agent,
    probe: nodes.ProbeResult,
    cluster_id: str | None,
    moment: datetime.datetime,
    applied: list[str],
    refused: list[str],
    removed: list[str],
) -> Round:
    """Renew the Lease (the site's heartbeat) and say what the round did."""
    try:
        target_releases.renew_lease(
            agent.hub,
            agent.hub_namespace,
            annotations=agent_release.lease_annotations(
                probe, cluster_id=cluster_id, now=moment, interval_seconds=agent.interval
            ),
            renew_time=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            timeout=agent.timeout,
        )
    except Exception as exc:
        _LOG.warning("cannot renew the agent's Lease on the hub: %s", exc)
    return Round(True, tuple(applied), tuple(refused), tuple(removed))
