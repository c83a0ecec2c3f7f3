"""The IPVS diff: desired table + kernel table + what we own -> minimal operations.

Pure: no sockets, no clock (``now`` is passed in, CLOCK_BOOTTIME seconds), no I/O.

Rules (docs/reconcile.md):
- Only services we own are changed or removed. A service is ours once the
  configuration names it (we adopt a matching service someone else made) and
  stays ours until we delete it; everything else in the kernel is left alone.
- Minimal: identical objects give no operation; attributes the kernel edits in
  place (scheduler, flags, persistence; weight, forwarding, thresholds, tunnel)
  give one SET, never a delete and add.
- Draining: a real server that is no longer wanted gets weight 0 and is deleted
  once it has no active and no inactive connections, or when it has drained
  for ``drain_timeout``. One with no connections at all is deleted at once.
  A wanted real server always gets its desired weight back, so a weight 0 left
  by an earlier run never sticks.
- A service we own that the configuration dropped is drained the same way and
  deleted when its last real server is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agent.gcpause import paused_gc
from agent.ipvs.model import (
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    SCHED_FLAGS_MASK,
    TUN_FLAG_CSUM,
    TUN_FLAG_NOCSUM,
    TUN_FLAG_REMCSUM,
    AddDest,
    AddService,
    DelDest,
    DelService,
    DesiredService,
    DesiredTable,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Forwarding,
    KernelDest,
    KernelService,
    KernelTable,
    Op,
    Service,
    ServiceKey,
    SetTimeouts,
    Timeouts,
    is_host_netmask,
    netmask_text,
    sched_flag_names,
)

DrainKey = tuple[ServiceKey, DestKey]


@dataclass(frozen=True, slots=True)
class Ownership:
    """What the agent owns in the kernel, remembered across restarts."""

    services: frozenset[ServiceKey] = frozenset()
    drains: Mapping[DrainKey, float] = field(default_factory=dict)  # -> drain start (boottime)


@dataclass(frozen=True, slots=True)
class Step:
    """One planned operation and a one-line account of why."""

    op: Op
    text: str


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    ownership: Ownership  # ownership once every step has succeeded
    draining: int  # real servers still draining after this plan

    @property
    def ops(self) -> list[Op]:
        return [s.op for s in self.steps]


def plan(
    desired: DesiredTable,
    kernel: KernelTable,
    owned: Ownership,
    now: float,
    drain_timeout: float,
    timeouts: Timeouts | None = None,
    kernel_timeouts: Timeouts | None = None,
) -> Plan:
    with paused_gc():  # tens of thousands of long-lived objects: see agent.gcpause
        return _plan(desired, kernel, owned, now, drain_timeout, timeouts, kernel_timeouts)


def _plan(
    desired: DesiredTable,
    kernel: KernelTable,
    owned: Ownership,
    now: float,
    drain_timeout: float,
    timeouts: Timeouts | None,
    kernel_timeouts: Timeouts | None,
) -> Plan:
    steps: list[Step] = []
    drains: dict[DrainKey, float] = {}
    services = set(owned.services)

    if timeouts is not None and kernel_timeouts is not None:
        step = _timeouts_step(timeouts, kernel_timeouts)
        if step is not None:
            steps.append(step)

    for key in sorted(desired):
        want = desired[key]
        services.add(key)
        have = kernel.get(key)
        if have is not None and _unchanged(want, have):
            continue  # the common case of a periodic reconcile: no sort, no wording
        label = f"{key} ({want.name})" if want.name else str(key)
        if have is None:
            steps.append(
                Step(AddService(want.service), f"add service {label} {_svc_attrs(want.service)}")
            )
            for dkey in sorted(want.dests):
                steps.append(
                    Step(
                        AddDest(key, want.dests[dkey]),
                        f"add real server {label} -> {_dest_attrs(want.dests[dkey])}",
                    )
                )
            continue
        if have.service != want.service:
            steps.append(
                Step(
                    EditService(want.service),
                    f"edit service {label} {_svc_changes(have.service, want.service)}",
                )
            )
        for dkey in sorted(want.dests):
            dest = want.dests[dkey]
            current = have.dests.get(dkey)
            if current is None:
                steps.append(
                    Step(AddDest(key, dest), f"add real server {label} -> {_dest_attrs(dest)}")
                )
            elif current.dest != dest:
                steps.append(
                    Step(
                        EditDest(key, dest),
                        f"edit real server {label} -> {dkey} {_dest_changes(current.dest, dest)}",
                    )
                )
        for dkey in sorted(have.dests.keys() - want.dests.keys()):
            _drain(steps, drains, owned, key, label, have.dests[dkey], now, drain_timeout)

    for key in sorted(owned.services - desired.keys()):
        have = kernel.get(key)
        if have is None:
            services.discard(key)  # gone already (deleted by hand, or a reboot)
            continue
        label = f"{key} (removed from config)"
        before = len(drains)
        for dkey in sorted(have.dests):
            _drain(
                steps,
                drains,
                owned,
                key,
                label,
                have.dests[dkey],
                now,
                drain_timeout,
                delete_each=False,
            )
        if len(drains) == before:
            # Nothing left that carries traffic: the service goes, with its real servers.
            steps.append(Step(DelService(key), f"delete service {label}"))
            services.discard(key)
        else:
            for dkey in sorted(have.dests):
                if (key, dkey) not in drains:
                    steps.append(
                        Step(DelDest(key, dkey), f"delete real server {label} -> {dkey} (drained)")
                    )

    return Plan(tuple(steps), Ownership(frozenset(services), drains), len(drains))


def _unchanged(want: DesiredService, have: KernelService) -> bool:
    """The kernel's service and real servers are exactly the wanted ones."""
    dests = have.dests
    if have.service != want.service or len(dests) != len(want.dests):
        return False
    for dkey, dest in want.dests.items():
        current = dests.get(dkey)
        if current is None or current.dest != dest:
            return False
    return True


