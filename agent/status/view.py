"""The JSON-ready status of the virtual services, from what the daemon already holds.

Pure: ``services`` joins the desired table (what the configuration asks), the kernel
table of the last full reconcile (weights, connection counts; its age is given by the
caller), the health engine (through ``HealthView``: None when the daemon runs no
health checks, shown as "-") and the maintenance flags. ``health_view`` adapts the
health scheduler to that narrow view. Nothing here reads the kernel or a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from typing import TYPE_CHECKING

from agent.ipvs.model import AF_INET6, PROTOCOL_NAMES, DesiredTable, KernelTable, ServiceKey

if TYPE_CHECKING:
    from agent.health import Scheduler

RsKey = tuple[str, int]
# (virtual server name, real server key) -> {"state", "weight", "last_check"} or None
HealthView = Callable[[str, RsKey], "dict[str, object] | None"]
FORWARD = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}


def service_text(key: ServiceKey) -> str:
    """``TCP  10.0.0.1:80`` / ``FWM  7``, as ipvsadm -Ln writes a service."""
    if key.fwmark:
        return f"FWM  {key.fwmark}{' IPv6' if key.af == AF_INET6 else ''}"
    proto = PROTOCOL_NAMES.get(key.protocol, str(key.protocol)).upper()
    host = f"[{key.address}]" if key.af == AF_INET6 else key.address
    return f"{proto:<4} {host}:{key.port}"


def services(
    desired: DesiredTable,
    configured: Mapping[str, Mapping[RsKey, int]],
    kernel: KernelTable | None,
    health: HealthView | None,
    maint: Set[tuple[str, RsKey]],
) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for skey in sorted(desired):
        dsvc = desired[skey]
        name = dsvc.name
        ksvc = kernel.get(skey) if kernel is not None else None
        weights = configured.get(name, {})
        reals: list[dict[str, object]] = []
        for dkey in sorted(dsvc.dests):
            rs = (dkey.address, dkey.port)
            kd = ksvc.dests.get(dkey) if ksvc is not None else None
            h = health(name, rs) if health is not None else None
            reals.append(
                {
                    "address": dkey.address,
                    "port": dkey.port,
                    "forward": FORWARD.get(dsvc.dests[dkey].fwd, "?"),
                    "configured_weight": weights.get(rs, dsvc.dests[dkey].weight),
                    "health_weight": h.get("weight") if h is not None else None,
                    "kernel_weight": kd.dest.weight if kd is not None else None,
                    "active": kd.active_conns if kd is not None else None,
                    "inactive": kd.inactive_conns if kd is not None else None,
                    "health": h.get("state") if h is not None else None,
                    "last_check": h.get("last_check") if h is not None else None,
                    "maint": (name, rs) in maint,
                }
            )
        out.append(
            {
                "name": name,
                "service": service_text(skey),
                "scheduler": dsvc.service.scheduler,
                "in_kernel": ksvc is not None if kernel is not None else None,
                "real_servers": reals,
            }
        )
    return out


def health_view(scheduler: Scheduler) -> HealthView:
    """The narrow view of a health scheduler that ``services`` reads."""

    def view(vs: str, rs: RsKey) -> dict[str, object] | None:
        pool = scheduler.pool(vs)
        if pool is None:
            return None
        member = next((m for m in pool.members if m.key == rs), None)
        if member is None or not member.checks:
            return None
        mh = scheduler.member(vs, rs)
        states = scheduler.states()
        last: list[str] = []
        for ck in member.checks:
            st = states.get(ck)
            if st is not None and st.last is not None:
                r = st.last
                last.append(f"{'ok' if r.ok else 'FAIL'} {r.reason}".strip())
        state = None if mh is None else ("maint" if mh.maint else "up" if mh.up else "down")
        return {
            "state": state,
            "weight": scheduler.weight(vs, rs),
            "last_check": "; ".join(last) or None,
        }

    return view
