"""Kopf wiring for EdgeTarget: probe each target on its own interval and report what was found.

One daemon per EdgeTarget rather than a fixed-interval timer, because the interval is the user's
(`spec.probeIntervalSeconds`, 5 s to an hour) and a daemon can simply sleep that long; it wakes
within a second when the spec changes (a new Secret name, a new node selector), so a fix shows
up in the status at once, not an interval later. Creation and operator restarts start the
daemon, which probes first and sleeps after.

A probe is three reads at the target (`/version`, nodes, the `kube-system` namespace) with the
rollout's per-request timeout, so a dead site costs at most that. What the result means
(conditions, message, up or down, which status fields change, whether `Ready` flipped) is
decided in `decisions/target_health.py`; this module writes it to `.status`, to the
`edgeferry_target_up` metric and as a `TargetUp` or `TargetDown` event.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from typing import Any

import kopf
import pydantic

from edgeferry import metrics, settings
from edgeferry.adapters import clusters, hub, target_releases, target_workloads
from edgeferry.decisions import agent_release, nodes, target_health
from edgeferry.handlers import runtime
from edgeferry.models import conditions, timestamps
from edgeferry.models import edgetarget as et
from edgeferry.models import target_release as tr

PLURAL = "edgetargets"


_LOG = logging.getLogger("edgeferry.edgetarget")


# --- one probe -----------------------------------------------------------------------------------
def _probe_blocking(
    access: clusters.Access, namespace: str, name: str, spec: et.EdgeTargetSpec
) -> tuple[nodes.ProbeResult, str | None]:
    """What the nodes say, and the cluster's identity."""
    api = access.clients.for_target(namespace, name, spec)
    try:
        read = target_workloads.probe(api, placement=spec.placement, timeout=access.timeout)
        summary = nodes.summarize(read.kubernetes_version, read.nodes, placement=spec.placement)
        return summary, read.cluster_id
    except Exception as exc:
        raise clusters.classify(
            exc, target=f"EdgeTarget {name}", server=clusters.server_of(api)
        ) from exc


async def _probe_health(
    access: clusters.Access,
    namespace: str,
    name: str,
    previous: et.EdgeTargetStatus,
    spec: et.EdgeTargetSpec,
) -> target_health.Health:
    """Push mode: what a probe of the target's API server found."""
    try:
        result, cluster_id = await access.runner.run(
            lambda: _probe_blocking(access, namespace, name, spec), deadline=access.deadline
        )
    except TimeoutError:
        return target_health.unreachable(
            f"EdgeTarget {name}: no answer within {access.deadline:.0f}s",
            reason=clusters.Unreachable.reason,
            previous=previous,
        )
    except clusters.Unreachable as exc:
        return target_health.unreachable(exc.message, reason=exc.reason, previous=previous)
    except clusters.TargetAccessError as exc:
        return target_health.unusable(exc.message, reason=exc.reason, previous=previous)
    return target_health.reached(result, spec=spec, cluster_id=cluster_id)


@dataclasses.dataclass
class ProbeMemory:
    """What one EdgeTarget's daemon keeps between probes (lost on restart: then it registers
    and writes once more)."""

    written_at: float | None = None
    """When (monotonic) this daemon last wrote the status."""
    registered: object = None
    """The spec generation an Agent target's hub namespace and credential were made for."""
    up: bool = False
    """Whether the last probe found the target up."""


async def _agent_health(
    access: clusters.Access,
    agent_role: str,
    namespace: str,
    name: str,
    previous: et.EdgeTargetStatus,
    spec: et.EdgeTargetSpec,
    now: datetime.datetime,
    register: bool = True,
) -> target_health.Health:
    """Pull mode: register the agent's hub namespace and credential (`register`: not done for
    this spec yet, or the agent is not connected), then read its Lease.

    The site is never contacted: what its nodes are like is what the agent last wrote.
    """
    where = tr.hub_namespace(namespace, name)

    def blocking() -> dict[str, str]:
        if register:
            target_releases.ensure_agent_access(
                access.hub,
                namespace=where,
                target_label=f"{namespace}.{name}",
                timeout=access.timeout,
                role=agent_role,
            )
        return target_releases.read_lease(access.hub, where, timeout=access.timeout)

    try:
        lease = await access.runner.run(blocking, deadline=access.deadline)
    except Exception as exc:
        return target_health.unusable(
            f"cannot register the agent namespace {where} on the hub: {exc}",
            reason=clusters.TargetAccessError.reason,
            previous=previous,
        )
    seen = agent_release.lease_health(lease, now=now)
    if seen.probe is None:
        return target_health.unreachable(seen.message, reason=seen.reason, previous=previous)
    return target_health.reached(seen.probe, spec=spec, cluster_id=seen.cluster_id)


