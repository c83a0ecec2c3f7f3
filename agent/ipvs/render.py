"""Render a dumped IPVS table for people, in the layout of ``ipvsadm -L -n``."""

from __future__ import annotations

from collections.abc import Set

from agent.ipvs.model import (
    AF_INET6,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    PROTOCOL_NAMES,
    KernelTable,
    Service,
    ServiceKey,
    is_host_netmask,
    netmask_text,
    sched_flag_names,
)

_FWD = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}


def _service_line(key: ServiceKey) -> str:
    if key.fwmark:
        return f"FWM  {key.fwmark}{' IPv6' if key.af == AF_INET6 else ''}"
    proto = PROTOCOL_NAMES.get(key.protocol, str(key.protocol)).upper()
    host = f"[{key.address}]" if key.af == AF_INET6 else key.address
    return f"{proto:<4} {host}:{key.port}"


def _service_flags(svc: Service) -> str:
    """What ipvsadm -L -n prints after the scheduler, in its order."""
    text = ""
    names = sched_flag_names(svc.scheduler, svc.flags)
    if names:
        text += f" ({','.join(names)})"
    if svc.flags & IP_VS_SVC_F_PERSISTENT:
        text += f" persistent {svc.timeout}"
        if not is_host_netmask(svc.key.af, svc.netmask):
            text += f" mask {netmask_text(svc.key.af, svc.netmask)}"
        if svc.pe_name:
            text += f" pe {svc.pe_name}"
    if svc.flags & IP_VS_SVC_F_ONEPACKET:
        text += " ops"
    return text


def render_table(table: KernelTable, owned: Set[ServiceKey] = frozenset()) -> str:
    lines = [
        "Prot LocalAddress:Port Scheduler Flags                 Owner",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for key in sorted(table):
        ks = table[key]
        svc = ks.service
        head = f"{_service_line(key)} {svc.scheduler}{_service_flags(svc)}"
        lines.append(f"{head:<44} {'lvs-agent' if key in owned else 'other'}")
        for dkey in sorted(ks.dests):
            kd = ks.dests[dkey]
            host = f"[{dkey.address}]" if dkey.af == AF_INET6 else dkey.address
            lines.append(
                f"  -> {host + ':' + str(dkey.port):<28} {_FWD.get(kd.dest.fwd, '?'):<7} "
                f"{kd.dest.weight:<6} {kd.active_conns:<10} {kd.inactive_conns}"
            )
    return "\n".join(lines) + "\n"
