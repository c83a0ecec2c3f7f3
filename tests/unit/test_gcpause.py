"""agent.gcpause: the collector is paused for synchronous stretches only, never
across an await, and never from a thread other than the main one."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Generator

from agent.gcpause import paused_gc
from agent.ipvs import kernel
from agent.ipvs.kernel import IpvsKernel


def test_paused_inside_restored_after() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with paused_gc(pause=False):
        assert gc.isenabled()
    try:
        with paused_gc():
            raise KeyError
    except KeyError:
        pass
    assert gc.isenabled()


def test_another_thread_never_pauses_the_collector() -> None:
    seen: list[bool] = []

    def work() -> None:
        with paused_gc():
            seen.append(gc.isenabled())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [True]


def test_an_async_kernel_call_keeps_the_collector_on_while_it_awaits() -> None:
    """The daemon's IPVS calls pause the collector only while decoding."""
    k = object.__new__(IpvsKernel)  # no socket: the driver loop alone
    k.pause_gc = True
    k.async_budget = 0.002
    k._alock = None
    k._dirty = False
    during_steps: list[bool] = []
    during_awaits: list[bool] = []

    def steps(_p: object, _budget: float | None) -> Generator[int, None, None]:
        for step in (kernel._WAIT, 1, kernel._WAIT):
            during_steps.append(gc.isenabled())
            yield step
        during_steps.append(gc.isenabled())

    async def readable() -> None:
        during_awaits.append(gc.isenabled())
        await asyncio.sleep(0)
        during_awaits.append(gc.isenabled())

    k._steps = steps  # type: ignore[method-assign]
    k._readable = readable  # type: ignore[method-assign]
    try:
        asyncio.run(k._run_async(None))  # type: ignore[arg-type]
    finally:
        gc.unfreeze()  # what the call moved out of the collector's way
    assert during_steps == [False] * 4
    assert during_awaits == [True] * 4
    assert gc.isenabled()
