"""The VRRP state machine of one virtual router (RFC 5798 section 6), as a pure core.

Everything that decides how one instance changes state lives in this file (sync
groups only add commands, see ``sync.py``): the transitions table
(``TRANSITIONS``), the classification of an input into a table trigger
(``VrrpMachine._classify``), and the few rules that a table row cannot express,
each commented where it is applied. The machine is fed events together with
``now`` (seconds on a monotonic clock) and returns actions; it never touches
sockets, clocks, sleeps, the kernel or logs. The caller performs the actions in
order, and keeps one timer per instance at the time of the latest
``ScheduleTimer``, feeding ``TimerFired`` when it expires.

States are keepalived's: INIT (RFC "Initialize"), BACKUP, MASTER, and FAULT
(keepalived's: a tracker says this node must not serve). Where RFC 5798 leaves
room, we do what keepalived 2.2 does, so that mixed clusters elect the same way:

- a master hearing a lower-priority advert answers at once with its own advert
  (keepalived "forcing new election") and a burst of ``garp.lower_prio_repeat``
  GARPs (keepalived's ``garp_lower_prio_repeat``: it clears stale ARP caches after
  a dual-master episode, keepalived issues #2649, #1884) — but at most one burst
  per ``garp.lower_prio_delay``, so a one-way partition at 10 ms adverts does not
  turn into hundreds of GARPs a second per VIP (keepalived sends one per advert);
- VRRPv3: an advert whose address list differs from ours still takes part in the
  election; RFC 5798 7.1 asks only that the misconfiguration be logged and
  reported (``AddressMismatch``). Dropping it, as RFC 3768 does for v2 and as
  keepalived does for both, makes a backup that has not yet got a new VIP take
  over from the master that has, and both hold the VIPs during a rolling change.
  v2 keeps RFC 3768's drop unless the sender is the address owner;
- ``preempt_delay``: a backup that hears a lower-priority master keeps accepting it
  for ``preempt_delay`` seconds after the first such advert, then lets
  Master_Down_Timer run out (keepalived ``vrrp_state_backup``);
- leaving MASTER for FAULT sends priority 0, like shutdown;
- ``HandOver`` (``lvs-agent failover INSTANCE``; keepalived has no such command): a
  master leaves as on shutdown (VIPs removed, priority 0 sent) but stays BACKUP, and
  for ``hold`` seconds defers to every advert it hears, preempt or not, so that the
  peer keeps what it took; if no master is heard, Master_Down_Timer still runs out;
- an owner (priority 255) hearing another owner resolves it by the address
  tie-break instead of dropping every advert as RFC 5798 7.1 would (which leaves
  two masters forever).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from enum import Enum, IntEnum, auto
from ipaddress import ip_address, ip_interface
from typing import Final, TypeAlias

from agent.vrrp.config import GarpConfig, VrrpInstanceConfig
from agent.vrrp.counters import InstanceCounters
from agent.vrrp.packet import (
    MCAST_GROUP_V4,
    MCAST_GROUP_V6,
    PRIORITY_OWNER,
    PRIORITY_STOP,
    V3_MAX_INTERVAL_CS,
    Advert,
    IPAddress,
    Reason,
    VipInterface,
    pad_password,
)

# asyncio may run a timer callback up to one clock-resolution early; a deadline this
# close to ``now`` counts as reached so that an early wake-up is not a lost tick.
TIMER_SLACK: Final = 0.001


class State(IntEnum):
    """keepalived's numbering (vrrp.h VRRP_STATE_*), also used for metrics."""

    INIT = 0
    BACKUP = 1
    MASTER = 2
    FAULT = 3


