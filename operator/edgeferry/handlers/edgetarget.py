"""Kopf wiring for EdgeTarget: probe each target on its own interval and report what was found.

One daemon per EdgeTarget rather than a fixed-interval timer, because the interval is the user's
(`spec.probeIntervalSeconds`, 5 s to an hour) and a daemon can simply sleep that long; it wakes
within a second when the spec changes (a new Secret name, a new node selector), so a fix shows
up in the status at once, not an interval later. Creation and operator restarts start the
daemon, which probes first and sleeps after.

A probe is two reads at the target (`/version`, nodes) with the rollout's per-request timeout, so
a dead site costs at most that. What it finds goes to `.status` (reachable, version, ready/total
nodes, their architectures, last probe time, a message and the `Ready`/`Reconciling`/`Stalled`
conditions), to the `edgeferry_target_up` metric, and, when `Ready` flips, to a `TargetUp` or
`TargetDown` event. An unreachable target keeps its last known version and architectures: the
rollout needs them to decide compatibility the moment the site is back.

Problems a person must fix (a missing Secret, a refused kubeconfig, credentials the site rejects)
set `Stalled`; an unreachable site does not, since it may come back on its own.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

import kopf
import pydantic

from edgeferry import metrics, settings
from edgeferry.adapters import clusters, hub, target_workloads
from edgeferry.models import conditions
from edgeferry.models import edgetarget as et

GROUP = "edgeferry.io"
VERSION = "v1alpha1"
PLURAL = "edgetargets"

_LOG = logging.getLogger("edgeferry.edgetarget")
_MAX_EVENT_MESSAGE = 1000

_POLL_SECONDS = 1.0


def access_for(config: settings.Settings) -> clusters.Access:
    """The process-wide clients and thread pool for talking to targets."""
    return clusters.shared(
        timeout=config.rollout.target_timeout_seconds,
        max_parallel=config.rollout.max_parallel_targets,
        allow_insecure_tls=config.rollout.allow_insecure_target_tls,
    )


async def sleep_or_wake(
    seconds: float,
    *,
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    wake: asyncio.Event | None = None,
) -> None:
    """Sleep `seconds`, ending early when the daemon stops, `wake` is set or the spec changes.

    The spec change is seen on the daemon's live body (Kopf keeps it current from its watch),
    checked every `_POLL_SECONDS`: cheaper and quieter than an event handler per watch event.
    """
    generation = body.meta.get("generation")
    deadline = time.monotonic() + max(0.0, seconds)
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopped.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        while (left := deadline - time.monotonic()) > 0:
            done, _ = await asyncio.wait(
                waits, timeout=min(left, _POLL_SECONDS), return_when=asyncio.FIRST_COMPLETED
            )
            if done or body.meta.get("generation") != generation:
                return
    finally:
        for waiter in waits:
            waiter.cancel()


# --- one probe -----------------------------------------------------------------------------------
def _stamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _healthy_status(
    result: target_workloads.ProbeResult, *, spec: et.EdgeTargetSpec
) -> tuple[list[conditions.Condition], str, bool]:
    """Conditions, message and up-ness for a probe that reached the target."""
    arches = ", ".join(result.architectures) or "none"
    if result.total_nodes == 0:
        where = (
            f"matches cloud.nodeSelector {dict(spec.placement.node_selector)} and tolerates "
            "its taints"
            if spec.type == "Cloud"
            else "accepts ordinary Pods (every node is tainted NoSchedule/NoExecute)"
        )
        message = (
            f"reachable (Kubernetes {result.kubernetes_version}) but no node {where}; models "
            "cannot run here. Check the node labels and taints (`kubectl get nodes "
            "--show-labels`) or the EdgeTarget's placement."
        )
        ready = conditions.Condition("Ready", "False", "NoUsableNodes", message)
        return (
            [ready, conditions.Condition("Stalled", "True", "NoUsableNodes", message)],
            message,
            False,
        )
    if result.ready_nodes == 0:
        message = (
            f"reachable (Kubernetes {result.kubernetes_version}) but none of its "
            f"{result.total_nodes} usable nodes is Ready; models wait until one is. Check the "
            "nodes there (`kubectl get nodes`)."
        )
        ready = conditions.Condition("Ready", "False", "NoReadyNodes", message)
        return [ready, conditions.Condition("Stalled", "False", "NotStalled", "")], message, False
    message = (
        f"{result.ready_nodes}/{result.total_nodes} usable nodes Ready ({arches}), "
        f"Kubernetes {result.kubernetes_version}"
    )
    ready = conditions.Condition("Ready", "True", "TargetReachable", message)
    return [ready, conditions.Condition("Stalled", "False", "NotStalled", "")], message, True


def _failed_status(error: clusters.TargetAccessError) -> tuple[list[conditions.Condition], str]:
    """Conditions and message for a probe that could not reach (or use) the target."""
    if isinstance(error, clusters.Unreachable):
        message = (
            f"{error.message}. Check the site's network link and the server address in the "
            "kubeconfig; rollouts defer this target and catch it up when it is back."
        )
        stalled = conditions.Condition("Stalled", "False", "NotStalled", "")
    else:
        message = f"{error.message}. Rollouts skip this target until it is fixed."
        stalled = conditions.Condition("Stalled", "True", error.reason, message)
    return [conditions.Condition("Ready", "False", error.reason, message), stalled], message


def _probe_blocking(
    access: clusters.Access, namespace: str, name: str, spec: et.EdgeTargetSpec
) -> target_workloads.ProbeResult:
    api = access.clients.for_target(namespace, name, spec)
    try:
        return target_workloads.probe(api, placement=spec.placement, timeout=access.timeout)
    except Exception as exc:
        raise clusters.classify(
            exc, target=f"EdgeTarget {name}", server=clusters.server_of(api)
        ) from exc


async def probe_once(
    *, body: kopf.Body, namespace: str, name: str, access: clusters.Access
) -> float:
    """Probe the target, write its status, metric and events; return seconds until the next."""
    now = datetime.datetime.now(datetime.UTC)
    previous = et.parse_status(body.get("status"))
    generation = body.meta.get("generation")
    status: dict[str, Any] = {"lastProbeTime": _stamp(now), "observedGeneration": generation}
    interval = float(et.DEFAULT_PROBE_INTERVAL_SECONDS)
    target_type = str(body.get("spec", {}).get("type", "unknown"))
    up = False
    try:
        spec = et.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError as exc:
        message = (
            f"the spec is not valid ({exc.error_count()} errors, first: "
            f"{exc.errors()[0]['msg']}); fix it, `kubectl explain edgetarget.spec` lists the "
            "fields"
        )
        conds = [
            conditions.Condition("Ready", "False", "InvalidSpec", message),
            conditions.Condition("Stalled", "True", "InvalidSpec", message),
        ]
        status.update(reachable=False, message=message)
    else:
        interval = float(spec.probe_interval_seconds)
        try:
            result = await access.runner.run(
                lambda: _probe_blocking(access, namespace, name, spec), deadline=access.deadline
            )
        except (TimeoutError, clusters.TargetAccessError) as exc:
            error = (
                exc
                if isinstance(exc, clusters.TargetAccessError)
                else clusters.Unreachable(
                    f"EdgeTarget {name}: no answer within {access.deadline:.0f}s"
                )
            )
            conds, message = _failed_status(error)
            status.update(
                reachable=False,
                message=message,
                readyNodes=0,
                nodes=f"0/{previous.total_nodes or 0}",
            )
        else:
            conds, message, up = _healthy_status(result, spec=spec)
            probed = et.EdgeTargetStatus(
                reachable=True,
                kubernetes_version=result.kubernetes_version,
                ready_nodes=result.ready_nodes,
                total_nodes=result.total_nodes,
                architectures=result.architectures,
                message=message,
            )
            status.update(probed.to_status())
    conds.append(conditions.Condition("Reconciling", "False", "Probed", "the last probe finished"))
    status["conditions"] = conditions.merge(
        previous.conditions, conds, generation=generation, now=status["lastProbeTime"]
    )
    await access.runner.run(
        lambda: hub.patch_status_of(
            access.hub, PLURAL, namespace, name, status, timeout=access.timeout
        ),
        deadline=access.deadline,
    )
    metrics.TARGET_UP.labels(namespace, name, target_type).set(1 if up else 0)
    was = conditions.find(previous.conditions, "Ready")
    was_up = was is not None and was.get("status") == "True"
    if was is None or was_up != up:
        text = str(status["message"])[:_MAX_EVENT_MESSAGE]
        if up:
            kopf.event(body, type="Normal", reason="TargetUp", message=text)
        else:
            kopf.event(body, type="Warning", reason="TargetDown", message=text)
        _LOG.info("EdgeTarget %s/%s %s: %s", namespace, name, "up" if up else "down", text)
    return interval


# --- Kopf handlers -------------------------------------------------------------------------------
@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=30.0)
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
    access = access_for(config)
    key = (namespace or "", name or "")
    try:
        while not stopped:
            started = time.monotonic()
            try:
                interval = await probe_once(body=body, namespace=key[0], name=key[1], access=access)
                metrics.RECONCILES.labels("EdgeTarget", "succeeded").inc()
            except Exception:
                metrics.RECONCILES.labels("EdgeTarget", "failed").inc()
                _LOG.exception("EdgeTarget %s/%s: probe failed", *key)
                interval = float(et.DEFAULT_PROBE_INTERVAL_SECONDS)
            finally:
                metrics.RECONCILE_DURATION.labels("EdgeTarget").observe(time.monotonic() - started)
            await sleep_or_wake(interval, stopped=stopped, body=body)
    finally:
        if stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in (
            stopped.reason
        ):
            # The cached client stays: the deletion's cleanup (`edgetarget_cleanup`) may need it
            # once the kubeconfig Secret is gone, and forgets it when done.
            for labels in list(metrics.TARGET_UP._metrics):
                if labels[:2] == key:
                    metrics.TARGET_UP.remove(*labels)
