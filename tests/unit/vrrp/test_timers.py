"""InstanceTimer on a real asyncio loop: fires once at the deadline, never early;
re-arming replaces the deadline; cancel and close stop it."""

from __future__ import annotations

import asyncio

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
