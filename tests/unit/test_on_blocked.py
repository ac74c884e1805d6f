"""A digest blocked after admission: targets running it follow `spec.onBlocked`."""

from __future__ import annotations

from typing import Any

from edgeferry.decisions import on_blocked, rollout_status, rollout_types, waves
from edgeferry.models import modeldeployment as md
from tests.unit.test_waves import NEW, NOW, OLD, fresh, image, offline, phases, running, written

ADVISORY = "GHSA-q2q7-5pp4-w6pg (high) in urllib3 1.26.4, fixed in 1.26.5"
NEW_DB = "xxh64:new"
OLD_DB = "xxh64:old"


def revoked(digest: str = NEW, *, name: str = "iris") -> rollout_types.Image:
    """The image the rollout saw admitted, now blocked by a rescan with the new DB."""
    return rollout_types.Image(
        name=name,
        admitted=False,
        reason="VulnerabilitiesFound",
        message=ADVISORY,
        blocked_digest=digest,
        scan_db=NEW_DB,
    )


def clean(digest: str = OLD, *, db: str = NEW_DB) -> rollout_types.Image:
    """Another ModelImage of the namespace, admitted with `digest` under `db`."""
    return rollout_types.Image(name="iris-v1", admitted=True, digest=digest, scan_db=db)


def plan(
    targets: list[rollout_types.TargetState],
    *,
    on_blocked: md.OnBlocked = "Keep",
    recorded: md.ModelDeploymentStatus | None = None,
    img: rollout_types.Image | None = None,
    images: tuple[rollout_types.Image, ...] = (clean(),),
    **rollout: Any,
) -> rollout_types.Plan:
    return waves.next_actions(
        targets,
        image=img or revoked(),
        rollout=md.RolloutStrategy(**rollout),
        generation=1,
        now=NOW,
        recorded=recorded,
        on_blocked=on_blocked,
        images=images,
    )


def test_keep_writes_nothing_and_counts_the_targets_running_the_blocked_digest() -> None:
    p = plan([running("a", NEW), running("b", NEW), fresh("c")])
    assert p.phase == "Blocked"
    assert p.writes == ()
    assert p.running_blocked == ("a", "b")
    assert phases(p) == {"a": "Ready", "b": "Ready", "c": "Pending"}
    assert "onBlocked: Keep" in (p.targets[0].message or "")


def test_keep_warns_once_naming_the_targets_and_the_advisory() -> None:
    first = plan([running("a", NEW), running("b", NEW)])
    (warning,) = [e for e in first.events if e.reason == "BlockedDigestRunning"]
    assert warning.type == "Warning"
    assert "a, b" in warning.message and ADVISORY in warning.message
    status = rollout_status.build(first, generation=1, existing_conditions=(), now=NOW)
    again = plan([running("a", NEW), running("b", NEW)], recorded=status)
    assert again.events == ()


def test_the_deployment_is_blocked_at_once_with_the_gate_reason() -> None:
    p = plan([running("a", NEW)])
    (blocked,) = [c for c in p.conditions if c.type == "Blocked"]
    assert (blocked.status, blocked.reason) == ("True", "VulnerabilitiesFound")
    assert ADVISORY in blocked.message
    assert p.events[0].reason == "ImageBlocked"


def test_rollback_returns_each_target_running_the_blocked_digest_to_its_previous_release() -> None:
    p = plan(
        [running("a", NEW), running("b", NEW, previous=None), running("c", OLD), fresh("d")],
        on_blocked="RollBack",
    )
    assert written(p, "rollback") == ["a"]
    (write,) = p.writes
    assert write.record.digest == OLD
    assert write.record.rolled_back_from is None, "not a failed release: it may roll out again"
    assert phases(p) == {"a": "RolledBack", "b": "Ready", "c": "Ready", "d": "Pending"}
    assert p.running_blocked == ("b",), "no earlier release at b: it keeps the blocked digest"
    assert {e.reason for e in p.events} >= {"RolledBackBlockedDigest", "BlockedDigestRunning"}


