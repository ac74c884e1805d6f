"""Trouble that passes (registry, Docker daemon, scanner down) is retried with backoff by itself.

A refused push or a failing RUN waits for a spec edit; a registry that is down for a minute
must not. These tests run whole lives of a ModelImage through `pipeline.next_step` with a
`World` whose tools go down and come back, and pin the backoff of `decisions.retries`.
"""

from __future__ import annotations

import datetime

import pytest

from edgeferry.adapters import docker_build, registry_api
from edgeferry.decisions import retries
from edgeferry.decisions.pipeline import Step
from edgeferry.models import conditions, modelimage
from tests.unit.test_modelimage_pipeline import NOW, World, converge, decide, make_spec, stored

SECOND = datetime.timedelta(seconds=1)


def test_backoff_doubles_from_ten_seconds_and_is_capped_at_five_minutes() -> None:
    waits = [retries.delay(n).total_seconds() for n in range(1, 9)]
    assert waits == [10, 20, 40, 80, 160, 300, 300, 300]
    assert retries.delay(10_000) == retries.MAX_DELAY
    with pytest.raises(ValueError, match="from 1"):
        retries.delay(0)


def test_a_registry_outage_during_the_push_waits_reconciling_then_pushes_by_itself() -> None:
    world = World(unavailable={Step.PUSH: "RegistryUnavailable"})
    status, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)

    assert (plan.step, plan.retrying, plan.reason) == (Step.NONE, Step.PUSH, "RegistryUnavailable")
    assert plan.phase == "Pushing"
    assert plan.recheck_after == 10 * SECOND
    pushed = status.condition("Pushed")
    assert pushed is not None and (pushed.status, pushed.reason) == ("False", "RegistryUnavailable")
    assert "attempt 1; retrying in 10 s" in pushed.message
    kstatus = {c.type: c.status for c in status.conditions if c.type in {"Ready", "Reconciling"}}
    assert kstatus == {"Ready": "False", "Reconciling": "True"}
    assert status.condition("Stalled") is None, "a passing outage never stalls the image"

    # Still down at the next attempt: the wait doubles.
    world.now = NOW + 10 * SECOND
    status, plan = converge(make_spec(), status, world)
    assert plan.recheck_after == 20 * SECOND
    assert status.retry is not None and status.retry.attempt == 2

    # Back: the push runs with no spec edit (same generation) and the retry is cleared.
    del world.unavailable[Step.PUSH]
    world.now += 20 * SECOND
    plan = decide(make_spec(), status, world)
    assert (plan.step, plan.reason) == (Step.PUSH, "RetryPush")
    status, plan = converge(make_spec(), status, world)
    assert plan.reason == "UpToDate"
    assert status.retry is None
    assert status.image is not None and status.image.digest is not None
    assert world.steps.count(Step.BUILD) == 1, "the outage never rebuilt the image"


def test_the_backoff_survives_an_operator_restart() -> None:
    world = World(unavailable={Step.PUSH: "RegistryUnavailable"})
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    world.now = NOW + 5 * SECOND
    plan = decide(make_spec(), stored(status), world)
    assert (plan.step, plan.retrying) == (Step.NONE, Step.PUSH)
    assert plan.recheck_after == 5 * SECOND


def test_a_spec_edit_retries_at_once() -> None:
    world = World(unavailable={Step.PUSH: "RegistryUnavailable"})
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    plan = decide(make_spec(), status, world, generation=2)
    assert plan.step is Step.PUSH


def test_a_docker_daemon_restart_during_the_build_builds_again_by_itself() -> None:
    world = World(unavailable={Step.BUILD: "DockerUnavailable"})
    status, plan = converge(make_spec(), modelimage.ModelImageStatus(), world)
    assert (plan.retrying, plan.phase, plan.reason) == (Step.BUILD, "Building", "DockerUnavailable")
    del world.unavailable[Step.BUILD]
    world.now = NOW + 10 * SECOND
    plan = decide(make_spec(), status, world)
    assert (plan.step, plan.reason) == (Step.BUILD, "RetryBuild")
    assert "DockerUnavailable" in plan.message
    status, plan = converge(make_spec(), status, world)
    assert plan.reason == "UpToDate"


