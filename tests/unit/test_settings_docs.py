"""Every setting the operator reads is documented, and the rollout timings are installable."""

from __future__ import annotations

import re
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
