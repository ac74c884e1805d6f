"""Operator settings: defaults, overrides, and values refused at start-up."""

from __future__ import annotations

import pytest

from edgeferry import settings


def test_rollout_timings_default_to_the_production_choices() -> None:
    rollout = settings.from_env({}).rollout
    assert rollout.resync_seconds == 20.0
    assert rollout.cleanup_deadline_seconds == 120.0
    assert rollout.requeue_seconds == 5.0
    assert rollout.target_timeout_seconds == 10.0


def test_rollout_timings_are_read_from_the_environment() -> None:
    rollout = settings.from_env(
        {"EDGEFERRY_ROLLOUT_RESYNC_SECONDS": "7.5", "EDGEFERRY_CLEANUP_DEADLINE_SECONDS": "30"}
    ).rollout
    assert rollout.resync_seconds == 7.5
    assert rollout.cleanup_deadline_seconds == 30.0


def test_an_empty_variable_means_the_default() -> None:
    assert settings.from_env({"EDGEFERRY_CLEANUP_DEADLINE_SECONDS": " "}).rollout == (
        settings.from_env({}).rollout
    )


@pytest.mark.parametrize("raw", ["0", "-5", "nan", "inf"])
@pytest.mark.parametrize(
    "name",
    [
        "EDGEFERRY_ROLLOUT_RESYNC_SECONDS",
        "EDGEFERRY_CLEANUP_DEADLINE_SECONDS",
        "EDGEFERRY_ROLLOUT_REQUEUE_SECONDS",
        "EDGEFERRY_TARGET_TIMEOUT_SECONDS",
    ],
)
def test_a_timing_that_is_not_positive_is_refused_naming_the_variable(raw: str, name: str) -> None:
    with pytest.raises(settings.SettingsError, match=f"{name}='{raw}' must be a positive"):
        settings.from_env({name: raw})


def test_a_timing_that_is_not_a_number_says_what_to_put() -> None:
    with pytest.raises(
        settings.SettingsError, match=r"'2m' is not a number; set seconds, e\.g\. 120"
    ):
        settings.from_env({"EDGEFERRY_CLEANUP_DEADLINE_SECONDS": "2m"})


def test_the_operator_refuses_to_start_with_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeferry import main

    monkeypatch.setenv("EDGEFERRY_ROLLOUT_RESYNC_SECONDS", "0")
    with pytest.raises(SystemExit, match="cannot start: EDGEFERRY_ROLLOUT_RESYNC_SECONDS='0'"):
        main.main([])
