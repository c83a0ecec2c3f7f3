"""The probe's deadline moves by the loop's own stalls, and only by them."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.health.core import Result
from agent.health.probes import _with_grace


async def answer_after(delay: float) -> Result:
    await asyncio.sleep(delay)
    return Result(True, "ok")


def test_a_probe_whose_loop_stalled_gets_the_stalled_time_back() -> None:
    stalls = iter([0.0, 1.0, 1.0, 1.0])

    async def run() -> Result:
        return await _with_grace(answer_after(0.2), time.monotonic(), 0.1, lambda: next(stalls))

    assert asyncio.run(run()).ok


def test_without_a_stall_the_timeout_stands() -> None:
    async def run() -> Result:
        return await _with_grace(answer_after(0.2), time.monotonic(), 0.1, lambda: 0.0)

    with pytest.raises(TimeoutError):
        asyncio.run(run())


def test_the_grace_is_bounded() -> None:
    clock = iter(range(100))  # the loop "stalls" a second per look: never enough

    async def run() -> Result:
        return await _with_grace(answer_after(5.0), time.monotonic(), 0.02, lambda: next(clock))

    with pytest.raises(TimeoutError):
        asyncio.run(run())
