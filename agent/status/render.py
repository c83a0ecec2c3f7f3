"""``lvs-agent status`` for people: the running agent's answer as text.

The services part follows ``ipvsadm -Ln`` (one line per service, ``  ->`` per real
server, Forward Weight ActiveConn InActConn) with the configured weight, the health
and its weight, the maintenance flag and the last check result beside each real
server. Pure: a JSON-ready status in, a string out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _vrrp(instances: Sequence[Mapping[str, Any]]) -> list[str]:
    if not instances:
        return ["VRRP: no instances"]
    lines = ["VRRP instance    State   Prio (conf) Interface  VRID Master seen"]
    for i in instances:
        m = i.get("master")
        if m is None:
            seen = "none heard"
        elif m.get("address") == "self":
            seen = "this node"
        else:
            seen = f"{m['address']} prio {m['priority']} ({_age(m.get('age'))} ago)"
        extra = ""
        if i.get("lease"):
            extra += f" [quorum lease {i['lease']}]"
        if i.get("handed_over_for"):
            extra += f" [handed over: not preempting for {_age(i['handed_over_for'])}]"
        lines.append(
            f"{i['name']:<16} {i['state']:<7} {i['effective_priority']:>4} "
            f"({i['priority']:>3}) {i['interface']:<10} {i['vrid']:>4} {seen}{extra}"
        )
    return lines


def _lock(lock: Mapping[str, Any] | None) -> list[str]:
    if lock is None:
        return []
    lines = [
        f"Lock: node {lock['node']}, quorum "
        f"{'reachable' if lock['quorum_reachable'] else 'NOT reachable'}"
        f" ({', '.join(lock['reachable'])})" + (", quarantined" if lock["quarantined"] else "")
    ]
    lines += [f"  lease {ls['name']}: {lease_holder(ls)}" for ls in lock["leases"]]
    return lines


def lease_holder(lease: Mapping[str, Any]) -> str:
    """Who holds a lease, from its status entry (the socket's and lock-status.json's)."""
    if lease["holder"]:
        return f"held here, term {lease['term']}"
    if lease["known_holder"]:
        return f"held by {lease['known_holder']}, term {lease['known_term']}"
    return "no known holder"


def _services(status: Mapping[str, Any]) -> list[str]:
    kernel = status.get("kernel") or {}
    if not kernel.get("available", True):
        head = "IPVS: not in this kernel"
    elif kernel.get("age") is None:
        head = "IPVS: no table read yet"
    else:
        head = f"IPVS: kernel weights and connections as read {_age(kernel['age'])} ago"
    if not status.get("health_checks"):
        head += "; no health checks running"
    lines = [
        head,
        "Prot LocalAddress:Port Scheduler                      Name",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn "
        "Conf Health  HWeight Maint Last check",
    ]
    for vs in status.get("virtual_servers", []):
        note = "" if vs.get("in_kernel") is not False else "  (not in the kernel)"
        lines.append(f"{vs['service'] + ' ' + vs['scheduler']:<48} {vs['name']}{note}")
        for rs in vs["real_servers"]:
            address = rs["address"]
            host = f"[{address}]" if ":" in address else address
            lines.append(
                f"  -> {host + ':' + str(rs['port']):<28} {rs['forward']:<7} "
                f"{_dash(rs['kernel_weight']):<6} {_dash(rs['active']):<10} "
                f"{_dash(rs['inactive']):<9} {rs['configured_weight']:<4} "
                f"{_dash(rs['health']):<7} {_dash(rs['health_weight']):<7} "
                f"{'MAINT' if rs['maint'] else '-':<5} {_dash(rs['last_check'])}"
            )
    return lines


def render_status(status: Mapping[str, Any]) -> str:
    agent = status.get("agent") or {}
    lines = [
        f"lvs-agent pid {agent.get('pid')}, running {_age(agent.get('uptime'))}, "
        f"configuration {agent.get('config')}"
    ]
    lines += _vrrp(status.get("vrrp") or [])
    lines += _lock(status.get("lock"))
    lines += _services(status)
    return "\n".join(lines) + "\n"
