"""Every setting the operator reads is documented, and the rollout timings are installable."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import yaml

from edgeferry import settings

REPO = Path(__file__).resolve().parents[2]
TIMINGS = ("EDGEFERRY_ROLLOUT_RESYNC_SECONDS", "EDGEFERRY_CLEANUP_DEADLINE_SECONDS")


def variables_read() -> set[str]:
    """The names `settings.from_env` reads (the quoted variable names in its source)."""
    source = Path(settings.__file__).read_text()
    return set(re.findall(r'"((?:EDGEFERRY|GRYPE|DOCKER)_[A-Z_]+)"', source))


def test_every_variable_the_settings_read_is_in_the_settings_table() -> None:
    names = variables_read()
    assert set(TIMINGS) <= names
    table = (REPO / "docs" / "install.md").read_text().split("## Settings", 1)[1]
    missing = sorted(n for n in names if f"`{n}`" not in table)
    assert not missing, f"docs/install.md ## Settings does not name {missing}"


def test_kustomize_deployment_sets_the_rollout_timings_to_the_defaults() -> None:
    deployment = yaml.safe_load((REPO / "manifests" / "deployment.yaml").read_text())
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    defaults = settings.from_env({}).rollout
    assert float(env["EDGEFERRY_ROLLOUT_RESYNC_SECONDS"]) == defaults.resync_seconds
    assert float(env["EDGEFERRY_CLEANUP_DEADLINE_SECONDS"]) == defaults.cleanup_deadline_seconds


def test_chart_values_default_to_the_settings_defaults() -> None:
    values = yaml.safe_load((REPO / "charts" / "edgeferry" / "values.yaml").read_text())
    defaults = settings.from_env({}).rollout
    assert values["rollout"] == {
        "resyncSeconds": defaults.resync_seconds,
        "cleanupDeadlineSeconds": defaults.cleanup_deadline_seconds,
    }


_NOT_SETTINGS = {"EDGEFERRY_LIVENESS": "main.py's --liveness default"}
"""Variables the docs name that the operator reads outside `settings.from_env`."""


def _named_in_install_docs() -> set[str]:
    table = (REPO / "docs" / "install.md").read_text().split("## Settings", 1)[1]
    table = table.split("\n## ", 1)[0]
    values = (REPO / "charts" / "edgeferry" / "values.yaml").read_text()
    return set(re.findall(r"\b((?:EDGEFERRY|GRYPE)_[A-Z_]+)\b", table + values))


def test_every_variable_the_install_docs_and_chart_name_is_read_by_the_settings() -> None:
    unread = sorted(_named_in_install_docs() - variables_read() - set(_NOT_SETTINGS))
    assert not unread, f"documented but never read by settings.from_env: {unread}"


def _fields(cls: type) -> list[str]:
    """Every field name of a settings dataclass and of the groups in it."""
    names = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        names.append(field.name)
        if isinstance(hints[field.name], type) and dataclasses.is_dataclass(hints[field.name]):
            names += _fields(hints[field.name])
    return names


def test_every_setting_is_used_by_the_operator() -> None:
    source = "\n".join(
        p.read_text()
        for p in (REPO / "operator" / "edgeferry").rglob("*.py")
        if p.name != "settings.py"
    )
    groups = {f.name for f in dataclasses.fields(settings.Settings)}
    assert "db_stale_after_seconds" in _fields(settings.Settings)
    unused = [
        name
        for name in _fields(settings.Settings)
        if name not in groups and not re.search(rf"\.{name}\b", source)
    ]
    assert not unused, f"settings read but never used: {unused}"


def _kustomize_env() -> dict[str, str | None]:
    deployment = yaml.safe_load((REPO / "manifests" / "deployment.yaml").read_text())
    return {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_kustomize_deployment_sets_the_stale_threshold_and_target_tls_to_the_defaults() -> None:
    env = _kustomize_env()
    defaults = settings.from_env({})
    assert int(env["EDGEFERRY_SCAN_DB_STALE_SECONDS"] or "") == (
        defaults.scan.db_stale_after_seconds
    )
    assert env["EDGEFERRY_ALLOW_INSECURE_TARGET_TLS"] == "false"
    assert defaults.rollout.allow_insecure_target_tls is False


def test_chart_scan_and_target_values_default_to_the_settings_defaults() -> None:
    values = yaml.safe_load((REPO / "charts" / "edgeferry" / "values.yaml").read_text())
    defaults = settings.from_env({})
    assert values["scan"] == {
        "dbAutoUpdate": defaults.scan.db_auto_update,
        "dbUpdateUrl": "",
        "dbStaleSeconds": defaults.scan.db_stale_after_seconds,
    }
    assert values["targets"] == {
        "allowInsecureSkipTLSVerify": defaults.rollout.allow_insecure_target_tls
    }
