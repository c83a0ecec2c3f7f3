"""The validated configuration: frozen, typed, complete (every default filled in).

Objects here are built only from a document that passed every check in
``agent.config.loader``; nothing downstream re-validates them.
Durations are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.health.config import Check, PoolPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.config.include import Included
    from agent.lock.config import LockConfig
    from agent.vrrp.config import VrrpConfig

FORWARDING_METHODS = ("nat", "dr", "tunnel")
TUNNEL_TYPES = ("ipip", "gue", "gre")
TUNNEL_CHECKSUMS = ("nocsum", "csum", "remcsum")
PROTOCOLS = ("tcp", "udp", "sctp")
SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "mh",
    "sed",
    "nq",
    "fo",
    "ovf",
    "twos",
)
SCHEDULER_FLAGS = ("sh-fallback", "sh-port", "mh-fallback", "mh-port", "flag-1", "flag-2", "flag-3")
FAMILIES = ("ipv4", "ipv6")
#: ``metrics.per_real_server``: every real server's series, per-service sums, or neither
PER_REAL_SERVER = ("full", "aggregate", "off")

# net.ipv4.vs.* keys the agent may set, with their allowed ranges. Only these:
# they change how draining and failover behave (docs/reconcile.md, "Draining").
IPVS_SYSCTLS: dict[str, tuple[int, int]] = {
    "expire_nodest_conn": (0, 1),
    "expire_quiescent_template": (0, 1),
    "conntrack": (0, 1),
    "conn_reuse_mode": (0, 3),
    "sloppy_tcp": (0, 1),
    "sloppy_sctp": (0, 1),
    "schedule_icmp": (0, 1),
    "ignore_tunneled": (0, 1),
    "snat_reroute": (0, 1),
    "pmtu_disc": (0, 1),
    # connection synchronisation (README, "Connections survive a failover")
    "sync_persist_mode": (0, 1),
    "sync_version": (0, 1),
    "sync_refresh_period": (0, 86400),  # seconds; 0: resend on state change only
    "sync_retries": (0, 3),
}
# net.ipv4.vs.* keys that hold a vector: key -> (length, lowest, highest) per element.
# sync_threshold is "threshold period": a connection is synced when its packet count
# modulo period equals threshold (threshold < period unless period is 0).
IPVS_SYSCTL_VECTORS: dict[str, tuple[int, int, int]] = {
    "sync_threshold": (2, 0, 2**31 - 1),
}
SysctlValue = int | tuple[int, ...]

# ipvs.sync defaults: keepalived's lvs_sync_daemon and the kernel's (ip_vs_sync.c).
SYNC_PORT = 8848
SYNC_GROUP = "224.0.0.81"
SYNC_TTL = 1


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """``ipvs.sync``: the kernel's connection-synchronisation daemons.

    Every director runs the backup daemon; the one holding ``instance``'s VIPs (a
    VRRP instance or a sync group) also runs the master daemon. ``max_len`` 0: the
    kernel sizes messages from the interface's MTU.
    """

    instance: str
    interface: str
    sync_id: int = 0
    port: int = SYNC_PORT
    max_len: int = 0
    ttl: int = SYNC_TTL
    group: str = SYNC_GROUP


@dataclass(frozen=True, slots=True)
class Tunnel:
    type: str = "ipip"  # ipip | gue | gre
    port: int = 0  # gue only
    checksum: str = "nocsum"  # nocsum | csum | remcsum


@dataclass(frozen=True, slots=True)
class RealServer:
    address: str  # canonical text
    port: int  # 0 for fwmark services without a port
    weight: int = 1
    upper_threshold: int = 0
    lower_threshold: int = 0
    forwarding: str = "nat"
    tunnel: Tunnel | None = None
    line: int = 0
    #: the effective health checks: the virtual server's merged with the real
    #: server's own ``health_checks`` (agent.config.health.merge)
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class Persistence:
    timeout: float = 300.0
    netmask: int = 0xFFFFFFFF  # IPv4: host-order mask; IPv6: prefix length
    engine: str | None = None  # "sip" or None


@dataclass(frozen=True, slots=True)
class VirtualServer:
    name: str
    family: str  # ipv4 | ipv6
    address: str | None  # None for fwmark services
    port: int
    fwmark: int
    protocol: str | None  # None for fwmark services
    scheduler: str
    scheduler_flags: tuple[str, ...] = ()
    persistence: Persistence | None = None
    one_packet: bool = False
    real_servers: tuple[RealServer, ...] = ()
    line: int = 0
    #: what the virtual server does with its real servers' health
    health: PoolPolicy = field(default_factory=PoolPolicy)


@dataclass(frozen=True, slots=True)
class IpvsSettings:
    timeout_tcp: float | None = None
    timeout_tcp_fin: float | None = None
    timeout_udp: float | None = None
    drain_timeout: float = 300.0
    sysctls: dict[str, SysctlValue] = field(default_factory=dict)
    sync: SyncSettings | None = None


def _no_vrrp() -> VrrpConfig:
    # Imported here: apply and plan use this module for IpvsSettings alone.
    from agent.vrrp.config import VrrpConfig

    return VrrpConfig()


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    node_name: str
    metrics_host: str
    metrics_port: int
    reconcile_interval: float
    state_dir: str
    ipvs: IpvsSettings
    virtual_servers: tuple[VirtualServer, ...]
    vrrp: VrrpConfig = field(default_factory=_no_vrrp)
    lock: LockConfig | None = None  # the quorum lease lock; None: no ``lock:`` section
    #: clusters served as a witness (``lvs-agent witness``): ``witness.clusters`` + ``lock``
    witness: tuple[LockConfig, ...] = ()
    #: the line of each key that names something on the host (``state_dir``,
    #: ``lock.key_file``, ``vrrp_instances[0].interface``, ...; ``agent.config.host``)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    #: the ``include`` patterns, their lines and the files each matched (``agent.config.include``)
    includes: tuple[Included, ...] = field(default=(), compare=False, repr=False)
    #: ``metrics.per_real_server``: full | aggregate | off (agent.metrics.PER_REAL_SERVER)
    metrics_per_real_server: str = "full"
    #: ``node.realtime_priority``: SCHED_RR priority of the event loop (agent.daemon.priority)
    realtime_priority: int | None = None
