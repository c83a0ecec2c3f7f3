"""Sync groups: members are MASTER, BACKUP and FAULT together."""

from __future__ import annotations

import pytest

from agent.vrrp.machine import (
    Action,
    Notify,
    SendAdvert,
    Startup,
    State,
    TimerFired,
    TrackingChanged,
    VrrpMachine,
)
from agent.vrrp.sync import GroupNotify, SyncGroup

from .helpers import from_peer, params


def group() -> tuple[SyncGroup, VrrpMachine, VrrpMachine]:
    a = VrrpMachine(params(name="a", vrid=51), synced=True)
    b = VrrpMachine(params(name="b", vrid=52, priority=90), synced=True)
    g = SyncGroup("g", [a, b])
    for m in (a, b):
        g.handle(m.name, Startup(), 0.0)
    return g, a, b


def notifies(out: list[Action | GroupNotify]) -> list[tuple[str, State]]:
    return [(n.instance, n.new) for n in out if isinstance(n, Notify)]


def test_members_become_master_only_together() -> None:
    g, a, b = group()
    assert g.state is State.BACKUP
    out = g.handle("a", TimerFired(), a.master_down_interval)
    assert a.state is State.BACKUP and a.wants_master
    assert notifies(out) == []
    out = g.handle("b", TimerFired(), b.master_down_interval)
    assert (a.state, b.state) == (State.MASTER, State.MASTER)
    assert sorted(notifies(out)) == [("a", State.MASTER), ("b", State.MASTER)]
    assert out[-1] == GroupNotify("g", State.MASTER)


def test_a_member_that_still_hears_its_master_holds_the_group_back() -> None:
    g, a, b = group()
    g.handle("a", TimerFired(), a.master_down_interval)
    g.handle("b", from_peer(b, 200), 3.0)  # b's master is alive
    assert a.wants_master and a.state is State.BACKUP and not b.wants_master


def test_losing_master_in_one_member_moves_all_to_backup_with_priority_zero() -> None:
    g, a, b = group()
    g.handle("a", TimerFired(), 4.0)
    g.handle("b", TimerFired(), 4.0)
    out = g.handle("a", from_peer(a, 200), 5.0)
    assert (a.state, b.state) == (State.BACKUP, State.BACKUP)
    zero = [x for x in out if isinstance(x, SendAdvert) and x.advert.priority == 0]
    assert [x.instance for x in zero] == ["b"]
    assert out[-1] == GroupNotify("g", State.BACKUP)


def test_fault_in_one_member_faults_all_until_it_clears() -> None:
    g, a, b = group()
    g.handle("a", TimerFired(), 4.0)
    g.handle("b", TimerFired(), 4.0)
    out = g.handle("b", TrackingChanged(90, True), 5.0)
    assert (a.state, b.state) == (State.FAULT, State.FAULT)
    assert out[-1] == GroupNotify("g", State.FAULT)
    assert g.handle("a", TrackingChanged(120, False), 6.0) == []  # still faulted via b
    assert a.priority == 120
    g.handle("b", TrackingChanged(90, False), 7.0)
    assert (a.state, b.state) == (State.BACKUP, State.BACKUP)


def test_group_of_one_is_a_plain_instance() -> None:
    m = VrrpMachine(params())
    g = SyncGroup("web", [m])
    g.handle("web", Startup(), 0.0)
    out = g.handle("web", TimerFired(), m.master_down_interval)
    assert m.state is State.MASTER
    assert not any(isinstance(x, GroupNotify) for x in out)


def test_members_must_be_synced() -> None:
    with pytest.raises(ValueError):
        SyncGroup("g", [VrrpMachine(params(name="a")), VrrpMachine(params(name="b"))])
