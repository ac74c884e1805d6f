"""The install, resource, monitoring and runbook docs link to places that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit import _binaries
from tests.unit.test_monitoring import markdown_anchors

DOCS = _binaries.REPO / "docs"
PAGES = ["install.md", "resources.md", "monitoring.md", "runbooks.md"]
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
