"""The integration tests never reuse an operator that runs other code or other settings.

These run real processes under the testbed's real supervisor (a sleeping Python stands in
for the operator); no cluster is needed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeferry_testbed import layout, operator_process, procs

ARGV = [sys.executable, "-m", "edgeferry"]
ENV = {"EDGEFERRY_CLEANUP_DEADLINE_SECONDS": "30", "KUBECONFIG": "/state/operator-sa.kubeconfig"}


@pytest.fixture
def lay(tmp_path: Path) -> layout.Layout:
    return dataclasses.replace(layout.default_layout(), state_dir=tmp_path / "state")


@pytest.fixture
def sup(lay: layout.Layout) -> Iterator[procs.Supervisor]:
    supervisor = procs.Supervisor(lay.state_dir)
    yield supervisor
    supervisor.stop("operator", grace=1)


def running_operator(
    sup: procs.Supervisor, lay: layout.Layout, recorded: dict[str, str] | None, *, started: float
) -> procs.Managed:
    managed = sup.start("operator", [sys.executable, "-c", "import time; time.sleep(300)"])
    if recorded is not None:
        operator_process.fingerprint_path(lay).write_text(
            json.dumps({**recorded, "started": started})
        )
    return managed


def wanted(**env: str) -> dict[str, str]:
    return operator_process.fingerprint(ARGV, {**ENV, **env}, identity="serviceaccount")


def test_an_operator_started_from_this_code_with_these_settings_is_reused(
    sup: procs.Supervisor, lay: layout.Layout
) -> None:
    managed = running_operator(sup, lay, wanted(), started=time.time())
    assert operator_process.claim(sup, lay, wanted(), now=time.time()) is True
    assert sup.find("operator") == managed


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"code": "0" * 64}, "code"),
        ({"checkout": "/work/wt/another"}, "checkout"),
        ({"identity": "admin"}, "identity"),
        ({"argv": json.dumps(["/usr/bin/python3", "-m", "edgeferry"])}, "argv"),
    ],
)
def test_an_operator_that_differs_is_stopped_so_a_fresh_one_starts(
    sup: procs.Supervisor,
    lay: layout.Layout,
    change: dict[str, str],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running_operator(sup, lay, {**wanted(), **change}, started=time.time())
    assert operator_process.claim(sup, lay, wanted(), now=time.time()) is False
    assert sup.find("operator") is None
    assert why in capsys.readouterr().err


def test_an_operator_with_other_settings_is_not_reused(
    sup: procs.Supervisor, lay: layout.Layout
) -> None:
    running_operator(sup, lay, wanted(), started=time.time())
    other = wanted(EDGEFERRY_CLEANUP_DEADLINE_SECONDS="120")
    assert operator_process.claim(sup, lay, other, now=time.time()) is False
    assert sup.find("operator") is None


def test_an_operator_without_a_fingerprint_is_not_reused(
    sup: procs.Supervisor, lay: layout.Layout
) -> None:
    running_operator(sup, lay, None, started=time.time())
    assert operator_process.claim(sup, lay, wanted(), now=time.time()) is False
    assert sup.find("operator") is None


def test_an_operator_whose_token_is_about_to_expire_is_restarted(
    sup: procs.Supervisor, lay: layout.Layout
) -> None:
    started = time.time() - operator_process.REUSE_HOURS * 3600 - 60
    running_operator(sup, lay, wanted(), started=started)
    assert operator_process.claim(sup, lay, wanted(), now=time.time()) is False


def test_the_code_digest_changes_with_any_edit_to_the_operator(tmp_path: Path) -> None:
    package = tmp_path / "operator" / "edgeferry"
    package.mkdir(parents=True)
    (package / "main.py").write_text("print('v1')\n")
    before = operator_process.code_digest((package,), root=tmp_path)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert operator_process.code_digest((package,), root=tmp_path) == before
    (package / "main.py").write_text("print('v2')\n")
    assert operator_process.code_digest((package,), root=tmp_path) != before


def test_the_fingerprint_names_this_checkout_and_its_current_code() -> None:
    found = wanted()
    assert found["checkout"] == str(layout.REPO_ROOT)
    assert found["code"] == operator_process.code_digest()
    assert found != wanted(GRYPE_DB_AUTO_UPDATE="true")
