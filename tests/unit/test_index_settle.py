"""A woken ModelDeployment daemon reads the EdgeTargets its indexer saw, not the ones before.

Kopf's indexer wakes the daemon before Kopf stores the indexer's result: a round started at
once could read a target's old labels (still selected), and then sleep until the resync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import kopf
import pytest

from edgeferry.handlers import modeldeployment, runtime
from edgeferry.models import edgetarget as et


def _view(name: str, **labels: str) -> runtime.TargetView:
    return runtime.TargetView(
        name=name,
        labels=labels,
        spec=None,
        status=et.EdgeTargetStatus(),
        created=None,
        generation=1,
    )


def _index(entries: Mapping[Any, list[Any]]) -> Any:
    """A dict stands in for a Kopf index: the daemon only calls `get` on it."""
    return cast(kopf.Index[Any, Any], entries)


def test_targets_are_stored_when_each_wanted_one_has_the_fingerprint_seen() -> None:
    old, new = _view("edge-2", site="a"), _view("edge-2", site="b")
    other = _view("cloud")
    wanted = {"edge-2": new.fingerprint()}
    assert modeldeployment._targets_stored([other, new], wanted)
    assert not modeldeployment._targets_stored([other, old], wanted)
    assert not modeldeployment._targets_stored([other], wanted)
    assert modeldeployment._targets_stored([old], {})


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], tuple[object, ...]]:
    targets: dict[tuple[str, str], tuple[object, ...]] = {}
    monkeypatch.setattr(modeldeployment, "_seen_targets", targets)
    monkeypatch.setattr(modeldeployment, "_seen_images", {})
    return targets


def test_the_wait_ends_once_the_index_holds_the_woken_targets_new_labels(
    seen: dict[tuple[str, str], tuple[object, ...]],
) -> None:
    new = _view("edge-2", site="b")
    seen[("ns", "edge-2")] = new.fingerprint()
    entries: dict[str, list[runtime.TargetView]] = {"ns": [_view("edge-2", site="a")]}

    async def scenario() -> None:
        waiting = asyncio.ensure_future(
            modeldeployment._index_caught_up(
                _index({}), ("ns", "iris"), _index(entries), [("ns", "edge-2")]
            )
        )
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the index still holds the old labels"
        entries["ns"] = [new]  # Kopf stores the indexer's result
        await asyncio.wait_for(waiting, timeout=1.5)

    asyncio.run(scenario())


def test_the_wait_gives_up_after_the_settle_time(
    seen: dict[tuple[str, str], tuple[object, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(modeldeployment, "_INDEX_SETTLE_SECONDS", 0.2)
    seen[("ns", "edge-2")] = _view("edge-2", site="b").fingerprint()
    entries = {"ns": [_view("edge-2", site="a")]}

    async def scenario() -> None:
        await asyncio.wait_for(
            modeldeployment._index_caught_up(
                _index({}), ("ns", "iris"), _index(entries), [("ns", "edge-2")]
            ),
            timeout=2,
        )

    asyncio.run(scenario())


def test_a_wake_names_the_target_that_caused_it() -> None:
    async def scenario() -> None:
        loop = modeldeployment._Loop(image="iris", runs_in=asyncio.get_running_loop())
        loop.woken_by(("ns", "edge-2"))
        loop.woken_by(None)  # a ModelImage's change
        assert loop.wake.is_set()
        assert loop.woken == {("ns", "edge-2")}

    asyncio.run(scenario())