@dataclass(frozen=True, slots=True)
class InstanceParams:
    """What the machine needs from the configuration, in protocol units."""

    name: str
    vrid: int
    version: int
    family: int  # of the adverts: socket.AF_INET or AF_INET6
    priority: int  # configured (base) priority, 1..255
    advert_interval_cs: int
    primary_address: IPAddress  # IPv4 primary or IPv6 link-local of the interface
    vips: tuple[VipInterface, ...]  # everything added/removed, either family
    preempt: bool = True
    preempt_delay: float = 0.0
    # RFC 5798 6.1 Accept_Mode. Linux cannot refuse traffic to a local address
    # without netfilter, and IPVS needs the VIP local, so the default is True.
    accept_mode: bool = True
    unicast_peers: tuple[IPAddress, ...] = ()
    auth: bytes | None = None  # v2 password, padded to 8 bytes
    garp: GarpConfig = field(default_factory=GarpConfig)

    @property
    def advertised(self) -> tuple[IPAddress, ...]:
        """The VIPs carried in adverts: those of the advert family."""
        want = 4 if self.family == socket.AF_INET else 6
        return tuple(v.ip for v in self.vips if v.version == want)

    @property
    def destinations(self) -> tuple[IPAddress, ...]:
        if self.unicast_peers:
            return self.unicast_peers
        return (MCAST_GROUP_V4 if self.family == socket.AF_INET else MCAST_GROUP_V6,)

    @classmethod
    def from_config(cls, cfg: VrrpInstanceConfig, primary_address: IPAddress) -> InstanceParams:
        """Convert a loaded config. Raises ValueError for what cannot run at all."""
        vips = config_vips(cfg)
        peers = tuple(ip_address(p) for p in cfg.unicast_peers)
        family = config_family(cfg)
        first = peers[0] if peers else vips[0].ip
        if primary_address.version != first.version:
            raise ValueError(f"{cfg.name}: primary address family differs from the VIPs'")
        if cfg.version not in (2, 3):
            raise ValueError(f"{cfg.name}: version {cfg.version}")
        if cfg.version == 2 and family != socket.AF_INET:
            raise ValueError(f"{cfg.name}: VRRPv2 is IPv4 only")
        interval_cs = round(cfg.advert_interval * 100)
        if cfg.version == 2 and (interval_cs % 100 or not 100 <= interval_cs <= 25500):
            raise ValueError(f"{cfg.name}: v2 advert_interval must be whole seconds 1..255")
        if not 1 <= interval_cs <= V3_MAX_INTERVAL_CS:
            raise ValueError(f"{cfg.name}: advert_interval out of 0.01..40.95 s")
        if any(p.version != first.version for p in peers):
            raise ValueError(f"{cfg.name}: unicast_peers mix families")
        return cls(
            name=cfg.name,
            vrid=cfg.vrid,
            version=cfg.version,
            family=family,
            priority=cfg.priority,
            advert_interval_cs=interval_cs,
            primary_address=primary_address,
            vips=vips,
            preempt=cfg.preempt,
            preempt_delay=cfg.preempt_delay,
            unicast_peers=peers,
            auth=pad_password(cfg.auth_pass) if cfg.auth_pass and cfg.version == 2 else None,
            garp=cfg.garp,
        )


def config_vips(cfg: VrrpInstanceConfig) -> tuple[VipInterface, ...]:
    return tuple(ip_interface(v) for v in cfg.virtual_ips)


def config_family(cfg: VrrpInstanceConfig) -> int:
    """The advert family: the first unicast peer's, else the first VIP's (keepalived)."""
    if cfg.unicast_peers:
        first = ip_address(cfg.unicast_peers[0])
    elif cfg.virtual_ips:
        first = ip_interface(cfg.virtual_ips[0]).ip
    else:
        raise ValueError(f"{cfg.name}: no virtual_ips")
    return socket.AF_INET if first.version == 4 else socket.AF_INET6


