"""agent.daemon: a SIGHUP does not wait for a full reconcile that is still reading."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.daemon import Agent
from agent.ipvs.model import KernelTable, Op, ServiceKey, Timeouts
from agent.metrics import AgentMetrics
from tests.unit.ipvs.fake_kernel import FakeKernel


class SlowDumps(FakeKernel):
    """The async calls of the kernel adapter; a full dump waits while ``gate`` is shut."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0  # full dumps waiting at the gate now

    async def dump_async(self) -> KernelTable:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return self.dump()

    async def dump_services_async(self, keys: Iterable[ServiceKey]) -> KernelTable:
        table = self.dump()
        return {k: table[k] for k in keys if k in table}

    async def get_timeouts_async(self) -> Timeouts:
        return self.get_timeouts()

    async def apply_async(self, ops: Sequence[Op]) -> Sequence[Any]:
        return self.apply(ops)


def config_text(state: Path, weight: int) -> str:
    out = [f"state_dir: {state}", "reconcile_interval: 0.2s", "virtual_servers:"]
    for i in range(3):
        w = weight if i == 1 else 1
        out.append(
            f"  - name: vs{i}\n    address: 10.1.0.{i + 1}\n    port: 80\n    real_servers:\n"
            f"      - {{address: 172.16.0.{i + 1}, port: 8080, weight: {w}}}"
        )
    return "\n".join(out) + "\n"


def weights(kernel: FakeKernel) -> list[int]:
    return sorted(int(d.dest.weight) for svc in kernel.table.values() for d in svc.dests.values())


async def until(check: Any, what: str) -> None:
    for _ in range(400):  # bounded: 20 s
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Path, SlowDumps, Agent]]:
    """An agent on ``SlowDumps`` whose first reconcile is done; stopped on the way out."""
    path = tmp_path / "config.yaml"
    path.write_text(config_text(tmp_path / "state", 1))
    (tmp_path / "state").mkdir()
    kernel = SlowDumps()
    agent = Agent(str(path), load_config(str(path)), kernel, AgentMetrics())  # type: ignore[arg-type]
    task = asyncio.ensure_future(agent.run())
    try:
        await until(lambda: weights(kernel) == [1, 1, 1], "the first reconcile")
        yield path, kernel, agent
    finally:
        kernel.gate.set()
        agent._on_stop_signal()
        await asyncio.wait_for(task, 10)


def test_a_reload_goes_before_a_full_reconcile_that_is_still_reading(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path) as (path, kernel, agent):
            kernel.gate.clear()  # the next periodic reconcile stops in its dump
            await until(lambda: kernel.waiting == 1, "a full reconcile reading")
            writes = len(kernel.writes)
            path.write_text(config_text(tmp_path / "state", 7))
            agent._on_reload_signal()
            await until(lambda: weights(kernel) == [1, 1, 7], "the reloaded weight")
            assert len(kernel.writes) == writes + 1  # the reload's one edit, nothing else
            # the abandoned reconcile wrote nothing; the next one (after the reload)
            # waits at the gate again until it opens
            await until(lambda: kernel.waiting == 1, "the full reconcile after the reload")
            kernel.gate.set()
            await until(lambda: kernel.waiting == 0 and kernel.dumps >= 3, "it to finish")
            assert weights(kernel) == [1, 1, 7]

    asyncio.run(main())


def test_after_two_abandoned_full_reconciles_the_third_runs_to_its_end(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path) as (path, kernel, agent):
            kernel.gate.clear()
            for weight in (2, 3):  # each reload abandons the full reconcile reading
                await until(lambda: kernel.waiting == 1, "a full reconcile reading")
                path.write_text(config_text(tmp_path / "state", weight))
                agent._on_reload_signal()
                await until(lambda w=weight: weights(kernel) == [1, 1, w], f"weight {weight}")
            # the third full reconcile is not abandoned: the next reload waits for it
            await until(lambda: kernel.waiting == 1, "the third full reconcile reading")
            path.write_text(config_text(tmp_path / "state", 4))
            agent._on_reload_signal()
            await asyncio.sleep(0.5)
            assert weights(kernel) == [1, 1, 3] and kernel.waiting == 1
            kernel.gate.set()
            await until(lambda: weights(kernel) == [1, 1, 4], "the reload after it")

    asyncio.run(main())
