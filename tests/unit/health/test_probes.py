"""The probe's deadline moves by the loop's own stalls, and only by them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.health.config import Check, check_key
from agent.health.core import Result
from agent.health.probes import _with_grace, probe


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


def test_an_exec_check_is_told_its_target_and_nothing_of_a_virtual_server(
    tmp_path: Path,
) -> None:
    out = tmp_path / "env"
    script = f"env | grep -E '^LVS_(RS|CHECK|VIRTUAL|QUORUM)' | sort > {out}; exit 3"
    check = Check("exec", command=("/bin/sh", "-c", script), timeout=5.0, dynamic_weight=True)
    result = asyncio.run(probe(check_key(check, "fd00::21", 8443)))
    assert result.ok and result.reason == "exit 3"  # misc_dynamic: weight 1
    assert out.read_text().splitlines() == [
        "LVS_CHECK_ADDRESS=fd00::21",
        "LVS_CHECK_PORT=8443",
        "LVS_RS_ADDRESS=fd00::21",
        "LVS_RS_PORT=8443",
    ]