def skew_time(version: int, priority: int, master_adver_interval_cs: int) -> float:
    """Skew_Time in seconds: RFC 5798 6.1 (centiseconds, truncated) / RFC 3768 6.1."""
    if version == 2:
        return (256 - priority) / 256
    return ((256 - priority) * master_adver_interval_cs // 256) / 100


def master_down_interval(version: int, priority: int, master_adver_interval_cs: int) -> float:
    """Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, in seconds."""
    return 3 * master_adver_interval_cs / 100 + skew_time(
        version, priority, master_adver_interval_cs
    )


# ---------------------------------------------------------------- events (inputs)


@dataclass(frozen=True, slots=True)
class Startup:
    """RFC 5798 6.4.1 Startup event: begin participating."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """RFC 5798 Shutdown event: stop participating (a master sends priority 0)."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The instance's timer (last ``ScheduleTimer``) fired, which disarms it. It may be
    early or spurious: the machine checks what is due and always answers with a
    ``ScheduleTimer`` for its next deadline."""


@dataclass(frozen=True, slots=True)
class AdvertReceived:
    """A decoded advert for this instance's VRID, with the IP source it came from."""

    advert: Advert
    source: IPAddress


@dataclass(frozen=True, slots=True)
class AdvertRejected:
    """A packet for this instance failed decoding; counted, nothing else."""

    reason: Reason


@dataclass(frozen=True, slots=True)
class TrackingChanged:
    """Trackers (and, in a sync group, the group) say: this priority, and fault or not."""

    priority: int
    fault: bool


@dataclass(frozen=True, slots=True)
class GroupCommand:
    """A sync group moves this member to MASTER or BACKUP with its siblings."""

    target: State


@dataclass(frozen=True, slots=True)
class HandOver:
    """Leave MASTER for a peer and do not preempt it for ``hold`` seconds."""

    hold: float


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """A reload changed what may change while running (see ``VrrpMachine.reconfigure``)."""

    params: InstanceParams


Event: TypeAlias = (
    Startup
    | Shutdown
    | TimerFired
    | AdvertReceived
    | AdvertRejected
    | TrackingChanged
    | GroupCommand
    | HandOver
    | Reconfigure
)

# ---------------------------------------------------------------- actions (outputs)


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Encode ``advert`` and send it to each destination (multicast group or peers)."""

    instance: str
    advert: Advert
    destinations: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class AddVips:
    instance: str
    vips: tuple[VipInterface, ...]
    accept: bool  # RFC 5798 Accept_Mode (or owner): whether traffic to them is accepted


@dataclass(frozen=True, slots=True)
class RemoveVips:
    instance: str
    vips: tuple[VipInterface, ...]


@dataclass(frozen=True, slots=True)
class SendGratuitous:
    """Gratuitous ARP (IPv4) / unsolicited NA (IPv6), ``repeat`` frames per VIP."""

    instance: str
    vips: tuple[VipInterface, ...]
    repeat: int


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """Replace the instance's timer: fire ``TimerFired`` at ``at`` (None: no timer)."""

    instance: str
    at: float | None


@dataclass(frozen=True, slots=True)
class Notify:
    """The state changed: log it, and run the instance's ``notify`` command if any."""

    instance: str
    old: State
    new: State
    priority: int
    why: str  # the trigger, e.g. "master_down", "higher_priority"


@dataclass(frozen=True, slots=True)
class AddressMismatch:
    """A v3 peer's address list differs from ours (``ended``: it agrees again, or has
    been silent for a Master_Down_Interval). Log it; the election is unaffected."""

    instance: str
    source: IPAddress
    theirs: tuple[IPAddress, ...]
    ours: tuple[IPAddress, ...]
    ended: bool = False


Action: TypeAlias = (
    SendAdvert | AddVips | RemoveVips | SendGratuitous | ScheduleTimer | Notify | AddressMismatch
)

# ---------------------------------------------------------------- the table


class Trigger(Enum):
    """An input, classified against the current state (see ``_classify``)."""

    STARTUP = auto()
    STARTUP_AS_OWNER = auto()  # effective priority 255: straight to MASTER (6.4.1)
    STARTUP_AS_OWNER_HELD = auto()  # ... but a sync group decides when
    STARTUP_IN_FAULT = auto()
    SHUTDOWN = auto()
    MASTER_DOWN = auto()  # Master_Down_Timer fired
    MASTER_DOWN_HELD = auto()  # ... in a sync group: wait for the siblings
    ADVER_TIMER = auto()  # Adver_Timer fired
    ANNOUNCE_TIMER = auto()  # delayed GARP burst or GARP refresh due
    PRIORITY_ZERO = auto()  # valid advert with priority 0
    FROM_MASTER = auto()  # backup: advert it must defer to (6.4.2)
    PREEMPT_DEFERRED = auto()  # backup: lower advert, but preempt_delay still running
    LOWER_PRIORITY = auto()  # advert that loses against us
    HIGHER_PRIORITY = auto()  # master: advert that wins (priority, then address)
    PRIORITY_CHANGED = auto()  # trackers changed our priority
    FAULT = auto()
    FAULT_CLEARED = auto()
    FAULT_CLEARED_AS_OWNER = auto()
    FAULT_CLEARED_AS_OWNER_HELD = auto()
    GROUP_MASTER = auto()
    GROUP_BACKUP = auto()
    HAND_OVER = auto()  # master: lvs-agent failover


class Step(Enum):
    SEND_ADVERT = auto()
    SEND_PRIORITY_ZERO = auto()
    ADD_VIPS = auto()
    REMOVE_VIPS = auto()
    ANNOUNCE = auto()  # GARP/NA burst now
    ANNOUNCE_LOWER = auto()  # answer to a lower priority: a burst, at most one per delay
    ANNOUNCE_DUE = auto()  # the delayed burst and/or refresh that are due
    ARM_ADVER = auto()  # Adver_Timer = Advertisement_Interval
    ARM_ANNOUNCE = auto()  # delayed burst and refresh timers
    ARM_MASTER_DOWN = auto()  # Master_Down_Timer = Master_Down_Interval
    ARM_SKEW = auto()  # Master_Down_Timer = Skew_Time (after priority 0)
    LEARN_INTERVAL = auto()  # v3: Master_Adver_Interval = the advert's interval
    RESET_INTERVAL = auto()  # Master_Adver_Interval = our Advertisement_Interval
    START_PREEMPT_DELAY = auto()
    STOP_PREEMPT_DELAY = auto()
    HOLD = auto()  # sync group: want MASTER, wait for GROUP_MASTER


S, T = State, Trigger
_BECOME_MASTER: Final = (
    Step.SEND_ADVERT,
    Step.ADD_VIPS,
    Step.ANNOUNCE,
    Step.ARM_ADVER,
    Step.ARM_ANNOUNCE,
)
# VIPs go before the priority-0 advert: a backup may take over as soon as it hears it
# (Skew_Time is 0 at 10 ms adverts), and two nodes must never hold a VIP at once.
_LEAVE_MASTER: Final = (Step.REMOVE_VIPS, Step.SEND_PRIORITY_ZERO)
_AWAIT_MASTER: Final = (Step.RESET_INTERVAL, Step.ARM_MASTER_DOWN)
_HOLD: Final = (Step.RESET_INTERVAL, Step.HOLD)

# (state, trigger) -> (next state, steps in order). Entering a different state
# first clears every timer and the preempt delay; the steps then arm what the new
# state needs. A (state, trigger) pair missing here is never produced by _classify.
TRANSITIONS: Final[dict[tuple[State, Trigger], tuple[State, tuple[Step, ...]]]] = {
    # Initialize: RFC 5798 6.4.1
    (S.INIT, T.STARTUP): (S.BACKUP, _AWAIT_MASTER),
    (S.INIT, T.STARTUP_AS_OWNER): (S.MASTER, _BECOME_MASTER),
    (S.INIT, T.STARTUP_AS_OWNER_HELD): (S.BACKUP, _HOLD),
    (S.INIT, T.STARTUP_IN_FAULT): (S.FAULT, ()),
    # Backup: RFC 5798 6.4.2
    (S.BACKUP, T.MASTER_DOWN): (S.MASTER, _BECOME_MASTER),
    (S.BACKUP, T.MASTER_DOWN_HELD): (S.BACKUP, (Step.HOLD,)),
    (S.BACKUP, T.GROUP_MASTER): (S.MASTER, _BECOME_MASTER),
    (S.BACKUP, T.PRIORITY_ZERO): (S.BACKUP, (Step.ARM_SKEW,)),
    (S.BACKUP, T.FROM_MASTER): (
        S.BACKUP,
        (Step.LEARN_INTERVAL, Step.ARM_MASTER_DOWN, Step.STOP_PREEMPT_DELAY),
    ),
    (S.BACKUP, T.PREEMPT_DEFERRED): (
        S.BACKUP,
        (Step.LEARN_INTERVAL, Step.ARM_MASTER_DOWN, Step.START_PREEMPT_DELAY),
    ),
    (S.BACKUP, T.LOWER_PRIORITY): (S.BACKUP, ()),  # discard: Master_Down_Timer runs on
    (S.BACKUP, T.FAULT): (S.FAULT, ()),
    (S.BACKUP, T.SHUTDOWN): (S.INIT, ()),
    # Master: RFC 5798 6.4.3
    (S.MASTER, T.ADVER_TIMER): (S.MASTER, (Step.SEND_ADVERT, Step.ARM_ADVER)),
    (S.MASTER, T.ANNOUNCE_TIMER): (S.MASTER, (Step.ANNOUNCE_DUE,)),
    (S.MASTER, T.PRIORITY_ZERO): (S.MASTER, (Step.SEND_ADVERT, Step.ARM_ADVER)),
    (S.MASTER, T.PRIORITY_CHANGED): (S.MASTER, (Step.SEND_ADVERT, Step.ARM_ADVER)),
    (S.MASTER, T.LOWER_PRIORITY): (S.MASTER, (Step.SEND_ADVERT, Step.ANNOUNCE_LOWER)),
    (S.MASTER, T.HIGHER_PRIORITY): (
        S.BACKUP,
        (Step.REMOVE_VIPS, Step.LEARN_INTERVAL, Step.ARM_MASTER_DOWN),
    ),
    (S.MASTER, T.GROUP_BACKUP): (S.BACKUP, _LEAVE_MASTER + _AWAIT_MASTER),
    (S.MASTER, T.HAND_OVER): (S.BACKUP, _LEAVE_MASTER + _AWAIT_MASTER),
    (S.MASTER, T.FAULT): (S.FAULT, _LEAVE_MASTER),
    (S.MASTER, T.SHUTDOWN): (S.INIT, _LEAVE_MASTER),
    # Fault: keepalived (a tracker failed); leaving it is a fresh start (6.4.1)
    (S.FAULT, T.FAULT_CLEARED): (S.BACKUP, _AWAIT_MASTER),
    (S.FAULT, T.FAULT_CLEARED_AS_OWNER): (S.MASTER, _BECOME_MASTER),
    (S.FAULT, T.FAULT_CLEARED_AS_OWNER_HELD): (S.BACKUP, _HOLD),
    (S.FAULT, T.SHUTDOWN): (S.INIT, ()),
}
del S, T


# ---------------------------------------------------------------- the machine


class VrrpMachine:
    """One virtual router. Drive it with ``handle(event, now)``; perform the actions.

    ``synced``: the instance is a member of a sync group (``sync.SyncGroup``), so
    it never becomes MASTER on its own: when it would, it raises ``wants_master``
    and waits for ``GroupCommand(State.MASTER)``.
    """

    def __init__(self, params: InstanceParams, *, synced: bool = False) -> None:
        self.params = params
        self.synced = synced
        self.state = State.INIT
        self.priority = params.priority  # effective priority (trackers applied)
        self.fault = False
        self.master_adver_interval_cs = params.advert_interval_cs
        self.wants_master = False
        self.counters = InstanceCounters(effective_priority=params.priority)
        self._master_down_at: float | None = None
        self._adver_at: float | None = None
        self._announce_at: float | None = None  # the delayed second burst
        self._refresh_at: float | None = None
        self._preempt_at: float | None = None
        self._lower_garp_quiet_until: float | None = None  # ANNOUNCE_LOWER's rate limit
        self._yield_until: float | None = None  # HandOver: defer to any master until then
        self._scheduled: float | None = None
        # v3 peers whose address list differs from ours -> when last heard
        self._mismatched: dict[IPAddress, float] = {}

    # -- read-only views

    @property
    def name(self) -> str:
        return self.params.name

    @property
    def skew_time(self) -> float:
        return skew_time(self.params.version, self.priority, self.master_adver_interval_cs)

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(
            self.params.version, self.priority, self.master_adver_interval_cs
        )

    @property
    def yielding_until(self) -> float | None:
        """When a ``HandOver``'s hold ends (None: none given)."""
        return self._yield_until

    @property
    def next_deadline(self) -> float | None:
        times = [
            t
            for t in (self._master_down_at, self._adver_at, self._announce_at, self._refresh_at)
            if t is not None
        ]
        return min(times) if times else None

    # -- the one entry point

    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        if self._mismatched:
            self._expire_mismatches(now, out)
        if isinstance(event, Reconfigure):
            self._reconfigure(event.params, now, out)
        elif isinstance(event, TimerFired):
            # The timer is one-shot: once it has fired nothing is scheduled, so the next
            # deadline is always asked for again, even when nothing was due (an early
            # wake would otherwise leave the instance with no timer at all).
            self._scheduled = None
            for trigger in self._due(now):
                self._fire(trigger, now, None, out)
        else:
            classified = self._classify(event, now, out)
            if classified is not None:
                advert = event.advert if isinstance(event, AdvertReceived) else None
                self._fire(classified, now, advert, out)
        deadline = self.next_deadline
        if deadline != self._scheduled:
            self._scheduled = deadline
            out.append(ScheduleTimer(self.name, deadline))
        return out

    # -- classification: event + state -> trigger (None: nothing to do)

    def _classify(self, event: Event, now: float, out: list[Action]) -> Trigger | None:
        if isinstance(event, Startup):
            if self.state is not State.INIT:
                return None
            if self.fault:
                return Trigger.STARTUP_IN_FAULT
            if self.priority == PRIORITY_OWNER:
                return Trigger.STARTUP_AS_OWNER_HELD if self.synced else Trigger.STARTUP_AS_OWNER
            return Trigger.STARTUP
        if isinstance(event, Shutdown):
            return None if self.state is State.INIT else Trigger.SHUTDOWN
        if isinstance(event, AdvertRejected):
            self.counters.invalid[event.reason.value] += 1
            return None
        if isinstance(event, AdvertReceived):
            return self._classify_advert(event, now, out)
        if isinstance(event, TrackingChanged):
            return self._classify_tracking(event)
        if isinstance(event, HandOver):
            if self.state is not State.MASTER:
                return None
            self._yield_until = now + event.hold
            return Trigger.HAND_OVER
        if isinstance(event, GroupCommand):
            if event.target is State.MASTER and self.state is State.BACKUP:
                return Trigger.GROUP_MASTER
            if event.target is State.BACKUP and self.state is State.MASTER:
                return Trigger.GROUP_BACKUP
            return None
        return None  # TimerFired is handled by _due

    def _classify_advert(
        self, event: AdvertReceived, now: float, out: list[Action]
    ) -> Trigger | None:
        if self.state is State.INIT:
            return None  # not participating yet: the socket may be open before Startup
        advert, source = event.advert, event.source
        if source == self.params.primary_address:
            self.counters.own_adverts += 1
            return None
        reason = self.rejection(advert, source)
        if reason is not None:
            self.counters.invalid[reason.value] += 1
            return None
        self.counters.adverts_received += 1
        if self.params.version == 3:
            self._note_address_list(advert, source, now, out)
        if advert.priority == PRIORITY_STOP:
            self.counters.priority_zero_received += 1
        if self.state is State.FAULT:
            return None  # counted, but a faulty node takes no part in the election
        if advert.priority == PRIORITY_STOP:
            return Trigger.PRIORITY_ZERO
        if self.state is State.BACKUP:
            # 6.4.2: defer if Preempt_Mode is False or the advert's priority is >= ours.
            # An owner always preempts (6.1 Preempt_Mode note).
            no_preempt = not self.params.preempt and self.priority != PRIORITY_OWNER
            yielding = self._yield_until is not None and now < self._yield_until
            if no_preempt or yielding or advert.priority >= self.priority:
                return Trigger.FROM_MASTER
            if self.params.preempt_delay > 0 and (
                self._preempt_at is None or now < self._preempt_at - TIMER_SLACK
            ):
                return Trigger.PREEMPT_DEFERRED
            return Trigger.LOWER_PRIORITY
        # MASTER, 6.4.3: the higher priority wins; on a tie, the higher primary address
        # (compared as integers of the same family).
        if advert.priority > self.priority or (
            advert.priority == self.priority and int(source) > int(self.params.primary_address)
        ):
            return Trigger.HIGHER_PRIORITY
        return Trigger.LOWER_PRIORITY

    @staticmethod
    def needs_restart(old: InstanceParams, new: InstanceParams) -> str | None:
        """Why ``new`` cannot be applied to a running machine built with ``old``: what
        identifies the virtual router on the wire (VRID, version, advert family) and
        where it speaks (primary address). None: ``Reconfigure`` can apply it."""
        for what in ("vrid", "version", "family", "primary_address"):
            if getattr(old, what) != getattr(new, what):
                return what
        if bool(old.unicast_peers) != bool(new.unicast_peers):
            return "unicast_peers (multicast <-> unicast)"
        return None

    def _reconfigure(self, params: InstanceParams, now: float, out: list[Action]) -> None:
        """Apply a reload in place: no state change, no priority 0, no lease touched.

        A master adds and removes just the VIPs the reload added and removed (a GARP
        burst for the added ones) and advertises at once, so backups learn the new
        list or interval within one packet. The effective priority is the trackers'
        business (``TrackingChanged``), not this event's.
        """
        old = self.params
        why = self.needs_restart(old, params)
        if why is not None:
            raise ValueError(f"{self.name}: {why} changed: the instance must restart")
        self.params = params
        if self.state is not State.MASTER:
            if params.version == 2 or self.state is not State.BACKUP:
                self.master_adver_interval_cs = params.advert_interval_cs
            return
        removed = tuple(v for v in old.vips if v not in params.vips)
        added = tuple(v for v in params.vips if v not in old.vips)
        if removed:
            out.append(RemoveVips(self.name, removed))
        if added:
            accept = params.accept_mode or self.priority == PRIORITY_OWNER
            out.append(AddVips(self.name, added, accept))
            if params.garp.repeat > 0:
                out.append(SendGratuitous(self.name, added, params.garp.repeat))
        self.master_adver_interval_cs = params.advert_interval_cs
        if (removed, added) != ((), ()) or self._advert(self.priority) != Advert(
            old.version,
            old.family,
            old.vrid,
            self.priority,
            old.advert_interval_cs,
            old.advertised,
            old.auth,
        ):
            self._run(Step.SEND_ADVERT, now, None, out)
            self._run(Step.ARM_ADVER, now, None, out)
        if params.garp.refresh != old.garp.refresh:
            self._refresh_at = now + params.garp.refresh if params.garp.refresh > 0 else None

    def rejection(self, advert: Advert, source: IPAddress) -> Reason | None:
        """Checks against this instance's configuration (RFC 5798 / 3768 section 7.1)."""
        p = self.params
        if advert.vrid != p.vrid:
            return Reason.VRID
        if advert.version != p.version or advert.family != p.family:
            return Reason.VERSION
        if p.version == 2 and advert.interval_cs != p.advert_interval_cs:
            # RFC 3768 7.1: v2 routers must agree on the interval (v3 learns it).
            return Reason.INTERVAL
        if p.unicast_peers and source not in p.unicast_peers:
            # keepalived check_unicast_src: only configured peers may take part.
            return Reason.UNICAST_SOURCE
        if (
            p.version == 2
            and advert.priority != PRIORITY_OWNER
            and set(advert.addresses) != set(p.advertised)
        ):
            # RFC 3768 7.1: a VIP list that differs is dropped unless from the owner.
            # v3 only logs and reports it (see _note_address_list and the docstring).
            return Reason.ADDRESS_LIST
        return None

    def _note_address_list(
        self, advert: Advert, source: IPAddress, now: float, out: list[Action]
    ) -> None:
        """RFC 5798 7.1: a differing address list is logged and reported, not dropped."""
        ours = self.params.advertised
        if advert.priority == PRIORITY_OWNER or set(advert.addresses) == set(ours):
            if self._mismatched.pop(source, None) is not None:
                out.append(AddressMismatch(self.name, source, advert.addresses, ours, True))
        else:
            self.counters.address_mismatches += 1
            if source not in self._mismatched:
                out.append(AddressMismatch(self.name, source, advert.addresses, ours))
            self._mismatched[source] = now
        self.counters.address_mismatch_peers = len(self._mismatched)

    def _expire_mismatches(self, now: float, out: list[Action]) -> None:
        """A mismatching peer silent for a Master_Down_Interval no longer counts."""
        horizon = now - self.master_down_interval
        for source, seen in list(self._mismatched.items()):
            if seen < horizon:
                del self._mismatched[source]
                out.append(AddressMismatch(self.name, source, (), self.params.advertised, True))
        self.counters.address_mismatch_peers = len(self._mismatched)

    def _classify_tracking(self, event: TrackingChanged) -> Trigger | None:
        old_priority = self.priority
        self.priority, self.fault = event.priority, event.fault
        self.counters.effective_priority = event.priority
        if self.state is State.INIT:
            return None  # remembered for Startup
        if self.fault and self.state is not State.FAULT:
            return Trigger.FAULT
        if not self.fault and self.state is State.FAULT:
            if self.priority == PRIORITY_OWNER:
                return (
                    Trigger.FAULT_CLEARED_AS_OWNER_HELD
                    if self.synced
                    else Trigger.FAULT_CLEARED_AS_OWNER
                )
            return Trigger.FAULT_CLEARED
        if self.priority != old_priority and self.state is State.MASTER:
            # Advertise the new priority now rather than up to an interval later, so a
            # better backup starts its Master_Down_Timer (and preempts) sooner.
            return Trigger.PRIORITY_CHANGED
        return None

    def _due(self, now: float) -> list[Trigger]:
        due: list[Trigger] = []
        limit = now + TIMER_SLACK
        if self.state is State.BACKUP:
            if self._master_down_at is not None and self._master_down_at <= limit:
                due.append(Trigger.MASTER_DOWN_HELD if self.synced else Trigger.MASTER_DOWN)
        elif self.state is State.MASTER:
            if self._adver_at is not None and self._adver_at <= limit:
                due.append(Trigger.ADVER_TIMER)
            if any(t is not None and t <= limit for t in (self._announce_at, self._refresh_at)):
                due.append(Trigger.ANNOUNCE_TIMER)
        return due

    # -- applying a table row

    def _fire(self, trigger: Trigger, now: float, advert: Advert | None, out: list[Action]) -> None:
        target, steps = TRANSITIONS[(self.state, trigger)]
        old = self.state
        if target is not old:
            self._master_down_at = self._adver_at = None
            self._announce_at = self._refresh_at = None
            self._preempt_at = None
            self._lower_garp_quiet_until = None
            self.wants_master = False
        for step in steps:
            self._run(step, now, advert, out)
        if target is not old:
            self.state = target
            self.counters.state = int(target)
            self.counters.transitions[target.name.lower()] += 1
            out.append(Notify(self.name, old, target, self.priority, trigger.name.lower()))

    def _advert(self, priority: int) -> Advert:
        p = self.params
        return Advert(
            p.version, p.family, p.vrid, priority, p.advert_interval_cs, p.advertised, p.auth
        )

    def _run(self, step: Step, now: float, advert: Advert | None, out: list[Action]) -> None:
        p = self.params
        if step is Step.SEND_ADVERT:
            self.counters.adverts_sent += 1
            out.append(SendAdvert(self.name, self._advert(self.priority), p.destinations))
        elif step is Step.SEND_PRIORITY_ZERO:
            self.counters.adverts_sent += 1
            self.counters.priority_zero_sent += 1
            out.append(SendAdvert(self.name, self._advert(PRIORITY_STOP), p.destinations))
        elif step is Step.ADD_VIPS:
            accept = p.accept_mode or self.priority == PRIORITY_OWNER
            out.append(AddVips(self.name, p.vips, accept))
        elif step is Step.REMOVE_VIPS:
            out.append(RemoveVips(self.name, p.vips))
        elif step is Step.ANNOUNCE:
            if p.garp.repeat > 0:
                out.append(SendGratuitous(self.name, p.vips, p.garp.repeat))
        elif step is Step.ANNOUNCE_LOWER:
            quiet = self._lower_garp_quiet_until
            if p.garp.lower_repeat > 0 and (quiet is None or now >= quiet - TIMER_SLACK):
                out.append(SendGratuitous(self.name, p.vips, p.garp.lower_repeat))
                self._lower_garp_quiet_until = now + p.garp.lower_delay
        elif step is Step.ANNOUNCE_DUE:
            limit = now + TIMER_SLACK
            if self._announce_at is not None and self._announce_at <= limit:
                self._announce_at = None
                if p.garp.repeat > 0:
                    out.append(SendGratuitous(self.name, p.vips, p.garp.repeat))
            if self._refresh_at is not None and self._refresh_at <= limit:
                self._refresh_at = now + p.garp.refresh
                out.append(SendGratuitous(self.name, p.vips, 1))
        elif step is Step.ARM_ADVER:
            self._adver_at = now + p.advert_interval_cs / 100
        elif step is Step.ARM_ANNOUNCE:
            self._announce_at = now + p.garp.delay if p.garp.delay > 0 else None
            self._refresh_at = now + p.garp.refresh if p.garp.refresh > 0 else None
        elif step is Step.ARM_MASTER_DOWN:
            self.wants_master = False
            self._master_down_at = now + self.master_down_interval
        elif step is Step.ARM_SKEW:
            self.wants_master = False
            self._master_down_at = now + self.skew_time
        elif step is Step.LEARN_INTERVAL:
            if p.version == 3 and advert is not None:
                self.master_adver_interval_cs = advert.interval_cs
        elif step is Step.RESET_INTERVAL:
            self.master_adver_interval_cs = p.advert_interval_cs
        elif step is Step.START_PREEMPT_DELAY:
            if self._preempt_at is None:
                self._preempt_at = now + p.preempt_delay
        elif step is Step.STOP_PREEMPT_DELAY:
            self._preempt_at = None
        elif step is Step.HOLD:
            self.wants_master = True
            self._master_down_at = None
