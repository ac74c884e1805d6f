"""The docs link to places that exist and say what the code does (reasons, limits, namespaces)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from edgeferry.models import reasons
from tests.unit import _binaries
from tests.unit.test_monitoring import markdown_anchors

REPO = _binaries.REPO
DOCS = REPO / "docs"
OPERATOR = REPO / "operator" / "edgeferry"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
_LINK = re.compile(r"\]\(([^)#\s]+\.md)?(?:#([^)\s]+))?\)")


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_and_anchors_resolve(page: str) -> None:
    text = (DOCS / page).read_text()
    for target, anchor in _LINK.findall(text):
        path: Path = DOCS / (target or page)
        assert path.is_file(), f"{page} links to missing {target}"
        if anchor:
            assert anchor in markdown_anchors(path), f"{page} links to missing {target}#{anchor}"


@pytest.mark.parametrize("page", PAGES)
def test_repository_paths_named_in_the_docs_exist(page: str) -> None:
    text = (DOCS / page).read_text()
    named = set(re.findall(r"`((?:manifests|charts|crds|tests|operator|testbed)/[\w./-]+)`", text))
    missing = sorted(p for p in named if "*" not in p and not (_binaries.REPO / p).exists())
    assert missing == [], f"{page} names paths that do not exist: {missing}"


_ROOMS = ("models", "decisions", "adapters", "handlers")


@pytest.mark.parametrize("page", PAGES)
def test_operator_modules_and_repository_documents_named_in_the_docs_exist(page: str) -> None:
    text = (DOCS / page).read_text()
    modules = set(re.findall(rf"`((?:{'|'.join(_ROOMS)})/\w+\.py|\w+\.py)`", text))
    documents = set(re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text))
    missing = sorted(m for m in modules if not (OPERATOR / m).exists())
    missing += sorted(d for d in documents if not any((p / d).exists() for p in (REPO, DOCS)))
    assert missing == [], f"{page} names files that are not in the repository: {missing}"


def _prose_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs outside fenced code blocks."""
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    return [" ".join(p.split()) for p in outside.split("\n\n") if p.strip()]


def test_the_docs_agree_on_who_creates_target_namespaces() -> None:
    # What the code does: the operator never creates a Cloud target's namespace (it must exist;
    # its ServiceAccount creates only the hub namespaces of Agent targets, and never patches
    # one); a K3s kubeconfig user may, and a missing namespace is then created
    # (adapters/target_workloads.py); an existing one is never patched.
    rules = yaml.safe_load_all((REPO / "manifests" / "rbac" / "clusterroles.yaml").read_text())
    for role in rules:
        granted = role.get("rules") or []
        binds_agent = any("bind" in r["verbs"] for r in granted)
        for rule in granted:
            if "namespaces" in rule.get("resources", []):
                assert not {"patch", "update"} & set(rule["verbs"]), role["metadata"]
                assert "create" not in rule["verbs"] or binds_agent, role["metadata"]
    round_source = (OPERATOR / "handlers" / "rollout_round.py").read_text()
    assert 'create_namespace=target.type != "Cloud"' in round_source
    statement = re.compile(r"namespaces? (?:\w+ ){0,3}(?:must exist|(?:is|are) created)", re.I)
    for page in PAGES:
        for paragraph in _prose_paragraphs((DOCS / page).read_text()):
            if statement.search(paragraph):
                assert "Cloud" in paragraph and "K3s" in paragraph, (
                    f"{page} says who creates target namespaces without telling Cloud targets "
                    f"(must exist) from K3s targets (created when allowed): {paragraph[:200]}"
                )
    comments = re.findall(r"namespace: \w+ +#.*", (DOCS / "resources.md").read_text())
    assert comments and not [c for c in comments if "must exist" in c], comments


def _operator_source() -> str:
    return "\n".join(p.read_text() for p in sorted(OPERATOR.rglob("*.py")))


def _reason_words(found: list[tuple[str, str]]) -> set[str]:
    """Reasons written as a literal (`"HealthTimeout"`) or a constant (`reasons.HEALTH_TIMEOUT`)."""
    return {literal or getattr(reasons, constant) for literal, constant in found}


def _written_smoke_test_reasons() -> set[str]:
    """The reasons the smoke-test adapter and the pipeline write into SmokeTested."""
    reason = r'(?:"([A-Z]\w+)"|reasons\.([A-Z_]+))'
    smoke = (OPERATOR / "adapters" / "smoke.py").read_text()
    failed = _reason_words(re.findall(rf"(?:_failed|_Unhealthy)\(\s*{reason}", smoke))
    smoke_tested = r'(?:"SmokeTested"|reasons\.SMOKE_TESTED)'
    passed = _reason_words(
        re.findall(rf'Condition\(\s*{smoke_tested},\s*"True",\s*{reason}', _operator_source())
    )
    assert reasons.HEALTH_TIMEOUT in failed and reasons.SMOKE_TEST_PASSED in passed
    platforms = (OPERATOR / "decisions" / "smoke_platforms.py").read_text()
    told = _reason_words(re.findall(rf"return {reason}, ", platforms))
    assert reasons.EMULATION_MISSING in told
    return failed | passed | told


def test_the_smoke_tested_reasons_in_the_docs_are_the_ones_the_code_writes() -> None:
    row = next(
        line
        for line in (DOCS / "resources.md").read_text().splitlines()
        if line.startswith("| `SmokeTested` |")
    )
    documented = set(re.findall(r"`(\w+)`", row)) - {"SmokeTested"}
    assert documented == _written_smoke_test_reasons()


def test_the_crd_says_how_much_of_the_prediction_is_kept() -> None:
    kept = {int(n) for n in re.findall(r"prediction(?:\.body)?\[:(\d+)\]", _operator_source())}
    crd = (REPO / "crds" / "modelimage.yaml").read_text()
    described = re.findall(r"The prediction response body \(cut to ([^)]*)\)", crd)
    assert len(kept) == 1 and described == [f"{kept.pop()} characters"], described
