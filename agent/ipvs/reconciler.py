"""One reconcile: read the kernel, plan against the desired table, apply, remember.

The imperative shell around ``plan.plan``. Reads the table with one dump,
applies the plan's operations in one batched exchange, writes the ownership
file ahead of creating anything (so a crash mid-apply never leaves a service
we made but do not know we own), and reports each step's result. An error on
one operation does not stop the others; the next reconcile retries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from agent.config.model import IpvsSettings, SysctlValue
from agent.ipvs.model import (
    AddService,
    DelDest,
    DelService,
    DesiredTable,
    KernelTable,
    Op,
    ServiceKey,
    Timeouts,
)
from agent.ipvs.plan import Ownership, Plan, Step, plan
from agent.ipvs.state import OwnershipStore

SYSCTL_DIR = Path("/proc/sys/net/ipv4/vs")

_T = TypeVar("_T")


class OpFailure(Protocol):
    """Why the kernel refused one operation (agent.ipvs.netlink.OpError)."""

    @property
    def errno(self) -> int: ...

    def __str__(self) -> str: ...


class IpvsTable(Protocol):
    """What a reconcile needs of the kernel adapter (agent.ipvs.kernel.IpvsKernel)."""

    def dump(self) -> KernelTable: ...

    def get_timeouts(self) -> Timeouts: ...

    def apply(self, ops: Sequence[Op]) -> Sequence[OpFailure | None]: ...


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def desired_timeouts(settings: IpvsSettings) -> Timeouts | None:
    if (
        settings.timeout_tcp is None
        and settings.timeout_tcp_fin is None
        and (settings.timeout_udp is None)
    ):
        return None
    return Timeouts(
        tcp=int(settings.timeout_tcp or 0),
        tcp_fin=int(settings.timeout_tcp_fin or 0),
        udp=int(settings.timeout_udp or 0),
    )


@dataclass(frozen=True, slots=True)
class SysctlChange:
    key: str
    old: SysctlValue | None
    new: SysctlValue

    def __str__(self) -> str:
        return f"set sysctl net.ipv4.vs.{self.key} {_text(self.old)} -> {_text(self.new)}"


def _text(value: SysctlValue | None) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def read_sysctl(key: str, root: Path = SYSCTL_DIR) -> SysctlValue | None:
    """The value of net.ipv4.vs.``key`` (a vector as a tuple); None when unreadable."""
    try:
        values = tuple(int(v) for v in (root / key).read_text().split())
    except (OSError, ValueError):
        return None
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(slots=True)
class Outcome:
    """What one reconcile found and did."""

    plan: Plan
    kernel: KernelTable
    results: list[OpFailure | None] = field(default_factory=list)
    sysctls: list[SysctlChange] = field(default_factory=list)
    sysctl_errors: list[str] = field(default_factory=list)
    applied: bool = False

    @property
    def pending(self) -> bool:
        return bool(self.plan.steps or self.sysctls)

    @property
    def failures(self) -> list[tuple[Step, OpFailure]]:
        return [
            (s, r) for s, r in zip(self.plan.steps, self.results, strict=False) if r is not None
        ]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.sysctl_errors

    def ops_by_kind(self) -> dict[str, int]:
        """Successful operations by kind (netlink command name), for metrics."""
        counts: dict[str, int] = {}
        for step, result in zip(self.plan.steps, self.results, strict=False):
            if result is None:
                kind = op_kind(step.op)
                counts[kind] = counts.get(kind, 0) + 1
        if self.applied:
            for _ in self.sysctls:
                counts["set_sysctl"] = counts.get("set_sysctl", 0) + 1
        return counts


def op_kind(op: Op) -> str:
    return {
        "AddService": "add_service",
        "EditService": "edit_service",
        "DelService": "delete_service",
        "AddDest": "add_real_server",
        "EditDest": "edit_real_server",
        "DelDest": "delete_real_server",
        "SetTimeouts": "set_timeouts",
    }[type(op).__name__]


def make_plan(
    desired: DesiredTable,
    kernel: KernelTable,
    kernel_timeouts: Timeouts | None,
    owned: Ownership,
    settings: IpvsSettings,
    now: float,
) -> Plan:
    return plan(
        desired,
        kernel,
        owned,
        now,
        settings.drain_timeout,
        desired_timeouts(settings),
        kernel_timeouts,
    )


def ownership_ahead(owned: Ownership, p: Plan) -> Ownership:
    """Ownership to record before applying: everything we are about to create."""
    created = {s.op.service.key for s in p.steps if isinstance(s.op, AddService)}
    if created <= owned.services:
        return owned
    return Ownership(owned.services | created, owned.drains)


def ownership_after(owned: Ownership, p: Plan, results: Sequence[OpFailure | None]) -> Ownership:
    """Ownership once the plan ran: as planned, except where a delete failed."""
    services = set(p.ownership.services)
    for step, result in zip(p.steps, results, strict=False):
        if result is not None and isinstance(step.op, DelService):
            services.add(step.op.key)
    failed_dest_deletes = {
        (s.op.service, s.op.dest)
        for s, r in zip(p.steps, results, strict=False)
        if r is not None and isinstance(s.op, DelDest)
    }
    drains = dict(p.ownership.drains)
    for key in failed_dest_deletes:
        if key in owned.drains:
            drains[key] = owned.drains[key]
    return Ownership(frozenset(services), drains)


def sysctl_changes(
    wanted: Mapping[str, SysctlValue], root: Path = SYSCTL_DIR
) -> list[SysctlChange]:
    changes = []
    for key, value in sorted(wanted.items()):
        current = read_sysctl(key, root)
        if current != value:
            changes.append(SysctlChange(key, current, value))
    return changes


def write_sysctls(changes: Sequence[SysctlChange], root: Path = SYSCTL_DIR) -> list[str]:
    errors = []
    for change in changes:
        try:
            (root / change.key).write_text(f"{_text(change.new)}\n")
        except OSError as exc:
            errors.append(f"set sysctl net.ipv4.vs.{change.key}: {exc.strerror or exc}")
    return errors


def reconcile(
    kernel: IpvsTable,
    store: OwnershipStore,
    desired: DesiredTable,
    settings: IpvsSettings,
    *,
    dry_run: bool = False,
    now: Callable[[], float] = boottime,
) -> Outcome:
    """Synchronous reconcile, for the command line (``plan`` and ``apply``)."""
    owned, table, p = read_and_plan(kernel, store, desired, settings, now())
    outcome = Outcome(p, table, sysctls=sysctl_changes(settings.sysctls))
    if dry_run:
        return outcome
    outcome.results = apply_plan(kernel, store, owned, p)
    outcome.sysctl_errors = write_sysctls(outcome.sysctls)
    outcome.applied = True
    store.save(ownership_after(owned, p, outcome.results))
    return outcome


def read_and_plan(
    kernel: IpvsTable,
    store: OwnershipStore,
    desired: DesiredTable,
    settings: IpvsSettings,
    now: float,
) -> tuple[Ownership, KernelTable, Plan]:
    """A blocking reconcile's first half, which writes nothing: the ownership file, the
    kernel's table and the plan between them."""
    owned = store.load()
    table = kernel.dump()
    timeouts = kernel.get_timeouts() if desired_timeouts(settings) else None
    return owned, table, make_plan(desired, table, timeouts, owned, settings, now)


