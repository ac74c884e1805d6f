"""The scan settings reach the grype process unchanged, whatever directory it runs in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeferry import settings
from edgeferry.adapters import grype_env
from edgeferry.runners import image_scan


def test_the_db_update_url_reaches_grype() -> None:
    url = "https://grype-mirror.example/databases/latest.json"
    config = image_scan.scanner_config(settings.from_env({"GRYPE_DB_UPDATE_URL": url}))
    env = grype_env.grype_environment(config.grype, base={})
    assert env["GRYPE_DB_UPDATE_URL"] == url


def test_without_an_update_url_grype_keeps_its_default() -> None:
    config = image_scan.scanner_config(settings.from_env({}))
    assert "GRYPE_DB_UPDATE_URL" not in grype_env.grype_environment(config.grype, base={})


def test_a_relative_db_dir_names_the_same_folder_after_a_change_of_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    grype = grype_env.GrypeSettings.offline(Path("grype-db"))
    (tmp_path / "elsewhere").mkdir()
    os.chdir(tmp_path / "elsewhere")
    env = grype_env.grype_environment(grype, base={})
    assert env["GRYPE_DB_CACHE_DIR"] == str(tmp_path / "grype-db")


def test_a_relative_db_dir_setting_reaches_grype_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = image_scan.scanner_config(settings.from_env({"GRYPE_DB_CACHE_DIR": "db"}))
    monkeypatch.chdir("/")
    env = grype_env.grype_environment(config.grype, base={})
    assert env["GRYPE_DB_CACHE_DIR"] == str(tmp_path / "db")
