"""The daemon's health service: runs the checks and lands what they decide in the kernel.

It owns the health ``Scheduler``'s lifecycle in the daemon (started on the loop on
every director, backups included, so a takeover starts with known health; carried
over on reload, unchanged checks keeping their state), the table every reconcile
programs (the configured table adjusted by ``agent.health.overlay``), and the
prompt path from a health change to the kernel. It must never decide health (the
core and the scheduler do), plan a table (the planner does) or touch services the
configuration does not name.

A change lands at once, without a full reconcile: a real server whose weight
changed gets one ``EditDest`` (HAProxy's ``set weight``, keepalived's
``ipvs_cmd(LVS_CMD_EDIT_DEST)``). A change of the real servers themselves (a
``remove`` failure, a recovery from one, the sorry server in or out) runs a
partial reconcile of just that service, so the planner's draining and ownership
rules apply. A change that comes while a reconcile is running is applied at once
and again after that reconcile, measured against the table it programmed: a
reconcile that read health before the change can never leave the older weight.

With no health checks and no maintenance flag nothing runs: the reconcile gets
the configured table itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Final

from agent.health.overlay import MaintKey, adjust_service, adjust_table

if TYPE_CHECKING:
    from agent.config import Config
    from agent.health.config import Pool, PoolPolicy
    from agent.health.metrics import HealthCollector
    from agent.health.scheduler import Scheduler
    from agent.ipvs.model import DesiredService, DesiredTable, EditDest, ServiceKey
    from agent.ipvs.reconciler import AsyncIpvsTable

log = logging.getLogger("agent.health")

#: the most overdue check this late (seconds) means the checker stopped making
#: progress: logged, counted, and ``healthy()`` turns False (the systemd watchdog)
STALLED: Final = 30.0
WATCH_EVERY: Final = 5.0  # seconds between two looks at the checker's progress


class HealthService:
    """Health checks for the daemon: ``configure`` (start, reload), ``table`` for every
    reconcile (with ``begin``/``end`` around it), ``set_maintenance``, ``stop``."""

    def __init__(
        self,
        kernel: AsyncIpvsTable | None,
        reconcile_only: Callable[[frozenset[ServiceKey]], Awaitable[object]],
        *,
        collector: HealthCollector | None = None,
        on_error: Callable[[str], None] | None = None,
        scheduler_factory: Callable[..., Scheduler] | None = None,
    ) -> None:
        self.kernel = kernel
        self._reconcile_only = reconcile_only
        self.collector = collector
        self._on_error = on_error
        self._factory = scheduler_factory
        self.scheduler: Scheduler | None = None
        self._policies: dict[str, PoolPolicy] = {}
        self._maint: frozenset[MaintKey] = frozenset()
        self._maint_by: dict[str, set[tuple[str, int]]] = {}
        self._base: DesiredTable = {}
        self._index: dict[str, ServiceKey] = {}
        self._cache: DesiredTable | None = None
        # What the kernel carries, as far as health is concerned: the table the last
        # reconcile programmed, and the services changed directly since.
        self._applied: DesiredTable = {}
        self._direct: dict[ServiceKey, DesiredService] = {}
        self._running: DesiredTable | None = None  # the table of the reconcile under way
        self._touched: set[str] = set()
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stalled = False
        self.changes = 0  # health changes sent to the kernel (direct edits and partials)

    # -- configuration ------------------------------------------------------------

    def configure(self, pools: Sequence[Pool], desired: DesiredTable) -> None:
        """Start or reload: ``pools`` as ``agent.health.pools_of`` builds them (only
        pools with at least one check run), ``desired`` the configured table."""
        checked = [p for p in pools if any(m.checks for m in p.members)]
        self._policies = {p.name: p.policy for p in checked}
        if checked:
            if self.scheduler is None:
                self.scheduler = self._new_scheduler(checked)
                if _loop_running():
                    self.scheduler.start()
                    self._start_watch()
                log.info(
                    "health: %d check(s) for %d virtual server(s)",
                    self.scheduler.checks,
                    len(checked),
                )
            else:
                self.scheduler.reload(checked)
                log.info(
                    "health: reloaded, %d check(s) for %d virtual server(s)",
                    self.scheduler.checks,
                    len(checked),
                )
        elif self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
            log.info("health: no checks configured any more; checking stopped")
        if self.scheduler is not None:
            self.scheduler.set_maintenance(self._maint)
        if self.collector is not None:
            self.collector.scheduler = self.scheduler
        self._set_base(desired)

    def _new_scheduler(self, pools: Sequence[Pool]) -> Scheduler:
        if self._factory is not None:
            return self._factory(pools, on_change=self._on_change)
        from agent.health.scheduler import Scheduler

        return Scheduler(pools, on_change=self._on_change)

    def start(self) -> None:
        """On the loop: start probing (``configure`` before the loop ran defers it here)."""
        if self.scheduler is not None and self._watch is None:
            self.scheduler.start()
            self._start_watch()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        for task in (self._task, self._watch):
            if task is not None:
                task.cancel()
        self._task = self._watch = None

    def set_maintenance(self, keys: Collection[MaintKey]) -> None:
        """The operator's maintenance flags (``MaintenanceStore.keys()``): weight 0."""
        new = frozenset(keys)
        if new == self._maint:
            return
        changed = {vs for vs, _ in new ^ self._maint}
        self._maint = new
        self._maint_by = {}
        for vs, rs in new:
            self._maint_by.setdefault(vs, set()).add(rs)
        if self.scheduler is not None:
            self.scheduler.set_maintenance(new)  # quorum and floor count it out
        self._on_change(changed)

    # -- the table reconciles program ---------------------------------------------

    def table(self, desired: DesiredTable) -> DesiredTable:
        """``desired`` (the configured table) as health wants it."""
        if desired is not self._base:
            self._set_base(desired)
        if self._cache is None:
            decisions = self.scheduler.decisions() if self.scheduler is not None else {}
            self._cache = adjust_table(desired, decisions, self._policies, self._maint)
        return self._cache

    def begin(self, desired: DesiredTable) -> DesiredTable:
        """The table for a reconcile about to run; ``end()`` must follow."""
        table = self.table(desired)
        self._running = table
        self._touched = set()
        return table

    def end(self) -> None:
        """The reconcile ran: the kernel carries its table, and what changed meanwhile
        is sent again against it."""
        if self._running is None:
            return
        self._applied, self._running = self._running, None
        self._direct = {}
        touched, self._touched = self._touched, set()
        if touched:
            self._on_change(touched)

    # -- progress (the systemd watchdog hangs off this) ---------------------------

    def progress(self) -> float:
        """How late (seconds) the most overdue check is now: grows when checking stalls."""
        return self.scheduler.oldest_due() if self.scheduler is not None else 0.0

    def healthy(self) -> bool:
        """False when the checker stopped making progress (a check ``STALLED`` late)."""
        return self.progress() < STALLED

    # -- internals ----------------------------------------------------------------

    def _set_base(self, desired: DesiredTable) -> None:
        self._base = desired
        self._index = {ds.name: key for key, ds in desired.items() if ds.name}
        self._cache = None

    def _on_change(self, names: Collection[str]) -> None:
        self._cache = None
        if not names:
            return
        if self._running is not None:
            self._touched.update(names)
        self._pending.update(names)
        if self._task is None and _loop_running():
            self._task = asyncio.ensure_future(self._apply())

    def _wanted(self, name: str) -> tuple[ServiceKey, DesiredService] | None:
        key = self._index.get(name)
        if key is None:
            return None
        base = self._base[key]
        decision = self.scheduler.decision(name) if self.scheduler is not None else None
        return key, adjust_service(
            base, decision, self._policies.get(name), self._maint_by.get(name, ())
        )

    def _diff(self, names: Collection[str]) -> tuple[list[EditDest], set[ServiceKey]]:
        """Single edits where only weights changed; partial reconciles for the rest."""
        from agent.ipvs.model import EditDest

        ops: list[EditDest] = []
        partial: set[ServiceKey] = set()
        for name in sorted(names):
            wanted = self._wanted(name)
            if wanted is None:
                continue
            key, after = wanted
            before = self._direct.get(key) or self._applied.get(key)
            if before is None or before.dests.keys() != after.dests.keys():
                partial.add(key)
            else:
                for dkey, dest in after.dests.items():
                    if before.dests[dkey] != dest:
                        ops.append(EditDest(key, dest))
            self._direct[key] = after
        return ops, partial

    async def _apply(self) -> None:
        try:
            while self._pending:
                names, self._pending = self._pending, set()
                ops, partial = self._diff(names)
                if ops and self.kernel is not None:
                    results = await self.kernel.apply_async(ops)
                    self.changes += len(ops)
                    for op, result in zip(ops, results, strict=False):
                        if result is None:
                            log.info(
                                "health: %s %s weight %d", op.service, op.dest.key, op.dest.weight
                            )
                        else:
                            log.warning("health: set %s %s: %s", op.service, op.dest.key, result)
                            if self._on_error is not None:
                                self._on_error("ipvs_operation")
                            partial.add(op.service)
                if partial and self.kernel is not None:
                    self.changes += len(partial)
                    await self._reconcile_only(frozenset(partial))
        finally:
            self._task = None
            if self._pending and _loop_running():
                self._task = asyncio.ensure_future(self._apply())

    def _start_watch(self) -> None:
        if self._watch is None and _loop_running():
            self._watch = asyncio.ensure_future(self._watch_progress())

    async def _watch_progress(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY)
            late = self.progress()
            if late >= STALLED and not self._stalled:
                self._stalled = True
                log.error(
                    "health: checking stopped making progress: a check is %.0fs overdue", late
                )
                if self._on_error is not None:
                    self._on_error("health_stalled")
            elif late < STALLED and self._stalled:
                self._stalled = False
                log.warning("health: checking makes progress again")


def pools_for(config: Config) -> tuple[Pool, ...]:
    """The pools of the virtual servers that have health checks (``pools_of`` of the
    rest would cost an object per real server at every start and reload for nothing)."""
    from dataclasses import replace

    from agent.health import pools_of

    checked = tuple(vs for vs in config.virtual_servers if any(rs.checks for rs in vs.real_servers))
    return pools_of(replace(config, virtual_servers=checked)) if checked else ()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
