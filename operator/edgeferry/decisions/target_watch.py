"""What a watch at a target cluster means for rollouts: whom to wake, which watches to keep,
when a cached look at a target may stand in for a new one, and how long a settled rollout sleeps.

Pods at remote clusters send the hub no events, so a push-mode rollout used to look at every
target of every ModelDeployment at every resync: 200 settled targets cost a quarter of a core.
With one watch per EdgeTarget (its namespace, edgeferry's label) the operator hears about every
change of our Deployments and Pods there, and these pure functions turn that into decisions:

- `woken`: an event names the owning ModelDeployment in a label (`edgeferry.io/deployment`);
  only that ModelDeployment's reconcile is woken, only for that target. An event without the
  label (it should not happen with our selector) or a resync after a reconnect wakes every
  ModelDeployment that watches the target.
- `changes`: which watches to start and stop, from what every running reconcile selected.
- `reuse_reading`: a target whose watch has been up since the last look, and which sent
  nothing since, has not changed: its last reading stands in for a new request. A full look at
  every target still happens each `full_after_seconds` (the safety resync), and always while a
  watch is down.
- `settled_delay`: a settled rollout whose every target is watched sleeps the long safety
  resync; one with an unwatched target (an Agent target, a watch that is down) keeps polling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from edgeferry.models import target_objects

DeploymentKey = tuple[str, str]
"""A ModelDeployment: (namespace, name)."""
TargetKey = tuple[str, str]
"""An EdgeTarget: (namespace, name); its ModelDeployments live in the same namespace."""


@dataclasses.dataclass(frozen=True)
class Where:
    """What one watch follows: an EdgeTarget's cluster (its credentials) and namespace there.

    When any of it changes (a re-pointed EdgeTarget), the watch is replaced."""

    target: TargetKey
    namespace: str
    """The namespace at the target cluster (the EdgeTarget's `spec.namespace`)."""
    kind: str
    """`K3s` (the kubeconfig Secret's cluster) or `Cloud` (the hub)."""
    secret: str = ""
    """The kubeconfig Secret's name, for K3s targets."""


def woken(
    target: TargetKey,
    owner: str | None,
    interested: Iterable[DeploymentKey],
) -> set[DeploymentKey]:
    """The ModelDeployments to wake for one event at `target` whose object carries the owner
    label `owner` (None: unknown, or a resync: all of them). Only ModelDeployments of the
    EdgeTarget's namespace ever select it."""
    candidates = {key for key in interested if key[0] == target[0]}
    if owner is None:
        return candidates
    return {key for key in candidates if target_objects.owner_label(*key) == owner}


@dataclasses.dataclass(frozen=True)
class Changes:
    start: tuple[Where, ...]
    stop: tuple[Where, ...]


def changes(wanted: Mapping[DeploymentKey, Iterable[Where]], running: Iterable[Where]) -> Changes:
    """Start a watch for every place some reconcile selected, stop those no one selects."""
    want = {where for places in wanted.values() for where in places}
    have = set(running)
    order = sorted
    return Changes(
        start=tuple(order(want - have, key=_sort_key)),
        stop=tuple(order(have - want, key=_sort_key)),
    )


def _sort_key(where: Where) -> tuple[str, ...]:
    return (*where.target, where.namespace, where.kind, where.secret)


def reuse_reading(
    *,
    watched: bool,
    changed: bool,
    have_reading: bool,
    since_full_seconds: float,
    full_after_seconds: float,
) -> bool:
    """Whether the last reading of a target may stand in for a new look.

    `watched`: its watch is up and has been since the reading (a reconnect marks it changed);
    `changed`: an event arrived since the reading; `since_full_seconds`: since the last round
    that looked at every target."""
    return watched and not changed and have_reading and since_full_seconds < full_after_seconds


def settled_delay(
    *, all_watched: bool, resync_seconds: float, watch_resync_seconds: float
) -> float:
    """How long a settled rollout sleeps: the long safety resync when every target it observes
    is watched (a change wakes it at once), else the polling resync."""
    return max(resync_seconds, watch_resync_seconds) if all_watched else resync_seconds
