"""Kopf wiring for ModelDeployment: observe every selected target, plan, apply, report.

The reconcile is thin on purpose: `waves.next_actions` decides everything (what to write where,
each target's phase, the deployment's phase, events); this module only gathers what it needs
and carries out the plan.

Shape, and why:

- **One daemon per ModelDeployment** is the only place that reconciles it, so two reconciles
  never race on the same targets. It sleeps until the plan's next deadline (soak over, progress
  deadline, offline grace), `requeue_seconds` while a rollout moves, or `resync_seconds` when
  settled: Pods at remote clusters cause no event on the hub, so a crash at a site, or a hand
  edit there, is only seen by looking. It is woken by what does cause hub events: a spec change
  (seen on its live body within a second), a change of the referenced ModelImage's admission or
  digest, and an EdgeTarget's labels, reachability or architectures (both noticed by the indexes
  below, which Kopf calls quietly on every watch event).
- **EdgeTargets and ModelImages come from Kopf indexes**, in-memory views kept current by the
  watches Kopf runs anyway: a reconcile reads no hub objects, and the reachability the probes
  wrote is right there. A target whose last probe found it unreachable is not contacted (the
  probe will notice it coming back and wake us), so a dead site does not slow every reconcile.
- **Fan-out is concurrent and bounded**: observations and writes go through a semaphore of
  `max_parallel_targets` and a shared thread pool, every request has the per-target timeout and
  every operation a deadline; one slow or dead target never holds up the others beyond that.
- **Status is the summary, not the memory.** The per-target memory is on each target's
  Deployment (`edgeferry.io/` annotations); the status written here (`rollout_status.build`) is
  also what the next reconcile passes back as `recorded`, kept in the daemon between rounds.
  Only the status subresource is written, never `spec`.
- **Targets that stop matching the selector are released**: our workload there is deleted
  once (remembered per daemon, so an operator restart re-checks them once).
- **Deletion** removes our workloads at every EdgeTarget of the namespace (not only the selected
  ones: any of them may hold leftovers) and retries unreachable ones until
  `cleanup_deadline_seconds` after the deletion was requested; then it lets the object go and
  names, in a Warning event, the targets where workloads were left behind.
- **An EdgeTarget being deleted is no longer a target**: its own finalizer removes what is there
  (`edgetarget_cleanup`), so rollouts neither write to it nor release it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
import pydantic

from edgeferry import metrics, settings
from edgeferry.adapters import clusters, target_workloads
from edgeferry.adapters import hub as hub_adapter
from edgeferry.decisions import rollout_image, rollout_status, waves, workload, workload_health
from edgeferry.decisions import rollout_types as rt
from edgeferry.handlers import runtime
from edgeferry.models import conditions, reasons, target_objects, timestamps
from edgeferry.models import modeldeployment as md

GROUP = runtime.GROUP
VERSION = runtime.VERSION
PLURAL = "modeldeployments"
KIND = "ModelDeployment"

RETRY_SECONDS = 10.0
"""How soon a reconcile that failed as a whole is tried again."""
CLEANUP_RETRY_SECONDS = 10.0

_LOG = logging.getLogger("edgeferry.modeldeployment")
_MAX_EVENT_MESSAGE = 1000
_STATUS_KEYS = frozenset(
    [f.alias or n for n, f in md.ModelDeploymentStatus.model_fields.items()]
    + [f.alias or n for n, f in md.ModelDeploymentStatus.model_computed_fields.items()]
)


# --- indexes, and waking the daemons -------------------------------------------------------------
@dataclasses.dataclass
class _Loop:
    """A running daemon: what it deploys, and the event that wakes it."""

    image: str
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


_loops: dict[tuple[str, str], _Loop] = {}
_seen_targets: dict[tuple[str, str], tuple[object, ...]] = {}
_seen_images: dict[tuple[str, str], rt.Image] = {}


def _wake(namespace: str, *, image: str | None = None) -> None:
    for (ns, _), loop in _loops.items():
        if ns == namespace and (image is None or loop.image == image):
            loop.wake.set()


@kopf.index(GROUP, VERSION, "edgetargets")
def edgetargets_by_namespace(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> dict[str, runtime.TargetView]:
    """EdgeTargets per namespace: the candidates a ModelDeployment's selector picks from.

    Kopf calls indexers on every watch event, before handlers and without logging each call; so
    this is also where a change that matters to rollouts (labels, reachability, architectures)
    wakes the namespace's daemons.
    """
    key = (namespace or "", name or "")
    view = runtime.target_view(body)
    if _seen_targets.get(key) != (fingerprint := view.fingerprint()):
        _seen_targets[key] = fingerprint
        _wake(key[0])
    return {key[0]: view}


@kopf.index(GROUP, VERSION, "modelimages")
def modelimages_by_name(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], rt.Image]:
    """Each ModelImage's admission, by (namespace, name); a change wakes its deployments."""
    key = (namespace or "", name or "")
    image = rollout_image.from_body(key[1], body)
    if _seen_images.get(key) != image:
        _seen_images[key] = image
        _wake(key[0], image=key[1])
    return {key: image}