def _drain(
    steps: list[Step],
    drains: dict[DrainKey, float],
    owned: Ownership,
    key: ServiceKey,
    label: str,
    current: KernelDest,
    now: float,
    drain_timeout: float,
    delete_each: bool = True,
) -> None:
    """Plan one unwanted real server: weight 0 while it has connections, then delete."""
    dkey = current.dest.key
    conns = current.active_conns + current.inactive_conns
    started = owned.drains.get((key, dkey))
    if conns and (started is None or now - started < drain_timeout):
        drains[(key, dkey)] = now if started is None else started
        if current.dest.weight != 0:
            steps.append(
                Step(
                    EditDest(key, replace(current.dest, weight=0)),
                    f"drain real server {label} -> {dkey} (weight "
                    f"{current.dest.weight} -> 0, {conns} connections)",
                )
            )
        return
    if delete_each:
        why = "drained" if not conns else f"drain timeout, {conns} connections left"
        steps.append(Step(DelDest(key, dkey), f"delete real server {label} -> {dkey} ({why})"))


def _timeouts_step(want: Timeouts, have: Timeouts) -> Step | None:
    # 0 in a SET_CONFIG means "leave unchanged" to the kernel; send only differences.
    change = Timeouts(
        tcp=want.tcp if want.tcp and want.tcp != have.tcp else 0,
        tcp_fin=want.tcp_fin if want.tcp_fin and want.tcp_fin != have.tcp_fin else 0,
        udp=want.udp if want.udp and want.udp != have.udp else 0,
    )
    if change == Timeouts():
        return None
    parts = [
        f"{name} {getattr(have, name)}s -> {getattr(change, name)}s"
        for name in ("tcp", "tcp_fin", "udp")
        if getattr(change, name)
    ]
    return Step(SetTimeouts(change), "set timeouts " + ", ".join(parts))


# --- wording ---------------------------------------------------------------------
# In the configuration's own words (scheduler_flags, one_packet, tunnel_checksum, ...),
# so a plan line reads like the file that asked for it.

_FWD_NAMES = {0: "nat", 1: "local", 2: "tunnel", 3: "dr"}
_TUN_NAMES = {0: "ipip", 1: "gue", 2: "gre"}
_TUNNEL = int(Forwarding.TUNNEL)
_TUN_CHECKSUMS = {TUN_FLAG_NOCSUM: "nocsum", TUN_FLAG_CSUM: "csum", TUN_FLAG_REMCSUM: "remcsum"}
_KNOWN_FLAGS = IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_ONEPACKET | SCHED_FLAGS_MASK