def test_a_failed_scan_is_retried_and_an_admitted_image_stays_ready_meanwhile() -> None:
    world = World()
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), world)
    world.db = "7@2026-11-02T00:00:00+00:00/xxh64:bbbb"  # a new DB: rescan
    world.unavailable[Step.RESCAN] = "ScanFailed"
    status, plan = converge(make_spec(), status, world)
    assert (plan.retrying, plan.reason) == (Step.RESCAN, "ScanFailed")
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "True", "a routine rescan keeps Ready"
    del world.unavailable[Step.RESCAN]
    world.now = NOW + 10 * SECOND
    status, plan = converge(make_spec(), status, world)
    assert plan.reason == "UpToDate"
    assert status.scan is not None and status.scan.db_checksum == world.db


def test_attempts_count_per_stage_and_generation() -> None:
    failed = retries.retry_later(
        modelimage.ModelImageStatus(),
        Step.PUSH,
        reason="RegistryUnavailable",
        error="refused",
        now=NOW,
        generation=1,
    ).status
    again = retries.retry_later(
        failed, Step.PUSH, reason="RegistryUnavailable", error="refused", now=NOW, generation=1
    )
    assert again.status.retry is not None and again.status.retry.attempt == 2
    assert again.event is not None and again.event.reason == "RegistryUnavailable"
    other = retries.retry_later(
        failed, Step.BUILD, reason="DockerUnavailable", error="gone", now=NOW, generation=1
    )
    assert other.status.retry is not None and other.status.retry.attempt == 1
    edited = retries.retry_later(
        failed, Step.PUSH, reason="RegistryUnavailable", error="refused", now=NOW, generation=2
    )
    assert edited.status.retry is not None and edited.status.retry.attempt == 1
    assert retries.finished(again.status).retry is None


def test_a_refused_push_still_waits_for_a_spec_edit() -> None:
    status, _ = converge(make_spec(), modelimage.ModelImageStatus(), World())
    assert status.image is not None
    unpushed = status.model_copy(update={"image": status.image.model_copy(update={"digest": None})})
    denied = conditions.Condition("Pushed", "False", "PushFailed", "denied: access is denied")
    failed = unpushed.with_conditions([denied], generation=1)
    later = World(now=NOW + datetime.timedelta(hours=1))
    plan = decide(make_spec(), failed, later)
    assert (plan.step, plan.reason, plan.retrying) == (Step.NONE, "PushFailed", None)


@pytest.mark.parametrize(
    ("text", "transient"),
    [
        (
            'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            True,
        ),
        ("received unexpected HTTP status: 503 Service Unavailable", True),
        ("Patch http://127.0.0.1:5000/v2/m/blobs/uploads/x: EOF", True),
        ("net/http: TLS handshake timeout", True),
        ("toomanyrequests: rate limit exceeded", True),
        ("unauthorized: authentication required", False),
        ("denied: requested access to the resource is denied", False),
        ("manifest invalid: manifest invalid", False),
        ("name unknown: repository name not known to registry", False),
    ],
)
def test_registry_errors_relayed_as_text_are_classified(text: str, transient: bool) -> None:
    assert registry_api.is_transient_text(text) is transient


@pytest.mark.parametrize(
    ("text", "daemon"),
    [
        # Seen on the testbed when dockerd restarted during a RUN.
        ("failed to update store for object type *libnetwork.endpoint: open : no such file", True),
        ("context canceled", True),
        ("The command '/bin/sh -c false' returned a non-zero code: 1", False),
        ("COPY failed: file not found in build context", False),
        ("dockerfile parse error line 3: unknown instruction: RUNN", False),
    ],
)
def test_build_errors_from_the_daemon_itself_are_told_from_dockerfile_errors(
    text: str, daemon: bool
) -> None:
    assert docker_build.is_daemon_trouble(text) is daemon