def test_rollback_restores_the_previous_pod_template_too() -> None:
    target = running("a", NEW)
    assert target.record is not None
    with_templates = rollout_types.TargetState(
        name="a",
        architectures=("amd64",),
        available=True,
        record=target.record.__class__(
            digest=NEW, previous_digest=OLD, template='{"new":1}', previous_template='{"old":1}'
        ),
    )
    (write,) = plan([with_templates], on_blocked="RollBack").writes
    assert (write.record.digest, write.record.template) == (OLD, '{"old":1}')


def test_a_rolled_back_target_is_not_written_again() -> None:
    p = plan([running("a", OLD, previous=None)], on_blocked="RollBack")
    assert p.writes == () and p.running_blocked == ()


def test_paused_holds_the_rollback_until_resumed() -> None:
    p = plan([running("a", NEW)], on_blocked="RollBack", paused=True)
    assert p.writes == ()
    assert "when resumed" in (p.targets[0].message or "")
    assert p.running_blocked == ("a",)


def test_an_unreachable_target_is_deferred_and_not_counted() -> None:
    p = plan([offline("a")], on_blocked="RollBack")
    assert p.writes == () and phases(p) == {"a": "Deferred"} and p.running_blocked == ()


def test_an_image_not_admitted_yet_rolls_nothing_back() -> None:
    undecided = image(None, admitted=False, reason="ImageNotAdmitted")
    p = plan([running("a", NEW)], on_blocked="RollBack", img=undecided)
    assert p.writes == () and p.running_blocked == ()


def test_the_gauge_counts_the_targets_running_the_blocked_digest() -> None:
    p = plan([running("a", NEW), running("b", NEW)])
    status = rollout_status.build(p, generation=1, existing_conditions=(), now=NOW)
    assert rollout_status.gauges(p, status).running_blocked == 2


def test_rollback_waits_while_the_earlier_release_is_judged_by_the_old_db() -> None:
    p = plan([running("a", NEW)], on_blocked="RollBack", images=(clean(db=OLD_DB),))
    assert p.writes == () and p.running_blocked == ("a",)
    assert "re-matched against the new vulnerability DB" in (p.targets[0].message or "")
    assert p.recheck_after_seconds is not None and p.recheck_after_seconds <= 5
    assert not [e for e in p.events if e.reason == "NoCleanReleaseToRollBackTo"]


def test_rollback_never_returns_to_a_release_the_new_db_blocks_too() -> None:
    p = plan(
        [running("a", NEW)],
        on_blocked="RollBack",
        images=(revoked(OLD, name="iris-v1"), revoked()),
    )
    assert p.writes == () and p.running_blocked == ("a",)
    message = p.targets[0].message or ""
    assert "not rolled back" in message and "iris-v1" in message and "blocked too" in message
    (refused,) = [e for e in p.events if e.reason == "NoCleanReleaseToRollBackTo"]
    assert refused.type == "Warning" and refused.message.startswith("a: ") and ADVISORY in message


def test_rollback_refuses_a_release_no_model_image_vouches_for_any_more() -> None:
    p = plan([running("a", NEW)], on_blocked="RollBack", images=(revoked(),))
    assert p.writes == () and p.running_blocked == ("a",)
    assert "nothing vouches for it" in (p.targets[0].message or "")
    assert [e.reason for e in p.events].count("NoCleanReleaseToRollBackTo") == 1


def test_the_refusal_is_posted_once_not_on_every_reconcile() -> None:
    first = plan([running("a", NEW)], on_blocked="RollBack", images=(revoked(),))
    status = rollout_status.build(first, generation=1, existing_conditions=(), now=NOW)
    again = plan([running("a", NEW)], on_blocked="RollBack", images=(revoked(),), recorded=status)
    assert [e for e in again.events if e.reason == "NoCleanReleaseToRollBackTo"] == []


def test_a_release_admitted_under_the_new_db_is_rolled_back_to() -> None:
    assert on_blocked.rollback_check(OLD, image=revoked(), images=(clean(),))[0] == "Clean"
    unknown_db = clean(db=OLD_DB)
    unknown = rollout_types.Image(name="iris", admitted=False, blocked_digest=NEW)
    assert on_blocked.rollback_check(OLD, image=unknown, images=(unknown_db,))[0] == "Clean"
