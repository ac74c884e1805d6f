"""The testbed's supervisor stops what it started, even when the binary was rebuilt meanwhile."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeferry_testbed import procs


def test_a_process_whose_binary_was_replaced_is_still_found_and_stopped(tmp_path: Path) -> None:
    sleep = "/usr/bin/sleep"  # coreutils: Essential on Debian, so always there
    binary = tmp_path / "bin" / "tool"
    binary.parent.mkdir()
    shutil.copy2(sleep, binary)
    sup = procs.Supervisor(tmp_path / "state")
    started = sup.start("tool", [str(binary), "300"])
    try:
        replacement = binary.with_suffix(".new")
        shutil.copy2(sleep, replacement)
        replacement.replace(binary)  # what `build.sh` does: the running file is unlinked
        found = sup.find("tool")
        assert found is not None and found.pid == started.pid
        assert sup.stop("tool")
        assert sup.find("tool") is None
    finally:
        sup.kill("tool")
