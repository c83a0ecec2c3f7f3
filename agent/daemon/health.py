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

A virtual server's ``quorum_up``/``quorum_down`` command (when to run one:
``agent.health.notify``) runs off the loop's critical path as a task, one after the
other per virtual server, through ``agent.vrrp.command`` (no shell, a timeout, the
whole process tree killed). One that cannot start, fails or times out is logged and
counted (``lvs_agent_errors_total{kind="quorum_command"}``); nothing waits for it.

A virtual server without checks is decided too when something acts on its quorum
(a ``sorry_server``, ``quorum_up``/``quorum_down``): its real servers are always
healthy, so only maintenance moves its quorum, and a sorry server is programmed from
the start when their weights do not reach ``quorum + hysteresis`` (none at all, say).
With no such virtual server and no maintenance flag nothing runs: the reconcile gets
the configured table itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final

from agent.health.overlay import MaintKey, adjust_service, adjust_table
from agent.health.pools import decided

if TYPE_CHECKING:
    from agent.config import Config
    from agent.health.config import Pool, PoolPolicy
    from agent.health.core import PoolDecision, PoolState
    from agent.health.metrics import HealthCollector
    from agent.health.scheduler import Scheduler
    from agent.ipvs.model import DesiredService, DesiredTable, EditDest, ServiceKey
    from agent.ipvs.reconciler import AsyncIpvsTable

log = logging.getLogger("agent.health")

#: the most overdue check this late (seconds) means the checker stopped making
#: progress: logged, counted, and ``healthy()`` turns False (the systemd watchdog)
STALLED: Final = 30.0
WATCH_EVERY: Final = 5.0  # seconds between two looks at the checker's progress
COMMAND_TIMEOUT: Final = 30.0  # a quorum command still running then is killed, with its tree

# (virtual server, event, argv, environment) of a quorum command to run
Command = tuple[str, str, tuple[str, ...], dict[str, str]]


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
        self._queued: list[Command] = []  # quorum commands due before the loop ran
        self._commands: dict[str, asyncio.Task[None]] = {}  # the last one per virtual server
        self.commands_run = 0  # quorum commands that ran (or could not start)
        self.commands_failed = 0

    # -- configuration ------------------------------------------------------------

    def configure(self, pools: Sequence[Pool], desired: DesiredTable) -> None:
        """Start or reload: ``pools`` as ``agent.health.pools_of`` builds them (only
        those ``agent.health.pools.decided`` keeps run: a check, or a sorry server or
        quorum command), ``desired`` the configured table."""
        checked = [p for p in pools if decided(p)]
        self._policies = {p.name: p.policy for p in checked}
        self._set_base(desired)  # first: quorum commands name the service
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
        self._run_queued()

    def _new_scheduler(self, pools: Sequence[Pool]) -> Scheduler:
        if self._factory is not None:
            return self._factory(pools, on_change=self._on_change, on_quorum=self._on_quorum)
        from agent.health.scheduler import Scheduler

        return Scheduler(pools, on_change=self._on_change, on_quorum=self._on_quorum)

    def start(self) -> None:
        """On the loop: start probing (``configure`` before the loop ran defers it here)."""
        if self.scheduler is not None and self._watch is None:
            self.scheduler.start()
            self._start_watch()
        self._run_queued()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        for task in (self._task, self._watch, *self._commands.values()):
            if task is not None:
                task.cancel()  # a quorum command still running: its tree is killed
        self._task = self._watch = None
        self._commands = {}

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

    # -- quorum commands ----------------------------------------------------------

    def _on_quorum(self, pool: Pool, prev: PoolState, decision: PoolDecision) -> None:
        """The scheduler's call when a pool's quorum is first decided or flips."""
        from agent.health.notify import quorum_command, quorum_env, quorum_event

        event = quorum_event(pool, prev, decision)
        if event is None:
            return
        argv = quorum_command(pool, event)
        if not argv:
            return
        env = quorum_env(pool, decision, self._index.get(pool.name))
        self._queued.append((pool.name, event, argv, env))
        self._run_queued()

    def _run_queued(self) -> None:
        if not self._queued or not _loop_running():
            return
        queued, self._queued = self._queued, []
        for command in queued:
            name = command[0]
            task = asyncio.ensure_future(self._run_command(command, self._commands.get(name)))
            self._commands[name] = task
            task.add_done_callback(partial(self._command_done, name))

    def _command_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._commands.get(name) is task:
            del self._commands[name]

    async def _run_command(self, command: Command, before: asyncio.Task[None] | None) -> None:
        """Run one quorum command after the virtual server's previous one ended."""
        from agent.vrrp.command import run_status

        name, event, argv, env = command
        if before is not None and not before.done():
            await asyncio.wait({before})
        try:
            status, reason = await run_status(list(argv), COMMAND_TIMEOUT, env)
        except Exception as e:  # never let a command stop anything
            status, reason = None, str(e)
        self.commands_run += 1
        if status == 0:
            log.info("virtual server %s: %s command %s ran", name, event, argv[0])
            return
        self.commands_failed += 1
        why = f"exit {status}" if status is not None else reason
        if reason == "timeout":
            why = f"still running after {COMMAND_TIMEOUT:g}s; killed its process tree"
        log.warning("virtual server %s: %s command %s: %s", name, event, argv[0], why)
        if self._on_error is not None:
            self._on_error("quorum_command")

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
    """The pools of the virtual servers that have health checks or something acting on
    their quorum (``agent.health.pools.decided``; ``pools_of`` of the rest would cost an
    object per real server at every start and reload for nothing)."""
    from dataclasses import replace

    from agent.health import pools_of

    checked = tuple(
        vs
        for vs in config.virtual_servers
        if vs.health.watches_quorum or any(rs.checks for rs in vs.real_servers)
    )
    return pools_of(replace(config, virtual_servers=checked)) if checked else ()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
