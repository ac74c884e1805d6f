"""One reconcile of one ModelDeployment: observe the selected targets, plan, write, report.

Kept apart from the Kopf wiring (`modeldeployment`) so the steps of a round read top to
bottom: `observe` each selected target (never raising: an unreachable one is a fact for the
plan), `waves.next_actions` (again after `measure`, when it asked for analysis queries), the
writes and releases the plan asks for, then the pre-pull DaemonSets it asks for
(`decisions.prepull`), `waves.with_errors` for what went wrong while writing,
then one status patch, the plan's events and the metrics. Every
decision is in `decisions/`; this module only carries them out, bounded in time per target.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf
import pydantic

from edgeferry import metrics, settings
from edgeferry.adapters import clusters, prometheus, target_releases, target_workloads
from edgeferry.adapters import hub as hub_adapter
from edgeferry.decisions import (
    agent_release,
    analysis,
    mirror_copy,
    prepull,
    rollout_events,
    rollout_image,
    rollout_status,
    same_place,
    target_state,
    target_watch,
    waves,
    workload,
    workload_health,
)
from edgeferry.decisions import rollout_types as rt
from edgeferry.handlers import runtime
from edgeferry.models import conditions, reasons, target_objects, timestamps
from edgeferry.models import modeldeployment as md
from edgeferry.models import target_release as tr
from edgeferry.runners import mirror_copy as mirror_runner

PLURAL = "modeldeployments"

_LOG = logging.getLogger("edgeferry.modeldeployment")
_MAX_EVENT_MESSAGE = 1000
MIRROR_COPY_DEADLINE_SECONDS = 3600.0
"""Longest one copy to a registry mirror may take (each request also times out on its own, so
a mirror that stops answering fails in about 30 s): a big model over a thin link is slow, and
the ModelDeployment's reconcile waits for it."""
_COPIER = clusters.Runner(max_workers=2)
"""Copies run on threads of their own: a long copy must not hold a thread that target API
calls wait for (their deadline would pass in the queue, and the target look unreachable)."""
_STATUS_KEYS = frozenset(
    [f.alias or n for n, f in md.ModelDeploymentStatus.model_fields.items()]
    + [f.alias or n for n, f in md.ModelDeploymentStatus.model_computed_fields.items()]
)


@dataclasses.dataclass
class Memory:
    """What the daemon keeps between reconciles (all of it can be lost: it is rebuilt)."""

    recorded: md.ModelDeploymentStatus
    written: dict[str, Any] | None = None
    first_failure: dict[str, datetime.datetime] = dataclasses.field(default_factory=dict)
    """When a target that its EdgeTarget still calls reachable first failed to answer us."""
    released: set[str] = dataclasses.field(default_factory=set)
    """Unselected targets known to hold nothing of ours."""
    measured: tuple[md.AnalysisTally, ...] = ()
    """Analysis tallies of the release being rolled out, as last written to status (a
    restarted daemon starts from `status.analysis`)."""
    mirror_failing_since: dict[str, datetime.datetime] = dataclasses.field(default_factory=dict)
    """When the copy to a target's registry mirror first failed (it counts as unreachable)."""
    readings: dict[str, tuple[target_watch.Where, workload_health.Observation]] = dataclasses.field(
        default_factory=dict
    )
    """What the last look at each watched push target found (the assessed facts, not the
    objects: small), and where: while its watch is up and quiet, it stands in for a new look
    (`decisions.target_watch.reuse_reading`)."""
    full_at: float = -math.inf
    """When (monotonic) a round last looked at every target."""
    release_generations: dict[str, int] = dataclasses.field(default_factory=dict)
    """Per Agent target, the generation of its TargetRelease after our last write: an index
    entry older than that has not seen the write yet, so the release is read from the hub."""


ReleaseIndex = Callable[[str, str], Mapping[str, Any] | None]
"""A TargetRelease (namespace, name) as the operator's watch of them last saw it (None: none)."""


@dataclasses.dataclass
class _Seen:
    """One selected target in this reconcile."""

    view: runtime.TargetView
    state: rt.TargetState
    observation: workload_health.Observation | None = None
    error: str | None = None
    """Why it could not be observed (or written), in words."""


