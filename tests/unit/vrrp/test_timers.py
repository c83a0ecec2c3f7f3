"""InstanceTimer on a real asyncio loop: fires once at the deadline, never early;
re-arming replaces the deadline; cancel and close stop it."""

from __future__ import annotations

import asyncio

import pytest

from agent.vrrp.timers import InstanceTimer


def run(scenario: object) -> list[float]:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timer = InstanceTimer(loop, lambda: fired.append(loop.time()))
        try:
            await scenario(loop, timer)  # type: ignore[operator]
        finally:
            timer.close()
        return fired

    return asyncio.run(main())


def test_fires_once_at_the_deadline_and_never_early() -> None:
    deadlines: list[float] = []

    async def scenario(loop: asyncio.AbstractEventLoop, timer: InstanceTimer) -> None:
        assert timer.precise  # Linux: timerfd
        deadlines.append(loop.time() + 0.05)
        timer.arm(deadlines[0])
        await asyncio.sleep(0.2)

    fired = run(scenario)
    assert len(fired) == 1
    assert deadlines[0] <= fired[0] < deadlines[0] + 0.1


def test_rearm_replaces_and_cancel_stops() -> None:
    deadlines: list[float] = []

    async def scenario(loop: asyncio.AbstractEventLoop, timer: InstanceTimer) -> None:
        timer.arm(loop.time() + 0.05)
        deadlines.append(loop.time() + 0.1)
        timer.arm(deadlines[0])  # replaces the first
        await asyncio.sleep(0.2)
        timer.arm(loop.time() + 0.05)
        timer.cancel()
        await asyncio.sleep(0.1)

    fired = run(scenario)
    assert len(fired) == 1 and fired[0] >= deadlines[0]


def test_a_deadline_in_the_past_fires_at_once() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop, timer: InstanceTimer) -> None:
        timer.arm(loop.time() - 5)
        await asyncio.sleep(0.05)

    assert len(run(scenario)) == 1


def test_a_thread_switch_inside_arm_does_not_make_it_early(monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline must not be converted by reading two clocks: a thread switch between
    # the reads (100 ms and more under emulation) made the timer fire that much early,
    # and the VRRP machine then had nothing due.
    import time
    import types

    import agent.vrrp.timers as timers

    lagging = types.SimpleNamespace(
        monotonic=lambda: time.monotonic() - 0.2, get_clock_info=time.get_clock_info
    )
    monkeypatch.setattr(timers, "time", lagging)
    deadlines: list[float] = []

    async def scenario(loop: asyncio.AbstractEventLoop, timer: InstanceTimer) -> None:
        assert timer.precise
        deadlines.append(loop.time() + 0.25)
        timer.arm(deadlines[0])
        await asyncio.sleep(0.4)

    fired = run(scenario)
    assert len(fired) == 1 and fired[0] >= deadlines[0]


def test_a_loop_with_its_own_clock_gets_call_at() -> None:
    class Shifted(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return super().time() + 1000.0

    loop = Shifted()
    try:

        async def main() -> tuple[bool, list[float], float]:
            fired: list[float] = []
            timer = InstanceTimer(loop, lambda: fired.append(loop.time()))
            at = loop.time() + 0.05
            timer.arm(at)
            await asyncio.sleep(0.2)
            timer.close()
            return timer.precise, fired, at

        precise, fired, at = loop.run_until_complete(main())
    finally:
        loop.close()
    assert not precise
    assert len(fired) == 1 and fired[0] >= at
