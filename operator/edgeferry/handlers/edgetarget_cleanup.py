"""Kopf wiring for deleting an EdgeTarget: remove what edgeferry put there, bounded in time.

Without this, deleting an EdgeTarget would strand the Deployments and Services rollouts wrote
there: no ModelDeployment would ever look at that place again. So the EdgeTarget carries Kopf's
finalizer, and its deletion lists what edgeferry manages in the target's namespace, lets
`decisions.target_cleanup` pick what belongs to ModelDeployments of the EdgeTarget's namespace,
and deletes exactly that. Rollouts stop writing to a target the moment its deletion is requested
(`runtime.TargetView.deleting`); because a write may still be in flight then, a pass that
removed something is followed by one more look, and only a pass that finds nothing releases.

It never hangs: a target that is unreachable, or whose kubeconfig Secret went first (a
`kubectl delete -f` of a file holding both), is retried with the last cached client until
`cleanup_deadline_seconds` after the deletion was requested; then the EdgeTarget is released and
a `CleanupIncomplete` Warning names what may be left where, with the command to remove it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
import pydantic
from kubernetes import client as k8s_client

from edgeferry import settings
from edgeferry.adapters import clusters, hub, target_releases, target_workloads
from edgeferry.decisions import rollout_types as rt
from edgeferry.decisions import same_place, target_cleanup
from edgeferry.handlers import runtime
from edgeferry.models import conditions, timestamps
from edgeferry.models import edgetarget as et
from edgeferry.models import modeldeployment as md
from edgeferry.models import target_release as tr

GROUP = runtime.GROUP
VERSION = runtime.VERSION
PLURAL = "edgetargets"

RETRY_SECONDS = 10.0
"""How soon an unreachable target is tried again (capped by the time left to the deadline)."""
CONFIRM_SECONDS = 3.0
"""How long after a pass that removed something the next look comes (a rollout's last write)."""

_LOG = logging.getLogger("edgeferry.edgetarget")
_MAX_EVENT_MESSAGE = 1000


@dataclasses.dataclass(frozen=True)
class _Pass:
    """One pass at the target: what was removed, and what was kept for a sibling EdgeTarget."""

    removed: list[str]
    kept: list[str]


def _deployments_blocking(
    api: k8s_client.ApiClient, namespace: str, *, timeout: float
) -> dict[str, md.LabelSelector | None]:
    """The namespace's ModelDeployments by name, with their selector (None if unparsable)."""
    items = hub.list_objects(api, "modeldeployments", namespace, timeout=timeout)
    found: dict[str, md.LabelSelector | None] = {}
    for item in items:
        try:
            spec = md.parse_spec(item.get("spec") or {})
        except pydantic.ValidationError:
            found[item["metadata"]["name"]] = None
        else:
            found[item["metadata"]["name"]] = spec.targets.selector
    return found


def _siblings(
    views: list[runtime.TargetView], *, name: str, place: same_place.Place
) -> list[Mapping[str, str]]:
    """Labels of the other live EdgeTargets of the namespace that may stand for the same
    place (a cluster not identified yet counts as maybe: keeping is the cautious side)."""
    return [
        v.labels
        for v in views
        if v.name != name
        and not v.deleting
        and v.spec is not None
        and same_place.may_share(same_place.of(v.spec, v.status), place)
    ]


def _waited(body: kopf.Body) -> float:
    """Seconds since the deletion was requested (the deadline counts from there, across
    restarts of the operator)."""
    now = datetime.datetime.now(datetime.UTC)
    requested = timestamps.parse_rfc3339(body.meta.get("deletionTimestamp"))
    if requested is None:
        return 0.0
    return (now - requested).total_seconds()


async def _report_pending(
    body: kopf.Body,
    access: clusters.Access,
    namespace: str,
    name: str,
    message: str,
    conds: Iterable[conditions.Condition],
) -> None:
    """Say on the EdgeTarget why its deletion is still waiting."""
    try:
        previous = et.parse_status(body.get("status")).conditions
    except pydantic.ValidationError:
        previous = ()
    now = timestamps.format_rfc3339(datetime.datetime.now(datetime.UTC))
    merged = conditions.merge(
        previous,
        conds,
        generation=body.meta.get("generation"),
        now=now,
    )
    status = {"message": message, "conditions": merged}
    await access.runner.run(
        lambda: hub.patch_status_of(
            access.hub, PLURAL, namespace, name, status, timeout=access.timeout
        ),
        deadline=access.deadline,
    )


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def remove_target_workloads(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Remove the namespace's model workloads at this target, then let the EdgeTarget go."""
    views: kopf.Index[str, runtime.TargetView] = kwargs["edgetargets_by_namespace"]
    config: settings.Settings = memo["config"]
    access = runtime.access_for(config)
    ns, et_name = namespace or "", name or ""
    try:
        spec = et.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError:
        _LOG.info("EdgeTarget %s/%s: invalid spec, nothing was ever written there", ns, et_name)
        access.clients.forget(ns, et_name)
        return
    if spec.type == "Agent":
        # Pull mode: nothing at the site is ours to reach; the agent namespace (releases,
        # credential) goes, and the site keeps what runs until its admin removes the agent.
        where = tr.hub_namespace(ns, et_name)
        await access.runner.run(
            lambda: target_releases.delete_agent_namespace(
                access.hub, where, target_label=f"{ns}.{et_name}", timeout=access.timeout
            ),
            deadline=access.deadline,
        )
        _LOG.info("EdgeTarget %s/%s: agent namespace %s deleted; releasing", ns, et_name, where)
        return
    try:
        status = et.parse_status(body.get("status"))
    except pydantic.ValidationError:
        status = et.EdgeTargetStatus()
    place = same_place.of(spec, status)
    siblings = _siblings(list(views.get(ns, [])), name=et_name, place=place)
    deployments: dict[str, md.LabelSelector | None] = {}

    def blocking() -> _Pass:
        deployments.update(_deployments_blocking(access.hub, ns, timeout=access.timeout))
        api = access.clients.for_target(ns, et_name, spec, keep_cached=True)
        try:
            found = target_workloads.list_managed(
                api, namespace=spec.namespace, timeout=access.timeout
            )
            verdict = target_cleanup.decide(
                found, namespace=ns, deployments=deployments, siblings=siblings
            )
            removed = target_workloads.delete_found(
                api, verdict.remove, namespace=spec.namespace, timeout=access.timeout
            )
        except Exception as exc:
            raise clusters.classify(
                exc, target=f"EdgeTarget {et_name}", server=clusters.server_of(api)
            ) from exc
        return _Pass(removed, [f.ref for f in verdict.kept_for_siblings])

    deadline = config.rollout.cleanup_deadline_seconds
    where = target_cleanup.place(spec, et_name)
    removed: list[str] = []
    try:
        while True:
            done = await access.runner.run(blocking, deadline=access.deadline * 2)
            removed += [ref for ref in done.removed if ref not in removed]
            if not done.removed or _waited(body) >= deadline:
                break
            await asyncio.sleep(CONFIRM_SECONDS)  # a rollout's last write may still land
    except (TimeoutError, clusters.TargetAccessError) as exc:
        _post(body, target_cleanup.pass_events(removed, [], where))
        if isinstance(exc, clusters.TargetAccessError):
            cause = exc.message
        else:
            cause = f"EdgeTarget {et_name}: no answer within {access.deadline * 2:.0f}s"
        left = deadline - _waited(body)
        waiting = target_cleanup.pending(where, cause=cause, left_seconds=left)
        if waiting is not None:
            message, conds = waiting
            await _report_pending(body, access, ns, et_name, message, conds)
            raise kopf.TemporaryError(message, delay=min(RETRY_SECONDS, max(1.0, left))) from exc
        gave_up = target_cleanup.left_behind(
            namespace=ns,
            spec=spec,
            labels=dict(body.meta.get("labels") or {}),
            deployments=deployments,
            deadline_seconds=deadline,
            cause=cause,
        )
        _post(body, [gave_up])
        access.clients.forget(ns, et_name)
        return
    _post(body, target_cleanup.pass_events(removed, done.kept, where))
    _LOG.info("EdgeTarget %s/%s: nothing of ours left in %s; releasing", ns, et_name, where)
    access.clients.forget(ns, et_name)


def _post(body: kopf.Body, events: Iterable[rt.Event]) -> None:
    for event in events:
        kopf.event(
            body, type=event.type, reason=event.reason, message=event.message[:_MAX_EVENT_MESSAGE]
        )
