"""Render a dumped IPVS table for people, in the layout of ``ipvsadm -L -n``."""

from __future__ import annotations

from collections.abc import Set

from agent.ipvs.model import (
    AF_INET6,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    PROTOCOL_NAMES,
    KernelTable,
    ServiceKey,
)

_FWD = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}


def _service_line(key: ServiceKey) -> str:
    if key.fwmark:
        return f"FWM  {key.fwmark}{' IPv6' if key.af == AF_INET6 else ''}"
    proto = PROTOCOL_NAMES.get(key.protocol, str(key.protocol)).upper()
    host = f"[{key.address}]" if key.af == AF_INET6 else key.address
    return f"{proto:<4} {host}:{key.port}"


def render_table(table: KernelTable, owned: Set[ServiceKey] = frozenset()) -> str:
    lines = [
        "Prot LocalAddress:Port Scheduler Flags                 Owner",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for key in sorted(table):
        ks = table[key]
        svc = ks.service
        flags = []
        if svc.flags & IP_VS_SVC_F_PERSISTENT:
            flags.append(f"persistent {svc.timeout}")
        if svc.flags & IP_VS_SVC_F_ONEPACKET:
            flags.append("ops")
        head = f"{_service_line(key)} {svc.scheduler} {' '.join(flags)}".rstrip()
        lines.append(f"{head:<44} {'lvs-agent' if key in owned else 'other'}")
        for dkey in sorted(ks.dests):
            kd = ks.dests[dkey]
            host = f"[{dkey.address}]" if dkey.af == AF_INET6 else dkey.address
            lines.append(
                f"  -> {host + ':' + str(dkey.port):<28} {_FWD.get(kd.dest.fwd, '?'):<7} "
                f"{kd.dest.weight:<6} {kd.active_conns:<10} {kd.inactive_conns}"
            )
    return "\n".join(lines) + "\n"
