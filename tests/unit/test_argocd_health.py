"""Argo CD health checks (Lua) give the right verdict on real edgeferry objects.

Each case runs `manifests/gitops/argocd/health-<kind>.lua` in Debian's `lua5.4` the way Argo CD
does: the object as the global `obj`, the script's return value as the verdict. The objects are
status snapshots captured from the testbed (`tests/fixtures/status/`, see its README); where a
state has not been captured yet, the case derives it from a captured object and says which
fields it changed. The scripts stick to the Lua 5.1 subset Argo CD's gopher-lua runs.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeferry.decisions import rollout_status, rollout_types, waves
from edgeferry.models import modeldeployment as md
from tests.unit import _binaries

REPO = _binaries.REPO
ARGOCD = REPO / "manifests" / "gitops" / "argocd"
FIXTURES = REPO / "tests" / "fixtures" / "status"
SCRIPTS = {
    "ModelImage": ARGOCD / "health-modelimage.lua",
    "EdgeTarget": ARGOCD / "health-edgetarget.lua",
    "ModelDeployment": ARGOCD / "health-modeldeployment.lua",
}
_PRELUDE = re.compile(r"-- BEGIN edgeferry kstatus.*?-- END edgeferry kstatus\n", re.DOTALL)


def to_lua(value: Any) -> str:
    """A Lua literal for a JSON-like value (nil-valued keys are left out, as Argo CD does)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # Bytes of the UTF-8 encoding; three-digit decimal escapes never swallow a next digit.
        escaped = "".join(
            chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\{b:03d}" for b in value.encode()
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def health(obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    """(status, message) the kind's script returns for obj."""
    lua = _binaries.debian("lua5.4", "lua5.4")
    harness = tmp_path / "harness.lua"
    harness.write_text(
        f"obj = {to_lua(obj)}\n"
        f"local hs = dofile({to_lua(str(SCRIPTS[obj['kind']]))})\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    out = _binaries.run([lua, str(harness)])
    status, _, message = out.partition("\n")
    return status, message


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return loaded


def derived(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    obj = copy.deepcopy(fixture(name))
    change(obj)
    return obj


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def _unreachable(obj: dict[str, Any]) -> None:
    """What a failed probe writes: reachable false, Ready False with the reason."""
    obj["status"]["reachable"] = False
    _cond(obj, "Ready").update(
        status="False", reason="Unreachable", message="dial tcp 10.0.0.9:6443: i/o timeout"
    )


def _paused(obj: dict[str, Any]) -> None:
    obj["spec"].setdefault("rollout", {})["paused"] = True
    obj["status"]["phase"] = "Paused"


def _wave_failed(obj: dict[str, Any]) -> None:
    _cond(obj, "Degraded").update(
        status="True", reason="RolloutHalted", message="wave 1 failed: cloud rolled back"
    )


def _rolled_back_serving(obj: dict[str, Any]) -> None:
    """After a failed canary was rolled back: nothing on the new digest, all on the old one."""
    _wave_failed(obj)
    obj["status"]["readyTargets"] = "0/3"
    obj["status"]["servingTargets"] = "3/3"


def _no_targets_selected(obj: dict[str, Any]) -> None:
    """The status edgeferry's own decision writes for a selector that matches nothing."""
    plan = waves.next_actions(
        [],
        image=rollout_types.Image(name="iris", admitted=True, digest=obj["status"]["digest"]),
        rollout=md.RolloutStrategy(),
        generation=obj["metadata"]["generation"],
        now=dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC),
    )
    written = rollout_status.build(plan, generation=obj["metadata"]["generation"]).to_status()
    obj["status"] = written


def _generation_ahead(obj: dict[str, Any]) -> None:
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1


CASES = [
    # captured from the testbed as they are
    ("modelimage-ready", None, "Healthy", "admitted and pushed"),
    ("modelimage-blocked", None, "Degraded", "GHSA-x84v-xcm2-53pg"),
    ("modelimage-failed", None, "Degraded", "sha256"),
    ("modelimage-building", None, "Progressing", ""),
    ("modelimage-new", None, "Progressing", "Waiting for edgeferry to report status"),
    ("modelimage-generation-ahead", None, "Progressing", "observe generation 2"),
    ("edgetarget-ready", None, "Healthy", "Ready"),
    ("edgetarget-new", None, "Progressing", "Waiting for edgeferry to report status"),
    ("modeldeployment-progressing", None, "Progressing", "wave"),
    ("modeldeployment-ready", None, "Healthy", "run"),
    ("modeldeployment-generation-ahead", None, "Progressing", "observe generation 2"),
    ("modeldeployment-blocked", None, "Degraded", "not admitted"),
    # derived from a captured object (the change is named)
    ("edgetarget-ready", _unreachable, "Degraded", "i/o timeout"),
    ("edgetarget-ready", _generation_ahead, "Progressing", "observe generation 2"),
    ("modeldeployment-progressing", _paused, "Suspended", ""),
    ("modeldeployment-progressing", _wave_failed, "Degraded", "rolled back"),
    ("modeldeployment-ready", _rolled_back_serving, "Degraded", "3/3 targets serve"),
    ("modeldeployment-ready", _no_targets_selected, "Degraded", "matches no EdgeTarget"),
]


@pytest.mark.parametrize(
    ("name", "change", "status", "message"),
    CASES,
    ids=[f"{n}{'+' + c.__name__.strip('_') if c else ''}->{s}" for n, c, s, _ in CASES],
)
def test_health_of_real_objects(
    name: str,
    change: Callable[[dict[str, Any]], None] | None,
    status: str,
    message: str,
    tmp_path: Path,
) -> None:
    obj = derived(name, change) if change else fixture(name)
    got_status, got_message = health(obj, tmp_path)
    assert got_status == status, got_message
    assert message.lower() in got_message.lower()


def test_every_kind_has_a_captured_fixture() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in FIXTURES.glob("*.yaml")}
    assert kinds == set(SCRIPTS)


def test_scripts_share_the_kstatus_prelude_byte_for_byte() -> None:
    preludes = [_PRELUDE.findall(p.read_text()) for p in SCRIPTS.values()]
    assert all(len(found) == 1 for found in preludes), "each script has one kstatus prelude"
    assert len({found[0] for found in preludes}) == 1


@pytest.mark.parametrize("script", sorted(SCRIPTS.values()), ids=lambda p: p.name)
def test_scripts_use_only_what_argo_cd_sandboxes_allow(script: Path) -> None:
    code = re.sub(r"--[^\n]*", "", script.read_text())
    for forbidden in ("require", "os.", "io.", "dofile", "loadstring", "goto", "//"):
        assert forbidden not in code, f"{script.name} uses {forbidden}"


def test_argocd_cm_carries_each_script_verbatim() -> None:
    path = ARGOCD / "argocd-cm.yaml"
    current = path.read_text()
    head = current[: current.index("\ndata:\n") + len("\ndata:\n")]
    wanted = head + "".join(
        f"  resource.customizations.health.edgeferry.io_{kind}: |\n"
        + textwrap.indent(script.read_text(), "    ")
        for kind, script in SCRIPTS.items()
    )
    if os.environ.get("EDGEFERRY_UPDATE_GENERATED") == "1":
        path.write_text(wanted)
        current = wanted
    assert current == wanted, (
        "manifests/gitops/argocd/argocd-cm.yaml is stale; regenerate with "
        "EDGEFERRY_UPDATE_GENERATED=1 .venv/bin/pytest tests/unit/test_argocd_health.py"
    )
    data = yaml.safe_load(current)["data"]
    for kind, script in SCRIPTS.items():
        assert data[f"resource.customizations.health.edgeferry.io_{kind}"] == script.read_text()


def test_lua_harness_round_trips_awkward_strings(tmp_path: Path) -> None:
    obj = fixture("modelimage-blocked")
    tricky = 'quote " backslash \\ newline \n tab \t ünïcode'
    _cond(obj, "Stalled")["message"] = tricky
    assert health(obj, tmp_path) == ("Degraded", tricky)


def test_lua_runs_at_all() -> None:
    lua = _binaries.debian("lua5.4", "lua5.4")
    done = subprocess.run([lua, "-v"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
