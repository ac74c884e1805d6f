"""The Kubernetes events of a rollout: what a person watching `kubectl get events` should hear.

Events are emitted on change only (the previous reconcile's status says what was already
told): a wave that succeeded or started, a rollback, a target entering a phase that needs
attention, the deployment reaching Ready, Degraded or Paused, and a write that failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from edgeferry.decisions import messages, target_verdict
from edgeferry.decisions import rollout_types as rt
from edgeferry.models import modeldeployment as md
from edgeferry.models import reasons, timestamps


def waves_succeeded(*, previous_wave: int, current: int, total: int, digest: str) -> list[rt.Event]:
    """`wave 1 of 3 succeeded` when the open wave moved on since the last reconcile."""
    if not 0 < previous_wave < current:
        return []
    done = (
        f"wave {previous_wave}"
        if current - previous_wave == 1
        else f"waves {previous_wave}-{current - 1}"
    )
    return [
        rt.Event(
            "Normal",
            reasons.WAVE_SUCCEEDED,
            f"{done} of {total} succeeded with {timestamps.short_reference(digest)}",
        )
    ]


def writes(
    verdicts: Iterable[target_verdict.Verdict],
    *,
    planned: Sequence[Sequence[str]],
    digest: str,
) -> list[rt.Event]:
    """A Warning per rollback, then per wave `WaveStarted` (or `CatchingUp` when others of the
    wave already moved)."""
    events: list[rt.Event] = []
    by_name = {v.name: v for v in verdicts}
    rolled_out: dict[int, list[str]] = {}
    for v in by_name.values():
        if v.write is None:
            continue
        if v.write.reason == "rollback":
            events.append(
                rt.Event(
                    "Warning",
                    "RolledBack",
                    f"{v.name}: {timestamps.short_reference(digest)} {v.message} ({v.error})",
                )
            )
        elif v.write.reason == "rollout" and v.wave is not None:
            rolled_out.setdefault(v.wave, []).append(v.name)
    for wave_index, names in sorted(rolled_out.items()):
        others = [n for n in planned[wave_index - 1] if n not in names]
        begun = any(by_name[n].up_to_date or by_name[n].failed for n in others)
        events.append(
            rt.Event(
                "Normal",
                reasons.CATCHING_UP if begun else reasons.WAVE_STARTED,
                f"wave {wave_index}/{len(planned)}: rolling out "
                f"{timestamps.short_reference(digest)} to {messages.names(names)}",
            )
        )
    return events


def transitions(
    outcomes: Sequence[rt.TargetOutcome], lines: Mapping[str, md.TargetStatus]
) -> list[rt.Event]:
    """Events for targets entering a phase a person wants to hear about."""
    kinds: Mapping[md.TargetPhase, str] = {
        "Incompatible": reasons.INCOMPATIBLE_TARGET,
        "Deferred": reasons.TARGET_DEFERRED,
        "Failed": reasons.TARGET_FAILED,
    }
    events = []
    for o in outcomes:
        line = lines.get(o.name)
        if o.phase in kinds and (line is None or line.phase != o.phase):
            detail = f" ({o.error})" if o.error and o.error not in (o.message or "") else ""
            events.append(rt.Event("Warning", kinds[o.phase], f"{o.name}: {o.message}{detail}"))
    return events


def phase(phase: md.DeploymentPhase, message: str) -> list[rt.Event]:
    """The deployment reached a phase worth an event."""
    if phase == "Degraded":
        return [rt.Event("Warning", reasons.ROLLOUT_HALTED, message)]
    if phase == "Ready":
        return [rt.Event("Normal", reasons.ROLLOUT_COMPLETE, message)]
    if phase == "Paused":
        return [rt.Event("Normal", reasons.ROLLOUT_PAUSED, message)]
    return []


def released(target: str, removed: Sequence[str], *, namespace: str) -> list[rt.Event]:
    """A target the selector no longer picks had our workload removed."""
    if not removed:
        return []
    return [
        rt.Event(
            "Normal",
            reasons.TARGET_RELEASED,
            f"{target} no longer matches targets.selector: removed "
            f"{', '.join(removed)} from namespace {namespace} there",
        )
    ]