# --- one reconcile -------------------------------------------------------------------------------
@dataclasses.dataclass
class _Memory:
    """What the daemon keeps between reconciles (all of it can be lost: it is rebuilt)."""

    recorded: md.ModelDeploymentStatus
    written: dict[str, Any] | None = None
    first_failure: dict[str, datetime.datetime] = dataclasses.field(default_factory=dict)
    """When a target that its EdgeTarget still calls reachable first failed to answer us."""
    released: set[str] = dataclasses.field(default_factory=set)
    """Unselected targets known to hold nothing of ours."""


@dataclasses.dataclass
class _Seen:
    """One selected target in this reconcile."""

    view: runtime.TargetView
    state: rt.TargetState
    observation: workload_health.Observation | None = None
    error: str | None = None
    """Why it could not be observed (or written), in words."""


async def _at_target(
    access: clusters.Access,
    gate: asyncio.Semaphore,
    *,
    namespace: str,
    view: runtime.TargetView,
    work: Any,
    label: str,
) -> Any:
    """Run `work(api)` against a target, bounded by `gate` and the access deadline; raise
    TargetAccessError (named `label` in its message) on any failure."""
    spec = view.spec
    assert spec is not None

    def blocking() -> Any:
        api = access.clients.for_target(namespace, view.name, spec)
        try:
            return work(api)
        except Exception as exc:
            raise clusters.classify(exc, target=label, server=clusters.server_of(api)) from exc

    async with gate:
        try:
            return await access.runner.run(blocking, deadline=access.deadline)
        except TimeoutError as exc:
            raise clusters.Unreachable(f"{label}: no answer within {access.deadline:.0f}s") from exc


