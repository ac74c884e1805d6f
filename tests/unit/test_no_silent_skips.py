"""A tool the suite needs that is missing fails the run; nothing in the suite skips quietly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit import _binaries

TESTS = _binaries.REPO / "tests"
ALLOWED_SKIPS = {
    "tests/unit/_binaries.py": "the one place that looks tools up; it fails when one is missing",
    "tests/integration/test_scanner.py": "compares grype's verdicts with this host's own "
    "Debian 12 packages: a property of the host, not a missing tool",
}
_SKIP = re.compile(r"pytest\.skip\b|\bskipif\b|importorskip|pytest\.mark\.skip\b|shutil\.which")


def test_a_missing_cached_tool_fails_with_the_command_that_builds_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEFERRY_CACHE", str(tmp_path))
    for find, message in (
        (_binaries.helm, "helm is missing: run `make unit`"),
        (_binaries.kubectl, "kubectl is missing"),
    ):
        with pytest.raises(BaseException) as outcome:  # a skip must not escape as a skip
            find()
        assert outcome.type is pytest.fail.Exception, outcome.type
        assert message in str(outcome.value)


def test_a_missing_debian_tool_fails_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BaseException) as outcome:
        _binaries.debian("promtool", "prometheus")
    assert outcome.type is pytest.fail.Exception, outcome.type
    assert "apt-get install prometheus" in str(outcome.value)


def test_no_test_skips_or_probes_for_a_tool() -> None:
    own = Path(__file__).relative_to(_binaries.REPO).as_posix()
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(_binaries.REPO).as_posix()
        if relative in ALLOWED_SKIPS or relative == own:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _SKIP.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "tests that skip or look tools up themselves (use _binaries):\n" + "\n".join(
        found
    )


def _prerequisites(makefile: str, target: str) -> set[str]:
    line = re.search(rf"^{re.escape(target)}:([^\n=]*)$", makefile, re.M)
    assert line, f"Makefile has no target {target}"
    return set(line.group(1).split())


def test_make_unit_and_make_test_provide_every_tool_the_unit_tests_run() -> None:
    makefile = (_binaries.REPO / "Makefile").read_text()
    assert {"deps", "venv", "unit-tools"} <= _prerequisites(makefile, "unit")
    assert {"deps", "venv", "prepare"} <= _prerequisites(makefile, "test")
    prepare = makefile.split("\nprepare:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"bash testbed/tools/build\.sh &", prepare), prepare
    recipe = makefile.split("\nunit-tools:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"testbed/tools/build\.sh kubernetes helm\b", recipe), recipe
    apt = re.search(r"^APT_PACKAGES := (.*)$", makefile, re.M)
    assert apt and {"prometheus", "lua5.4"} <= set(apt.group(1).split())
    assert "make test" in (_binaries.REPO / ".ci" / "run").read_text()
