"""The imperative shell: runs the configured VRRP instances on an asyncio loop.

This module owns the wiring, and nothing that decides: it feeds the pure core
(``machine``, ``sync``, ``trackers``) with packets from ``transport``, timer
expiries, link states and script results, and performs the actions the core
returns (sockets, ``vips``, notify commands). One ``VrrpService`` per agent;
the daemon calls ``await start()`` and ``await stop()`` and reads ``counters()``.

Rules it keeps:

- time is ``loop.time()`` (monotonic) only; one timer per instance (a timerfd,
  ``timers.InstanceTimer``), always re-armed by the latest ``ScheduleTimer``;
- nothing raises out of a loop callback: bad packets become ``AdvertRejected``
  (counted), netlink/socket failures are logged and counted;
- VIPs configured for any instance are removed at start (a crashed run may have
  left them) and by ``stop()`` (then priority 0 is sent, before anything else
  is torn down: the backups' Skew_Time starts when it leaves);
- scripts and notify commands run as child processes without a shell, in their own
  session, bounded by their timeout (``command``): a late one is killed with every
  process it started, and nothing else is.
- ``election: quorum`` instances (with a ``LockTransport``) are MASTER only while this
  node holds their lease: their machines never promote themselves (built ``synced``,
  in a ``gated`` group); the lease's ``acquired`` promotes them, ``lost``/``released``
  demotes them (VIPs removed, priority 0 sent). The service campaigns with the
  instance's effective priority and withdraws while it is in FAULT. Their VIPs carry a
  kernel valid lifetime that ends no earlier than the hold and is extended on each
  renewal: a frozen holder's VIPs expire without it. Adverts received for them are
  not fed to the machine (the lease, not the adverts, elects). A fence child process
  (``fence``) is armed with each VIP and the hold's end, re-armed on each renewal and
  disarmed when the VIPs are removed here: it deletes them at the hold end if this
  process stops cooperating (SIGSTOP), at once if it dies (kill -9: its pipe closes),
  which the whole-second kernel lifetime cannot; the lifetime stays as the backstop
  for a frozen machine.
- link states are re-read through netlink when the kernel announces a link change
  (``LinkMonitor``, which also re-reads after an overrun of its socket) and every
  ``LINK_POLL_MONITORED`` as a safety net (every ``LINK_POLL`` without it: each read is
  a pyroute2 exchange on another thread, which the loop then waits for); the
  VRRP interface of each instance is tracked implicitly with weight 0, as keepalived
  does. Reads run on the managers' netlink threads, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import shlex
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from agent.daemon.supervise import supervise, watch
from agent.vrrp.command import run_command
from agent.vrrp.config import SyncGroupConfig, TrackInterfaceConfig, VrrpConfig, VrrpInstanceConfig
from agent.vrrp.counters import InstanceCounters
from agent.vrrp.fence import Fence
from agent.vrrp.machine import (
    Action,
    AddressMismatch,
    AddVips,
    AdvertReceived,
    AdvertRejected,
    Event,
    GroupCommand,
    HandOver,
    InstanceParams,
    Notify,
    Reconfigure,
    RemoveVips,
    ScheduleTimer,
    SendAdvert,
    SendGratuitous,
    Shutdown,
    Startup,
    State,
    TimerFired,
    VrrpMachine,
    config_family,
    config_vips,
)
from agent.vrrp.packet import VipInterface, VrrpDecodeError, decode, encode, peek_vrid
from agent.vrrp.sync import GroupNotify, SyncGroup
from agent.vrrp.timers import InstanceTimer
from agent.vrrp.trackers import InstanceTracking
from agent.vrrp.transport import LinkMonitor, Received, SocketCounters, VrrpSocket
from agent.vrrp.vips import VipError, VipManager

if TYPE_CHECKING:
    from agent.lock import LeaseEvent, LockTransport

log = logging.getLogger("agent.vrrp")

# The kernel checks address lifetimes with a fuzz and may drop one up to HZ/50 (20 ms)
# before it runs out: a VIP lifetime is extended at least this long before that.
KERNEL_EARLY: Final = 0.05

LINK_POLL: Final = 0.5  # seconds between link-state polls without link notifications
LINK_POLL_MONITORED: Final = 5.0  # the same, with them (a safety net only)
NOTIFY_TIMEOUT: Final = 30.0  # a notify command still running then is killed
# ``lvs-agent failover INSTANCE``: how long a master that handed over defers to the
# peer's adverts (preempt or not) before it may take MASTER back.
HANDOVER_HOLD: Final = 60.0
NOTIFY_NAMES: Final = {
    State.INIT: "STOP",
    State.BACKUP: "BACKUP",
    State.MASTER: "MASTER",
    State.FAULT: "FAULT",
}


class VrrpStartError(RuntimeError):
    """The configuration cannot run on this host (interface or address missing)."""


@dataclass(slots=True)
class _Instance:
    config: VrrpInstanceConfig
    machine: VrrpMachine
    tracking: InstanceTracking
    group: SyncGroup
    socket_key: tuple[str, int]
    timer: InstanceTimer | None = None  # created by start(), on the running loop
    lease: str = ""  # election: quorum — the lease that gates MASTER
    # The last valid advert with a priority above 0: (source, priority, loop time).
    heard: tuple[str, int, float] | None = None


@dataclass(slots=True)
class _Lease:
    """A quorum lease and the instances it makes MASTER (one, or a sync group's)."""

    name: str
    members: list[str] = field(default_factory=list)
    told: int | None = None  # priority we campaign with; None: not campaigning
    term: str = ""  # fencing number of the current (or last) holding period
    # When the kernel lifetime of the members' VIPs runs out (service clock; 0: unknown)
    kernel_until: float = 0.0
    armed_until: float | None = None  # hold end (lock clock) the fence child was last given


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does to each instance (names)."""

    retire: list[str]  # stopped: removed, or stopped to be created again
    update: dict[str, VrrpInstanceConfig]  # updated in place
    create: list[str]  # started: added, or created again
    unchanged: list[str]

    def summary(self) -> str:
        restarted = [n for n in self.create if n in self.retire]
        parts = [
            ("unchanged", self.unchanged),
            ("updated in place", list(self.update)),
            ("restarted", restarted),
            ("added", [n for n in self.create if n not in restarted]),
            ("removed", [n for n in self.retire if n not in restarted]),
        ]
        return "; ".join(f"{what}: {', '.join(names)}" for what, names in parts if names)


def _configured_vips(config: VrrpConfig) -> dict[str, list[VipInterface]]:
    vips_by_if: dict[str, list[VipInterface]] = {}
    for cfg in config.vrrp_instances:
        try:
            vips_by_if.setdefault(cfg.interface, []).extend(config_vips(cfg))
        except ValueError as e:
            raise VrrpStartError(f"{cfg.name}: {e}") from e
    return vips_by_if


def _membership(group: SyncGroupConfig | None) -> tuple[str, tuple[str, ...]] | None:
    return (group.name, group.instances) if group is not None else None


def _restart_reason(old: VrrpInstanceConfig, new: VrrpInstanceConfig) -> str | None:
    """The configuration changes that need the instance stopped and started again."""
    for what in ("interface", "vrid", "version", "election", "lease"):
        if getattr(old, what) != getattr(new, what):
            return what
    try:
        if config_family(old) != config_family(new):
            return "address family"
    except ValueError:
        return "address family"
    return None


class VrrpService:
    """All VRRP instances and sync groups of one agent."""

    def __init__(self, config: VrrpConfig, lock: LockTransport | None = None) -> None:
        self.config = config
        self._lock = lock
        self._leases: dict[str, _Lease] = {}
        self._lease_busy = False  # inside a lease event: campaign updates wait
        self._instances: dict[str, _Instance] = {}
        self._groups: dict[str, SyncGroupConfig] = {g.name: g for g in config.vrrp_sync_groups}
        self._sockets: dict[tuple[str, int], VrrpSocket] = {}
        self._vips: dict[str, VipManager] = {}
        self._by_vrid: dict[tuple[str, int, int], str] = {}
        self._trackers: set[asyncio.Task[object]] = set()  # link poll, track scripts
        self._script_tasks: dict[str, list[asyncio.Task[object]]] = {}  # by instance
        self._tasks: set[asyncio.Task[object]] = set()  # notify commands
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._links = LinkMonitor()
        self._link_changed = asyncio.Event()
        self._link_poll = LINK_POLL
        self._fence: Fence | None = None  # election: quorum — deletes VIPs at the hold end
        #: called after every state change of an instance (the daemon's sync daemons)
        self.on_transition: Callable[[], None] | None = None

    # -- the surface the daemon uses

    def counters(self) -> dict[str, InstanceCounters]:
        return {name: i.machine.counters for name, i in self._instances.items()}

    def socket_counters(self) -> dict[str, SocketCounters]:
        """Per ``interface/ipv4|ipv6``: receive errors and packets matching no instance."""
        return {
            f"{ifname}/{'ipv4' if fam == socket.AF_INET else 'ipv6'}": s.counters
            for (ifname, fam), s in self._sockets.items()
        }

    def states(self) -> dict[str, State]:
        return {name: i.machine.state for name, i in self._instances.items()}

    def instances(self) -> list[dict[str, object]]:
        """``lvs-agent status``: each instance's state, priorities, lease and the master
        last heard (JSON-ready; ages in seconds)."""
        now = self._now() if self._loop is not None else 0.0
        out: list[dict[str, object]] = []
        for name, inst in self._instances.items():
            m = inst.machine
            heard = inst.heard
            if m.state is State.MASTER:
                master: dict[str, object] | None = {"address": "self", "priority": m.priority}
            elif heard is not None:
                master = {"address": heard[0], "priority": heard[1], "age": now - heard[2]}
            else:
                master = None
            yielding = m.yielding_until
            out.append(
                {
                    "name": name,
                    "state": m.state.name,
                    "interface": inst.config.interface,
                    "vrid": inst.config.vrid,
                    "priority": inst.config.priority,
                    "effective_priority": m.priority,
                    "election": inst.config.election,
                    "lease": inst.lease or None,
                    "master": master,
                    "handed_over_for": (
                        yielding - now if yielding is not None and yielding > now else None
                    ),
                }
            )
        return out

    def terms(self) -> dict[str, str]:
        """Lease -> term of its current or last holding period here ("" if none yet)."""
        return {name: lease.term for name, lease in self._leases.items()}

    async def start(self) -> None:
        """Clean up stale VIPs, open sockets, start trackers and every instance."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            self._build()
            for key, sock in self._sockets.items():
                sock.open()
                sock.attach(loop, functools.partial(self._on_received, key))
        except Exception:
            self._close_io()
            raise
        if self._lock is not None and self._leases:
            self._fence = Fence()
            self._fence.start()
        self._running = True
        self._link_poll = LINK_POLL_MONITORED
        try:
            self._links.open(loop, self._link_changed.set)
        except OSError as e:
            self._link_poll = LINK_POLL
            log.warning("no netlink link notifications (%s); polling every %gs", e, LINK_POLL)
        self._spawn(supervise("vrrp link tracker", self._link_loop), self._trackers)
        if self._lock is not None:
            self._lock.after_input = self._refresh_fences
        self._launch(list(self._instances))

    def _launch(self, names: list[str]) -> None:
        """Start built instances: timers, trackers' first view, scripts, Startup, leases."""
        assert self._loop is not None
        for name in names:
            inst = self._instances[name]
            inst.timer = InstanceTimer(self._loop, functools.partial(self._on_timer, name))
        self._apply_links(self._read_links(), initial=True, only=names)
        for name in names:
            self._spawn_scripts(name)
        for name in names:
            self._deliver(name, Startup())
        leases = [self._instances[n].lease for n in names]
        for lease in dict.fromkeys(lease for lease in leases if lease):
            self._update_campaign(lease)

    def leave(self) -> None:
        """Stop taking part at once: a master removes its VIPs and sends priority 0.

        Synchronous, for the daemon's signal handler: the backups' takeover clock
        (Skew_Time) starts when our priority-0 advert leaves, so nothing may come
        before it. ``stop()`` does it too (again is harmless), then tears down.
        """
        if self._loop is None:
            return
        for name in self._instances:
            self._deliver(name, Shutdown())
        # VIPs are gone (Shutdown left MASTER): now the leases, so the next node takes
        # over at once instead of after the acceptors' exclusion runs out.
        for lease in self._leases:
            self._update_campaign(lease)

    def hand_over(self) -> list[str]:
        """``lvs-agent failover``: give up every lease held here; returns their names.

        Members leave MASTER first (VIPs removed, priority 0 sent), then the lease is
        released; this node campaigns again after the lock's hand-over hold-off.
        """
        return [name for name in list(self._leases) if self._release_lease(name)]

    def _release_lease(self, name: str) -> bool:
        if self._lock is None or self._loop is None or not self._lock.is_holder(name):
            return False
        for member in self._leases[name].members:
            if self._instances[member].machine.state is State.MASTER:
                self._deliver(member, GroupCommand(State.BACKUP))
        self._lock.release(name)
        return True

    def hand_over_instance(self, name: str) -> str:
        """``lvs-agent failover INSTANCE``: hand one instance (with its sync group) to a
        peer; returns what was done, in words. KeyError: no such instance.

        A quorum instance releases its lease (as ``hand_over``); a VRRP-elected master
        leaves MASTER (VIPs removed, priority 0 sent) and defers to the peer for
        ``HANDOVER_HOLD`` seconds (``machine.HandOver``). A backup has nothing to hand.
        """
        inst = self._instances[name]
        if self._loop is None:
            return f"{name}: not running"
        if inst.lease:
            if self._release_lease(inst.lease):
                return f"{name}: released lease {inst.lease}"
            return f"{name}: lease {inst.lease} not held here; nothing to hand over"
        if inst.machine.state is not State.MASTER:
            return f"{name}: {inst.machine.state.name}, not MASTER; nothing to hand over"
        for member in list(inst.group.members):
            self._deliver(member, HandOver(HANDOVER_HOLD))
        return f"{name}: handed over (priority 0 sent; not preempting for {HANDOVER_HOLD:g}s)"

    async def stop(self) -> None:
        """Leave MASTER everywhere (VIPs removed, priority 0 sent), then close everything."""
        self._running = False
        self.leave()
        if self._lock is not None:
            self._lock.after_input = None
        if self._fence is not None:
            # The VIPs are gone and disarmed (leave): the child has nothing left to do.
            self._fence.close()
            self._fence = None
        for inst in self._instances.values():
            if inst.timer is not None:
                inst.timer.close()
                inst.timer = None
        for task in list(self._trackers):
            task.cancel()
        if self._trackers:
            await asyncio.wait(self._trackers, timeout=NOTIFY_TIMEOUT)
        self._close_io()
        # Notify commands still running, the last ("STOP") spawned by the Shutdown above.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=NOTIFY_TIMEOUT)

    # -- reload

    def plan_reload(self, new: VrrpConfig) -> ReloadPlan:
        """What ``reconfigure(new)`` would do, checked against this host first.

        Raises VrrpStartError, changing nothing, when an instance that would be
        created or updated cannot run here (interface missing, no usable address,
        parameters the machine refuses): the reload is then refused whole.
        """
        old_cfgs = {c.name: c for c in self.config.vrrp_instances}
        new_cfgs = {c.name: c for c in new.vrrp_instances}
        old_groups = {m: g for g in self.config.vrrp_sync_groups for m in g.instances}
        new_groups = {m: g for g in new.vrrp_sync_groups for m in g.instances}
        restart: set[str] = set()
        update: dict[str, VrrpInstanceConfig] = {}
        vips_by_if = _configured_vips(new)
        for name in old_cfgs.keys() & new_cfgs.keys():
            old, cfg = old_cfgs[name], new_cfgs[name]
            old_group, new_group = old_groups.get(name), new_groups.get(name)
            if _membership(old_group) != _membership(new_group):
                restart.add(name)  # a machine belongs to one SyncGroup object for life
                continue
            why = _restart_reason(old, cfg)
            if why is None and old != cfg:
                current = self._instances[name].machine.params
                try:
                    params = InstanceParams.from_config(cfg, current.primary_address)
                except ValueError as e:
                    raise VrrpStartError(f"{name}: {e}") from e
                why = VrrpMachine.needs_restart(current, params)
                if why is None:
                    update[name] = cfg
            if why is not None:
                restart.add(name)
        # A sync group restarts whole: its machines share one SyncGroup.
        changed = True
        while changed:
            changed = False
            for groups in (old_groups, new_groups):
                for name in list(restart):
                    group = groups.get(name)
                    for member in group.instances if group else ():
                        if member not in restart and member in old_cfgs and member in new_cfgs:
                            restart.add(member)
                            update.pop(member, None)
                            changed = True
        create = [n for n in new_cfgs if n in restart or n not in old_cfgs]
        for name in create:
            cfg = new_cfgs[name]
            self._check_interface(cfg)
            self._params(cfg, vips_by_if)  # raises VrrpStartError if it cannot run here
            if cfg.election == "quorum" and self._lock is None:
                raise VrrpStartError(f"{name}: election: quorum needs the lock to be running")
        return ReloadPlan(
            retire=[n for n in old_cfgs if n in restart or n not in new_cfgs],
            update=update,
            create=create,
            unchanged=[
                n for n in old_cfgs if n in new_cfgs and n not in restart and n not in update
            ],
        )

    def reconfigure(self, new: VrrpConfig, plan: ReloadPlan | None = None) -> ReloadPlan:
        """Apply a reloaded configuration, touching only what changed.

        Unchanged instances keep running untouched (no advert gap, GARP, priority 0 or
        lease release); changed ones are updated in place (``Reconfigure``: priority,
        interval, VIPs, preempt, garp, auth, unicast peers, trackers, notify); only an
        instance whose interface, VRID, version, advert family or multicast/unicast mode
        changed, whose election or lease changed, or whose sync group changed is
        stopped and started again, with its group. Raises VrrpStartError (nothing
        changed) like ``plan_reload``.
        """
        plan = plan if plan is not None else self.plan_reload(new)
        self._retire(plan.retire)
        old_config, self.config = self.config, new
        self._groups = {g.name: g for g in new.vrrp_sync_groups}
        for name, cfg in plan.update.items():
            self._update(name, old_config, cfg)
        if plan.create:
            created = {n: c for c in new.vrrp_instances for n in [c.name] if n in plan.create}
            groups = tuple(g for g in new.vrrp_sync_groups if set(g.instances) <= created.keys())
            multicast = {key: sock.multicast for key, sock in self._sockets.items()}
            try:
                self._create(tuple(created.values()), groups, cleanup=False)
                assert self._loop is not None
                for key, sock in self._sockets.items():
                    if sock.is_open and sock.multicast and not multicast.get(key, True):
                        sock.close()  # a multicast instance joined a unicast-only socket
                    if not sock.is_open:
                        sock.open()
                        sock.attach(self._loop, functools.partial(self._on_received, key))
            except (VrrpStartError, OSError) as e:
                log.error("vrrp: reload: cannot start %s: %s", ", ".join(plan.create), e)
                for name in plan.create:
                    self._instances.pop(name, None)
                raise VrrpStartError(str(e)) from e
            if self._lock is not None and self._leases and self._fence is None:
                self._fence = Fence()
                self._fence.start()
            self._launch(plan.create)
        self._set_lease_preempt()
        return plan

    def _check_interface(self, cfg: VrrpInstanceConfig) -> None:
        try:
            self._manager(cfg.interface).index()
        except VipError as e:
            raise VrrpStartError(
                f"instance {cfg.name}: interface {cfg.interface} does not exist on this host"
            ) from e

    def _retire(self, names: list[str]) -> None:
        """Stop these instances (a master leaves: VIPs removed, priority 0) and forget them."""
        for name in names:
            self._deliver(name, Shutdown())
        for name in names:
            inst = self._instances.pop(name)
            if inst.timer is not None:
                inst.timer.close()
            for task in self._script_tasks.pop(name, []):
                task.cancel()
            self._by_vrid = {k: v for k, v in self._by_vrid.items() if v != name}
            if inst.lease:
                lease = self._leases[inst.lease]
                lease.members.remove(name)
                if not lease.members:
                    if self._lock is not None and lease.told is not None:
                        self._lock.withdraw(inst.lease)
                    del self._leases[inst.lease]
        used = {i.socket_key for i in self._instances.values()}
        for key in [k for k in self._sockets if k not in used]:
            self._sockets.pop(key).close()

    def _update(self, name: str, old_config: VrrpConfig, cfg: VrrpInstanceConfig) -> None:
        inst = self._instances[name]
        old = inst.config
        inst.config = cfg
        params = InstanceParams.from_config(cfg, inst.machine.params.primary_address)
        self._deliver(name, Reconfigure(params))
        if (old.priority, old.track_interfaces, old.track_scripts) == (
            cfg.priority,
            cfg.track_interfaces,
            cfg.track_scripts,
        ):
            return
        previous = inst.tracking
        interfaces: list[TrackInterfaceConfig] = [TrackInterfaceConfig(cfg.interface)]
        interfaces += [t for t in cfg.track_interfaces if t.name != cfg.interface]
        tracking = InstanceTracking(cfg.priority, interfaces, cfg.track_scripts)
        for ifname, tracker in tracking.interfaces.items():
            if ifname in previous.interfaces:
                tracker.ok = previous.interfaces[ifname].ok
        for script, script_tracker in list(tracking.scripts.items()):
            kept = previous.scripts.get(script)
            if kept is not None and kept.config == script_tracker.config:
                tracking.scripts[script] = kept  # its rise/fall streak goes on
        inst.tracking = tracking
        if old.track_scripts != cfg.track_scripts:
            self._spawn_scripts(name)
        if set(tracking.interfaces) - set(previous.interfaces):
            self._link_changed.set()  # read the new interfaces' links now
        self._deliver(name, tracking.event())

    # -- building

    def _build(self) -> None:
        self._create(self.config.vrrp_instances, self.config.vrrp_sync_groups, cleanup=True)

    def _params(
        self, cfg: VrrpInstanceConfig, vips_by_if: dict[str, list[VipInterface]]
    ) -> InstanceParams:
        mgr = self._manager(cfg.interface)
        try:
            family = config_family(cfg)
            primary = mgr.primary_address(family, vips_by_if[cfg.interface])
            if primary is None:
                raise VrrpStartError(f"{cfg.name}: {cfg.interface} has no usable address")
            return InstanceParams.from_config(cfg, primary)
        except (ValueError, VipError) as e:
            raise VrrpStartError(f"{cfg.name}: {e}") from e

    def _create(
        self,
        configs: tuple[VrrpInstanceConfig, ...],
        group_configs: tuple[SyncGroupConfig, ...],
        *,
        cleanup: bool,
    ) -> None:
        """Build ``configs`` (instances not running yet) and the sync groups among them.

        ``cleanup`` (start-up): remove their VIPs where a killed run left them.
        """
        by_name = {c.name: c for c in configs}
        member_of: dict[str, SyncGroupConfig] = {}
        for group_cfg in group_configs:
            for member in group_cfg.instances:
                if member not in by_name:
                    raise VrrpStartError(f"sync group {group_cfg.name}: no instance {member}")
                member_of[member] = group_cfg
        vips_by_if = _configured_vips(self.config)
        if cleanup:
            for ifname in dict.fromkeys(c.interface for c in configs):
                try:
                    removed = self._manager(ifname).cleanup(vips_by_if[ifname])
                except VipError as e:
                    raise VrrpStartError(str(e)) from e
                if removed:
                    log.warning(
                        "removed VIPs left by an earlier run on %s: %s",
                        ifname,
                        ", ".join(map(str, removed)),
                    )
        machines: dict[str, VrrpMachine] = {}
        for cfg in configs:
            params = self._params(cfg, vips_by_if)
            synced = cfg.name in member_of and len(member_of[cfg.name].instances) > 1
            quorum = self._quorum(cfg)
            # A quorum instance never promotes itself: it waits for its lease.
            machines[cfg.name] = VrrpMachine(params, synced=synced or quorum)
            key = (cfg.interface, params.family, params.vrid)
            if key in self._by_vrid:
                raise VrrpStartError(f"{cfg.name}: VRID {params.vrid} twice on {cfg.interface}")
            self._by_vrid[key] = cfg.name
            sock_key = (cfg.interface, params.family)
            sock = self._sockets.get(sock_key)
            multicast = not params.unicast_peers
            if sock is None:
                self._sockets[sock_key] = VrrpSocket(
                    cfg.interface, params.family, multicast=multicast
                )
            elif multicast:
                sock.multicast = True
        by_cfg = {c.name: c for c in configs}
        groups = {
            g.name: SyncGroup(
                g.name,
                [machines[m] for m in g.instances],
                gated=all(self._quorum(by_cfg[m]) for m in g.instances),
            )
            for g in group_configs
        }
        for cfg in configs:
            membership = member_of.get(cfg.name)
            group = (
                groups[membership.name]
                if membership
                else SyncGroup(cfg.name, [machines[cfg.name]], gated=self._quorum(cfg))
            )
            # The VRRP interface itself is tracked with weight 0: no link, no election.
            interfaces: list[TrackInterfaceConfig] = [TrackInterfaceConfig(cfg.interface)]
            interfaces += [t for t in cfg.track_interfaces if t.name != cfg.interface]
            tracking = InstanceTracking(cfg.priority, interfaces, cfg.track_scripts)
            machine = machines[cfg.name]
            lease = cfg.lease if self._quorum(cfg) else ""
            self._instances[cfg.name] = _Instance(
                cfg, machine, tracking, group, (cfg.interface, machine.params.family), lease=lease
            )
            if lease:
                self._leases.setdefault(lease, _Lease(lease)).members.append(cfg.name)
        self._set_lease_preempt()

    def _set_lease_preempt(self) -> None:
        if self._lock is not None:
            for name, entry in self._leases.items():
                # preempt is the instance's (all members of a group must want it)
                core_lease = self._lock.node.core.add_lease(name)
                core_lease.preempt = all(self._instances[m].config.preempt for m in entry.members)

    def _quorum(self, cfg: VrrpInstanceConfig) -> bool:
        if cfg.election != "quorum":
            return False
        if self._lock is None:
            raise VrrpStartError(f"{cfg.name}: election: quorum needs the lock to be running")
        return True

    def _close_io(self) -> None:
        self._links.close()
        for sock in self._sockets.values():
            sock.close()
        for mgr in self._vips.values():
            mgr.close()

    # -- input paths

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _deliver(self, name: str, event: Event) -> None:
        inst = self._instances[name]
        try:
            actions = inst.group.handle(name, event, self._now())
        except Exception:  # a core bug must not take the loop down
            log.exception("%s: handling %s failed", name, type(event).__name__)
            return
        for action in actions:
            try:
                self._perform(action)
            except Exception:
                log.exception("performing %s failed", action)
        if inst.lease and not self._lease_busy:
            self._update_campaign(inst.lease)

    def _on_received(self, key: tuple[str, int], r: Received) -> None:
        try:
            vrid = peek_vrid(r.payload)
            name = self._by_vrid.get((key[0], key[1], vrid if vrid is not None else -1))
            if name is None:
                reason = "vrid" if vrid is not None else "truncated"
                self._sockets[key].counters.invalid[reason] += 1
                return
            if self._instances[name].lease:
                return  # quorum election: the lease decides, adverts only inform routers
            params = self._instances[name].machine.params
            try:
                advert = decode(
                    r.payload,
                    family=r.family,
                    src=r.source,
                    dst=r.destination,
                    hop_limit=r.hop_limit,
                    version=params.version,
                    auth_pass=params.auth,
                    check_hop_limit=not params.unicast_peers,
                )
            except VrrpDecodeError as e:
                self._deliver(name, AdvertRejected(e.reason))
                return
            if advert.priority and r.source != params.primary_address:
                self._instances[name].heard = (str(r.source), advert.priority, self._now())
            self._deliver(name, AdvertReceived(advert, r.source))
        except Exception:
            log.exception("dropping a packet on %s", key[0])

    def _on_timer(self, name: str) -> None:
        self._deliver(name, TimerFired())

    # -- trackers

    def _spawn(
        self, coro: Coroutine[object, object, object], into: set[asyncio.Task[object]] | None = None
    ) -> asyncio.Task[object]:
        tasks = self._tasks if into is None else into
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        watch(task, "vrrp task")  # a failure is logged and counted, never lost
        return task

    def _tracked_interfaces(self) -> list[str]:
        names: dict[str, None] = {}
        for inst in self._instances.values():
            names.update(dict.fromkeys(inst.tracking.interfaces))
        return list(names)

    def _manager(self, ifname: str) -> VipManager:
        mgr = self._vips.get(ifname)
        if mgr is None:
            mgr = self._vips[ifname] = VipManager(ifname)
        return mgr

    def _read_links(self) -> dict[str, bool]:
        states: dict[str, bool] = {}
        for ifname in self._tracked_interfaces():
            try:
                states[ifname] = self._manager(ifname).link().up
            except VipError:
                states[ifname] = False  # interface gone: down
        return states

    async def _read_links_async(self) -> dict[str, bool]:
        # Each manager's own worker thread answers: the loop keeps sending adverts meanwhile.
        names = self._tracked_interfaces()
        answers = await asyncio.gather(
            *(self._manager(n).link_async() for n in names), return_exceptions=True
        )
        return {
            name: answer.up if not isinstance(answer, BaseException) else False
            for name, answer in zip(names, answers, strict=True)
        }

    def _apply_links(
        self, states: dict[str, bool], initial: bool = False, only: list[str] | None = None
    ) -> None:
        for name, inst in self._instances.items():
            if only is not None and name not in only:
                continue
            changed = False
            for ifname in inst.tracking.interfaces:
                changed |= inst.tracking.set_link(ifname, states.get(ifname, False))
            if changed or initial:  # before Startup every instance learns its tracking once
                self._deliver(name, inst.tracking.event())

    async def _link_loop(self) -> None:
        while self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._link_changed.wait(), self._link_poll)
            self._link_changed.clear()
            states = await self._read_links_async()
            if self._running:
                self._apply_links(states)

    def _spawn_scripts(self, name: str) -> None:
        """One loop per track script of ``name`` (replacing any it had)."""
        for task in self._script_tasks.pop(name, []):
            task.cancel()
        tasks = self._script_tasks[name] = []
        for script in self._instances[name].tracking.scripts:
            run = functools.partial(self._script_loop, name, script)
            tasks.append(
                self._spawn(supervise(f"{name}: track script {script}", run), self._trackers)
            )

    async def _script_loop(self, instance: str, script: str) -> None:
        inst = self._instances[instance]
        tracker = inst.tracking.scripts[script]
        argv = shlex.split(tracker.config.script)
        loop = asyncio.get_running_loop()
        while self._running:
            started = loop.time()
            ok = await run_command(argv, tracker.timeout)
            if inst.tracking.record_script(script, ok):
                log.info(
                    "%s: track script %s is now %s", instance, script, "OK" if ok else "failing"
                )
                self._deliver(instance, inst.tracking.event())
            await asyncio.sleep(max(0.0, started + tracker.config.interval - loop.time()))

    # -- output paths

    def _perform(self, action: Action | GroupNotify) -> None:
        if isinstance(action, ScheduleTimer):
            inst = self._instances[action.instance]
            if inst.timer is None:
                return  # stopped
            if action.at is None:
                inst.timer.cancel()
            else:
                inst.timer.arm(action.at)
        elif isinstance(action, SendAdvert):
            inst = self._instances[action.instance]
            sock = self._sockets[inst.socket_key]
            src = inst.machine.params.primary_address
            for dst in action.destinations:
                if not sock.send(encode(action.advert, src, dst), src, dst):
                    inst.machine.counters.send_errors += 1
        elif isinstance(action, (AddVips, RemoveVips, SendGratuitous)):
            self._perform_vips(action)
        elif isinstance(action, Notify):
            inst = self._instances[action.instance]
            log.info(
                "%s: %s -> %s (priority %d, %s)",
                action.instance,
                action.old.name,
                action.new.name,
                action.priority,
                action.why,
            )
            if inst.config.notify:
                self._notify(
                    inst.config.notify,
                    "INSTANCE",
                    action.instance,
                    action.new,
                    action.priority,
                    self._leases[inst.lease].term if inst.lease else None,
                )
            if self.on_transition is not None:
                self.on_transition()
        elif isinstance(action, AddressMismatch):
            ours = ", ".join(map(str, action.ours))
            if action.ended:
                log.info(
                    "%s: %s no longer advertises other addresses than ours (%s)",
                    action.instance,
                    action.source,
                    ours,
                )
            else:
                log.warning(
                    "%s: %s advertises addresses [%s], we have [%s]: a configuration "
                    "mismatch (RFC 5798 7.1); its adverts still count for the election",
                    action.instance,
                    action.source,
                    ", ".join(map(str, action.theirs)),
                    ours,
                )
        elif isinstance(action, GroupNotify):
            log.info("sync group %s: all %s", action.group, action.state.name)
            group = self._groups.get(action.group)
            if group is not None and group.notify:
                lease = self._leases.get(action.group)
                term = lease.term if lease is not None else None
                self._notify(group.notify, "GROUP", action.group, action.state, 0, term)

    def _perform_vips(self, action: AddVips | RemoveVips | SendGratuitous) -> None:
        inst = self._instances[action.instance]
        mgr = self._vips[inst.config.interface]
        try:
            if isinstance(action, AddVips):
                # action.accept (RFC 5798 Accept_Mode) is not enforced: refusing traffic
                # to a local address needs netfilter, and IPVS needs the VIP local anyway.
                if inst.lease:
                    self._add_fenced(inst, action.vips)
                else:
                    mgr.add(action.vips)
            elif isinstance(action, RemoveVips):
                mgr.remove(action.vips)
                if inst.lease and self._fence is not None:
                    for vip in action.vips:
                        self._fence.disarm(mgr.index(), vip)
            else:
                mgr.announce(action.vips, action.repeat)
        except VipError as e:
            inst.machine.counters.vip_errors += 1
            log.error("%s: %s", action.instance, e)

    def _notify(
        self,
        command: str,
        kind: str,
        name: str,
        state: State,
        priority: int,
        term: str | None = None,
    ) -> None:
        argv = [*shlex.split(command), kind, name, NOTIFY_NAMES[state], str(priority)]
        if term is not None:
            # quorum election: the fencing number of the holding period that began (MASTER)
            # or ended (other states), "counter.incarnation.node"; "-" before the first
            argv.append(term or "-")
        self._spawn(run_command(argv, NOTIFY_TIMEOUT))

    # -- quorum election

    def on_lease_event(self, event: LeaseEvent) -> None:
        """The lock's callback (synchronous: a release leaves after the VIPs are gone)."""
        lease = self._leases.get(event.lease)
        if lease is None or self._lock is None or self._loop is None:
            return
        lease.term = str(event.term)
        self._lease_busy = True
        try:
            if event.kind == "acquired":
                if self._running and self._lock.is_holder(event.lease):
                    for member in lease.members:
                        if self._instances[member].machine.state is State.BACKUP:
                            self._deliver(member, GroupCommand(State.MASTER))
            else:  # lost, released: the VIPs go now
                for member in lease.members:
                    if self._instances[member].machine.state is State.MASTER:
                        self._deliver(member, GroupCommand(State.BACKUP))
        finally:
            self._lease_busy = False
        self._update_campaign(event.lease)

    def _update_campaign(self, name: str) -> None:
        """Campaign with the members' priority while they may serve; else withdraw."""
        lock = self._lock
        if lock is None or self._lease_busy:
            return
        lease = self._leases[name]
        machines = [self._instances[m].machine for m in lease.members]
        eligible = self._running and all(
            m.state in (State.BACKUP, State.MASTER) and not m.fault for m in machines
        )
        want = min(m.priority for m in machines) if eligible else None
        if want == lease.told:
            return
        before, lease.told = lease.told, want
        if want is None:
            lock.withdraw(name)
        elif before is None:
            lock.campaign(name, want)
        else:
            lock.set_priority(name, want)

    def _lifetime(self, lease: str) -> tuple[int, float, float] | None:
        """Kernel lifetime (whole seconds, at least the hold left), the hold's end, and
        when that lifetime runs out if it is set now (both on the service's clock)."""
        assert self._lock is not None
        left = self._lock.hold_left(lease)
        if left is None:
            return None
        seconds, now = max(1, math.ceil(left)), self._now()
        return seconds, now + left, now + seconds

    def _add_fenced(self, inst: _Instance, vips: tuple[VipInterface, ...]) -> None:
        lifetime = self._lifetime(inst.lease)
        if lifetime is None:
            # The hold ended between the decision and now: do not add; the lease's
            # "lost" event (already due) moves the instance back to BACKUP.
            inst.machine.counters.vip_errors += 1
            log.warning("%s: lease %s not held; VIPs not added", inst.config.name, inst.lease)
            return
        self._vips[inst.config.interface].add(vips, lifetime=lifetime[0])
        lease = self._leases[inst.lease]
        runs_out = lifetime[2]
        # The members' VIPs run out at different times: keep the earliest.
        lease.kernel_until = min(lease.kernel_until, runs_out) if lease.kernel_until else runs_out
        until = self._lock.hold_until(inst.lease) if self._lock is not None else None
        if until is not None:
            self._arm(inst, vips, until)
            lease.armed_until = until

    def _arm(self, inst: _Instance, vips: tuple[VipInterface, ...], until: float) -> None:
        """Tell the fence child to delete ``vips`` at ``until`` unless re-armed or disarmed."""
        if self._fence is None:
            return
        index = self._vips[inst.config.interface].index()
        for vip in vips:
            self._fence.arm(index, vip, until)

    def _refresh_fences(self) -> None:
        """After each lock input: re-arm the fence child when a renewal moved the hold
        end, and extend the VIPs' kernel lifetime when the hold end comes near it.

        The lifetime is whole seconds (at least one), so at a short lease most renewals
        leave it well beyond the hold end and need no netlink write; it is extended
        once the hold end is within ``renew_interval / 2`` and the kernel's early
        expiry (``KERNEL_EARLY``) of it, and never set later than a full refresh at
        every renewal would set it.
        """
        if self._lock is None or not self._running:
            return
        step = self._lock.node.core.timing.renew_interval / 2.0
        for name, lease in self._leases.items():
            until = self._lock.hold_until(name)
            if until is not None and until != lease.armed_until:
                # The fence child gets every move of the hold end: it deletes at it.
                for member in lease.members:
                    inst = self._instances[member]
                    if inst.machine.state is State.MASTER:
                        try:
                            self._arm(inst, inst.machine.params.vips, until)
                        except VipError as e:
                            inst.machine.counters.vip_errors += 1
                            log.error("%s: %s", member, e)
                lease.armed_until = until
            lifetime = self._lifetime(name)
            if lifetime is None or lifetime[1] + step + KERNEL_EARLY < lease.kernel_until:
                continue
            for member in lease.members:
                inst = self._instances[member]
                if inst.machine.state is not State.MASTER:
                    continue
                try:
                    self._vips[inst.config.interface].add(
                        inst.machine.params.vips, lifetime=lifetime[0]
                    )
                except VipError as e:
                    inst.machine.counters.vip_errors += 1
                    log.error("%s: %s", member, e)
            lease.kernel_until = lifetime[2]