class Reconciler:
    """Everything one reconcile of one ModelDeployment needs, and its steps."""

    def __init__(
        self,
        *,
        body: kopf.Body,
        namespace: str,
        name: str,
        config: settings.Settings,
        access: clusters.Access,
        targets: Iterable[runtime.TargetView],
        images: kopf.Index[tuple[str, str], rt.Image],
        memory: _Memory,
    ) -> None:
        self.body = body
        self.namespace = namespace
        self.name = name
        self.config = config
        self.access = access
        self.targets = sorted(targets, key=lambda t: t.name)
        self.images = images
        self.memory = memory
        self.now = datetime.datetime.now(datetime.UTC)
        self.generation = int(body.meta.get("generation") or 0)
        self.gate = asyncio.Semaphore(max(1, config.rollout.max_parallel_targets))

    def event(self, type_: str, reason: str, message: str) -> None:
        kopf.event(self.body, type=type_, reason=reason, message=message[:_MAX_EVENT_MESSAGE])

    async def _at_target(self, view: runtime.TargetView, work: Any, what: str) -> Any:
        """Run `work(api)` against a target; raise TargetAccessError on any failure."""
        return await _at_target(
            self.access,
            self.gate,
            namespace=self.namespace,
            view=view,
            work=work,
            label=f"{view.name}: {what}",
        )

    # --- observe ---------------------------------------------------------------------------------
    async def observe(self, view: runtime.TargetView) -> _Seen:
        """The TargetState of one selected target (never raises)."""
        spec = view.spec
        cluster_type: md.ClusterType = spec.type if spec is not None else "Cloud"
        base = rt.TargetState(
            name=view.name,
            cluster_type=cluster_type,
            architectures=view.status.architectures,
            size_budget_bytes=spec.image_size_budget_bytes if spec is not None else None,
        )
        if spec is None:
            return _Seen(
                view,
                dataclasses.replace(base, reachable=False),
                error="the EdgeTarget's spec is invalid; see its status",
            )
        if view.status.reachable is False:
            ready = view.ready or {}
            since = timestamps.parse_rfc3339(ready.get("lastTransitionTime"))
            self.memory.first_failure.pop(view.name, None)
            return _Seen(
                view,
                dataclasses.replace(base, reachable=False, unreachable_since=since),
                error=view.status.message or "unreachable at its last probe",
            )
        try:
            reading: target_workloads.Reading = await self._at_target(
                view,
                lambda api: target_workloads.observe(
                    api,
                    namespace=spec.namespace,
                    md_namespace=self.namespace,
                    md_name=self.name,
                    timeout=self.access.timeout,
                ),
                "observe",
            )
        except clusters.TargetAccessError as exc:
            since = self.memory.first_failure.setdefault(view.name, self.now)
            return _Seen(
                view,
                dataclasses.replace(base, reachable=False, unreachable_since=since),
                error=exc.message,
            )
        self.memory.first_failure.pop(view.name, None)
        found = workload_health.assess(
            reading.deployment, reading.pods, md_namespace=self.namespace, md_name=self.name
        )
        never_probed = view.status.reachable is None
        state, problem = workload_health.state_of(
            base,
            found,
            namespace=spec.namespace,
            name=self.name,
            unreachable_since=view.created if never_probed else None,
        )
        return _Seen(view, state, found, problem)

    # --- apply -----------------------------------------------------------------------------------
    async def write(self, spec: md.ModelDeploymentSpec, seen: _Seen, change: rt.Write) -> None:
        """Render and apply one write; failures are recorded on `seen.error`."""
        target = seen.view.spec
        assert target is not None
        try:
            rendered = workload.render(
                namespace=self.namespace,
                name=self.name,
                spec=spec,
                target=target,
                record=change.record,
            )
        except ValueError as exc:
            seen.error = f"cannot render the workload: {exc}"
            return
        creating = seen.observation is None or not seen.observation.exists
        try:
            await self._at_target(
                seen.view,
                lambda api: target_workloads.apply(
                    api,
                    rendered,
                    md_namespace=self.namespace,
                    md_name=self.name,
                    timeout=self.access.timeout,
                    creating=creating,
                ),
                f"apply ({change.reason})",
            )
        except clusters.TargetAccessError as exc:
            seen.error = f"{exc.message}; retried on the next reconcile"
        except target_workloads.ForeignObjectError as exc:
            seen.error = str(exc)
        else:
            if change.reason == "rollback":
                metrics.ROLLBACKS.labels(self.namespace, self.name).inc()

    # --- release ---------------------------------------------------------------------------------
    async def release(self, view: runtime.TargetView) -> None:
        """Remove our workload from a target the selector no longer picks (once)."""
        spec = view.spec
        if spec is None or view.status.reachable is False:
            return
        try:
            removed: list[str] = await self._at_target(
                view,
                lambda api: target_workloads.remove(
                    api,
                    namespace=spec.namespace,
                    md_namespace=self.namespace,
                    md_name=self.name,
                    timeout=self.access.timeout,
                ),
                "remove",
            )
        except clusters.TargetAccessError as exc:
            _LOG.info(
                "%s/%s: release of %s deferred: %s", self.namespace, self.name, view.name, exc
            )
            return
        self.memory.released.add(view.name)
        if removed:
            self.event(
                "Normal",
                reasons.TARGET_RELEASED,
                f"{view.name} no longer matches targets.selector: removed "
                f"{', '.join(removed)} from namespace {spec.namespace} there",
            )

    # --- the whole round -------------------------------------------------------------------------
    async def run(self) -> float:
        """One reconcile; returns seconds until the next one is due."""
        try:
            spec = md.parse_spec(self.body.get("spec") or {})
        except pydantic.ValidationError as exc:
            await self._report_invalid(exc)
            return self.config.rollout.resync_seconds
        image = self.images.get((self.namespace, spec.image_ref.name))
        found = next(iter(image), None) if image is not None else None
        image_view = found or rollout_image.from_body(spec.image_ref.name, None)

        live = [t for t in self.targets if not t.deleting]
        selected = [t for t in live if spec.targets.selector.matches(t.labels)]
        others = [t for t in live if t not in selected]
        self.memory.released -= {t.name for t in selected}
        seen_list = await asyncio.gather(*(self.observe(t) for t in selected))
        seen = {s.view.name: s for s in seen_list}

        plan = waves.next_actions(
            [s.state for s in seen_list],
            image=image_view,
            rollout=spec.rollout,
            generation=self.generation,
            now=self.now,
            recorded=self.memory.recorded,
            template=workload.template_document(spec.template),
        )
        writes = [w for w in plan.writes if seen[w.target].observation is not None]
        await asyncio.gather(
            *(self.write(spec, seen[w.target], w) for w in writes),
            *(self.release(t) for t in others if t.name not in self.memory.released),
        )
        plan = waves.with_errors(
            plan,
            {name: s.error for name, s in seen.items() if s.error},
            reachable={name for name, s in seen.items() if s.state.reachable},
            recorded=self.memory.recorded,
        )
        await self._report(plan)
        return self._next_delay(plan, seen)

    def _next_delay(self, plan: rt.Plan, seen: Mapping[str, _Seen]) -> float:
        requeue = self.config.rollout.requeue_seconds
        moving = plan.phase == "Progressing" or any(
            s.error and s.state.reachable for s in seen.values()
        )
        delay = requeue if moving else self.config.rollout.resync_seconds
        if plan.recheck_after_seconds is not None:
            delay = min(delay, max(1.0, plan.recheck_after_seconds))
        return delay

    async def _report(self, plan: rt.Plan) -> None:
        """Status, events and metrics of one reconcile."""
        status = rollout_status.build(
            plan,
            generation=self.generation,
            existing_conditions=self.memory.recorded.conditions,
            now=self.now,
        )
        await self._write_status(status.to_status())
        self.memory.recorded = status

        for event in plan.events:
            self.event(event.type, event.reason, event.message)
        for outcome in plan.targets:
            record = outcome.record
            if outcome.became_ready and record is not None and record.started_at is not None:
                seconds = (self.now - record.started_at).total_seconds()
                metrics.TIME_TO_READY.labels(self.namespace, self.name).observe(seconds)
                _LOG.info(
                    "%s/%s: %s Ready %.1fs after %s was written",
                    self.namespace,
                    self.name,
                    outcome.name,
                    seconds,
                    record.digest,
                )

        labels = (self.namespace, self.name)
        for phase in md.TARGET_PHASES:
            count = status.counts.of(phase) if plan.phase != "Blocked" else 0
            metrics.ROLLOUT_TARGETS.labels(*labels, phase).set(count)
        blocked = status.counts.total if plan.phase == "Blocked" else 0
        metrics.ROLLOUT_TARGETS.labels(*labels, "Blocked").set(blocked)
        metrics.ROLLOUT_WAVE.labels(*labels).set(plan.current_wave)
        metrics.ROLLOUT_DEGRADED.labels(*labels).set(1 if plan.phase == "Degraded" else 0)
        stalled = conditions.is_true(status.conditions, "Stalled") or plan.phase == "Blocked"
        metrics.ROLLOUT_STALLED.labels(*labels).set(1 if stalled else 0)

    async def _report_invalid(self, exc: pydantic.ValidationError) -> None:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message, invalid = rollout_status.invalid_spec(where, first["msg"])
        conds = conditions.merge(
            self.memory.recorded.conditions,
            invalid,
            generation=self.generation,
            now=timestamps.format_rfc3339(self.now),
        )
        await self._write_status(
            {"observedGeneration": self.generation, "message": message, "conditions": conds}
        )
        if self.memory.recorded.message != message:
            self.event("Warning", reasons.INVALID_SPEC, message)
        self.memory.recorded = self.memory.recorded.model_copy(
            update={"message": message, "conditions": tuple(conds)}
        )

    async def _write_status(self, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource; keys we no longer set are removed (null)."""
        document = {key: None for key in _STATUS_KEYS} | status
        if document == self.memory.written:
            return
        hub, timeout = self.access.hub, self.access.timeout
        namespace, name = self.namespace, self.name

        def blocking() -> None:
            hub_adapter.patch_status_of(hub, PLURAL, namespace, name, document, timeout=timeout)

        await self.access.runner.run(blocking, deadline=self.access.deadline)
        self.memory.written = document


def _clear_metrics(namespace: str, name: str) -> None:
    """Drop every series of a deleted ModelDeployment, so dashboards do not show ghosts."""
    metrics.forget(
        namespace,
        name,
        metrics.ROLLOUT_TARGETS,
        metrics.ROLLOUT_WAVE,
        metrics.ROLLOUT_DEGRADED,
        metrics.ROLLOUT_STALLED,
        metrics.ROLLBACKS,
        metrics.TIME_TO_READY,
    )


# --- Kopf handlers -------------------------------------------------------------------------------
@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=60.0)
async def reconcile_continuously(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    """Reconcile now, then whenever woken or due, until the ModelDeployment goes away."""
    edgetargets: kopf.Index[str, runtime.TargetView] = kwargs["edgetargets_by_namespace"]
    images: kopf.Index[tuple[str, str], rt.Image] = kwargs["modelimages_by_name"]
    config: settings.Settings = memo["config"]
    access = runtime.access_for(config)
    key = (namespace or "", name or "")
    try:
        recorded = md.parse_status(body.get("status"))
    except pydantic.ValidationError:
        recorded = md.ModelDeploymentStatus()
    memory = _Memory(recorded=recorded)
    loop = _loops.setdefault(
        key, _Loop(image=str(body.get("spec", {}).get("imageRef", {}).get("name", "")))
    )
    try:
        while not stopped:
            loop.wake.clear()
            loop.image = str(body.get("spec", {}).get("imageRef", {}).get("name", ""))
            started = time.monotonic()
            try:
                reconciler = Reconciler(
                    body=body,
                    namespace=key[0],
                    name=key[1],
                    config=config,
                    access=access,
                    targets=list(edgetargets.get(key[0], [])),
                    images=images,
                    memory=memory,
                )
                delay = await reconciler.run()
                metrics.RECONCILES.labels(KIND, "succeeded").inc()
            except Exception as exc:
                metrics.RECONCILES.labels(KIND, "failed").inc()
                _LOG.exception("%s/%s: reconcile failed", *key)
                kopf.event(
                    body,
                    type="Warning",
                    reason=reasons.RECONCILE_ERROR,
                    message=f"{type(exc).__name__}: {exc}; retrying in {RETRY_SECONDS:.0f}s"[
                        :_MAX_EVENT_MESSAGE
                    ],
                )
                delay = RETRY_SECONDS
            finally:
                metrics.RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)
            await runtime.sleep_or_wake(delay, stopped=stopped, body=body, wake=loop.wake)
    finally:
        if _loops.get(key) is loop:
            del _loops[key]


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def remove_workloads(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Delete our workloads at every EdgeTarget of the namespace, bounded in time."""
    edgetargets: kopf.Index[str, runtime.TargetView] = kwargs["edgetargets_by_namespace"]
    config: settings.Settings = memo["config"]
    access = runtime.access_for(config)
    ns, md_name = namespace or "", name or ""
    views = [v for v in edgetargets.get(ns, []) if v.spec is not None]
    gate = asyncio.Semaphore(max(1, config.rollout.max_parallel_targets))

    async def one(view: runtime.TargetView) -> tuple[str, list[str] | str]:
        spec = view.spec
        assert spec is not None
        try:
            removed: list[str] = await _at_target(
                access,
                gate,
                namespace=ns,
                view=view,
                work=lambda api: target_workloads.remove(
                    api,
                    namespace=spec.namespace,
                    md_namespace=ns,
                    md_name=md_name,
                    timeout=access.timeout,
                ),
                label=view.name,
            )
        except clusters.TargetAccessError as exc:
            return view.name, exc.message
        return view.name, removed

    results = await asyncio.gather(*(one(v) for v in views))
    removed = {n: r for n, r in results if isinstance(r, list) and r}
    left = {n: r for n, r in results if isinstance(r, str)}
    if removed:
        where = "; ".join(f"{n}: {', '.join(r)}" for n, r in sorted(removed.items()))
        kopf.event(
            body,
            type="Normal",
            reason=reasons.WORKLOADS_REMOVED,
            message=f"removed at {len(removed)} target(s): {where}"[:_MAX_EVENT_MESSAGE],
        )
    if left:
        requested = timestamps.parse_rfc3339(
            body.meta.get("deletionTimestamp")
        ) or datetime.datetime.now(datetime.UTC)
        waited = (datetime.datetime.now(datetime.UTC) - requested).total_seconds()
        names = ", ".join(sorted(left))
        deadline = config.rollout.cleanup_deadline_seconds
        if waited < deadline:
            raise kopf.TemporaryError(
                f"could not reach {names} yet; retrying for {deadline - waited:.0f}s more",
                delay=min(CLEANUP_RETRY_SECONDS, max(1.0, deadline - waited)),
            )
        kopf.event(
            body,
            type="Warning",
            reason=reasons.CLEANUP_INCOMPLETE,
            message=(
                f"gave up after {deadline:.0f}s: workloads left behind at "
                f"{names}. Delete them there by hand: `kubectl delete deploy,svc -l "
                f"{target_objects.label_selector(ns, md_name)}` in each target's namespace. "
                "Causes: " + "; ".join(left[n] for n in sorted(left))
            )[:_MAX_EVENT_MESSAGE],
        )
    _clear_metrics(ns, md_name)
