"""Turn validated configuration into the IPVS table it describes (pure).

The values produced are the ones the kernel will report back for the same
objects, so that planning against a dump of a table we programmed finds
nothing to do. Where the kernel fills in a default (host netmask on a
non-persistent service, the service port for a DR real server), this module
fills in the same.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from agent.config.model import RealServer, VirtualServer
from agent.gcpause import paused_gc
from agent.ipvs.model import (
    AF_INET,
    AF_INET6,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    IPV4_HOST_NETMASK,
    IPV6_HOST_PREFIX,
    PROTOCOL_NUMBERS,
    SCHED_FLAG_BITS,
    TUN_FLAG_CSUM,
    TUN_FLAG_NOCSUM,
    TUN_FLAG_REMCSUM,
    DesiredService,
    DesiredTable,
    Dest,
    DestKey,
    Forwarding,
    Service,
    ServiceKey,
    TunnelType,
)

_FORWARDING = {"nat": Forwarding.NAT, "dr": Forwarding.DR, "tunnel": Forwarding.TUNNEL}
_TUNNEL_TYPE = {"ipip": TunnelType.IPIP, "gue": TunnelType.GUE, "gre": TunnelType.GRE}
_TUNNEL_CSUM = {"nocsum": TUN_FLAG_NOCSUM, "csum": TUN_FLAG_CSUM, "remcsum": TUN_FLAG_REMCSUM}


def _af(address: str) -> int:
    return AF_INET6 if ":" in address else AF_INET


def service_key(vs: VirtualServer) -> ServiceKey:
    af = AF_INET6 if vs.family == "ipv6" else AF_INET
    if vs.fwmark:
        return ServiceKey(af, 0, "", 0, vs.fwmark)
    assert vs.address is not None and vs.protocol is not None
    return ServiceKey(af, PROTOCOL_NUMBERS[vs.protocol], vs.address, vs.port)


def desired_service(vs: VirtualServer) -> Service:
    key = service_key(vs)
    flags = 0
    for name in vs.scheduler_flags:
        flags |= SCHED_FLAG_BITS[name]
    if vs.one_packet:
        flags |= IP_VS_SVC_F_ONEPACKET
    timeout = 0
    netmask = IPV6_HOST_PREFIX if key.af == AF_INET6 else IPV4_HOST_NETMASK
    pe_name = ""
    if vs.persistence is not None:
        flags |= IP_VS_SVC_F_PERSISTENT
        timeout = int(vs.persistence.timeout)
        netmask = vs.persistence.netmask
        pe_name = vs.persistence.engine or ""
    return Service(key, vs.scheduler, flags, timeout, netmask, pe_name)


def desired_dest(rs: RealServer, weight: int | None = None) -> Dest:
    tunnel = rs.tunnel
    return Dest(
        key=DestKey(_af(rs.address), rs.address, rs.port),
        fwd=_FORWARDING[rs.forwarding],
        weight=rs.weight if weight is None else weight,
        u_threshold=rs.upper_threshold,
        l_threshold=rs.lower_threshold,
        tun_type=_TUNNEL_TYPE[tunnel.type] if tunnel else 0,
        tun_port=tunnel.port if tunnel else 0,
        tun_flags=_TUNNEL_CSUM[tunnel.checksum] if tunnel else 0,
    )


def desired_table(
    virtual_servers: tuple[VirtualServer, ...],
    weights: Mapping[tuple[str, str, int], int] | None = None,
) -> DesiredTable:
    """The table the configuration asks for.

    ``weights`` overrides the configured weight of a real server, keyed by
    (virtual server name, real server address, port): health checking uses it to
    take a server out (weight 0) without removing it.
    """
    with paused_gc():  # see agent.gcpause
        return _table(virtual_servers, weights)


def _table(
    virtual_servers: tuple[VirtualServer, ...],
    weights: Mapping[tuple[str, str, int], int] | None,
) -> DesiredTable:
    table: DesiredTable = {}
    for vs in virtual_servers:
        service = desired_service(vs)
        dests: dict[DestKey, Dest] = {}
        for rs in vs.real_servers:
            override = weights.get((vs.name, rs.address, rs.port)) if weights else None
            dest = desired_dest(rs, override)
            dests[dest.key] = dest
        table[service.key] = DesiredService(service, dests, vs.name)
    return table


def canonical_address(text: str) -> str:
    """The spelling the kernel dump decodes to (inet_ntop)."""
    af = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_ntop(af, socket.inet_pton(af, text))
