"""What the rollout knows about one selected target: from its EdgeTarget, and from a look.

The plan (`waves.next_actions`) takes a `TargetState` per target. Most of it comes from the
EdgeTarget the probes keep current (type, architectures, size budget, reachability); the rest
from our Deployment there, when the target could be looked at. Rules, and why:

- An EdgeTarget whose spec does not parse, or whose last probe found it unreachable, is not
  contacted (the probe notices it coming back and wakes the rollout): it is unreachable since
  its `Ready` condition last flipped.
- A target the probe calls reachable but that does not answer us is unreachable since our
  first failed look (the caller remembers it across reconciles).
- A target never probed yet counts from its creation, so the offline grace starts somewhere.
- A Deployment of our name that edgeferry did not create makes the target unusable.
"""

from __future__ import annotations

import dataclasses
import datetime

from edgeferry.decisions import rollout_types as rt
from edgeferry.decisions import workload_health
from edgeferry.models import conditions, reasons, target_objects, timestamps
from edgeferry.models import edgetarget as et


def from_edgetarget(
    name: str, spec: et.EdgeTargetSpec | None, status: et.EdgeTargetStatus
) -> rt.TargetState:
    """What the EdgeTarget itself says, before anything is looked at."""
    return rt.TargetState(
        name=name,
        cluster_type=spec.type if spec is not None else "Cloud",
        namespace=spec.namespace if spec is not None else "",
        architectures=status.architectures,
        size_budget_bytes=spec.image_size_budget_bytes if spec is not None else None,
    )


def not_contacted(
    base: rt.TargetState, spec: et.EdgeTargetSpec | None, status: et.EdgeTargetStatus
) -> tuple[rt.TargetState, str] | None:
    """The state and the error of a target not to contact this round; None: look at it."""
    if spec is None:
        return (
            dataclasses.replace(base, reachable=False),
            "the EdgeTarget's spec is invalid; see its status",
        )
    if status.reachable is False:
        ready = conditions.find(status.conditions, reasons.READY) or {}
        since = timestamps.parse_rfc3339(ready.get("lastTransitionTime"))
        return (
            dataclasses.replace(base, reachable=False, unreachable_since=since),
            status.message or "unreachable at its last probe",
        )
    return None


def unanswered(
    base: rt.TargetState, *, since: datetime.datetime, error: str
) -> tuple[rt.TargetState, str]:
    """A target the probe calls reachable that did not answer us (since our first failure)."""
    return dataclasses.replace(base, reachable=False, unreachable_since=since), error


def answered(
    base: rt.TargetState,
    found: workload_health.Observation,
    *,
    namespace: str,
    name: str,
    unreachable_since: datetime.datetime | None,
) -> tuple[rt.TargetState, str | None]:
    """The rollout's view of a target that answered, and what is wrong there, if anything.

    `base` carries what the EdgeTarget says (type, architectures, budget); `unreachable_since`
    is when it was created if it was never probed (the offline grace counts from there). A
    Deployment of our name that edgeferry did not create makes the target unusable: it is
    treated as unreachable, never taken over.
    """
    if found.foreign:
        message = (
            f"a Deployment {namespace}/{target_objects.workload_name(name)} that "
            "edgeferry did not create exists at the target; edgeferry does not take it "
            "over: rename the ModelDeployment, or remove that Deployment"
        )
        return dataclasses.replace(base, reachable=False), message
    state = dataclasses.replace(
        base,
        unreachable_since=unreachable_since,
        record=found.record,
        available=found.available,
        ready_replicas=found.ready_replicas,
        replicas=found.replicas,
        failing=found.failing,
        failure=found.failure,
        crashing=found.crashing,
        stuck=found.stuck,
    )
    return state, None
