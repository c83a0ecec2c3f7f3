"""What a VRRP instance, its trackers and its sync group are configured to do.

This module owns the configuration vocabulary of the VRRP component: frozen
dataclasses whose field names are exactly the YAML keys under ``vrrp_instances``
and ``vrrp_sync_groups``. The config loader (``agent.config``) validates a
document and builds these; nothing here parses YAML, checks ranges or touches
the system. Durations are float seconds, addresses canonical text,
lists are tuples.

Defaults follow keepalived where the YAML leaves a key out (``preempt`` on,
GARP 5 repeats then again 5 s later, script interval 1 s, rise/fall 1), except
``version``: we default to VRRPv3 (RFC 5798), keepalived to v2.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GarpConfig:
    """Gratuitous ARP / unsolicited NA announcements made as master.

    ``repeat`` frames per VIP on becoming master, the same burst again ``delay``
    seconds later (keepalived ``garp_master_delay``; 0 = no second burst), and one
    frame per VIP every ``refresh`` seconds while master (0 = never). A master that
    hears a lower priority answers with ``lower_prio_repeat`` frames per VIP, at most
    once per ``lower_prio_delay`` seconds (keepalived ``garp_lower_prio_repeat`` /
    ``garp_lower_prio_delay``, whose defaults are ``repeat`` and ``delay``).
    """

    repeat: int = 5
    delay: float = 5.0
    refresh: float = 0.0
    lower_prio_repeat: int | None = None  # None: ``repeat``
    lower_prio_delay: float | None = None  # None: ``delay``

    @property
    def lower_repeat(self) -> int:
        return self.repeat if self.lower_prio_repeat is None else self.lower_prio_repeat

    @property
    def lower_delay(self) -> float:
        return self.delay if self.lower_prio_delay is None else self.lower_prio_delay


@dataclass(frozen=True, slots=True)
class TrackInterfaceConfig:
    """An interface whose link state adjusts the instance.

    ``weight`` 0: link down puts the instance in FAULT. Otherwise keepalived
    semantics: a positive weight is added to the priority while the link is up,
    a negative weight is added while it is down.
    """

    name: str
    weight: int = 0


@dataclass(frozen=True, slots=True)
class TrackScriptConfig:
    """A command run periodically; exit status 0 is success.

    ``script`` is a command line split with ``shlex`` and run without a shell.
    ``timeout`` None means "the interval" (keepalived). ``rise`` successes turn a
    failing script OK, ``fall`` failures turn an OK script failing. ``weight`` as
    for interfaces (0 = FAULT while failing). ``init_fail``: start as failing
    until ``rise`` successes (keepalived ``init_fail``); otherwise start OK.
    """

    name: str
    script: str
    interval: float = 1.0
    timeout: float | None = None
    rise: int = 1
    fall: int = 1
    weight: int = 0
    init_fail: bool = False


@dataclass(frozen=True, slots=True)
class VrrpInstanceConfig:
    """One virtual router: a VRID on an interface and the VIPs it owns as master.

    The advertised address family is that of the first unicast peer if any, else of
    the first VIP; VIPs of the other family are added and removed with the instance
    but not advertised (keepalived moves them to ``virtual_ipaddress_excluded``).
    VRRPv2 is IPv4 only. ``advert_interval``: v3 0.01..40.95 s in steps of 0.01 s;
    v2 whole seconds 1..255. ``auth_pass``: v2 simple password, at most 8 bytes
    (RFC 2338 type 1, kept by RFC 3768 only for compatibility).
    ``notify``: a command run on every state change as
    ``notify INSTANCE <name> <MASTER|BACKUP|FAULT|STOP> <priority>`` (keepalived).
    """

    name: str
    interface: str
    vrid: int
    version: int = 3
    priority: int = 100
    advert_interval: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0
    unicast_peers: tuple[str, ...] = ()
    auth_pass: str | None = None
    virtual_ips: tuple[str, ...] = ()
    track_interfaces: tuple[TrackInterfaceConfig, ...] = ()
    track_scripts: tuple[TrackScriptConfig, ...] = ()
    notify: str | None = None
    garp: GarpConfig = GarpConfig()
    #: "vrrp": RFC 5798 election by adverts; "quorum": MASTER only while this node holds
    #: the lease ``lease`` of the ``lock:`` section (the sync group's name if in one).
    election: str = "vrrp"
    lease: str = ""


@dataclass(frozen=True, slots=True)
class SyncGroupConfig:
    """Instances that are MASTER together, BACKUP together and FAULT together.

    ``notify`` is run as ``notify GROUP <name> <state> 0`` when the whole group
    reaches a new common state.
    """

    name: str
    instances: tuple[str, ...]
    notify: str | None = None


@dataclass(frozen=True, slots=True)
class VrrpConfig:
    """The ``vrrp_instances`` and ``vrrp_sync_groups`` sections together."""

    vrrp_instances: tuple[VrrpInstanceConfig, ...] = ()
    vrrp_sync_groups: tuple[SyncGroupConfig, ...] = ()
