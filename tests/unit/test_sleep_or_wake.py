"""The daemons' sleep ends at once for a spec edit made while their last round ran."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import kopf

from edgeferry.handlers import runtime


class _Stopped:
    """What `sleep_or_wake` uses of Kopf's DaemonStopped: a flag to wait for."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    async def wait(self) -> None:
        await self.flag.wait()


def _sleep(body: kopf.Body, seconds: float, **kwargs: object) -> asyncio.Future[None]:
    stopped = cast(kopf.DaemonStopped, _Stopped())
    return asyncio.ensure_future(
        runtime.sleep_or_wake(seconds, stopped=stopped, body=body, **kwargs)  # type: ignore[arg-type]
    )


def test_an_edit_during_the_round_ends_the_sleep_at_once() -> None:
    async def scenario() -> None:
        raw = {"metadata": {"generation": 2}}
        body = kopf.Body(cast(Any, raw))
        # The round worked from generation 1; the edit to 2 came before the sleep started.
        await asyncio.wait_for(_sleep(body, 600, seen_generation=1), timeout=5)

    asyncio.run(scenario())


def test_an_edit_during_the_sleep_ends_it() -> None:
    async def scenario() -> None:
        raw = {"metadata": {"generation": 1}}
        body = kopf.Body(cast(Any, raw))
        sleeping = _sleep(body, 600, seen_generation=1)
        await asyncio.sleep(0.2)
        assert not sleeping.done()
        raw["metadata"]["generation"] = 2
        await asyncio.wait_for(sleeping, timeout=5)

    asyncio.run(scenario())


def test_without_an_edit_or_a_wake_it_sleeps_the_time_asked() -> None:
    async def scenario() -> None:
        body = kopf.Body(cast(Any, {"metadata": {"generation": 1}}))
        started = time.monotonic()
        await _sleep(body, 0.3, seen_generation=1)
        assert time.monotonic() - started >= 0.3

    asyncio.run(scenario())


def test_a_wake_ends_the_sleep() -> None:
    async def scenario() -> None:
        body = kopf.Body(cast(Any, {"metadata": {"generation": 1}}))
        wake = asyncio.Event()
        sleeping = _sleep(body, 600, wake=wake)
        await asyncio.sleep(0.1)
        assert not sleeping.done()
        wake.set()
        await asyncio.wait_for(sleeping, timeout=5)

    asyncio.run(scenario())
