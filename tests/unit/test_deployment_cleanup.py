"""What a ModelDeployment's deletion reports, and whether it waits longer for a dead site."""

from __future__ import annotations

from edgeferry.decisions import deployment_cleanup


def after(
    removed: dict[str, list[str]], left: dict[str, str], *, waited: float = 10
) -> deployment_cleanup.Outcome:
    return deployment_cleanup.after_pass(
        removed,
        left,
        namespace="ml",
        name="iris",
        waited_seconds=waited,
        deadline_seconds=300,
        retry_seconds=10,
    )


def test_what_was_removed_is_named_per_target() -> None:
    outcome = after({"edge-1": ["Deployment/iris", "Service/iris"], "edge-2": []}, {})
    (event,) = outcome.events
    assert (event.type, event.reason) == ("Normal", "WorkloadsRemoved")
    assert event.message == "removed at 1 target(s): edge-1: Deployment/iris, Service/iris"
    assert outcome.retry_after_seconds is None


def test_nothing_anywhere_is_a_quiet_success() -> None:
    assert after({"edge-1": []}, {}) == deployment_cleanup.Outcome(events=())


def test_an_unreachable_target_is_retried_until_the_deadline() -> None:
    outcome = after({}, {"dead": "dead: no answer within 10s"}, waited=295)
    assert outcome.events == ()
    assert outcome.retry_after_seconds == 5
    assert outcome.retry_message == "could not reach dead yet; retrying for 5s more"


def test_after_the_deadline_it_lets_go_and_says_what_is_left_and_how_to_remove_it() -> None:
    outcome = after({}, {"dead": "dead: no answer within 10s"}, waited=301)
    (event,) = outcome.events
    assert (event.type, event.reason) == ("Warning", "CleanupIncomplete")
    assert "left behind at dead" in event.message
    assert "kubectl delete deploy,svc -l edgeferry.io/deployment=ml.iris" in event.message
    assert event.message.endswith("Causes: dead: no answer within 10s")
    assert outcome.retry_after_seconds is None
