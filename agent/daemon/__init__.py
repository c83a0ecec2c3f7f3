"""``lvs-agent run``: the long-running agent.

Wires the components together on one asyncio loop and owns the process's
lifecycle: signals, systemd notification, the reconcile schedule.

    config ──> desired table ──┐
                               ├─> reconcile (dump, plan, apply) ──> metrics
    kernel (IpvsKernel) <──────┘

Schedule: a full reconcile at start, every ``reconcile_interval`` and after a
successful SIGHUP reload, which first reconciles just the services the new file
changed (unless the ipvs settings changed); while real servers drain, a poll of just the
draining services every ``DRAIN_POLL`` seconds. A SIGHUP that comes while a full
reconcile is still reading the kernel's table abandons it (nothing was written yet):
the reload goes first, the full reconcile follows it (after two abandoned in a row, the
third runs to its end and the reload waits for it). SIGTERM/SIGINT stop the loop
and leave the IPVS table as it is (connections keep flowing while the agent
restarts); VRRP leaves first, in the signal handler itself (VIPs removed,
priority 0 sent), so that a backup takes over after Skew_Time. An invalid
configuration on reload is reported and the running one kept.

With a ``lock:`` section the quorum lease lock starts before VRRP (it begins in its
restart quarantine, so no lease is held before VRRP has cleared stale VIPs); quorum
instances' leases are withdrawn on SIGTERM right after their VIPs go, and SIGUSR1
(``lvs-agent failover``) hands every held lease over, and every VRRP-elected master
(``VrrpService.hand_over_instance``). The lock's state is written to
``state_dir/lock-status.json`` every second.

``lvs-agent status``, ``failover [INSTANCE]`` and ``maint`` talk to the daemon over
its status socket (``agent.status``; answers in ``agent.daemon.control``); the
maintenance flags live in ``state_dir/maintenance.json`` (``agent.health.maint``).
systemd gets ``STATUS=`` when its line changes and, under ``WatchdogSec=``,
``WATCHDOG=1`` while the loop and the health checker make progress
(``agent.daemon.watchdog``).

Health checks (``agent.daemon.health``) run on the same loop on every director,
backups included, from start; a reload carries their state over. Every reconcile
programs the health-adjusted table, and a health change lands at once as a single
``EditDest`` (or a reconcile of that one service when real servers come or go).

The loop never blocks: a reload's file is read and checked, and its desired table
built, in a worker process kept running from the start (``agent.daemon.worker``; it
re-reads only the entries a reload changed, ``agent.config.incremental``). Once it
holds the running configuration, that process also runs the full reconciles (it reads
and decodes the kernel's table, plans, writes, and sends back only the steps and what
changed in the table since its last answer); without it (small files, a worker that
failed) they run here, planning and the ownership file on a worker thread
(``agent.daemon.offload``) and kernel I/O yielding to the loop (``agent.ipvs.kernel``).
A reload's changed services and health's edits always run here: they are small. A
10 ms probe measures how late the loop wakes (``agent.daemon.lag``). The collector:
``agent.gcpause``. With ``node.realtime_priority`` the loop's thread alone runs at
SCHED_RR (``agent.daemon.priority``).

Failure policy: degrade, don't die.

- The daemon does not start, or ends, when it cannot be what it is configured to be:
  the configuration is invalid at start, the state directory is unusable or held by
  another agent, the lock's key or identity is invalid or its port taken, a VRRP
  instance's interface does not exist, virtual servers are configured on a kernel
  without IPVS.
- Everything else is retried with a log line and a count in
  ``lvs_agent_errors_total{kind}``, while the rest keeps running: the metrics port
  in use (``metrics_listen``, retried every ``METRICS_RETRY`` seconds), the status
  socket (``status_socket``: the agent runs without it; a bad request on it:
  ``status_request``), an unreadable maintenance file (``state_file``: no flags), a netlink
  error on one operation or one dump (``ipvs_operation``, ``netlink``: the next
  reconcile retries), the ownership file (``state_file``), a real-time priority the
  system refuses (``scheduling``: the loop runs at normal priority), an invalid or unreadable
  file on reload (``config``: the running configuration stays), a notify or track
  script that cannot start (a failed run), and an unexpected exception in a
  long-running task (``task``: logged with its traceback and the task restarted with
  backoff, ``agent.daemon.supervise``) or in one reconcile (``reconcile``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.config import Config
    from agent.daemon.syncd import SyncDaemons
    from agent.health import Scheduler
    from agent.ipvs.kernel import IpvsKernel
    from agent.ipvs.model import DesiredTable, KernelTable, ServiceKey
    from agent.ipvs.reconciler import Outcome
    from agent.ipvs.state import OwnershipStore
    from agent.lock import LeaseEvent, LockTransport
    from agent.metrics import AgentMetrics
    from agent.status import StatusServer
    from agent.vrrp.service import ReloadPlan, VrrpService

from agent.instancelock import InstanceLock

log = logging.getLogger("lvs-agent")

DRAIN_POLL = 1.0  # seconds between connection checks of draining real servers
STATUS_INTERVAL = 1.0  # seconds between writes of lock-status.json
LOCK_STATUS_FILE = "lock-status.json"
METRICS_RETRY = 5.0  # seconds between attempts to listen on a taken metrics port
ABANDON_IN_A_ROW = 2  # full reconciles a reload may abandon before one runs to its end
LOG_ON_LOOP = 64  # a reconcile with more operations logs them from the worker thread


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


class Agent:
    def __init__(
        self,
        config_path: str,
        config: Config,
        kernel: IpvsKernel | None,
        metrics: AgentMetrics,
    ) -> None:
        from agent.ipvs.state import OwnershipStore

        self.config_path = config_path
        self.config = config
        self.kernel = kernel
        self.metrics = metrics
        metrics.set_per_real_server(config.metrics_per_real_server)
        self.store: OwnershipStore = OwnershipStore(Path(config.state_dir) / "ipvs-state.json")
        self.desired: DesiredTable = self._desired(config)
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        # The services the last reload changed (None: the ipvs settings changed too).
        self.reloaded_services: frozenset[ServiceKey] | None = None
        self.vrrp: VrrpService | None = None
        self._vrrp_plan: ReloadPlan | None = None  # checked by _reload, applied after it
        self.lock: LockTransport | None = None
        self.syncd: SyncDaemons | None = None  # ipvs.sync (agent.daemon.syncd)
        self.exit_code = 0
        from agent.daemon.offload import Offload
        from agent.daemon.worker import ConfigWorker

        self.offload = Offload()
        self.worker = ConfigWorker(self.offload)
        self._worker_task: asyncio.Task[None] | None = None
        self._hup_at = 0.0  # when the last SIGHUP came (monotonic)
        self._writing = False  # the running reconcile has begun to write
        self._in_worker = False  # the last full reconcile ran in the configuration worker
        self._abandoned = 0  # full reconciles abandoned for a reload since the last one ran
        from agent.daemon.health import HealthService

        self.health = HealthService(
            kernel,
            lambda keys: self.reconcile(only=keys),
            collector=metrics.health,
            on_error=lambda kind: metrics.errors.labels(kind=kind).inc(),
        )
        self._configure_health()
        self._reconciling = asyncio.Lock()
        self._lag_for: Config | None = None
        self._lag_value = 0.0
        from agent.health.maint import FILE_NAME, MaintenanceStore, configured_servers

        self.started = time.monotonic()
        self.loop_ticks = 0  # wakes of the loop-lag probe: the watchdog's sign of progress
        from agent.daemon.priority import LoopPriority

        self.priority = LoopPriority(lambda: metrics.errors.labels(kind="scheduling").inc())
        from agent.daemon.lag import StallWatch

        self.stalls = StallWatch(  # where a late loop was held up; collections timed
            self._lag_threshold,
            lambda gen, took: metrics.gc_duration.labels(generation=str(gen)).observe(took),
        )
        # The kernel table of the last full reconcile and when it was read (monotonic).
        self.last_dump: tuple[KernelTable, float] | None = None
        self.maint = MaintenanceStore(
            Path(config.state_dir) / FILE_NAME, configured_servers(config.virtual_servers)
        )
        from agent.gcpause import settle

        # The configuration and its table live on: later collections need not walk
        # them again while VRRP runs (see agent.gcpause).
        settle()

    def _configure_health(self) -> None:
        from agent.daemon.health import pools_for

        self.health.configure(pools_for(self.config), self.desired)

    @staticmethod
    def _desired(config: Config) -> DesiredTable:
        from agent.ipvs.desired import desired_table

        return desired_table(config.virtual_servers)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        loop.add_signal_handler(signal.SIGUSR1, self._on_failover_signal)
        from agent.daemon.lag import probe
        from agent.daemon.supervise import set_failure_hook, supervise

        # First: the threads and processes started from here on run at normal priority.
        self.priority.apply(self.config.realtime_priority)
        self.stalls.start()

        set_failure_hook(lambda name: self.metrics.errors.labels(kind="task").inc())
        from agent.daemon.control import notify_loop

        tasks = [
            asyncio.ensure_future(
                supervise(
                    "loop-lag probe",
                    lambda: probe(self._on_lag, self._lag_threshold),
                )
            ),
            asyncio.ensure_future(supervise("systemd notify", lambda: notify_loop(self))),
        ]
        self.health.start()  # on every director: a takeover starts with known health
        status_server = await self._start_status_socket()
        try:
            if not await self._start_lock():
                return
            if self.lock is not None:
                tasks.append(asyncio.ensure_future(supervise("lock status", self._status_loop)))
            if self.kernel is not None:
                from agent.daemon.syncd import SyncDaemons

                self.syncd = SyncDaemons(
                    self.kernel, self.metrics, lambda: self.config, lambda: self.vrrp
                )
                tasks.append(asyncio.ensure_future(supervise("sync daemons", self.syncd.run)))
            await self._schedule(loop)
        finally:
            self.health.stop()
            await self._stop_vrrp()
            if self.syncd is not None:
                await self.syncd.step()  # no VIPs held any more: the master daemon stops
            if self._worker_task is not None:
                tasks.append(self._worker_task)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if status_server is not None:
                status_server.close()
            await self.worker.aclose()
            self.offload.close()
            self.stalls.stop()
            if self.lock is not None:
                self.lock.close()
                self.metrics.lock.transports = {}
        sd_notify("STOPPING=1")
        log.info("stopping; the IPVS table stays as it is")

    def _on_lag(self, lag: float) -> None:
        self.stalls.beat(time.monotonic())
        self.loop_ticks += 1
        self.metrics.loop_lag.observe(lag)

    async def _start_status_socket(self) -> StatusServer | None:
        """Load the maintenance flags and serve the status socket; either failing is
        logged and counted, and the agent runs on without it."""
        from agent.daemon.control import Control
        from agent.health.maint import MaintenanceError
        from agent.status import StatusServer, server_path
        from agent.status.protocol import encode

        try:
            self.maint.load()
        except MaintenanceError as exc:
            log.error("%s; starting with no server in maintenance", exc)
            self.metrics.errors.labels(kind="state_file").inc()
        if self.maint.keys():
            log.info("maintenance: %d real server(s) in maintenance", len(self.maint.keys()))
            self.maintenance_changed()

        def bad(why: str) -> None:
            log.warning("status socket: bad request: %s", why)
            self.metrics.errors.labels(kind="status_request").inc()

        path = server_path(self.config.state_dir)
        server = StatusServer(
            path,
            Control(self),
            self.config.state_dir,
            on_bad=bad,
            encode_off_loop=lambda m: self.offload(lambda: encode(m)),
        )
        try:
            await server.start()
        except OSError as exc:
            log.error("status socket %s: %s; lvs-agent status shows the kernel only", path, exc)
            self.metrics.errors.labels(kind="status_socket").inc()
            return None
        log.info("status socket: %s", path)
        return server

    def health_scheduler(self) -> Scheduler | None:
        """The health checker, for the status view (None: no health checks run)."""
        return self.health.scheduler

    def health_progressing(self) -> bool:
        """Whether the health checker makes progress (the systemd watchdog's second
        condition, beside the loop's own); True when no checks run."""
        return self.health.healthy()

    def maintenance_changed(self) -> None:
        """The maintenance flags changed: the health overlay applies them (weight 0)."""
        self.health.set_maintenance(self.maint.keys())

    def failover_all(self) -> list[str]:
        """``lvs-agent failover`` without an instance, and SIGUSR1: every lease held
        here, and every VRRP-elected master instance, handed over."""
        if self.vrrp is None:
            return []
        done = self.vrrp.hand_over()
        for lease in done:
            log.info("failover: released %s", lease)
        for info in self.vrrp.instances():
            if not info["lease"] and info["state"] == "MASTER":
                text = self.vrrp.hand_over_instance(str(info["name"]))
                log.info("failover: %s", text)
                done.append(text)
        if not done:
            log.info("failover: nothing to hand over (no lease held, no VRRP master here)")
        return done

    def _lag_threshold(self) -> float:
        """The loop-lag probe's threshold, worked out again only when the configuration
        changes (the probe asks a hundred times a second)."""
        if self._lag_for is not self.config:
            from agent.daemon.lag import lag_threshold

            self._lag_for, self._lag_value = self.config, lag_threshold(self.config)
        return self._lag_value

    def _on_stop_signal(self) -> None:
        if self.vrrp is not None:
            # Priority 0 first, before the rest of the shutdown: the backups take over
            # Skew_Time after it leaves (the VIPs go just before it); quorum leases are
            # released right after their VIPs went, so the next holder need not wait.
            self.vrrp.leave()
        self.stop.set()

    def _on_reload_signal(self) -> None:
        self._hup_at = time.monotonic()
        self.reload.set()

    def _on_failover_signal(self) -> None:
        if self.vrrp is None:
            log.warning("failover: no VRRP instances running")
            return
        self.failover_all()

    async def _start_lock(self) -> bool:
        cfg = self.config.lock
        if cfg is None:
            return True
        from agent.lock import IncarnationError, KeyFileError, start_lock

        try:
            self.lock = await start_lock(cfg, on_event=self._on_lease_event)
        except (KeyFileError, IncarnationError, OSError, ValueError) as exc:
            log.error("lock: cannot start: %s", exc)
            self.metrics.errors.labels(kind="lock_start").inc()
            self.exit_code = 1
            return False
        self.metrics.lock.transports = {cfg.cluster: self.lock}
        log.info(
            "lock: %s as %s on %s, %d members, lease %gs",
            cfg.cluster,
            cfg.node_id,
            cfg.listen,
            len(cfg.peers),
            cfg.lease,
        )
        return True

    def _on_lease_event(self, event: LeaseEvent) -> None:
        if self.vrrp is not None:
            self.vrrp.on_lease_event(event)

    async def _status_loop(self) -> None:
        path = Path(self.config.state_dir) / LOCK_STATUS_FILE
        while True:
            if self.lock is not None:
                try:
                    write_lock_status(path, self.lock, self.vrrp)
                except OSError as exc:
                    log.warning("cannot write %s: %s", path, exc)
            await asyncio.sleep(STATUS_INTERVAL)

    async def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        next_full = loop.time()
        next_drain = float("inf")
        ready = False
        while not self.stop.is_set():
            now = loop.time()
            if now >= next_full:
                # False: a reload came while it read; the reload goes first (below).
                if await self._full_reconcile():
                    next_full = loop.time() + self.config.reconcile_interval
                if not ready and next_full > now:
                    # The table is programmed before VRRP may make this node master:
                    # backups carry the same services, so a takeover only moves VIPs.
                    await self._start_vrrp()
                    sd_notify("READY=1")  # STATUS= comes from the notify loop
                    ready = True
                    self._start_worker()
            elif now >= next_drain:
                await self.reconcile(only_draining=True)
            draining = await self._draining()
            next_drain = (loop.time() + DRAIN_POLL) if draining else float("inf")
            wait = max(0.0, min(next_full, next_drain) - loop.time())
            await self._wait(wait)
            if self.reload.is_set():
                self.reload.clear()
                old_vrrp = self.config.vrrp
                if await self._reload():
                    if self.reloaded_services:
                        # What the new file changed goes in first, at a cost that
                        # follows the change, not the table; the full pass follows.
                        await self.reconcile(only=self.reloaded_services)
                        log.info(
                            "reload: %d changed service(s) reconciled %.2fs after SIGHUP",
                            len(self.reloaded_services),
                            time.monotonic() - self._hup_at,
                        )
                    next_full = loop.time()
                    if self.config.vrrp != old_vrrp:
                        await self._reload_vrrp()

    async def _full_reconcile(self) -> bool:
        """A full reconcile; False when a SIGHUP came while it was still reading the
        kernel's table (tens of seconds at 10,000 services under emulation): it is
        abandoned before writing anything, so that the reload need not wait for it.
        After ``ABANDON_IN_A_ROW`` abandoned ones the next runs to its end whatever comes:
        reloads more frequent than a full reconcile takes must not stop them for good."""
        self._writing = False
        task = asyncio.ensure_future(self.reconcile(writing=self._begin_writing))
        if self._abandoned >= ABANDON_IN_A_ROW:
            self._abandoned = 0
            await task
            return True
        reload = asyncio.ensure_future(self.reload.wait())
        try:
            await asyncio.wait({task, reload}, return_when=asyncio.FIRST_COMPLETED)
            if task.done() or self._writing:
                await task
                self._abandoned = 0
                return True
            task.cancel()
            (result,) = await asyncio.gather(task, return_exceptions=True)
            if not isinstance(result, BaseException):
                self._abandoned = 0
                return True  # the worker process had begun to write: it finished
            self._abandoned += 1
            log.info(
                "reconcile: abandoned before writing; a reload came (%d in a row%s)",
                self._abandoned,
                "; the next one runs to its end" if self._abandoned >= ABANDON_IN_A_ROW else "",
            )
            return False
        finally:
            reload.cancel()

    def _begin_writing(self) -> None:
        self._writing = True

    async def _start_vrrp(self) -> None:
        if not self.config.vrrp.vrrp_instances or self.stop.is_set():
            return
        from agent.config.host import interface_exists
        from agent.vrrp.service import VrrpService, VrrpStartError

        service = VrrpService(self.config.vrrp, self.lock)
        try:
            for inst in self.config.vrrp.vrrp_instances:
                if not interface_exists(inst.interface):  # check-config only warns
                    raise VrrpStartError(
                        f"instance {inst.name}: interface {inst.interface} does not exist "
                        "on this host"
                    )
                for tracked in inst.track_interfaces:
                    if not interface_exists(tracked.name):
                        log.warning(
                            "vrrp: instance %s: tracked interface %s does not exist on this "
                            "host: counted as down until it appears",
                            inst.name,
                            tracked.name,
                        )
            await service.start()
        except (VrrpStartError, OSError) as exc:
            log.error("vrrp: cannot start: %s", exc)
            self.metrics.errors.labels(kind="vrrp_start").inc()
            self.exit_code = 1
            self.stop.set()
            return
        self.vrrp = service
        self.metrics.vrrp.service = service
        service.on_transition = self._kick_sync
        self._kick_sync()
        log.info("vrrp: %d instance(s) started", len(self.config.vrrp.vrrp_instances))

    def _kick_sync(self) -> None:
        if self.syncd is not None:
            self.syncd.kick()

    def _check_vrrp_reload(self, config: Config) -> str | None:
        """Why the running VRRP service cannot take ``config``'s instances (None: it can).

        Runs before a reload is committed, so a file whose VRRP part cannot run on
        this host is refused whole, like an invalid one.
        """
        from agent.vrrp.service import VrrpStartError

        self._vrrp_plan = None
        if self.vrrp is None or not config.vrrp.vrrp_instances:
            return None
        try:
            self._vrrp_plan = self.vrrp.plan_reload(config.vrrp)
        except VrrpStartError as exc:
            return str(exc)
        return None

    async def _reload_vrrp(self) -> None:
        """Apply a reloaded VRRP configuration: only what changed is touched."""
        from agent.vrrp.service import VrrpStartError

        if self.vrrp is None:
            await self._start_vrrp()
            return
        if not self.config.vrrp.vrrp_instances:
            log.info("reload: no VRRP instances left; stopping VRRP")
            await self._stop_vrrp()
            return
        try:
            plan = self.vrrp.reconfigure(self.config.vrrp, self._vrrp_plan)
        except VrrpStartError as exc:
            log.error("reload: vrrp: %s", exc)
            self.metrics.errors.labels(kind="vrrp_start").inc()
            return
        finally:
            self._vrrp_plan = None
        log.info("reload: vrrp: %s", plan.summary())

    async def _stop_vrrp(self) -> None:
        if self.vrrp is not None:
            # Priority 0 tells the backups to take over at once; the VIPs go.
            await self.vrrp.stop()
            self.vrrp = None

    async def _wait(self, timeout: float) -> None:
        stop = asyncio.ensure_future(self.stop.wait())
        reload = asyncio.ensure_future(self.reload.wait())
        try:
            await asyncio.wait({stop, reload}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            reload.cancel()

    async def _draining(self) -> bool:
        try:
            return bool((await self.offload(self.store.load)).drains)
        except Exception:
            return False

    def _start_worker(self) -> None:
        """Keep the configuration worker running and primed with the running file (started
        again if it ends): a reload then re-reads only what it changed."""
        from agent.config.include import total_size
        from agent.daemon.supervise import supervise
        from agent.daemon.worker import SMALL_FILE

        try:
            if total_size(self.config_path, SMALL_FILE) < SMALL_FILE:
                return
        except OSError:
            return
        self._worker_task = asyncio.create_task(
            supervise(
                "configuration worker",
                lambda: self.worker.keep(self.config_path, lambda: self.config.virtual_servers),
            )
        )

    async def _reload(self) -> bool:
        from agent.daemon.worker import LoadRefused, WorkerFailed, load_here

        sd_notify("RELOADING=1")
        started = time.monotonic()
        try:
            try:
                loaded = await self.worker.load(
                    self.config_path, self.config.virtual_servers, self.desired
                )
            except WorkerFailed as exc:
                log.warning("reload: %s; reading the file on a thread instead", exc)
                self.metrics.errors.labels(kind="task").inc()
                current = self.desired
                loaded = await self.offload(lambda: load_here(self.config_path, current))
        except Exception as exc:
            if not isinstance(exc, LoadRefused):
                # A bug in reading must not end the daemon: the running configuration stays.
                log.exception("reload: reading %s failed unexpectedly", self.config_path)
                exc = LoadRefused([f"{self.config_path}: {exc!r}"])
            if exc.strerror is not None:
                log.error(
                    "reload: cannot read %s: %s; keeping the running configuration",
                    self.config_path,
                    exc.strerror,
                )
                result = "unreadable"
            else:
                for problem in exc.problems:
                    log.error("reload: %s", problem)
                log.error(
                    "reload: %s is invalid; keeping the running configuration", self.config_path
                )
                result = "invalid"
            self.metrics.config_reloads.labels(result=result).inc()
            self.metrics.errors.labels(kind="config").inc()
            sd_notify("READY=1")
            return False
        config = loaded.config
        from dataclasses import replace

        fixed = ("state_dir", "metrics_host", "metrics_port")
        changed = [k for k in fixed if getattr(config, k) != getattr(self.config, k)]
        old_lock = replace(self.config.lock, leases=()) if self.config.lock else None
        new_lock = replace(config.lock, leases=()) if config.lock else None
        if old_lock != new_lock and self.config.lock is not None:
            changed.append("lock")
        if changed:
            log.warning("reload: %s change only on restart", ", ".join(changed))
        if self.config.lock is not None:
            # Keep the running lock (its identity and durations) but the new lease names.
            leases = config.lock.leases if config.lock is not None else ()
            config = replace(config, lock=replace(self.config.lock, leases=leases))
        elif config.lock is not None and self.config.lock is None:
            log.warning(
                "reload: the lock section takes effect on restart; quorum "
                "instances cannot start before"
            )
            config = replace_vrrp_elections(config)
        refused = self._check_vrrp_reload(config)
        if refused is not None:
            log.error("reload: vrrp: %s; keeping the running configuration", refused)
            self.metrics.config_reloads.labels(result="invalid").inc()
            self.metrics.errors.labels(kind="config").inc()
            sd_notify("READY=1")
            return False
        desired, edited = loaded.desired, loaded.edited
        self.reloaded_services = edited if config.ipvs == self.config.ipvs else None
        self.config = config
        self.desired = desired
        self.priority.apply(config.realtime_priority)
        from agent.daemon.health import pools_for
        from agent.health.maint import configured_servers

        # 40,000 real servers at 10,000 services: built on the worker thread.
        servers = config.virtual_servers
        await self.offload(lambda: self.maint.configure(configured_servers(servers)))
        self.metrics.set_per_real_server(config.metrics_per_real_server)
        pools = await self.offload(lambda: pools_for(config))
        self.health.configure(pools, desired)
        self.metrics.config_reloads.labels(result="applied").inc()
        log.info(
            "reload: %s loaded (%s, %d changed) in %.2fs",
            self.config_path,
            virtual_servers(len(config.virtual_servers)),
            len(edited),
            time.monotonic() - started,
        )
        warn_unmatched(config)
        sd_notify("READY=1")
        return True

    async def reconcile(
        self,
        only_draining: bool = False,
        only: frozenset[ServiceKey] | None = None,
        writing: Callable[[], None] | None = None,
    ) -> Outcome | None:
        from agent.ipvs.reconciler import reconcile_async
        from agent.ipvs.state import StateFileError

        if self.kernel is None:
            if self.config.virtual_servers:
                log.error(
                    "virtual_servers are configured but this kernel has no IPVS; "
                    "load it with 'modprobe ip_vs' and restart"
                )
                self.metrics.errors.labels(kind="ipvs_unavailable").inc()
            return None
        if only_draining:
            try:
                drains = (await self.offload(self.store.load)).drains
            except StateFileError as exc:
                log.error("%s", exc)
                self.metrics.errors.labels(kind="state_file").inc()
                return None
            only = frozenset(svc for svc, _ in drains)
            if not only:
                return None
        started = time.monotonic()
        try:
            async with self._reconciling:  # health's partial reconciles run between
                try:
                    table = self.health.begin(self.desired)  # never fights the checker
                    outcome = None
                    if only is None and self.worker.holds(self.config.virtual_servers):
                        outcome = await self._reconcile_in_worker(table)
                    if outcome is None:
                        outcome = await reconcile_async(
                            self.kernel,
                            self.store,
                            table,
                            self.config.ipvs,
                            only=only,
                            offload=self.offload,
                            writing=writing,
                        )
                finally:
                    self.health.end()
        except StateFileError as exc:
            log.error("%s", exc)
            self.metrics.errors.labels(kind="state_file").inc()
            return None
        except OSError as exc:
            log.error("reconcile failed: %s; retrying at the next reconcile", exc)
            # An error with a file name is the ownership file's, not the kernel's.
            self.metrics.errors.labels(kind="state_file" if exc.filename else "netlink").inc()
            return None
        except Exception:
            # A bug in one reconcile must not end the daemon (VRRP and the lock keep
            # running); the next reconcile starts from the kernel's table again.
            log.exception("reconcile failed unexpectedly; retrying at the next reconcile")
            self.metrics.errors.labels(kind="reconcile").inc()
            return None
        elapsed = time.monotonic() - started
        if len(outcome.plan.steps) > LOG_ON_LOOP:
            # Thousands of lines (a first start, a flushed table): written from the worker
            # thread, whose writes let the loop run between them.
            await self.offload(lambda: log_steps(outcome))
        else:
            log_steps(outcome)
        for change in outcome.sysctls:
            log.info("applied: %s", change)
        for error in outcome.sysctl_errors:
            log.error("failed: %s", error)
        if only is None:
            self._kick_sync()  # after a reload too: ipvs.sync may have changed
            old = [self.last_dump[0]] if self.last_dump is not None else []
            self.last_dump = (outcome.kernel, started)
            self.metrics.observe_reconcile(outcome, elapsed)
            if old:  # the previous dump: freed off the loop (agent.daemon.offload)
                from agent.daemon.offload import dismantle

                await self.offload(lambda: dismantle(old))
            count = len(outcome.plan.steps) + len(outcome.sysctls)
            if count:
                log.info("reconcile: %d operations in %.3fs", count, elapsed)
        else:
            self.metrics.observe_partial(outcome)
        return outcome


    async def _reconcile_in_worker(self, table: DesiredTable) -> Outcome | None:
        """A full reconcile by the configuration worker process, which holds the desired
        table already (``agent.daemon.worker``): the kernel's table is decoded and
        planned there, not in this process. None when it cannot: reconcile here."""
        from agent.daemon.worker import WorkerFailed

        desired = self.desired
        overrides: DesiredTable = {}
        if table is not desired:  # health changed some services: only those go
            overrides = await self.offload(
                lambda: {k: v for k, v in table.items() if desired.get(k) is not v}
            )
        try:
            outcome = await self.worker.reconcile(
                self.config.virtual_servers, overrides, self.config.ipvs, str(self.store.path)
            )
        except WorkerFailed as exc:
            log.warning("reconcile: %s; reconciling in this process", exc)
            self.metrics.errors.labels(kind="task").inc()
            self._in_worker = False
            return None
        if not self._in_worker:
            log.info("reconcile: full reconciles now run in the configuration worker")
            self._in_worker = True
        return outcome


def log_steps(outcome: Outcome) -> None:
    for step, result in zip(outcome.plan.steps, outcome.results, strict=False):
        if result is None:
            log.info("applied: %s", step.text)
        else:
            log.error("failed: %s: %s", step.text, result)


def virtual_servers(count: int) -> str:
    return f"{count} virtual server{'' if count == 1 else 's'}"


def warn_unmatched(config: Config) -> None:
    """An ``include`` pattern that matches no file is allowed, never silent."""
    for included in config.includes:
        if not included.files:
            log.warning(
                "%s:%d: include pattern %r matches no file",
                config.source,
                included.line,
                included.pattern,
            )


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def load_for_start(config_path: str, loader: Callable[[str], Config]) -> Config | None:
    """Set up logging and read the configuration of a long-running command (``run``,
    ``witness``); problems are logged and None returned: the process does not start."""
    setup_logging()
    from agent.config import ConfigError

    try:
        return loader(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("%s is invalid; not starting", config_path)
    except OSError as exc:
        log.error("cannot read %s: %s", config_path, exc.strerror)
    return None


def run(config_path: str, config: Config) -> int:
    """The daemon; ``config``: the file as already read and validated by the caller."""
    setup_logging()
    lock = InstanceLock(config.state_dir)
    busy = lock.acquire()
    if busy:
        log.error("%s", busy)
        return 1
    try:
        return asyncio.run(_main(config_path, config))
    finally:
        lock.release()


def replace_vrrp_elections(config: Config) -> Config:
    """``config`` with every quorum instance dropped (no lock runs to elect it)."""
    from dataclasses import replace

    vrrp = config.vrrp
    kept = tuple(i for i in vrrp.vrrp_instances if i.election != "quorum")
    names = {i.name for i in kept}
    groups = tuple(g for g in vrrp.vrrp_sync_groups if set(g.instances) <= names)
    return replace(
        config, lock=None, vrrp=replace(vrrp, vrrp_instances=kept, vrrp_sync_groups=groups)
    )


def lock_status(lock: LockTransport, vrrp: VrrpService | None) -> dict[str, object]:
    """What ``lvs-agent status`` shows about the lock: JSON-ready."""
    st = lock.status()
    terms = vrrp.terms() if vrrp is not None else {}
    return {
        "node": st.node_id,
        "incarnation": st.incarnation,
        "quarantined": st.quarantined,
        "quorum_reachable": st.quorum_reachable,
        "reachable": list(st.reachable),
        "leases": [
            {
                "name": ls.name,
                "holder": ls.holder,
                "term": str(ls.term) if ls.term is not None else terms.get(ls.name) or None,
                "known_holder": ls.known_holder[0] if ls.known_holder else None,
                "known_term": str(ls.known_holder[1]) if ls.known_holder else None,
                "campaigning": ls.campaigning,
                "priority": ls.priority,
                "acquisitions": ls.acquisitions,
                "losses": ls.losses,
                "releases": ls.releases,
            }
            for ls in st.leases
        ],
    }


def write_lock_status(path: Path, lock: LockTransport, vrrp: VrrpService | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(lock_status(lock, vrrp), indent=1) + "\n")
    os.replace(tmp, path)


async def keep_serving_metrics(
    metrics: AgentMetrics, config: Config, retry: float = METRICS_RETRY
) -> None:
    """Serve /metrics until cancelled; while the port is taken, try again every ``retry``
    seconds (everything else keeps running meanwhile: degrade, don't die)."""
    from agent.metrics import serve

    failures = 0
    while True:
        try:
            server = await serve(metrics, config.metrics_host, config.metrics_port)
        except OSError as exc:
            metrics.errors.labels(kind="metrics_listen").inc()
            if failures == 0:
                log.error(
                    "metrics: cannot listen on %s:%d: %s; retrying every %gs "
                    "(VRRP and IPVS run meanwhile)",
                    config.metrics_host,
                    config.metrics_port,
                    exc.strerror,
                    retry,
                )
            failures += 1
            await asyncio.sleep(retry)
            continue
        if failures:
            log.info(
                "metrics: listening on %s:%d after %d failed attempts",
                config.metrics_host,
                config.metrics_port,
                failures,
            )
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            server.close()


async def _main(config_path: str, config: Config) -> int:
    from agent.ipvs.kernel import IpvsKernel, IpvsUnavailable
    from agent.metrics import AgentMetrics

    kernel: IpvsKernel | None
    try:
        kernel = IpvsKernel()
    except IpvsUnavailable as exc:
        if config.virtual_servers:
            log.error("%s", exc)
            return 1
        # Nothing to program: a VRRP-only node can run on a kernel without IPVS.
        log.info("no IPVS in this kernel and no virtual_servers: running without IPVS")
        kernel = None
    from agent.daemon.supervise import supervise

    metrics = AgentMetrics()
    server = asyncio.ensure_future(
        supervise("metrics listener", lambda: keep_serving_metrics(metrics, config))
    )
    log.info(
        "started: %s from %s; metrics on http://%s:%d/metrics",
        virtual_servers(len(config.virtual_servers)),
        config_path,
        config.metrics_host,
        config.metrics_port,
    )
    warn_unmatched(config)
    agent = Agent(config_path, config, kernel, metrics)
    try:
        await agent.run()
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        if kernel is not None:
            kernel.close()
    return agent.exit_code