def apply_plan(
    kernel: IpvsTable, store: OwnershipStore, owned: Ownership, p: Plan
) -> list[OpFailure | None]:
    """Its writes: the ownership file ahead of the kernel (a crash mid-apply never
    leaves a service we made but do not know we own), then the plan. The caller saves
    ``ownership_after`` once everything else it writes is done."""
    store.save(ownership_ahead(owned, p))
    return list(kernel.apply(p.ops)) if p.steps else []


class AsyncIpvsTable(Protocol):
    """The asyncio flavour of the kernel adapter's calls."""

    def dump_async(self) -> Awaitable[KernelTable]: ...

    def dump_services_async(self, keys: Iterable[ServiceKey]) -> Awaitable[KernelTable]: ...

    def get_timeouts_async(self) -> Awaitable[Timeouts]: ...

    def apply_async(self, ops: Sequence[Op]) -> Awaitable[Sequence[OpFailure | None]]: ...


def _restrict(owned: Ownership, only: Set[ServiceKey]) -> Ownership:
    return Ownership(owned.services & only, {k: v for k, v in owned.drains.items() if k[0] in only})


def _merge(owned: Ownership, only: Set[ServiceKey], part: Ownership) -> Ownership:
    """Ownership outside ``only`` as it was, inside as ``part`` says."""
    drains = {k: v for k, v in owned.drains.items() if k[0] not in only}
    drains.update(part.drains)
    return Ownership((owned.services - only) | part.services, drains)


