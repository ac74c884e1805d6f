"""Operator settings: defaults, overrides, and values refused at start-up."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("EDGEFERRY_MAX_PARALLEL_TARGETS", "many"),
        ("EDGEFERRY_SCAN_DB_STALE_SECONDS", "2d"),
        ("EDGEFERRY_METRICS_PORT", "http"),
    ],
)
def test_a_count_that_is_not_a_whole_number_is_refused_naming_the_variable(
    name: str, raw: str
) -> None:
    with pytest.raises(settings.SettingsError, match=f"{name}='{raw}' is not a whole number"):
        settings.from_env({name: raw})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("EDGEFERRY_MAX_PARALLEL_TARGETS", "0"),
        ("EDGEFERRY_MAX_PARALLEL_TARGETS", "-3"),
        ("EDGEFERRY_SCAN_DB_STALE_SECONDS", "0"),
        ("EDGEFERRY_METRICS_PORT", "0"),
        ("EDGEFERRY_METRICS_PORT", "65536"),
    ],
)
def test_a_count_out_of_range_is_refused_not_clamped(name: str, raw: str) -> None:
    with pytest.raises(settings.SettingsError, match=f"{name}='{raw}' must be"):
        settings.from_env({name: raw})


def test_the_scan_db_update_url_is_kept() -> None:
    url = "https://grype-mirror.example/databases/latest.json"
    assert settings.from_env({"GRYPE_DB_UPDATE_URL": url}).scan.db_update_url == url
    assert settings.from_env({}).scan.db_update_url is None


def test_insecure_target_tls_is_refused_unless_allowed() -> None:
    assert settings.from_env({}).rollout.allow_insecure_target_tls is False
    allowed = settings.from_env({"EDGEFERRY_ALLOW_INSECURE_TARGET_TLS": "true"})
    assert allowed.rollout.allow_insecure_target_tls is True


def test_emulated_platforms_are_smoke_tested_unless_the_switch_says_skip() -> None:
    assert settings.from_env({}).build.skip_emulated_smoke_tests is False
    on = settings.from_env({"EDGEFERRY_SKIP_EMULATED_SMOKE_TESTS": "true"})
    assert on.build.skip_emulated_smoke_tests is True


def test_relative_paths_are_made_absolute_against_the_start_up_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = settings.from_env({"EDGEFERRY_WORKDIR": "work", "GRYPE_DB_CACHE_DIR": "db/grype"})
    assert config.build.workdir == tmp_path / "work"
    assert config.scan.db_cache_dir == tmp_path / "db" / "grype"
    defaulted = settings.from_env({"EDGEFERRY_WORKDIR": "work"}).scan.db_cache_dir
    assert defaulted == tmp_path / "work" / "grype-db"


def test_the_smoke_probe_image_defaults_to_busybox_and_is_read_from_the_environment() -> None:
    assert settings.from_env({}).build.smoke_probe_image == "docker.io/library/busybox:1.36"
    mirrored = "registry.local/busybox@sha256:" + "c" * 64
    build = settings.from_env({"EDGEFERRY_SMOKE_PROBE_IMAGE": mirrored}).build
    assert build.smoke_probe_image == mirrored
