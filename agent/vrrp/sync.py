"""Sync groups: several VRRP instances that are MASTER, BACKUP and FAULT together.

This module owns the group rules, as pure logic over member machines built with
``synced=True`` (keepalived ``vrrp_sync_group`` semantics, vrrp_sync.c):

- FAULT: if any member's own trackers say FAULT, every member is in FAULT; the
  group leaves FAULT only when no member has a fault of its own.
- BACKUP: when a member loses MASTER to a better router, every other member leaves
  MASTER too (with a priority-0 advert, so the peer's members take over after
  Skew_Time rather than a whole Master_Down_Interval).
- MASTER: a member never promotes itself; it raises ``wants_master`` and the group
  promotes the wanting members once every member is MASTER or wants it
  ("prefer backup to avoid thrashing", keepalived vrrp_sync_goto_master) — unless the
  group is ``gated`` (quorum election), where only the lease holder's service does.

It calls nothing but ``VrrpMachine.handle`` and touches no sockets or clocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.vrrp.machine import (
    Action,
    Event,
    GroupCommand,
    State,
    TrackingChanged,
    VrrpMachine,
)


@dataclass(frozen=True, slots=True)
class GroupNotify:
    """Every member of ``group`` is now in ``state``: log it, run the group's notify."""

    group: str
    state: State


class SyncGroup:
    """Routes events to members and keeps them together. A group of one is a plain instance."""

    def __init__(self, name: str, machines: Sequence[VrrpMachine], *, gated: bool = False) -> None:
        if len(machines) > 1 and not all(m.synced for m in machines):
            raise ValueError(f"sync group {name}: members must be built with synced=True")
        self.name = name
        # Quorum election: only the lease promotes (the service sends GroupCommand(MASTER)
        # while this node holds the group's lease); wanting MASTER is not enough.
        self.gated = gated
        self.members = {m.name: m for m in machines}
        # Each member's own tracker view; what a member is told also carries the group fault.
        self._own = {m.name: TrackingChanged(m.priority, m.fault) for m in machines}
        self.state: State | None = None  # last common state announced

    @property
    def fault(self) -> bool:
        return any(t.fault for t in self._own.values())

    def handle(self, member: str, event: Event, now: float) -> list[Action | GroupNotify]:
        before = {name: m.state for name, m in self.members.items()}
        out: list[Action | GroupNotify] = []
        if isinstance(event, TrackingChanged):
            self._own[member] = event
            out += self._spread_tracking(now)
        else:
            out += self.members[member].handle(event, now)
        out += self._synchronise(before, now)
        out += self._announce()
        return out

    def _spread_tracking(self, now: float) -> list[Action]:
        group_fault = self.fault
        out: list[Action] = []
        for name, machine in self.members.items():
            own = self._own[name]
            told = TrackingChanged(own.priority, own.fault or group_fault)
            if (machine.priority, machine.fault) != (told.priority, told.fault):
                out += machine.handle(told, now)
        return out

    def _synchronise(self, before: dict[str, State], now: float) -> list[Action]:
        out: list[Action] = []
        if len(self.members) < 2:
            return out
        lost = any(
            before[name] is State.MASTER and m.state is State.BACKUP
            for name, m in self.members.items()
        )
        if lost:
            for m in self.members.values():
                if m.state is State.MASTER:
                    out += m.handle(GroupCommand(State.BACKUP), now)
        machines = self.members.values()
        if self.gated:
            return out
        if any(m.wants_master for m in machines) and all(
            m.state is State.MASTER or m.wants_master for m in machines
        ):
            for m in machines:
                if m.wants_master:
                    out += m.handle(GroupCommand(State.MASTER), now)
        return out

    def _announce(self) -> list[GroupNotify]:
        if len(self.members) < 2:
            return []
        states = {m.state for m in self.members.values()}
        if len(states) == 1:
            (state,) = states
            if state is not self.state:
                self.state = state
                return [GroupNotify(self.name, state)]
        return []
