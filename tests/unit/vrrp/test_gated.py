"""Quorum election's gate: a gated group (or single instance) never promotes itself;
only GroupCommand(MASTER), sent while the lease is held, makes it MASTER."""

from __future__ import annotations

from agent.vrrp.machine import (
    AddVips,
    GroupCommand,
    RemoveVips,
    SendAdvert,
    Startup,
    State,
    TimerFired,
    VrrpMachine,
)
from agent.vrrp.packet import PRIORITY_STOP
from agent.vrrp.sync import SyncGroup

from .helpers import params


def gated(*names: str) -> tuple[SyncGroup, list[VrrpMachine]]:
    machines = [
        VrrpMachine(params(name=n, vrid=51 + i, priority=255 if i == 0 else 100), synced=True)
        for i, n in enumerate(names)
    ]
    g = SyncGroup("g", machines, gated=True)
    for m in machines:
        g.handle(m.name, Startup(), 0.0)
    return g, machines


def test_master_down_and_owner_priority_do_not_promote() -> None:
    for names in (("a",), ("a", "b")):
        g, machines = gated(*names)
        assert all(m.state is State.BACKUP for m in machines)  # even the owner (255)
        for m in machines:
            g.handle(m.name, TimerFired(), 100.0)
        assert all(m.state is State.BACKUP for m in machines)


def test_lease_command_promotes_and_demotes_with_priority_zero() -> None:
    g, (a, b) = gated("a", "b")
    out = g.handle("a", GroupCommand(State.MASTER), 1.0)
    out += g.handle("b", GroupCommand(State.MASTER), 1.0)
    assert a.state is State.MASTER and b.state is State.MASTER
    assert sum(isinstance(x, AddVips) for x in out) == 2
    out = g.handle("a", GroupCommand(State.BACKUP), 2.0)
    # the sibling follows; VIPs go before the priority-0 advert
    assert a.state is State.BACKUP and b.state is State.BACKUP
    kinds = [type(x).__name__ for x in out if isinstance(x, (RemoveVips, SendAdvert))]
    assert kinds[:2] == ["RemoveVips", "SendAdvert"]
    zero = [x for x in out if isinstance(x, SendAdvert) and x.advert.priority == PRIORITY_STOP]
    assert len(zero) == 2
