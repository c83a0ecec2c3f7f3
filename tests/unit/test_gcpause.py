"""agent.gcpause: the collector is paused for bounded stretches only (never across an
await, from another thread only when asked), and settling keeps the frozen set bounded."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Generator

import pytest

from agent import gcpause
from agent.gcpause import paused_gc, settle
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


def test_another_thread_pauses_the_collector_only_when_asked() -> None:
    seen: list[bool] = []

    def work() -> None:
        with paused_gc():
            seen.append(gc.isenabled())
        with paused_gc(any_thread=True):
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [True, False, True]


def test_settling_keeps_the_frozen_set_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cyclic garbage caught in a freeze is collected once the frozen set has grown
    past its bound: repeated settles never pile it up."""
    monkeypatch.setattr(gcpause, "FREEZE_FACTOR", 2)
    monkeypatch.setattr(gcpause, "FREEZE_SLACK", 5_000)
    monkeypatch.setattr(gcpause, "CHECK_EVERY", 0.0)
    monkeypatch.setattr(gcpause, "_base", None)
    gc.collect()
    try:
        settle()
        base = gc.get_freeze_count()
        for _ in range(40):
            cycles = []
            for _ in range(2_000):
                a: list[object] = []
                a.append(a)  # a reference cycle: only the collector frees it
                cycles.append(a)
            settle()  # frozen while alive ...
            del cycles, a  # ... then garbage that reference counting cannot free
            assert gc.get_freeze_count() <= 2 * (base + 2_001) + 5_000 + 2_001
    finally:
        gc.unfreeze()
        gc.collect()


def test_an_async_kernel_call_keeps_the_collector_off_across_its_awaits() -> None:
    """A dump decoded between awaits is never walked by a collection half-way
    (each await used to let one run, every hundredth a full pass), and the collector
    is on again once the call is over."""
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
    assert during_awaits == [False] * 4
    assert gc.isenabled()


def test_what_a_pause_allocated_is_settled_before_the_collector_runs_again() -> None:
    """Else the first allocation after the pause starts a young collection over all of
    it (a whole dump: 100-600 ms on the loop under emulation)."""
    gc.collect()
    before = gc.get_freeze_count()
    try:
        with gcpause.paused_gc():
            kept = [[i] for i in range(20_000)]
        assert gc.get_freeze_count() >= before + 20_000
    finally:
        gc.unfreeze()
    assert len(kept) == 20_000
