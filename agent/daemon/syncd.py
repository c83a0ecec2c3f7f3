"""The daemon's shell around ``agent.ipvs.sync``: drives the kernel's sync daemons.

Owns one task that, whenever it is kicked (a VRRP or lease transition, a reload, each
full reconcile, start and stop), reads the running daemons (IPVS_CMD_GET_DAEMON),
plans against the wanted ones and applies the plan (DEL_DAEMON, NEW_DAEMON) through
the agent's IPVS adapter. Kicks that arrive while a pass runs fold into one more
pass. It never shells out, never decides (``agent.ipvs.sync`` does), and never
touches a daemon outside the ownership rule documented there. A refused request is
logged and counted (``lvs_agent_errors_total{kind="sync_daemon"}``) and retried at
the next kick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.ipvs.model import SyncDaemon
from agent.ipvs.sync import ROLES, holds, plan, wanted

if TYPE_CHECKING:
    from agent.config import Config
    from agent.ipvs.kernel import IpvsKernel
    from agent.metrics import AgentMetrics
    from agent.vrrp.service import VrrpService

log = logging.getLogger("lvs-agent")


class SyncDaemons:
    def __init__(
        self,
        kernel: IpvsKernel,
        metrics: AgentMetrics,
        config: Callable[[], Config],
        vrrp: Callable[[], VrrpService | None],
    ) -> None:
        self.kernel = kernel
        self.metrics = metrics
        self._config = config
        self._vrrp = vrrp
        self._started: set[int] = set()  # roles this process started
        self._kick = asyncio.Event()
        self._pass = asyncio.Lock()  # one read-plan-apply at a time (the task, the stop)
        self.running: dict[int, SyncDaemon] = {}

    def kick(self) -> None:
        """Ask for a pass soon (callable from any loop callback)."""
        self._kick.set()

    def holder(self) -> bool:
        sync = self._config().ipvs.sync
        vrrp = self._vrrp()
        if sync is None or vrrp is None:
            return False
        states = {name: state.name for name, state in vrrp.states().items()}
        groups = {g.name: set(g.instances) for g in self._config().vrrp.vrrp_sync_groups}
        return holds(sync.instance, states, groups)

    async def run(self) -> None:
        """The task: one pass per kick (the first at once)."""
        self._kick.set()
        while True:
            await self._kick.wait()
            self._kick.clear()
            await self.step()

    async def step(self) -> None:
        """One pass: read, plan, apply. Errors are logged and counted, never raised."""
        async with self._pass:
            await self._step()

    async def _step(self) -> None:
        sync = self._config().ipvs.sync
        if sync is None and not self._started:
            return  # nothing configured, nothing of ours: never even read
        try:
            running = await self.kernel.sync_daemons_async()
        except OSError as exc:
            log.error("sync daemons: cannot read them: %s", exc)
            self.metrics.errors.labels(kind="sync_daemon").inc()
            return
        owned = set(ROLES) if sync is not None else set(self._started)
        p = plan(wanted(sync, self.holder()), running, owned)
        if p:
            descriptions = p.describe(running)
            try:
                errors = await self.kernel.control_daemons_async(p.stop, p.start)
            except OSError as exc:
                log.error("sync daemons: %s", exc)
                self.metrics.errors.labels(kind="sync_daemon").inc()
                return
            for text, error in zip(descriptions, errors, strict=False):
                if error is None:
                    log.info("applied: %s", text)
                else:
                    log.error("failed: %s: %s", text, error)
                    self.metrics.errors.labels(kind="sync_daemon").inc()
            for state, error in zip(p.stop, errors, strict=False):
                if error is None:
                    running.pop(state, None)
                    self._started.discard(state)
            for d, error in zip(p.start, errors[len(p.stop) :], strict=False):
                if error is None:
                    running[d.state] = d
                    self._started.add(d.state)
        self.running = running
        for state in ROLES:
            role = "master" if state == ROLES[0] else "backup"
            self.metrics.sync_daemon.labels(role=role).set(1 if state in running else 0)