async def at_target(
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


def watch_place(namespace: str, view: runtime.TargetView) -> target_watch.Where | None:
    """What a watch of this target follows; None for a target that is not watched (Agent
    targets report through the hub; a spec that does not parse)."""
    spec = view.spec
    if spec is None or spec.type == "Agent":
        return None
    secret = spec.k3s.kubeconfig_secret_ref.name if spec.type == "K3s" and spec.k3s else ""
    return target_watch.Where(
        target=(namespace, view.name), namespace=spec.namespace, kind=spec.type, secret=secret
    )


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
        memory: Memory,
        watched: Callable[[target_watch.Where], bool] = lambda _: False,
        changed: frozenset[str] = frozenset(),
        releases: ReleaseIndex | None = None,
    ) -> None:
        """`watched`: whether the watch of a place is up; `changed`: the targets whose watch
        reported a change (or a resync) since the last round; `releases`: the TargetReleases
        as watched on the hub (None: each is read from the hub every round)."""
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
        self.watched = watched
        self.changed = changed
        self.releases = releases
        self.since_full = time.monotonic() - memory.full_at
        self.full = self.since_full >= config.rollout.watch_resync_seconds
        self.reused = 0
        """Targets whose last reading stood in for a look this round."""
        self.selected: list[runtime.TargetView] = []
        """The live targets this round's selector picked (set by `run`)."""

    def event(self, type_: str, reason: str, message: str) -> None:
        kopf.event(self.body, type=type_, reason=reason, message=message[:_MAX_EVENT_MESSAGE])

    async def _at_target(self, view: runtime.TargetView, work: Any, what: str) -> Any:
        """Run `work(api)` against a target; raise TargetAccessError on any failure."""
        return await at_target(
            self.access,
            self.gate,
            namespace=self.namespace,
            view=view,
            work=work,
            label=f"{view.name}: {what}",
        )

    async def _ours_at(self, view: runtime.TargetView, call: Any, what: str) -> Any:
        """`call` (observe, remove) for this ModelDeployment's workload at one target."""
        spec = view.spec
        assert spec is not None
        return await self._at_target(
            view,
            lambda api: call(
                api,
                namespace=spec.namespace,
                md_namespace=self.namespace,
                md_name=self.name,
                timeout=self.access.timeout,
            ),
            what,
        )

    # --- observe ---------------------------------------------------------------------------------
    async def observe(self, view: runtime.TargetView, *, prepulls: bool = False) -> _Seen:
        """The TargetState of one selected target (never raises); `prepulls`: the rollout
        pre-pulls, so our pre-pull DaemonSet there is read too."""
        spec = view.spec
        base = target_state.from_edgetarget(view.name, spec, view.status)
        skipped = target_state.not_contacted(base, spec, view.status)
        if skipped is not None or spec is None:
            if spec is not None:  # unreachable at its last probe: the probe watches it now
                self.memory.first_failure.pop(view.name, None)
            state, error = skipped or (base, None)
            return _Seen(view, state, error=error)
        if spec.type == "Agent":
            return await self._observe_release(view, base)
        where = watch_place(self.namespace, view)
        cached = self.memory.readings.get(view.name)
        watched = where is not None and self.watched(where)
        reuse = (
            where is not None
            and target_watch.reuse_reading(
                watched=watched,
                changed=view.name in self.changed,
                have_reading=cached is not None and cached[0] == where,
                since_full_seconds=self.since_full,
                full_after_seconds=self.config.rollout.watch_resync_seconds,
            )
            and view.name not in self.memory.first_failure
            and not prepulls  # a pre-pull's DaemonSet and its Pods are not watched: look
        )
        pulling: prepull.Observed | None = None
        try:
            if reuse and cached is not None:
                found = cached[1]
                self.reused += 1
            else:
                self.memory.readings.pop(view.name, None)
                reading: target_workloads.Reading = await self._ours_at(
                    view, functools.partial(target_workloads.observe, prepull=prepulls), "observe"
                )
                pulling = prepull.observe(reading.prepull, reading.prepull_pods)
                found = workload_health.assess(
                    reading.deployment, reading.pods, md_namespace=self.namespace, md_name=self.name
                )
                if where is not None and watched:  # else a change before the watch opened
                    self.memory.readings[view.name] = (where, found)  # could go unheard
        except clusters.TargetAccessError as exc:
            since = self.memory.first_failure.setdefault(view.name, self.now)
            state, error = target_state.unanswered(base, since=since, error=exc.message)
            return _Seen(view, state, error=error)
        self.memory.first_failure.pop(view.name, None)
        never_probed = view.status.reachable is None
        state, problem = target_state.answered(
            base,
            found,
            namespace=spec.namespace,
            name=self.name,
            unreachable_since=view.created if never_probed else None,
        )
        if pulling is not None:
            state = dataclasses.replace(state, prepull=pulling)
        return _Seen(view, state, found, problem)

    async def _at_hub(self, work: Any, what: str) -> Any:
        """Run `work(hub_api)` for a pull-mode target, bounded like a target request."""
        async with self.gate:
            try:
                return await self.access.runner.run(
                    lambda: work(self.access.hub), deadline=self.access.deadline
                )
            except TimeoutError as exc:
                raise clusters.Unreachable(f"hub: {what}: no answer") from exc

    def _release_ref(self, view: runtime.TargetView) -> tuple[str, str]:
        """Where this ModelDeployment's TargetRelease for an Agent target lives on the hub."""
        return (
            tr.hub_namespace(self.namespace, view.name),
            tr.release_name(self.namespace, self.name),
        )

    def _indexed_release(
        self, view: runtime.TargetView, where: str, name: str
    ) -> tuple[bool, Mapping[str, Any] | None]:
        """(True, the release) when the watch's copy has seen our last write of it, else
        (False, None): then it is read from the hub."""
        if self.releases is None:
            return False, None
        found = self.releases(where, name)
        written = self.memory.release_generations.get(view.name)
        if written is None:
            return True, found
        generation = int((found or {}).get("metadata", {}).get("generation") or 0)
        if generation < written:
            return False, None
        del self.memory.release_generations[view.name]
        return True, found

    def _wrote_release(self, view: runtime.TargetView, generation: int | None) -> None:
        if generation is not None:
            self.memory.release_generations[view.name] = generation

    async def _observe_release(self, view: runtime.TargetView, base: rt.TargetState) -> _Seen:
        """An Agent target: what its agent reported in our TargetRelease (never the site);
        whether the site is online is its EdgeTarget's (the agent's Lease)."""
        where, name = self._release_ref(view)
        indexed, found = self._indexed_release(view, where, name)
        try:
            if not indexed:
                found = await self._at_hub(
                    lambda api: target_releases.read_release(
                        api, where, name, timeout=self.access.timeout
                    ),
                    f"read TargetRelease {where}/{name}",
                )
        except Exception as exc:  # the hub itself did not answer: like a silent push target
            since = self.memory.first_failure.setdefault(view.name, self.now)
            state, error = target_state.unanswered(base, since=since, error=str(exc))
            return _Seen(view, state, error=error)
        self.memory.first_failure.pop(view.name, None)
        seen = agent_release.observed(found)
        assert seen.observation is not None
        spec = view.spec
        assert spec is not None
        state, problem = target_state.answered(
            base,
            seen.observation,
            namespace=spec.namespace,
            name=self.name,
            unreachable_since=view.created if view.status.reachable is None else None,
        )
        try:
            pulling = agent_release.prepull_observed(found)
        except pydantic.ValidationError as exc:  # a hand-edited spec: asked again from scratch
            seen_error = f"TargetRelease {where}/{name} does not parse: {exc.errors()[0]['msg']}"
            return _Seen(view, state, seen.observation, problem or seen.error or seen_error)
        state = dataclasses.replace(state, prepull=pulling)
        return _Seen(view, state, seen.observation, problem or seen.error)

    async def _write_release(self, seen: _Seen, change: rt.Write, rendered: Any) -> None:
        """An Agent target's write: the rendered workload into its TargetRelease's spec."""
        where, name = self._release_ref(seen.view)
        target = seen.view.spec
        assert target is not None
        assert change.record is not None
        spec = tr.TargetReleaseSpec(
            model_deployment=tr.DeploymentRef(namespace=self.namespace, name=self.name),
            namespace=target.namespace,
            reason=change.reason,
            digest=change.record.digest,
            deployment=rendered.deployment,
            service=rendered.service,
        )
        labels = {
            tr.DEPLOYMENT_LABEL: target_objects.owner_label(self.namespace, self.name),
        }
        try:
            generation = await self._at_hub(
                lambda api: target_releases.write_release(
                    api, where, name, labels=labels, spec=spec, timeout=self.access.timeout
                ),
                f"write TargetRelease {where}/{name}",
            )
        except Exception as exc:
            seen.error = f"cannot write TargetRelease {where}/{name}: {exc}; retried"
            return
        self._wrote_release(seen.view, generation)
        if change.reason == "rollback":
            metrics.ROLLBACKS.labels(self.namespace, self.name).inc()

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
        if target.type == "Agent":
            await self._write_release(seen, change, rendered)
            return
        creating = seen.observation is None or not seen.observation.exists
        self.memory.readings.pop(seen.view.name, None)  # what we write, the next round reads
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
                    create_namespace=target.type != "Cloud",
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

    # --- pre-pull --------------------------------------------------------------------------------
    async def pre_pull(self, spec: md.ModelDeploymentSpec, seen: _Seen, step: rt.PrePull) -> None:
        """Apply, mark failed or delete one target's pre-pull DaemonSet (at an Agent target: ask
        its agent, in the TargetRelease); a delete after this round's switch waits when that
        write failed (the next round writes again)."""
        target = seen.view.spec
        assert target is not None
        if step.action == "delete" and seen.error:
            return
        if target.type == "Agent":
            await self._prepull_release(spec, seen, step)
            return
        if step.action == "delete":
            work: Any = functools.partial(
                target_workloads.delete_prepull,
                namespace=target.namespace,
                md_namespace=self.namespace,
                md_name=self.name,
                timeout=self.access.timeout,
            )
        else:
            try:
                rendered = workload.render(
                    namespace=self.namespace,
                    name=self.name,
                    spec=spec,
                    target=target,
                    record=step.record,
                )
            except ValueError as exc:
                seen.error = f"cannot render the pre-pull: {exc}"
                return
            daemonset = prepull.render(
                rendered.deployment,
                md_namespace=self.namespace,
                md_name=self.name,
                digest=step.record.digest,
                generation=self.generation,
                failed=step.error if step.action == "mark-failed" else None,
            )
            apply = functools.partial(
                target_workloads.apply_prepull,
                md_namespace=self.namespace,
                md_name=self.name,
                timeout=self.access.timeout,
            )
            if step.action == "mark-failed":
                work = functools.partial(apply, daemonset=daemonset)
            else:
                work = functools.partial(
                    self._bounded_prepull,
                    apply,
                    daemonset=daemonset,
                    deployment=rendered.deployment,
                    seen=seen.state.prepull,
                    bound=spec.rollout.pre_pull.max_concurrent_nodes,
                )
        try:
            await self._at_target(seen.view, work, f"pre-pull ({step.action})")
        except clusters.TargetAccessError as exc:
            seen.error = f"{exc.message}; retried on the next reconcile"
        except target_workloads.ForeignObjectError as exc:
            seen.error = str(exc)

    async def _prepull_release(
        self, spec: md.ModelDeploymentSpec, seen: _Seen, step: rt.PrePull
    ) -> None:
        """An Agent target's pre-pull: set (or clear) its TargetRelease's `spec.prePull`; the
        agent narrows the DaemonSet to its nodes and reports back (`agent_release`)."""
        where, name = self._release_ref(seen.view)
        target = seen.view.spec
        assert target is not None
        work: Any = functools.partial(
            target_releases.clear_prepull, namespace=where, name=name, timeout=self.access.timeout
        )
        if step.action != "delete":
            try:
                rendered = workload.render(
                    namespace=self.namespace,
                    name=self.name,
                    spec=spec,
                    target=target,
                    record=step.record,
                )
            except ValueError as exc:
                seen.error = f"cannot render the pre-pull: {exc}"
                return
            failed = (step.error or "the pre-pull failed") if step.action == "mark-failed" else None
            daemonset = prepull.render(
                rendered.deployment,
                md_namespace=self.namespace,
                md_name=self.name,
                digest=step.record.digest,
                generation=self.generation,
                failed=failed,
            )
            intent = agent_release.prepull_intent(
                daemonset,
                digest=step.record.digest,
                generation=self.generation,
                bound=spec.rollout.pre_pull.max_concurrent_nodes,
                asked=seen.state.prepull,
                now=self.now,
                failed=failed,
            )
            work = functools.partial(
                target_releases.write_prepull,
                namespace=where,
                name=name,
                intent=intent,
                timeout=self.access.timeout,
            )
        try:
            generation = await self._at_hub(
                work, f"pre-pull ({step.action}) in TargetRelease {where}/{name}"
            )
        except Exception as exc:
            seen.error = f"cannot ask for the pre-pull in TargetRelease {where}/{name}: {exc}"
        else:
            self._wrote_release(seen.view, generation)

    def _bounded_prepull(
        self,
        apply: Callable[..., object],
        api: Any,
        *,
        daemonset: Mapping[str, Any],
        deployment: Mapping[str, Any],
        seen: prepull.Observed | None,
        bound: int,
    ) -> None:
        """Read the target's nodes, admit the next ones up to `bound`, apply (one target call)."""
        pod = deployment["spec"]["template"]["spec"]
        found = target_workloads.list_nodes(
            api, labels=pod.get("nodeSelector") or {}, timeout=self.access.timeout
        )
        eligible = prepull.eligible(found, deployment)
        apply(api, daemonset=prepull.advance(daemonset, seen, eligible=eligible, bound=bound))

    # --- analysis --------------------------------------------------------------------------------
    async def measure(self, queries: Iterable[analysis.Query]) -> tuple[analysis.Measurement, ...]:
        """Send each due analysis query to Prometheus (bounded like target calls); a query
        that fails or gives no number is an inconclusive measurement, never an exception."""
        conn = prometheus.Connection.from_settings(self.config.analysis)

        async def one(query: analysis.Query) -> analysis.Measurement:
            value: float | None = None
            if conn is None:
                error: str | None = "no Prometheus is configured (EDGEFERRY_PROMETHEUS_URL)"
            else:
                try:
                    async with self.gate:
                        value = await self.access.runner.run(
                            lambda: prometheus.query(conn, query.promql),
                            deadline=conn.timeout_seconds + 5,
                        )
                    error = None if value is not None else "no sample (or NaN)"
                except prometheus.QueryError as exc:
                    error = str(exc)
                except TimeoutError:
                    error = f"Prometheus gave no answer within {conn.timeout_seconds:.0f}s"
            _LOG.info(
                "%s/%s: %s analysis %s = %s%s",
                self.namespace,
                self.name,
                query.target,
                query.metric,
                value,
                f" ({error})" if error else "",
            )
            return analysis.Measurement(
                target=query.target,
                metric=query.metric,
                promql=query.promql,
                digest=query.digest,
                template_hash=query.template_hash,
                at=self.now,
                value=value,
                error=error,
            )

        return tuple(await asyncio.gather(*(one(q) for q in queries)))

    # --- copy to registry mirrors ----------------------------------------------------------------
    async def copy_to_mirrors(
        self, plan: rt.Plan, seen: Mapping[str, _Seen], image: rt.Image
    ) -> dict[str, str]:
        """Copy the digest this round writes to the registry mirrors of those targets, one copy
        at a time; a target whose copy failed is marked unreachable (since its first failure)
        on `seen`. Returns target -> what failed."""
        mirrors = {
            name: mirror_copy.Mirror(
                s.view.spec.registry_mirror, s.view.spec.registry_mirror_credentials_secret
            )
            for name, s in seen.items()
            if s.view.spec is not None and s.view.spec.registry_mirror
        }
        failed: dict[str, str] = {}
        pulls = [
            rt.Write(p.target, "rollout", p.record) for p in plan.prepulls if p.action == "apply"
        ]
        observed = [w for w in (*plan.writes, *pulls) if seen[w.target].observation is not None]
        for copy in mirror_copy.copies_for(observed, mirrors):
            try:
                report: mirror_copy.Report = await _COPIER.run(
                    functools.partial(
                        mirror_runner.copy_with_secrets,
                        copy,
                        namespace=self.namespace,
                        source_secret=image.credentials_secret,
                        insecure=self.config.build.insecure_registries,
                        workdir=self.config.build.workdir / "mirror-copies",
                    ),
                    deadline=MIRROR_COPY_DEADLINE_SECONDS,
                )
            except TimeoutError:
                why = f"not done within {MIRROR_COPY_DEADLINE_SECONDS:.0f}s"
                failed |= dict.fromkeys(copy.targets, mirror_copy.failure_message(copy, why))
            except Exception as exc:  # registry, Secret, anything: the target waits, never breaks
                failed |= dict.fromkeys(copy.targets, mirror_copy.failure_message(copy, str(exc)))
            else:
                if not report.already_there:
                    message = mirror_copy.copied_message(copy, report)
                    self.event(
                        "Normal", reasons.MIRROR_COPIED, f"{', '.join(copy.targets)}: {message}"
                    )
        for name, s in seen.items():
            if name not in failed:
                self.memory.mirror_failing_since.pop(name, None)
                continue
            since = self.memory.mirror_failing_since.setdefault(name, self.now)
            s.state, s.error = target_state.unanswered(s.state, since=since, error=failed[name])
        return failed

    # --- release ---------------------------------------------------------------------------------
    async def release(
        self, view: runtime.TargetView, selected: list[tuple[str, same_place.Place]]
    ) -> None:
        """Remove our workload from a target the selector no longer picks (once), unless a
        selected target may be in the same place: then that workload is the selected one's."""
        spec = view.spec
        if spec is not None and spec.type == "Agent":
            await self._release_agent(view)
            return
        if spec is None or view.status.reachable is False:
            return
        keeper = same_place.held_by(same_place.of(spec, view.status), selected)
        if keeper is not None:
            _LOG.debug(
                "%s/%s: %s not released: %s may be the same place",
                self.namespace,
                self.name,
                view.name,
                keeper,
            )
            return
        try:
            removed: list[str] = await self._ours_at(view, target_workloads.remove, "remove")
        except clusters.TargetAccessError as exc:
            _LOG.info(
                "%s/%s: release of %s deferred: %s", self.namespace, self.name, view.name, exc
            )
            return
        self.memory.released.add(view.name)
        for event in rollout_events.released(view.name, removed, namespace=spec.namespace):
            self.event(event.type, event.reason, event.message)

    async def _release_agent(self, view: runtime.TargetView) -> None:
        """An Agent target no longer selected: delete our TargetRelease; its agent then
        removes the workload at the site (whenever it next reaches the hub)."""
        where, name = self._release_ref(view)
        try:
            deleted = await self._at_hub(
                lambda api: target_releases.delete_release(
                    api, where, name, timeout=self.access.timeout
                ),
                f"delete TargetRelease {where}/{name}",
            )
        except Exception as exc:
            _LOG.info(
                "%s/%s: release of %s deferred: %s", self.namespace, self.name, view.name, exc
            )
            return
        self.memory.released.add(view.name)
        removed = [f"TargetRelease/{name}"] if deleted else []
        for event in rollout_events.released(view.name, removed, namespace=f"{where} (hub)"):
            self.event(event.type, event.reason, event.message)

    # --- the whole round -------------------------------------------------------------------------
    async def run(self) -> float:
        """One reconcile; returns seconds until the next one is due."""
        if self.full:
            self.memory.full_at = time.monotonic()
            self.since_full = 0.0
            self.memory.readings.clear()  # the safety resync: look at every target again
        try:
            spec = md.parse_spec(self.body.get("spec") or {})
        except pydantic.ValidationError as exc:
            await self._report_invalid(exc)
            return self.config.rollout.resync_seconds
        image = self.images.get((self.namespace, spec.image_ref.name))
        found = next(iter(image), None) if image is not None else None
        image_view = found or rollout_image.from_body(spec.image_ref.name, None)
        namespace_images = [
            view
            for key in list(self.images)
            if key[0] == self.namespace
            for view in self.images.get(key) or ()
        ]

        live = [t for t in self.targets if not t.deleting]
        selected = [t for t in live if spec.targets.selector.matches(t.labels)]
        self.selected = selected
        others = [t for t in live if t not in selected]
        self.memory.released -= {t.name for t in selected}
        placed = [(t.name, same_place.of(t.spec, t.status)) for t in selected if t.spec]
        taken = same_place.collisions(placed)
        prepulls = spec.rollout.pre_pull.enabled
        seen_list = await asyncio.gather(
            *(self.observe(t, prepulls=prepulls) for t in selected if t.name not in taken)
        )
        seen = {s.view.name: s for s in seen_list}

        def planned() -> rt.Plan:
            return waves.next_actions(
                [s.state for s in seen_list],
                image=image_view,
                rollout=spec.rollout,
                generation=self.generation,
                now=self.now,
                recorded=self.memory.recorded,
                template=workload.template_document(spec.template),
                name=self.name,
                measured=self.memory.measured,
                on_blocked=spec.on_blocked,
                images=namespace_images,
            )

        plan = planned()
        if plan.queries:  # measure what is due, then decide with the new values
            values = await self.measure(plan.queries)
            self.memory.measured = analysis.add(self.memory.measured, values, spec.rollout.analysis)
            plan = planned()
        self.memory.measured = plan.analysis
        copy_failed = await self.copy_to_mirrors(plan, seen, image_view)
        if copy_failed:
            plan = planned()
        writes = [w for w in plan.writes if seen[w.target].observation is not None]
        await asyncio.gather(
            *(self.write(spec, seen[w.target], w) for w in writes),
            *(self.release(t, placed) for t in others if t.name not in self.memory.released),
        )
        await asyncio.gather(
            *(
                self.pre_pull(spec, seen[p.target], p)
                for p in plan.prepulls
                if seen[p.target].observation is not None
            )
        )
        plan = waves.with_errors(
            plan,
            {name: s.error for name, s in seen.items() if s.error},
            reachable={name for name, s in seen.items() if s.state.reachable},
            recorded=self.memory.recorded,
        )
        plan = same_place.with_collisions(
            plan, taken, dict(placed), now=self.now, recorded=self.memory.recorded
        )
        failure_events = mirror_copy.failure_events(copy_failed, self.memory.recorded)
        plan = dataclasses.replace(plan, events=plan.events + failure_events)
        await self._report(plan)
        return self._next_delay(plan, seen)

    def _next_delay(self, plan: rt.Plan, seen: Mapping[str, _Seen]) -> float:
        requeue = self.config.rollout.requeue_seconds
        moving = plan.phase == "Progressing" or any(
            s.error and s.state.reachable for s in seen.values()
        )
        if moving:
            delay = requeue
        else:
            delay = target_watch.settled_delay(
                all_watched=all(
                    self._watched(s.view)
                    for s in seen.values()
                    if s.view.status.reachable is not False
                ),
                resync_seconds=self.config.rollout.resync_seconds,
                watch_resync_seconds=self.config.rollout.watch_resync_seconds,
            )
        if plan.recheck_after_seconds is not None:
            delay = min(delay, max(1.0, plan.recheck_after_seconds))
        return delay

    def _watched(self, view: runtime.TargetView) -> bool:
        """Whether a change at this target wakes us: its watch is up (push), or the release
        watch on the hub covers it (Agent)."""
        if view.spec is not None and view.spec.type == "Agent":
            return self.releases is not None
        where = watch_place(self.namespace, view)
        return where is not None and self.watched(where)

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
        shown = rollout_status.gauges(plan, status)
        for phase, count in shown.targets.items():
            metrics.ROLLOUT_TARGETS.labels(*labels, phase).set(count)
        metrics.ROLLOUT_WAVE.labels(*labels).set(shown.wave)
        metrics.ROLLOUT_DEGRADED.labels(*labels).set(1 if shown.degraded else 0)
        metrics.ROLLOUT_STALLED.labels(*labels).set(1 if shown.stalled else 0)
        metrics.ROLLOUT_BLOCKED_TARGETS.labels(*labels).set(shown.running_blocked)

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
