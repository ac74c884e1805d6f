"""Kopf wiring for ModelDeployment: observe every selected target, plan, apply, report.

The reconcile is thin on purpose: `waves.next_actions` decides everything (what to write where,
each target's phase, the deployment's phase, events); `rollout_round` carries out one round,
and this module wires it to Kopf: the indexes, the daemon, and deletion.

Shape, and why:

- **One daemon per ModelDeployment** is the only place that reconciles it, so two reconciles
  never race on the same targets. It sleeps until the plan's next deadline (soak over, progress
  deadline, offline grace), `requeue_seconds` while a rollout moves, or `resync_seconds` when
  settled (`watch_resync_seconds` when every target it selects is watched). Pods at remote
  clusters cause no event on the hub, so each selected push target is watched
  (`adapters.target_watch`, one watch pair per EdgeTarget however many rollouts select it): a
  change there wakes only the rollout it belongs to (`decisions.target_watch.woken`). It is
  also woken by what causes hub events: a spec change
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
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
import pydantic

from edgeferry import metrics, settings
from edgeferry.adapters import clusters, target_releases, target_watch, target_workloads
from edgeferry.decisions import (
    agent_release,
    deployment_cleanup,
    rollout_image,
)
from edgeferry.decisions import rollout_types as rt
from edgeferry.decisions import target_watch as watch_decisions
from edgeferry.handlers import rollout_round, runtime
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons, timestamps
from edgeferry.models import target_release as tr

GROUP = runtime.GROUP
VERSION = runtime.VERSION
PLURAL = "modeldeployments"
KIND = "ModelDeployment"

RETRY_SECONDS = 10.0
"""How soon a reconcile that failed as a whole is tried again."""
CLEANUP_RETRY_SECONDS = 10.0

_LOG = logging.getLogger("edgeferry.modeldeployment")
_MAX_EVENT_MESSAGE = 1000


# --- indexes, and waking the daemons -------------------------------------------------------------
@dataclasses.dataclass
class _Loop:
    """A running daemon: what it deploys, the event that wakes it, and the event loop it runs
    in (indexers run in Kopf's worker threads, so they set `wake` through that loop)."""

    image: str
    runs_in: asyncio.AbstractEventLoop
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    changed: set[str] = dataclasses.field(default_factory=set)
    """Targets whose watch reported a change since the last round (set in the loop's thread)."""
    woken: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    """EdgeTargets whose indexer woke the daemon since it last waited for the index."""
    releases: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    """TargetReleases whose indexer woke the daemon since it last waited for the index."""

    def woken_by_release(self, release: tuple[str, str]) -> None:
        """Wake for a change of one of our TargetReleases (runs in `runs_in`)."""
        self.releases.add(release)
        self.wake.set()

    def woken_by(self, target: tuple[str, str] | None) -> None:
        """Wake, remembering the EdgeTarget whose change did it (runs in `runs_in`)."""
        if target is not None:
            self.woken.add(target)
        self.wake.set()


_loops: dict[tuple[str, str], _Loop] = {}
_seen_targets: dict[tuple[str, str], tuple[object, ...]] = {}
_seen_images: dict[tuple[str, str], rt.Image] = {}
_seen_releases: dict[tuple[str, str], dict[str, Any]] = {}


_TARGET_ROUND_SECONDS = 0.5
"""At most one round per this long when woken by target watches (a rollout's writes make a
burst of Deployment and Pod events: they are read in one round, not one round each)."""
_INDEX_SETTLE_SECONDS = 2.0
"""How long a woken daemon waits at most for Kopf to store what the indexer that woke it saw."""


def _wake(
    namespace: str, *, image: str | None = None, target: tuple[str, str] | None = None
) -> None:
    """Wake the namespace's daemons (those of `image` only, when given), saying which
    EdgeTarget's change woke them, if one did; thread-safe."""
    for (ns, _), loop in list(_loops.items()):
        if ns == namespace and (image is None or loop.image == image):
            loop.runs_in.call_soon_threadsafe(loop.woken_by, target)


def _targets_stored(
    views: Iterable[runtime.TargetView], wanted: Mapping[str, tuple[object, ...]]
) -> bool:
    """Whether `views` (an index's entry for a namespace) hold each wanted EdgeTarget, by
    name, with the fingerprint its indexer last saw."""
    stored = {view.name: view.fingerprint() for view in views}
    return all(stored.get(name) == fingerprint for name, fingerprint in wanted.items())


def _first(store: Iterable[Any] | None) -> Any:
    return next(iter(store), None) if store is not None else None


async def _index_caught_up(
    images: kopf.Index[tuple[str, str], rt.Image],
    key: tuple[str, str],
    edgetargets: kopf.Index[str, runtime.TargetView],
    targets: Iterable[tuple[str, str]] = (),
    releases: tuple[kopf.Index[tuple[str, str], dict[str, Any]], Iterable[tuple[str, str]]]
    | None = None,
) -> None:
    """Wait (briefly) until the indexes hold what the indexers that woke us last saw: the
    ModelImage `key`, the EdgeTargets `targets` and the TargetReleases `releases` names.

    Kopf stores an indexer's result only after the indexer returns, and the indexer is what
    wakes us: reconciling at once could read the image as it was (still admitted), or a
    target with its old labels (still selected), and the change would then wait for the next
    resync.
    """
    wanted: dict[str, dict[str, tuple[object, ...]]] = {}
    for namespace, name in targets:
        if (fingerprint := _seen_targets.get((namespace, name))) is not None:
            wanted.setdefault(namespace, {})[name] = fingerprint
    index, names = releases if releases is not None else ({}, ())
    release_wanted = {n: _seen_releases[n] for n in names if n in _seen_releases}
    deadline = time.monotonic() + _INDEX_SETTLE_SECONDS
    while time.monotonic() < deadline:
        if (
            _first(images.get(key)) == _seen_images.get(key)
            and all(
                _targets_stored(edgetargets.get(namespace, []), names)
                for namespace, names in wanted.items()
            )
            and all(_first(index.get(n)) == seen for n, seen in release_wanted.items())
        ):
            return
        await asyncio.sleep(0.05)


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
        _wake(key[0], target=key)
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


@kopf.index(tr.GROUP, tr.VERSION, tr.PLURAL)
def targetreleases_by_name(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each TargetRelease, as much of it as the rollout reads (`agent_release.release_view`),
    by (namespace, name): Agent targets are read from here, not from the hub each round, and a
    change (the agent's report) wakes the ModelDeployment it carries."""
    key = (namespace or "", name or "")
    view = agent_release.release_view(body)
    if _seen_releases.get(key) != view:
        _seen_releases[key] = view
        owner = (body.get("spec") or {}).get("modelDeployment") or {}
        loop = _loops.get((str(owner.get("namespace")), str(owner.get("name"))))
        if loop is not None:
            loop.runs_in.call_soon_threadsafe(loop.woken_by_release, key)
    return {key: view}


# --- watches at targets -------------------------------------------------------------------------
class _WatchListener:
    """Turns what the target watches report into wake-ups (`decisions.target_watch.woken`)
    and metrics. Called in the event loop the daemons run in."""

    def __init__(self) -> None:
        self.open: set[tuple[object, str]] = set()

    def _wake_for(self, where: watch_decisions.Where, owner: str | None) -> None:
        interested = [key for key, places in _wanted.items() if where in places]
        for key in watch_decisions.woken(where.target, owner, interested):
            loop = _loops.get(key)
            if loop is not None:
                loop.changed.add(where.target[1])
                loop.wake.set()

    def changed(self, key: object, owner: str | None) -> None:
        assert isinstance(key, watch_decisions.Where)
        self._wake_for(key, owner)

    def resync(self, key: object) -> None:
        assert isinstance(key, watch_decisions.Where)
        self._wake_for(key, None)

    def connection(self, key: object, resource: str, *, up: bool, reason: str | None) -> None:
        if up and (key, resource) not in self.open:
            self.open.add((key, resource))
            metrics.TARGET_WATCHES.inc()
        elif not up and (key, resource) in self.open:
            self.open.discard((key, resource))
            metrics.TARGET_WATCHES.dec()
            if reason is not None:  # lost, not stopped: it reconnects
                metrics.TARGET_WATCH_RECONNECTS.labels(reason).inc()


_wanted: dict[tuple[str, str], set[watch_decisions.Where]] = {}
"""Per running ModelDeployment, the places its last round selected (and wants watched)."""
_watches: target_watch.Watches | None = None
_watch_specs: dict[watch_decisions.Where, runtime.TargetView] = {}
_closed = threading.Event()
"""Set when the operator stops (Kopf's cleanup): no watch is opened after that."""


def _watched(where: watch_decisions.Where) -> bool:
    return _watches is not None and _watches.is_up(where)


async def _sync_watches(access: clusters.Access, *, create: bool = True) -> None:
    """Start and stop watches so that every selected push target is watched, once
    (`create`: start the process' watches if there are none yet; not while stopping)."""
    global _watches  # noqa: PLW0603 (one set of watches per operator process)
    if _watches is None:
        if not create or _closed.is_set():
            return
        _watches = target_watch.Watches(_WatchListener())
    todo = watch_decisions.changes(_wanted, _watches.keys())
    for where in todo.stop:
        _watch_specs.pop(where, None)
        await _watches.stop(where)
    for where in todo.start:
        _watches.start(where, namespace=where.namespace, connect=_connector(access, where))


def _connector(access: clusters.Access, where: watch_decisions.Where) -> target_watch.Connect:
    async def connect() -> Any:
        view = _watch_specs[where]
        spec = view.spec
        assert spec is not None
        return await access.runner.run(
            lambda: access.clients.for_target(where.target[0], view.name, spec),
            deadline=access.deadline,
        )

    return connect


@kopf.on.cleanup()
async def close_watches(**_: Any) -> None:
    """Operator stop: close every target watch (no task or connection outlives Kopf)."""
    global _watches  # noqa: PLW0603
    _closed.set()  # a daemon still finishing its round must not open new ones
    if _watches is not None:
        await _watches.close()
        _watches = None
    _wanted.clear()
    _watch_specs.clear()


def _clear_metrics(namespace: str, name: str) -> None:
    """Drop every series of a deleted ModelDeployment, so dashboards do not show ghosts."""
    metrics.forget(
        namespace,
        name,
        metrics.ROLLOUT_TARGETS,
        metrics.ROLLOUT_WAVE,
        metrics.ROLLOUT_DEGRADED,
        metrics.ROLLOUT_STALLED,
        metrics.ROLLOUT_BLOCKED_TARGETS,
        metrics.ROLLBACKS,
        metrics.TIME_TO_READY,
    )


def _want_watches(key: tuple[str, str], selected: list[runtime.TargetView]) -> None:
    places: set[watch_decisions.Where] = set()
    for view in selected:
        where = rollout_round.watch_place(key[0], view)
        if where is not None:
            places.add(where)
            _watch_specs[where] = view
    _wanted[key] = places


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
    release_index: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["targetreleases_by_name"]
    config: settings.Settings = memo["config"]
    access = runtime.access_for(config)
    key = (namespace or "", name or "")

    def release(where: str, release_name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = _first(release_index.get((where, release_name)))
        return found

    # Kopf watches TargetReleases where it watches everything: all namespaces, or the served
    # ones only (agent namespaces are not among them), when releases are read from the hub.
    releases = release if not config.namespaces else None
    try:
        recorded = md.parse_status(body.get("status"))
    except pydantic.ValidationError:
        recorded = md.ModelDeploymentStatus()
    memory = rollout_round.Memory(recorded=recorded, measured=recorded.analysis)
    loop = _loops.setdefault(
        key,
        _Loop(
            image=str(body.get("spec", {}).get("imageRef", {}).get("name", "")),
            runs_in=asyncio.get_running_loop(),
        ),
    )
    try:
        while not stopped:
            generation = body.meta.get("generation")
            changed, loop.changed = frozenset(loop.changed), set()
            loop.image = str(body.get("spec", {}).get("imageRef", {}).get("name", ""))
            started = time.monotonic()
            try:
                targets = list(edgetargets.get(key[0], []))
                reconciler = rollout_round.Reconciler(
                    body=body,
                    namespace=key[0],
                    name=key[1],
                    config=config,
                    access=access,
                    targets=targets,
                    images=images,
                    memory=memory,
                    watched=_watched,
                    changed=changed,
                    releases=releases,
                )
                delay = await reconciler.run()
                if config.rollout.watch_targets:
                    _want_watches(key, reconciler.selected)
                    await _sync_watches(access)
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
            await runtime.sleep_or_wake(
                delay, stopped=stopped, body=body, wake=loop.wake, seen_generation=generation
            )
            if loop.wake.is_set():
                # Cleared before the wait, not at the next round: a wake during the wait or
                # the round is kept, and ends the next sleep at once.
                loop.wake.clear()
                woken, loop.woken = frozenset(loop.woken), set()
                from_releases, loop.releases = frozenset(loop.releases), set()
                await _index_caught_up(
                    images,
                    (key[0], loop.image),
                    edgetargets,
                    woken,
                    releases=(release_index, from_releases),
                )
            else:
                from_releases = frozenset()
            if (loop.changed or from_releases) and not stopped:  # events come in bursts (agents
                # report in bursts too): one round for a burst
                await asyncio.sleep(max(0.0, started + _TARGET_ROUND_SECONDS - time.monotonic()))
    finally:
        if _loops.get(key) is loop:
            del _loops[key]
            if _wanted.pop(key, None) is not None:
                await _sync_watches(access, create=False)


async def _remove_release(
    access: clusters.Access, target: str, namespace: str, name: str
) -> list[str] | str:
    """Delete this ModelDeployment's TargetRelease of an Agent target (what was removed, or
    why not)."""
    where, release = tr.hub_namespace(namespace, target), tr.release_name(namespace, name)
    try:
        deleted = await access.runner.run(
            lambda: target_releases.delete_release(
                access.hub, where, release, timeout=access.timeout
            ),
            deadline=access.deadline,
        )
    except Exception as exc:
        return f"{target}: cannot delete TargetRelease {where}/{release} on the hub: {exc}"
    return [f"TargetRelease/{release}"] if deleted else []


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
        if spec.type == "Agent":  # pull mode: the agent removes it at the site
            return view.name, await _remove_release(access, view.name, ns, md_name)
        try:
            removed: list[str] = await rollout_round.at_target(
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
    now = datetime.datetime.now(datetime.UTC)
    requested = timestamps.parse_rfc3339(body.meta.get("deletionTimestamp")) or now
    outcome = deployment_cleanup.after_pass(
        {n: r for n, r in results if isinstance(r, list)},
        {n: r for n, r in results if isinstance(r, str)},
        namespace=ns,
        name=md_name,
        waited_seconds=(now - requested).total_seconds(),
        deadline_seconds=config.rollout.cleanup_deadline_seconds,
        retry_seconds=CLEANUP_RETRY_SECONDS,
    )
    for event in outcome.events:
        kopf.event(
            body, type=event.type, reason=event.reason, message=event.message[:_MAX_EVENT_MESSAGE]
        )
    if outcome.retry_after_seconds is not None:
        raise kopf.TemporaryError(outcome.retry_message, delay=outcome.retry_after_seconds)
    _clear_metrics(ns, md_name)
