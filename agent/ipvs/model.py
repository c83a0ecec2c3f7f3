"""Value types for the IPVS table: what a virtual service and a real server *are*.

This module owns the vocabulary shared by the planner (pure diff), the netlink
codec and the metrics collector. It knows nothing about sockets, YAML or time.

Field values are exactly what the kernel stores and reports, so that a desired
object and a dumped object compare equal when nothing needs to change:

- addresses are canonical text (``socket.inet_ntop`` output);
- ``Service.flags`` never carries ``IP_VS_SVC_F_HASHED`` (the kernel reports it
  on every dumped service; see docs/reconcile.md and k8s #53801);
- ``Service.netmask`` is the IPv4 mask as a host-order integer, or the IPv6
  prefix length, as ``ipvsadm`` and the kernel keep it;
- ``Dest.fwd`` is the kernel's ``IP_VS_CONN_F_FWD_MASK`` value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, NamedTuple

AF_INET: Final = 2
AF_INET6: Final = 10

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_SCTP: Final = 132

PROTOCOL_NUMBERS: Final = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "sctp": IPPROTO_SCTP}
PROTOCOL_NAMES: Final = {v: k for k, v in PROTOCOL_NUMBERS.items()}

# include/uapi/linux/ip_vs.h
IP_VS_SVC_F_PERSISTENT: Final = 0x0001
IP_VS_SVC_F_HASHED: Final = 0x0002
IP_VS_SVC_F_ONEPACKET: Final = 0x0004
IP_VS_SVC_F_SCHED1: Final = 0x0008
IP_VS_SVC_F_SCHED2: Final = 0x0010
IP_VS_SVC_F_SCHED3: Final = 0x0020

# Scheduler flag names as ipvsadm and keepalived spell them.
SCHED_FLAG_BITS: Final = {
    "flag-1": IP_VS_SVC_F_SCHED1,
    "flag-2": IP_VS_SVC_F_SCHED2,
    "flag-3": IP_VS_SVC_F_SCHED3,
    "sh-fallback": IP_VS_SVC_F_SCHED1,
    "sh-port": IP_VS_SVC_F_SCHED2,
    "mh-fallback": IP_VS_SVC_F_SCHED1,
    "mh-port": IP_VS_SVC_F_SCHED2,
}

SCHED_FLAGS_MASK: Final = IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2 | IP_VS_SVC_F_SCHED3
_SCHED_BITS: Final = (IP_VS_SVC_F_SCHED1, IP_VS_SVC_F_SCHED2, IP_VS_SVC_F_SCHED3)
# (scheduler, bit) -> that scheduler's own name for the bit, from SCHED_FLAG_BITS.
_OWN_FLAG_NAMES: Final = {
    (name.split("-")[0], bit): name
    for name, bit in SCHED_FLAG_BITS.items()
    if not name.startswith("flag-")
}


def sched_flag_names(scheduler: str, flags: int) -> list[str]:
    """The scheduler flags set in ``flags``, named as ipvsadm prints them: the
    scheduler's own name (sh-port) where it has one, else flag-1..flag-3."""
    return [
        _OWN_FLAG_NAMES.get((scheduler, bit), f"flag-{n}")
        for n, bit in enumerate(_SCHED_BITS, 1)
        if flags & bit
    ]


def netmask_text(af: int, netmask: int) -> str:
    """A persistence netmask as ipvsadm prints it: dotted for IPv4, a prefix for IPv6."""
    if af == AF_INET6:
        return str(netmask)
    return f"{netmask >> 24}.{(netmask >> 16) & 255}.{(netmask >> 8) & 255}.{netmask & 255}"


IPV4_HOST_NETMASK: Final = 0xFFFFFFFF
IPV6_HOST_PREFIX: Final = 128


def is_host_netmask(af: int, netmask: int) -> bool:
    """A persistence netmask of one address (the default: ipvsadm prints no mask)."""
    return netmask == (IPV6_HOST_PREFIX if af == AF_INET6 else IPV4_HOST_NETMASK)


class Forwarding(IntEnum):
    """IP_VS_CONN_F_FWD_MASK values."""

    NAT = 0  # IP_VS_CONN_F_MASQ
    LOCAL = 1  # IP_VS_CONN_F_LOCALNODE (kernel-chosen when the real server is local)
    TUNNEL = 2
    DR = 3  # IP_VS_CONN_F_DROUTE


class TunnelType(IntEnum):
    """IP_VS_CONN_F_TUNNEL_TYPE_*."""

    IPIP = 0
    GUE = 1
    GRE = 2


