"""The cached SBOMs: only a whole one is re-matched, and killed cataloguers' leftovers go."""

from __future__ import annotations

import json
import os
import pathlib
import time

from edgeferry.adapters import scanner

WHOLE = json.dumps({"artifacts": [], "descriptor": {"name": "syft", "version": "1"}})


def test_only_a_whole_syft_document_is_readable(tmp_path: pathlib.Path) -> None:
    sbom = tmp_path / "sbom.json"
    assert not scanner.readable_sbom(sbom), "missing"
    sbom.write_text(WHOLE[: len(WHOLE) // 2])
    assert not scanner.readable_sbom(sbom), "cut short"
    sbom.write_text('{"other": 1}')
    assert not scanner.readable_sbom(sbom), "not syft's"
    sbom.write_text(WHOLE)
    assert scanner.readable_sbom(sbom)


def test_only_old_partial_files_are_removed(tmp_path: pathlib.Path) -> None:
    old = tmp_path / f"a.json.1.aa{scanner.PARTIAL_SUFFIX}"
    young = tmp_path / f"b.json.2.bb{scanner.PARTIAL_SUFFIX}"
    cached = tmp_path / "a.json"
    for path in (old, young, cached):
        path.write_text(WHOLE)
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    os.utime(cached, (hour_ago, hour_ago))

    removed = scanner.remove_partial_sboms(tmp_path, older_than_s=600)

    assert removed == [old]
    assert young.exists() and cached.exists()