class Offload(Protocol):
    """Runs CPU work off the event loop (agent.daemon.offload.Offload)."""

    def __call__(self, fn: Callable[[], _T]) -> Awaitable[_T]: ...


async def _inline(fn: Callable[[], _T]) -> _T:
    return fn()


#: a partial reconcile of at most this many services is planned on the loop itself: a
#: hop to the worker thread would cost more than the work
SMALL_PARTIAL = 64


async def reconcile_async(
    kernel: AsyncIpvsTable,
    store: OwnershipStore,
    desired: DesiredTable,
    settings: IpvsSettings,
    *,
    only: Set[ServiceKey] | None = None,
    now: Callable[[], float] = boottime,
    offload: Offload = _inline,
    writing: Callable[[], object] | None = None,
) -> Outcome:
    """The daemon's reconcile: the same steps, with kernel I/O that yields to the loop.

    With ``only``, just those services are read and planned (drain polling: the
    cost stays proportional to what is draining, not to the table); timeouts
    and sysctls are left to the full reconciles. ``offload`` runs the CPU work
    (the ownership file, planning) off the loop; kernel I/O stays on it. ``writing``
    is called once everything is read and planned, before the first write (the
    ownership file, then the kernel): until then the call may be cancelled at no cost.
    """
    if only is None:
        owned = await offload(store.load)
        table = await kernel.dump_async()
        timeouts = await kernel.get_timeouts_async() if desired_timeouts(settings) else None
        at = now()
        p = await offload(lambda: make_plan(desired, table, timeouts, owned, settings, at))
        outcome = Outcome(p, table, sysctls=sysctl_changes(settings.sysctls))
        if writing is not None:
            writing()
        await offload(lambda: store.save(ownership_ahead(owned, p)))
        outcome.results = list(await kernel.apply_async(p.ops)) if p.steps else []
        outcome.sysctl_errors = write_sysctls(outcome.sysctls)
        outcome.applied = True
        await offload(lambda: store.save(ownership_after(owned, p, outcome.results)))
        if p.steps:
            # Metrics and status show the table as it now is, not as it was found.
            outcome.kernel = await kernel.dump_async()
        return outcome
    # The ownership file covers the whole table: always read and written off the loop.
    owned = await offload(store.load)
    table = await kernel.dump_services_async(only)
    part = _restrict(owned, only)
    subset = {k: desired[k] for k in only if k in desired}  # follows the change, not the table
    at = now()
    planner = _inline if len(only) <= SMALL_PARTIAL else offload
    p = await planner(lambda: plan(subset, table, part, at, settings.drain_timeout))
    outcome = Outcome(p, table)
    if writing is not None:
        writing()
    await offload(lambda: store.save(_merge(owned, only, ownership_ahead(part, p))))
    outcome.results = list(await kernel.apply_async(p.ops)) if p.steps else []
    outcome.applied = True
    after = ownership_after(part, p, outcome.results)
    await offload(lambda: store.save(_merge(owned, only, after)))
    if p.steps:
        outcome.kernel = await kernel.dump_services_async(only)
    return outcome