async def probe_once(
    *,
    body: kopf.Body,
    namespace: str,
    name: str,
    access: clusters.Access,
    agent_role: str = tr.AGENT_ROLE,
    memory: ProbeMemory | None = None,
) -> float:
    """Probe the target, write its status, metric and events; return seconds until the next."""
    now = datetime.datetime.now(datetime.UTC)
    previous = et.parse_status(body.get("status"))
    generation = body.meta.get("generation")
    status: dict[str, Any] = {
        "lastProbeTime": timestamps.format_rfc3339(now),
        "observedGeneration": generation,
    }
    interval = float(et.DEFAULT_PROBE_INTERVAL_SECONDS)
    target_type = str(body.get("spec", {}).get("type", "unknown"))
    try:
        spec = et.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError as exc:
        health = target_health.invalid_spec(
            error_count=exc.error_count(), first_error=exc.errors()[0]["msg"]
        )
    else:
        interval = float(spec.probe_interval_seconds)
        if spec.type == "Agent":
            register = memory is None or memory.registered != generation or not memory.up
            health = await _agent_health(
                access, agent_role, namespace, name, previous, spec, now, register=register
            )
            status["agentNamespace"] = tr.hub_namespace(namespace, name)
            if memory is not None and register and health.up:
                memory.registered = generation
        else:
            health = await _probe_health(access, namespace, name, previous, spec)
    status.update(health.fields)
    status["conditions"] = conditions.merge(
        previous.conditions, health.conditions, generation=generation, now=status["lastProbeTime"]
    )
    since = (
        None
        if memory is None or memory.written_at is None
        else time.monotonic() - memory.written_at
    )
    if target_health.status_due(body.get("status"), status, since_written_seconds=since):
        await access.runner.run(
            lambda: hub.patch_status_of(
                access.hub, PLURAL, namespace, name, status, timeout=access.timeout
            ),
            deadline=access.deadline,
        )
        if memory is not None:
            memory.written_at = time.monotonic()
    if memory is not None:
        memory.up = health.up
    metrics.TARGET_UP.labels(namespace, name, target_type).set(1 if health.up else 0)
    event = target_health.event(previous.conditions, health)
    if event is not None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        _LOG.info(
            "EdgeTarget %s/%s %s: %s",
            namespace,
            name,
            "up" if health.up else "down",
            event.message,
        )
    return interval


# --- Kopf handlers -------------------------------------------------------------------------------
@kopf.daemon(runtime.GROUP, runtime.VERSION, PLURAL, cancellation_timeout=30.0)
async def probe_periodically(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """Probe now, then every `spec.probeIntervalSeconds`, or at once after a spec change."""
    config: settings.Settings = memo["config"]
    access = runtime.access_for(config)
    key = (namespace or "", name or "")
    memory = ProbeMemory()
    try:
        while not stopped:
            started = time.monotonic()
            generation = body.meta.get("generation")
            try:
                interval = await probe_once(
                    body=body,
                    namespace=key[0],
                    name=key[1],
                    access=access,
                    agent_role=config.rollout.agent_cluster_role,
                    memory=memory,
                )
                metrics.RECONCILES.labels("EdgeTarget", "succeeded").inc()
            except Exception:
                metrics.RECONCILES.labels("EdgeTarget", "failed").inc()
                _LOG.exception("EdgeTarget %s/%s: probe failed", *key)
                interval = float(et.DEFAULT_PROBE_INTERVAL_SECONDS)
            finally:
                metrics.RECONCILE_DURATION.labels("EdgeTarget").observe(time.monotonic() - started)
            await runtime.sleep_or_wake(
                interval, stopped=stopped, body=body, seen_generation=generation
            )
    finally:
        if stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in (
            stopped.reason
        ):
            # The cached client stays: the deletion's cleanup (`edgetarget_cleanup`) may need it
            # once the kubeconfig Secret is gone, and forgets it when done.
            metrics.forget(*key, metrics.TARGET_UP)