def _sched_flags(s: Service) -> str:
    words = sched_flag_names(s.scheduler, s.flags)
    if s.flags & ~_KNOWN_FLAGS:
        words.append(f"0x{s.flags & ~_KNOWN_FLAGS:x}")
    return ",".join(words) or "none"


def _netmask(s: Service) -> str:
    return netmask_text(s.key.af, s.netmask)


def _svc_attrs(s: Service) -> str:
    parts = [f"scheduler={s.scheduler}"]
    if s.flags & ~(IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_ONEPACKET):
        parts.append(f"scheduler_flags={_sched_flags(s)}")
    if s.timeout:
        parts.append(f"persistence={s.timeout}s")
        if not is_host_netmask(s.key.af, s.netmask):
            parts.append(f"netmask={_netmask(s)}")
    if s.pe_name:
        parts.append(f"engine={s.pe_name}")
    if s.flags & IP_VS_SVC_F_ONEPACKET:
        parts.append("one_packet")
    return " ".join(parts)


def _svc_changes(old: Service, new: Service) -> str:
    out = []
    if old.scheduler != new.scheduler:
        out.append(f"scheduler {old.scheduler} -> {new.scheduler}")
    was, now = _sched_flags(old), _sched_flags(new)
    if was != now:
        out.append(f"scheduler_flags {was} -> {now}")
    was = f"{old.timeout}s" if old.timeout else "off"
    now = f"{new.timeout}s" if new.timeout else "off"
    if was != now:
        out.append(f"persistence {was} -> {now}")
    if old.netmask != new.netmask:
        out.append(f"netmask {_netmask(old)} -> {_netmask(new)}")
    if old.pe_name != new.pe_name:
        out.append(f"engine {old.pe_name or 'none'} -> {new.pe_name or 'none'}")
    was = "on" if old.flags & IP_VS_SVC_F_ONEPACKET else "off"
    now = "on" if new.flags & IP_VS_SVC_F_ONEPACKET else "off"
    if was != now:
        out.append(f"one_packet {was} -> {now}")
    return ", ".join(out)


def _tunnel_checksum(d: Dest) -> str:
    return _TUN_CHECKSUMS.get(d.tun_flags, f"0x{d.tun_flags:x}")


def _dest_attrs(d: Dest) -> str:
    text = f"{d.key} forwarding={_FWD_NAMES.get(d.fwd, d.fwd)} weight={d.weight}"
    if d.u_threshold or d.l_threshold:
        text += f" upper_threshold={d.u_threshold} lower_threshold={d.l_threshold}"
    if d.fwd == _TUNNEL:
        text += f" tunnel_type={_TUN_NAMES.get(d.tun_type, d.tun_type)}"
        if d.tun_port:
            text += f" tunnel_port={d.tun_port}"
        if d.tun_flags:
            text += f" tunnel_checksum={_tunnel_checksum(d)}"
    return text


def _dest_changes(old: Dest, new: Dest) -> str:
    out = []
    if old.fwd != new.fwd:
        out.append(
            f"forwarding {_FWD_NAMES.get(old.fwd, old.fwd)} -> {_FWD_NAMES.get(new.fwd, new.fwd)}"
        )
    if old.weight != new.weight:
        out.append(f"weight {old.weight} -> {new.weight}")
    if old.u_threshold != new.u_threshold:
        out.append(f"upper_threshold {old.u_threshold} -> {new.u_threshold}")
    if old.l_threshold != new.l_threshold:
        out.append(f"lower_threshold {old.l_threshold} -> {new.l_threshold}")
    if old.tun_type != new.tun_type:
        was, now = (
            _TUN_NAMES.get(old.tun_type, old.tun_type),
            _TUN_NAMES.get(new.tun_type, new.tun_type),
        )
        out.append(f"tunnel_type {was} -> {now}")
    if old.tun_port != new.tun_port:
        out.append(f"tunnel_port {old.tun_port} -> {new.tun_port}")
    if old.tun_flags != new.tun_flags:
        out.append(f"tunnel_checksum {_tunnel_checksum(old)} -> {_tunnel_checksum(new)}")
    return ", ".join(out)