# IP_VS_TUNNEL_ENCAP_FLAG_*
TUN_FLAG_NOCSUM: Final = 0x0000
TUN_FLAG_CSUM: Final = 0x0001
TUN_FLAG_REMCSUM: Final = 0x0002


class ServiceKey(NamedTuple):
    """Identity of a virtual service: (af, protocol, address, port) or (af, fwmark).

    A firewall-mark service is ``ServiceKey(af, 0, "", 0, mark)``: the kernel
    reports no protocol, address or port for it, so that is how a dump decodes it.

    The keys are named tuples, not dataclasses: every dump, plan and table
    lookup hashes, compares and sorts them tens of thousands of times, and a
    tuple does that in C where a dataclass runs generated Python methods.
    """

    af: int
    protocol: int
    address: str  # "" for fwmark services
    port: int  # 0 for fwmark services
    fwmark: int = 0

    def __str__(self) -> str:
        family = "inet6" if self.af == AF_INET6 else "inet"
        if self.fwmark:
            return f"fwmark {self.fwmark} ({family})"
        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        host = f"[{self.address}]" if self.af == AF_INET6 else self.address
        return f"{proto} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Service:
    """The editable attributes of a virtual service, plus its key."""

    key: ServiceKey
    scheduler: str
    flags: int = 0
    timeout: int = 0  # persistence timeout in seconds; 0 = not persistent
    # IPv4 host-order mask; an IPv6 service needs a prefix length (128 when not
    # persistent: the kernel refuses anything outside 1..128 with EINVAL).
    netmask: int = IPV4_HOST_NETMASK
    pe_name: str = ""


class DestKey(NamedTuple):
    """Identity of a real server inside one virtual service (a named tuple: see ServiceKey)."""

    af: int
    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.af == AF_INET6 else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Dest:
    """The editable attributes of a real server, plus its key."""

    key: DestKey
    fwd: int = Forwarding.NAT
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = 0
    tun_port: int = 0
    tun_flags: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    """Cumulative counters the kernel keeps per service and per real server."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0


ZERO_STATS: Final = Stats()


@dataclass(frozen=True, slots=True)
class KernelDest:
    """A real server as dumped: its attributes plus live counters."""

    dest: Dest
    active_conns: int = 0
    inactive_conns: int = 0
    persist_conns: int = 0
    stats: Stats = ZERO_STATS


@dataclass(frozen=True, slots=True)
class KernelService:
    """A virtual service as dumped, with its real servers."""

    service: Service
    dests: dict[DestKey, KernelDest] = field(default_factory=dict)
    stats: Stats = ZERO_STATS


@dataclass(frozen=True, slots=True)
class DesiredService:
    """A virtual service as configuration wants it."""

    service: Service
    dests: dict[DestKey, Dest] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Global IPVS connection timeouts in seconds (0 = leave unchanged)."""

    tcp: int = 0
    tcp_fin: int = 0
    udp: int = 0


KernelTable = dict[ServiceKey, KernelService]
DesiredTable = dict[ServiceKey, DesiredService]


# --- operations: what the planner asks the kernel adapter to do -------------------


@dataclass(frozen=True, slots=True)
class AddService:
    service: Service


@dataclass(frozen=True, slots=True)
class EditService:
    service: Service


@dataclass(frozen=True, slots=True)
class DelService:
    key: ServiceKey


@dataclass(frozen=True, slots=True)
class AddDest:
    service: ServiceKey
    dest: Dest


@dataclass(frozen=True, slots=True)
class EditDest:
    service: ServiceKey
    dest: Dest


@dataclass(frozen=True, slots=True)
class DelDest:
    service: ServiceKey
    dest: DestKey


@dataclass(frozen=True, slots=True)
class SetTimeouts:
    timeouts: Timeouts


Op = AddService | EditService | DelService | AddDest | EditDest | DelDest | SetTimeouts


# --- connection synchronisation daemons ------------------------------------------------

IP_VS_STATE_MASTER = 1
IP_VS_STATE_BACKUP = 2
SYNC_ROLES = {IP_VS_STATE_MASTER: "master", IP_VS_STATE_BACKUP: "backup"}


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    """One IPVS connection-synchronisation daemon (a kernel thread set per netns and role).

    ``max_len``, ``port`` and ``ttl`` 0 and ``group`` "" ask for the kernel's default
    (a length from the interface's MTU, port 8848, TTL 1, group 224.0.0.81); the kernel
    reports the values it chose.
    """

    state: int  # IP_VS_STATE_MASTER | IP_VS_STATE_BACKUP
    interface: str
    sync_id: int
    max_len: int = 0
    group: str = ""
    port: int = 0
    ttl: int = 0

    @property
    def role(self) -> str:
        return SYNC_ROLES.get(self.state, str(self.state))
