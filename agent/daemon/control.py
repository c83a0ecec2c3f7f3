"""The daemon's answers on the status socket, and its systemd notifications.

``Control`` implements ``agent.status.Handler`` over a running ``Agent``: the status
(VRRP, lock, services with health and maintenance; kernel weights and connection
counts from a reading at most ``DUMP_FRESH`` seconds old), ``failover`` (one instance or
everything) and ``maint`` (``MaintenanceStore``). ``notify_loop`` sends systemd
``WATCHDOG=1`` (through ``watchdog.Gate``: only while the loop and the health checker
make progress) and ``STATUS=`` when the line changes. It reads the agent's
components and calls their public methods; it decides nothing about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agent.daemon.watchdog import Gate, status_line, watchdog_period
from agent.health.maint import MaintenanceError, format_real_server, parse_real_server
from agent.status.protocol import REFUSED, error, ok

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger("lvs-agent")

STATUS_EVERY = 1.0  # seconds between looks at the STATUS= line
SMALL_VIEW = 256  # up to this many services the status is built on the loop itself
DUMP_FRESH = 2.0  # a status request reads the kernel again when its reading is older


class Control:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def status(self) -> Mapping[str, object]:
        await self._refresh_dump()
        if len(self.agent.desired) <= SMALL_VIEW:
            return ok(self.snapshot())
        # One entry per real server: tens of thousands at 10,000 services, built on the
        # worker thread; the rest (VRRP, the lock) is read here, on the loop.
        snap = self.snapshot(view=False)
        snap["virtual_servers"] = await self.agent.offload(self._view())
        return ok(snap)

    async def _refresh_dump(self) -> None:
        """Read the configured services from the kernel again when the last reading is
        older than ``DUMP_FRESH`` (kernel I/O yields to the loop, and is serialised with
        the reconciles'); on failure the older reading is shown, with its age. When the
        configuration worker holds the running configuration, it reads and decodes the
        table (``agent.daemon.worker``): a large dump is never decoded in the daemon."""
        from agent.daemon.worker import WorkerFailed

        a = self.agent
        if a.kernel is None or not a.desired:
            return
        if a.last_dump is not None and time.monotonic() - a.last_dump[1] < DUMP_FRESH:
            return
        started = time.monotonic()
        table = None
        try:
            if a.worker.holds(a.config.virtual_servers):
                with contextlib.suppress(WorkerFailed):  # then read here
                    table = await a.worker.dump(a.config.virtual_servers)
            if table is None:
                table = await a.kernel.dump_services_async(list(a.desired))
        except OSError as exc:
            log.warning("status: cannot read the IPVS table: %s", exc)
            return
        a.last_dump = (table, started)

    def _view(self) -> Callable[[], list[dict[str, object]]]:
        """The virtual servers' part of the status, as a call that reads no more of the
        agent than what this takes now (it may run on the worker thread)."""
        from agent.status.view import health_view, services

        a = self.agent
        scheduler = a.health_scheduler()
        desired, servers, dump = a.desired, a.config.virtual_servers, a.last_dump
        health = health_view(scheduler) if scheduler is not None else None
        maint = frozenset(a.maint.keys())

        def view() -> list[dict[str, object]]:
            configured = {
                vs.name: {(rs.address, rs.port): rs.weight for rs in vs.real_servers}
                for vs in servers
            }
            table = dump[0] if dump is not None else None
            return services(desired, configured, table, health, maint)

        return view

    def snapshot(self, view: bool = True) -> dict[str, object]:
        """The status; without ``view``, all but the virtual servers (``_view``)."""
        from agent.daemon import lock_status

        a = self.agent
        now = time.monotonic()
        dump = a.last_dump
        snap: dict[str, object] = {
            "agent": {
                "pid": os.getpid(),
                "uptime": now - a.started,
                "config": a.config_path,
                "state_dir": a.config.state_dir,
            },
            "vrrp": a.vrrp.instances() if a.vrrp is not None else [],
            "lock": lock_status(a.lock, a.vrrp) if a.lock is not None else None,
            "kernel": {
                "available": a.kernel is not None,
                "age": now - dump[1] if dump is not None else None,
            },
            "health_checks": a.health_scheduler() is not None,
            "maintenance": [
                {"virtual_server": vs, "real_server": format_real_server(rs)}
                for vs, rs in sorted(a.maint.keys())
            ],
        }
        if view:
            snap["virtual_servers"] = self._view()()
        return snap

    async def failover(self, instance: str | None) -> Mapping[str, object]:
        a = self.agent
        if a.vrrp is None:
            return error("no VRRP instances running", REFUSED)
        if instance is None:
            done = a.failover_all()
            return ok({"handed_over": done})
        try:
            text = a.vrrp.hand_over_instance(instance)
        except KeyError:
            names = ", ".join(i["name"] for i in a.vrrp.instances())  # type: ignore[misc]
            return error(f"no VRRP instance {instance!r} (running: {names})", REFUSED)
        log.info("failover: %s", text)
        return ok({"handed_over": [text]})

    async def maint(self, vs: str, rs: str, on: bool) -> Mapping[str, object]:
        a = self.agent
        try:
            key = parse_real_server(rs)
            changed = a.maint.set(vs, key, on)
        except MaintenanceError as exc:
            return error(str(exc), REFUSED)
        word = "in" if on else "out of"
        if changed:
            log.info("maintenance: %s %s %s maintenance", vs, format_real_server(key), word)
            a.maintenance_changed()
        return ok(
            {
                "changed": changed,
                "text": f"{vs} {format_real_server(key)} "
                f"{'now' if changed else 'already'} {word} maintenance",
            }
        )


def _healthy(agent: Agent) -> int | None:
    scheduler = agent.health_scheduler()
    if scheduler is None:
        return None
    return sum(len(d.healthy) for d in scheduler.decisions().values())


async def notify_loop(agent: Agent) -> None:
    """Send STATUS= when it changes and, under a systemd watchdog, WATCHDOG=1 every half
    interval while the agent makes progress. Runs until cancelled."""
    from agent.daemon import sd_notify

    period = watchdog_period(os.environ, os.getpid())
    if period is not None:
        log.info("systemd watchdog: pinging every %.3gs while the agent makes progress", period)
    gate = Gate()
    last_status = ""
    loop = asyncio.get_running_loop()
    next_status = loop.time()
    while True:
        now = loop.time()
        if period is not None:
            if gate.ping(agent.loop_ticks, agent.health_progressing()):
                sd_notify("WATCHDOG=1")
            elif gate.held == 1 or gate.held % 10 == 0:
                log.warning("systemd watchdog: not pinging: %s", gate.why)
        if now >= next_status:
            next_status = now + STATUS_EVERY
            vrrp = agent.vrrp
            line = status_line(
                sorted((n, s.name) for n, s in vrrp.states().items()) if vrrp else [],
                len(agent.config.virtual_servers),
                _healthy(agent),
                sum(len(vs.real_servers) for vs in agent.config.virtual_servers),
                len(agent.maint.keys()),
            )
            if line != last_status:
                sd_notify(f"STATUS={line}")
                last_status = line
        await asyncio.sleep(min(STATUS_EVERY, period) if period is not None else STATUS_EVERY)
