"""Random event sequences: the core never raises and its invariants always hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.vrrp.config import GarpConfig
from agent.vrrp.machine import (
    TIMER_SLACK,
    Action,
    AddVips,
    Event,
    RemoveVips,
    ScheduleTimer,
    Shutdown,
    Startup,
    State,
    TimerFired,
    TrackingChanged,
    VrrpMachine,
)
from agent.vrrp.sync import GroupNotify, SyncGroup

from .helpers import HIGHER_PEER, LOWER_PEER, from_peer, params

steps = st.lists(
    st.tuples(
        st.integers(0, 1),  # member
        st.sampled_from(["timer", "advert", "tracking", "late"]),
        st.floats(0, 5),  # time step
        st.integers(0, 255),  # advert priority / tracked priority
        st.booleans(),  # higher source / fault
        st.sampled_from([50, 100, 300]),  # advert interval (cs)
    ),
    max_size=60,
)


@given(
    steps=steps,
    size=st.sampled_from([1, 2]),
    prio=st.sampled_from([1, 100, 254, 255]),
    preempt=st.booleans(),
    delay=st.sampled_from([0.0, 2.0]),
)
@settings(max_examples=300, deadline=None)
def test_random_sequences_keep_invariants(
    steps: list[tuple[int, str, float, int, bool, int]],
    size: int,
    prio: int,
    preempt: bool,
    delay: float,
) -> None:
    garp = GarpConfig(repeat=2, delay=1.0, refresh=2.5)
    machines = [
        VrrpMachine(
            params(name=f"m{i}", vrid=51 + i, priority=prio, preempt=preempt,
                   preempt_delay=delay, garp=garp),
            synced=size > 1,
        )
        for i in range(size)
    ]
    group = SyncGroup("g", machines)
    holding = {m.name: False for m in machines}
    scheduled: dict[str, float | None] = {m.name: None for m in machines}
    now = 0.0

    def run(member: VrrpMachine, event: Event) -> None:
        out = group.handle(member.name, event, now)
        for action in out:
            check(action)
        for m in machines:
            assert holding[m.name] == (m.state is State.MASTER), (m.name, m.state)
            assert scheduled[m.name] == m.next_deadline
            if m.state is State.MASTER or (m.state is State.BACKUP and not m.wants_master):
                assert m.next_deadline is not None
            if m.state in (State.FAULT, State.INIT):
                assert m.next_deadline is None
        states = {m.state for m in machines} - {State.INIT}  # INIT: shutting down one by one
        if State.MASTER in states or State.FAULT in states:
            assert len(states) == 1, states

    def check(action: Action | GroupNotify) -> None:
        if isinstance(action, AddVips):
            assert not holding[action.instance]
            holding[action.instance] = True
        elif isinstance(action, RemoveVips):
            assert holding[action.instance]
            holding[action.instance] = False
        elif isinstance(action, ScheduleTimer):
            # A deadline may lie in the past (time moved on for a sibling or an advert
            # before this member's timer fired): the shell then fires at once.
            scheduled[action.instance] = action.at

    for m in machines:
        run(m, Startup())
    for member, kind, dt, value, flag, interval in steps:
        m = machines[member % size]
        now += dt
        event: Event
        if kind in ("timer", "late"):
            deadline = m.next_deadline
            if deadline is None:
                continue
            now = max(now, deadline - TIMER_SLACK / 2) if kind == "timer" else max(now, deadline)
            event = TimerFired()
            scheduled[m.name] = None  # one-shot: firing disarms it
        elif kind == "advert":
            event = from_peer(m, value, HIGHER_PEER if flag else LOWER_PEER, interval)
        else:
            event = TrackingChanged(max(value, 1), flag and value % 3 == 0)
        run(m, event)
        if isinstance(event, TimerFired):  # nothing due is left behind
            assert m.next_deadline is None or m.next_deadline > now + TIMER_SLACK
    for m in machines:
        run(m, Shutdown())
    assert not any(holding.values())
    assert all(m.state is State.INIT for m in machines)
