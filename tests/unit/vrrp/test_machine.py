"""The RFC 5798 state machine, driven directly: every table row, then the timing rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Address

import pytest

from agent.vrrp.config import GarpConfig
from agent.vrrp.machine import (
    TRANSITIONS,
    Action,
    AddressMismatch,
    AddVips,
    AdvertReceived,
    AdvertRejected,
    Event,
    GroupCommand,
    HandOver,
    InstanceParams,
    Notify,
    Reconfigure,
    RemoveVips,
    ScheduleTimer,
    SendAdvert,
    SendGratuitous,
    Shutdown,
    Startup,
    State,
    TimerFired,
    TrackingChanged,
    Trigger,
    VrrpMachine,
    master_down_interval,
    skew_time,
)
from agent.vrrp.packet import MCAST_GROUP_V4, Advert, Reason

from .helpers import (
    HIGHER_PEER,
    LOWER_PEER,
    PRIMARY,
    V6_PRIMARY,
    VIP,
    VIP6,
    advert_for,
    drive_to,
    from_peer,
    kinds,
    params,
)


class Spy(VrrpMachine):
    """Records which table row each input fired."""

    def __init__(self, p: InstanceParams, *, synced: bool = False) -> None:
        super().__init__(p, synced=synced)
        self.rows: list[tuple[State, Trigger]] = []

    def _fire(self, trigger: Trigger, now: float, advert: Advert | None, out: list[Action]) -> None:
        self.rows.append((self.state, trigger))
        super()._fire(trigger, now, advert, out)


@dataclass
class Case:
    start: State
    row: Trigger
    event: Callable[[VrrpMachine], Event]
    to: State
    actions: list[str]
    delay: Callable[[VrrpMachine], float] = lambda m: 0.5
    kw: dict[str, object] = field(default_factory=dict)
    synced: bool = False
    setup: Callable[[VrrpMachine, float], object] = lambda m, now: None


S, T = State, Trigger
N, SA, AV, RV, SG, ST = (
    "Notify",
    "SendAdvert",
    "AddVips",
    "RemoveVips",
    "SendGratuitous",
    "ScheduleTimer",
)
BECOME_MASTER = [SA, AV, SG, N, ST]


def _hold(m: VrrpMachine, now: float) -> None:
    m.handle(TimerFired(), now + m.master_down_interval)
    assert m.wants_master


CASES: dict[str, Case] = {
    # Initialize
    "startup": Case(S.INIT, T.STARTUP, lambda m: Startup(), S.BACKUP, [N, ST]),
    "startup owner": Case(
        S.INIT,
        T.STARTUP_AS_OWNER,
        lambda m: Startup(),
        S.MASTER,
        BECOME_MASTER,
        kw={"priority": 255},
    ),
    "startup owner synced": Case(
        S.INIT,
        T.STARTUP_AS_OWNER_HELD,
        lambda m: Startup(),
        S.BACKUP,
        [N],
        kw={"priority": 255},
        synced=True,
    ),
    "startup faulted": Case(
        S.INIT,
        T.STARTUP_IN_FAULT,
        lambda m: Startup(),
        S.FAULT,
        [N],
        setup=lambda m, now: m.handle(TrackingChanged(100, True), now),
    ),
    # Backup
    "master down": Case(
        S.BACKUP,
        T.MASTER_DOWN,
        lambda m: TimerFired(),
        S.MASTER,
        BECOME_MASTER,
        delay=lambda m: m.master_down_interval,
    ),
    "master down synced": Case(
        S.BACKUP,
        T.MASTER_DOWN_HELD,
        lambda m: TimerFired(),
        S.BACKUP,
        [],  # holding: no deadline left, and the timer that fired is already disarmed
        delay=lambda m: m.master_down_interval,
        synced=True,
    ),
    "group master": Case(
        S.BACKUP,
        T.GROUP_MASTER,
        lambda m: GroupCommand(S.MASTER),
        S.MASTER,
        BECOME_MASTER,
        synced=True,
        setup=_hold,
        delay=lambda m: m.master_down_interval,
    ),
    "backup hears priority 0": Case(
        S.BACKUP, T.PRIORITY_ZERO, lambda m: from_peer(m, 0), S.BACKUP, [ST]
    ),
    "backup hears higher": Case(
        S.BACKUP, T.FROM_MASTER, lambda m: from_peer(m, 200), S.BACKUP, [ST]
    ),
    "backup hears equal": Case(
        S.BACKUP, T.FROM_MASTER, lambda m: from_peer(m, 100, HIGHER_PEER), S.BACKUP, [ST]
    ),
    "backup no-preempt hears lower": Case(
        S.BACKUP,
        T.FROM_MASTER,
        lambda m: from_peer(m, 50),
        S.BACKUP,
        [ST],
        kw={"preempt": False},
    ),
    "backup hears lower during preempt delay": Case(
        S.BACKUP,
        T.PREEMPT_DEFERRED,
        lambda m: from_peer(m, 50),
        S.BACKUP,
        [ST],
        kw={"preempt_delay": 10.0},
    ),
    "backup hears lower": Case(
        S.BACKUP, T.LOWER_PRIORITY, lambda m: from_peer(m, 50), S.BACKUP, []
    ),
    "backup fault": Case(S.BACKUP, T.FAULT, lambda m: TrackingChanged(100, True), S.FAULT, [N, ST]),
    "backup shutdown": Case(S.BACKUP, T.SHUTDOWN, lambda m: Shutdown(), S.INIT, [N, ST]),
    # Master
    "adver timer": Case(
        S.MASTER,
        T.ADVER_TIMER,
        lambda m: TimerFired(),
        S.MASTER,
        [SA, ST],
        delay=lambda m: 1.0,
    ),
    "delayed garp": Case(
        S.MASTER,
        T.ANNOUNCE_TIMER,
        lambda m: TimerFired(),
        S.MASTER,
        [SG, ST],
        kw={"garp": GarpConfig(repeat=3, delay=0.5)},
    ),
    "master hears priority 0": Case(
        S.MASTER, T.PRIORITY_ZERO, lambda m: from_peer(m, 0), S.MASTER, [SA, ST]
    ),
    "master priority changes": Case(
        S.MASTER, T.PRIORITY_CHANGED, lambda m: TrackingChanged(90, False), S.MASTER, [SA, ST]
    ),
    "master hears lower": Case(
        S.MASTER, T.LOWER_PRIORITY, lambda m: from_peer(m, 50), S.MASTER, [SA, SG]
    ),
    "master hears equal from lower address": Case(
        S.MASTER, T.LOWER_PRIORITY, lambda m: from_peer(m, 100, LOWER_PEER), S.MASTER, [SA, SG]
    ),
    "master hears higher": Case(
        S.MASTER, T.HIGHER_PRIORITY, lambda m: from_peer(m, 200), S.BACKUP, [RV, N, ST]
    ),
    "master hears equal from higher address": Case(
        S.MASTER,
        T.HIGHER_PRIORITY,
        lambda m: from_peer(m, 100, HIGHER_PEER),
        S.BACKUP,
        [RV, N, ST],
    ),
    "group backup": Case(
        S.MASTER,
        T.GROUP_BACKUP,
        lambda m: GroupCommand(S.BACKUP),
        S.BACKUP,
        [RV, SA, N, ST],
        synced=True,
    ),
    "master hands over": Case(
        S.MASTER, T.HAND_OVER, lambda m: HandOver(30.0), S.BACKUP, [RV, SA, N, ST]
    ),
    "master fault": Case(
        S.MASTER, T.FAULT, lambda m: TrackingChanged(100, True), S.FAULT, [RV, SA, N, ST]
    ),
    "master shutdown": Case(S.MASTER, T.SHUTDOWN, lambda m: Shutdown(), S.INIT, [RV, SA, N, ST]),
    # Fault
    "fault cleared": Case(
        S.FAULT, T.FAULT_CLEARED, lambda m: TrackingChanged(100, False), S.BACKUP, [N, ST]
    ),
    "fault cleared owner": Case(
        S.FAULT,
        T.FAULT_CLEARED_AS_OWNER,
        lambda m: TrackingChanged(255, False),
        S.MASTER,
        BECOME_MASTER,
        kw={"priority": 255},
    ),
    "fault cleared owner synced": Case(
        S.FAULT,
        T.FAULT_CLEARED_AS_OWNER_HELD,
        lambda m: TrackingChanged(255, False),
        S.BACKUP,
        [N],
        kw={"priority": 255},
        synced=True,
    ),
    "fault shutdown": Case(S.FAULT, T.SHUTDOWN, lambda m: Shutdown(), S.INIT, [N]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_transition(case: Case) -> None:
    m = Spy(params(**case.kw), synced=case.synced)  # type: ignore[arg-type]
    now = drive_to(m, case.start, 100.0)
    assert m.state is case.start
    case.setup(m, now)
    m.rows.clear()
    now += case.delay(m)
    out = m.handle(case.event(m), now)
    assert m.rows == [(case.start, case.row)]
    assert m.state is case.to
    assert kinds(out) == case.actions
    assert TRANSITIONS[(case.start, case.row)][0] is case.to


def test_every_table_row_has_a_case() -> None:
    assert {(c.start, c.row) for c in CASES.values()} == set(TRANSITIONS)


# ---- timing ---------------------------------------------------------------------


def test_rfc_timers() -> None:
    # RFC 5798 6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256 (cs)
    assert skew_time(3, 100, 100) == 0.60
    assert master_down_interval(3, 100, 100) == pytest.approx(3.60)
    assert master_down_interval(3, 254, 1) == pytest.approx(0.03)
    # RFC 3768: Skew_Time = (256 - Priority) / 256 seconds, whatever the interval
    assert skew_time(2, 100, 300) == 156 / 256
    assert master_down_interval(2, 100, 100) == pytest.approx(3 + 156 / 256)


def test_backup_arms_master_down_and_becomes_master_when_it_expires() -> None:
    m = VrrpMachine(params())
    out = m.handle(Startup(), 10.0)
    assert out[-1] == ScheduleTimer("web", pytest.approx(13.60))
    # An early wake-up: nothing due, and the one-shot timer it consumed is armed again.
    assert m.handle(TimerFired(), 13.0) == [ScheduleTimer("web", pytest.approx(13.60))]
    out = m.handle(TimerFired(), 13.5995)  # within the scheduling slack
    assert m.state is State.MASTER
    assert out[0] == SendAdvert("web", advert_for(m.params, 100), (MCAST_GROUP_V4,))
    assert out[1] == AddVips("web", (IPv4Interface(VIP),), True)
    assert out[-1] == ScheduleTimer("web", pytest.approx(14.5995))


def test_backup_learns_master_adver_interval_v3() -> None:
    m = VrrpMachine(params())
    m.handle(Startup(), 0.0)
    out = m.handle(from_peer(m, 200, interval_cs=50), 1.0)
    assert m.master_adver_interval_cs == 50
    # 3 * 0.5 + (156 * 50 // 256) cs = 1.5 + 0.30
    assert out == [ScheduleTimer("web", pytest.approx(2.80))]


def test_master_learns_interval_of_the_winner() -> None:
    m = VrrpMachine(params())
    now = drive_to(m, State.MASTER)
    m.handle(from_peer(m, 200, interval_cs=20), now)
    assert m.state is State.BACKUP and m.master_adver_interval_cs == 20


def test_fault_clear_resets_learned_interval() -> None:
    m = VrrpMachine(params())
    m.handle(Startup(), 0.0)
    m.handle(from_peer(m, 200, interval_cs=50), 1.0)
    m.handle(TrackingChanged(100, True), 2.0)
    out = m.handle(TrackingChanged(100, False), 3.0)
    assert m.master_adver_interval_cs == 100
    assert out[-1] == ScheduleTimer("web", pytest.approx(6.60))


def test_v2_does_not_learn_and_drops_a_different_interval() -> None:
    m = VrrpMachine(params(version=2))
    m.handle(Startup(), 0.0)
    assert m.handle(from_peer(m, 200, interval_cs=200), 1.0) == []
    assert m.counters.invalid == {"interval": 1}
    assert m.master_adver_interval_cs == 100


def test_priority_zero_makes_backup_wait_only_skew_time() -> None:
    m = VrrpMachine(params(priority=200))
    m.handle(Startup(), 0.0)
    out = m.handle(from_peer(m, 0), 1.0)
    assert out == [ScheduleTimer("web", pytest.approx(1.0 + (56 * 100 // 256) / 100))]
    m.handle(TimerFired(), 1.21)
    assert m.state is State.MASTER
    assert m.counters.priority_zero_received == 1


def test_lower_advert_does_not_rearm_so_backup_preempts_on_expiry() -> None:
    m = VrrpMachine(params(priority=200))
    m.handle(Startup(), 0.0)
    for t in (1.0, 2.0, 3.0):
        assert m.handle(from_peer(m, 100), t) == []
    m.handle(TimerFired(), m.master_down_interval)
    assert m.state is State.MASTER


def test_no_preempt_backup_keeps_deferring_to_lower_master() -> None:
    m = VrrpMachine(params(priority=200, preempt=False))
    m.handle(Startup(), 0.0)
    for t in range(1, 30):
        m.handle(from_peer(m, 100), float(t))
        m.handle(TimerFired(), t + 0.5)
    assert m.state is State.BACKUP


def test_owner_preempts_even_with_preempt_off() -> None:
    m = VrrpMachine(params(priority=255, preempt=False), synced=True)
    m.handle(Startup(), 0.0)  # held: in BACKUP
    m.handle(from_peer(m, 100), 1.0)
    assert m.wants_master  # the lower advert did not re-arm or clear the hold


def test_preempt_delay_counts_from_the_first_lower_advert() -> None:
    m = VrrpMachine(params(priority=200, preempt_delay=10.0))
    m.handle(Startup(), 0.0)
    t = 1.0
    while t < 11.0:  # adverts from a lower master every second: all accepted
        m.handle(from_peer(m, 100), t)
        m.handle(TimerFired(), t + 0.5)
        assert m.state is State.BACKUP
        t += 1.0
    out = m.handle(from_peer(m, 100), 11.5)  # delay over: discarded
    assert out == []
    m.handle(TimerFired(), 10.0 + m.master_down_interval)
    assert m.state is State.MASTER


def test_preempt_delay_restarts_after_a_higher_advert() -> None:
    m = VrrpMachine(params(priority=200, preempt_delay=10.0))
    m.handle(Startup(), 0.0)
    m.handle(from_peer(m, 100), 1.0)  # delay runs until 11
    m.handle(from_peer(m, 250), 5.0)  # a better master: delay cancelled
    m.handle(from_peer(m, 100), 12.0)  # a new delay, until 22
    out = m.handle(from_peer(m, 100), 13.0)  # still deferred: re-armed
    assert out == [ScheduleTimer("web", pytest.approx(13.0 + 3.21))]


@pytest.mark.parametrize(
    ("source", "becomes"),
    [(HIGHER_PEER, State.BACKUP), (LOWER_PEER, State.MASTER)],
)
def test_tie_broken_by_primary_address(source: object, becomes: State) -> None:
    m = VrrpMachine(params(priority=150))
    now = drive_to(m, State.MASTER)
    m.handle(from_peer(m, 150, source), now)  # type: ignore[arg-type]
    assert m.state is becomes


def test_ipv6_tie_broken_by_link_local_as_integers() -> None:
    m = VrrpMachine(params(vips=(VIP6,), primary=V6_PRIMARY))
    now = drive_to(m, State.MASTER)
    m.handle(AdvertReceived(advert_for(m.params, 100), IPv6Address("fe80::9")), now)
    assert m.state is State.MASTER
    m.handle(AdvertReceived(advert_for(m.params, 100), IPv6Address("fe80::1:0")), now)
    assert m.state is State.BACKUP


def test_garp_burst_then_delayed_burst_then_refresh() -> None:
    m = VrrpMachine(params(garp=GarpConfig(repeat=3, delay=5.0, refresh=30.0)))
    now = drive_to(m, State.MASTER, 0.0)
    vips = m.params.vips
    gratuitous: list[tuple[float, int]] = []
    t = now
    while t < now + 65:
        t = min(x for x in [m.next_deadline] if x is not None)
        for a in m.handle(TimerFired(), t):
            if isinstance(a, SendGratuitous):
                assert a.vips == vips
                gratuitous.append((round(t - now, 3), a.repeat))
    assert gratuitous == [(5.0, 3), (30.0, 1), (60.0, 1)]


def test_leaving_master_stops_garp_timers() -> None:
    m = VrrpMachine(params(garp=GarpConfig(repeat=3, delay=5.0, refresh=30.0)))
    now = drive_to(m, State.MASTER, 0.0)
    m.handle(from_peer(m, 200), now + 0.1)
    assert m.next_deadline == pytest.approx(now + 0.1 + m.master_down_interval)


def test_garp_repeat_zero_sends_nothing() -> None:
    m = VrrpMachine(params(garp=GarpConfig(repeat=0, delay=0.0)))
    drive_to(m, State.MASTER)
    out = m.handle(from_peer(m, 50), 10.0)
    assert kinds(out) == ["SendAdvert"]


def test_shutdown_from_master_removes_vips_then_sends_priority_zero() -> None:
    m = VrrpMachine(params())
    now = drive_to(m, State.MASTER)
    out = m.handle(Shutdown(), now + 0.3)
    # VIPs first: a backup hearing priority 0 may take over at once (no dual holders).
    assert out[0] == RemoveVips("web", (IPv4Interface(VIP),))
    assert isinstance(out[1], SendAdvert) and out[1].advert.priority == 0
    assert out[2] == Notify("web", State.MASTER, State.INIT, 100, "shutdown")
    assert out[3] == ScheduleTimer("web", None)
    assert m.counters.priority_zero_sent == 1


def test_unicast_adverts_go_to_each_peer() -> None:
    m = VrrpMachine(params(peers=("192.0.2.5", "192.0.2.20")))
    now = drive_to(m, State.MASTER)
    out = m.handle(TimerFired(), now + 1)
    assert isinstance(out[0], SendAdvert)
    assert [str(d) for d in out[0].destinations] == ["192.0.2.5", "192.0.2.20"]


# ---- what is dropped --------------------------------------------------------------


def test_rejections_are_counted_and_change_nothing() -> None:
    m = VrrpMachine(params(peers=("192.0.2.5",)))
    m.handle(Startup(), 0.0)
    p = m.params
    good = advert_for(p, 200)
    bad = {
        "vrid": Advert(3, p.family, 99, 200, 100, p.advertised),
        "version": Advert(2, p.family, p.vrid, 200, 100, p.advertised),
    }
    for advert in bad.values():
        assert m.handle(AdvertReceived(advert, LOWER_PEER), 1.0) == []
    assert m.handle(AdvertReceived(good, HIGHER_PEER), 1.0) == []  # not a peer
    assert m.handle(AdvertRejected(Reason.CHECKSUM), 1.0) == []
    assert m.counters.invalid == {
        "vrid": 1,
        "version": 1,
        "unicast_source": 1,
        "checksum": 1,
    }
    assert m.counters.adverts_received == 0
    assert m.handle(AdvertReceived(good, LOWER_PEER), 1.0) != []
    assert m.counters.adverts_received == 1


def test_owner_advert_with_other_addresses_is_accepted() -> None:
    m = VrrpMachine(params())
    m.handle(Startup(), 0.0)
    owner = Advert(3, m.params.family, 51, 255, 100, (PRIMARY,))
    assert m.handle(AdvertReceived(owner, HIGHER_PEER), 1.0) != []
    assert not m.counters.invalid


def test_own_adverts_are_ignored() -> None:
    m = VrrpMachine(params())
    now = drive_to(m, State.MASTER)
    assert m.handle(AdvertReceived(advert_for(m.params, 100), PRIMARY), now) == []
    assert m.counters.own_adverts == 1 and m.state is State.MASTER


def test_adverts_before_startup_and_in_fault_change_nothing() -> None:
    m = VrrpMachine(params())
    assert m.handle(from_peer(m, 200), 0.0) == []
    drive_to(m, State.FAULT)
    assert m.handle(from_peer(m, 0), 1.0) == []
    assert m.state is State.FAULT
    assert m.counters.adverts_received == 1


# ---- tracking -------------------------------------------------------------------


def test_priority_change_in_backup_changes_the_election_not_the_state() -> None:
    m = VrrpMachine(params(priority=100))
    m.handle(Startup(), 0.0)
    m.handle(from_peer(m, 150), 1.0)
    assert m.handle(TrackingChanged(200, False), 1.5) == []
    assert m.handle(from_peer(m, 150), 2.0) == []  # now a lower advert: discarded
    m.handle(TimerFired(), 1.0 + master_down_interval(3, 100, 100))
    assert m.state is State.MASTER
    assert m.counters.effective_priority == 200


def test_master_advertises_new_priority_immediately() -> None:
    m = VrrpMachine(params(priority=100))
    now = drive_to(m, State.MASTER)
    out = m.handle(TrackingChanged(80, False), now + 0.2)
    assert isinstance(out[0], SendAdvert) and out[0].advert.priority == 80
    assert m.handle(TrackingChanged(80, False), now + 0.3) == []


def test_owner_status_follows_effective_priority() -> None:
    m = VrrpMachine(params(priority=255))
    m.handle(TrackingChanged(254, False), 0.0)
    m.handle(Startup(), 0.0)
    assert m.state is State.BACKUP


def test_accept_flag() -> None:
    p = params()
    from dataclasses import replace

    m = VrrpMachine(replace(p, accept_mode=False))
    out = drive_and_collect(m)
    assert [a.accept for a in out if isinstance(a, AddVips)] == [False]
    m = VrrpMachine(replace(params(priority=255), accept_mode=False))
    out = m.handle(Startup(), 0.0)
    assert [a.accept for a in out if isinstance(a, AddVips)] == [True]


def drive_and_collect(m: VrrpMachine) -> list[Action]:
    out = m.handle(Startup(), 0.0)
    return out + m.handle(TimerFired(), m.master_down_interval)


def test_counters_follow_transitions() -> None:
    m = VrrpMachine(params())
    now = drive_to(m, State.MASTER)
    m.handle(TimerFired(), now + 1)
    m.handle(from_peer(m, 200), now + 1.5)
    c = m.counters
    assert c.state == 1
    assert c.transitions == {"backup": 2, "master": 1}
    assert c.adverts_sent == 2 and c.adverts_received == 1


# ---- address lists that differ (RFC 5798 7.1 / RFC 3768 7.1) ----------------------


def test_v2_advert_with_other_addresses_is_dropped() -> None:
    m = VrrpMachine(params(version=2))
    m.handle(Startup(), 0.0)
    p = m.params
    other = Advert(2, p.family, p.vrid, 200, 100, (PRIMARY,), p.auth)
    assert m.handle(AdvertReceived(other, HIGHER_PEER), 1.0) == []
    assert m.counters.invalid == {"address_list": 1}
    assert m.counters.address_mismatches == 0


def test_v3_advert_with_other_addresses_counts_for_the_election() -> None:
    """A rolling change (a VIP added on the master first) must not make two masters:
    the backup still defers to the master's adverts, and reports the mismatch once."""
    m = VrrpMachine(params(priority=100))
    m.handle(Startup(), 0.0)
    p = m.params
    theirs = (*p.advertised, IPv4Interface("192.0.2.101/24").ip)
    master = Advert(3, p.family, p.vrid, 200, 100, theirs)
    now, reports = 0.0, []
    for _ in range(20):  # 20 adverts a second apart: never master, reported once
        now += 1.0
        out = m.handle(AdvertReceived(master, HIGHER_PEER), now)
        reports += [a for a in out if isinstance(a, AddressMismatch)]
        assert m.state is State.BACKUP
        now += 0.5
        m.handle(TimerFired(), now)  # nothing due: the advert re-armed Master_Down_Timer
        assert m.state is State.BACKUP
        now -= 0.5
    assert reports == [AddressMismatch("web", HIGHER_PEER, theirs, p.advertised)]
    assert m.counters.address_mismatches == 20
    assert m.counters.address_mismatch_peers == 1
    assert not m.counters.invalid
    # the backup gets the VIP too: the mismatch ends, reported once
    agreed = Advert(3, p.family, p.vrid, 200, 100, p.advertised)
    out = m.handle(AdvertReceived(agreed, HIGHER_PEER), now + 1.0)
    assert [a for a in out if isinstance(a, AddressMismatch)] == [
        AddressMismatch("web", HIGHER_PEER, p.advertised, p.advertised, ended=True)
    ]
    assert m.counters.address_mismatch_peers == 0
    assert m.counters.address_mismatches == 20


def test_v3_mismatch_ends_when_the_peer_falls_silent() -> None:
    m = VrrpMachine(params(priority=100))
    m.handle(Startup(), 0.0)
    p = m.params
    master = Advert(3, p.family, p.vrid, 200, 100, (PRIMARY,))
    m.handle(AdvertReceived(master, HIGHER_PEER), 1.0)
    assert m.counters.address_mismatch_peers == 1
    later = 1.0 + m.master_down_interval + 0.1
    out = m.handle(TimerFired(), later)
    assert any(isinstance(a, AddressMismatch) and a.ended for a in out)
    assert m.counters.address_mismatch_peers == 0
    assert m.state is State.MASTER  # the silent master was taken over from, as usual


# ---- answers to lower priorities are bounded ----------------------------------------


def _lower_adverts(m: VrrpMachine, start: float, seconds: float, every: float) -> list[Action]:
    out: list[Action] = []
    for i in range(round(seconds / every)):
        out += m.handle(from_peer(m, 50), start + i * every)
    return out


def test_master_answers_lower_adverts_with_at_most_one_burst_per_delay() -> None:
    garp = GarpConfig(repeat=5, delay=0.0, lower_prio_repeat=3, lower_prio_delay=1.0)
    m = VrrpMachine(params(interval=0.01, garp=garp))
    now = drive_to(m, State.MASTER)
    out = _lower_adverts(m, now + 0.001, 5.0, 0.01)  # a one-way partition: 500 adverts
    bursts = [a for a in out if isinstance(a, SendGratuitous)]
    answers = [a for a in out if isinstance(a, SendAdvert)]
    assert len(answers) >= 500  # every lower advert is still answered with an advert
    assert 5 <= len(bursts) <= 6  # 5 s at one burst per second
    assert {b.repeat for b in bursts} == {3}
    assert m.state is State.MASTER


def test_lower_prio_repeat_zero_sends_no_gratuitous_answers() -> None:
    garp = GarpConfig(lower_prio_repeat=0)
    m = VrrpMachine(params(interval=0.01, garp=garp))
    now = drive_to(m, State.MASTER)
    out = _lower_adverts(m, now + 0.001, 1.0, 0.01)
    assert not [a for a in out if isinstance(a, SendGratuitous)]


def test_a_new_mastership_answers_the_first_lower_advert_at_once() -> None:
    garp = GarpConfig(lower_prio_repeat=2, lower_prio_delay=60.0)
    m = VrrpMachine(params(garp=garp))
    now = drive_to(m, State.MASTER)
    first = m.handle(from_peer(m, 50), now + 0.1)
    assert [a.repeat for a in first if isinstance(a, SendGratuitous)] == [2]
    m.handle(from_peer(m, 200, HIGHER_PEER), now + 0.2)  # leaves master
    assert m.state is State.BACKUP
    now2 = now + 0.2 + m.master_down_interval + 0.01
    m.handle(TimerFired(), now2)
    assert m.state is State.MASTER
    again = m.handle(from_peer(m, 50), now2 + 0.1)  # the rate limit did not carry over
    assert [a.repeat for a in again if isinstance(a, SendGratuitous)] == [2]


# ---- reload in place (Reconfigure) -----------------------------------------------


def test_reconfigure_master_moves_only_the_changed_vips_and_advertises_at_once() -> None:
    m = VrrpMachine(params(vips=(VIP, "192.0.2.101/24")))
    now = drive_to(m, State.MASTER) + 0.3
    new = params(vips=(VIP, "192.0.2.102/24"), interval=0.5)
    out = m.handle(Reconfigure(new), now)
    assert m.state is State.MASTER and m.params == new
    removed = [a for a in out if isinstance(a, RemoveVips)]
    added = [a for a in out if isinstance(a, AddVips)]
    assert [str(v) for a in removed for v in a.vips] == ["192.0.2.101/24"]
    assert [str(v) for a in added for v in a.vips] == ["192.0.2.102/24"]
    sent = [a for a in out if isinstance(a, SendAdvert)]
    assert len(sent) == 1 and sent[0].advert.interval_cs == 50
    assert not [a for a in out if isinstance(a, Notify)]
    assert not [a for a in out if isinstance(a, SendAdvert) and a.advert.priority == 0]
    assert m.master_adver_interval_cs == 50


def test_reconfigure_unchanged_master_sends_nothing() -> None:
    m = VrrpMachine(params())
    now = drive_to(m, State.MASTER) + 0.3
    out = m.handle(Reconfigure(params(preempt_delay=3.0)), now)
    assert kinds(out) == []  # no advert needed: the advert's contents did not change
    assert m.params.preempt_delay == 3.0


def test_reconfigure_backup_keeps_its_timers() -> None:
    m = VrrpMachine(params(priority=100))
    m.handle(Startup(), 0.0)
    m.handle(from_peer(m, 200, HIGHER_PEER), 1.0)
    deadline = m.next_deadline
    out = m.handle(Reconfigure(params(priority=100, vips=(VIP, "192.0.2.9/24"))), 1.2)
    assert m.state is State.BACKUP and m.next_deadline == deadline
    assert not [a for a in out if not isinstance(a, ScheduleTimer)]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"vrid": 52}, "vrid"),
        ({"version": 2, "interval": 1.0}, "version"),
        ({"vips": (VIP6,), "primary": V6_PRIMARY}, "family"),
        ({"peers": ("192.0.2.5",)}, "unicast_peers"),
    ],
)
def test_reconfigure_refuses_what_needs_a_restart(change: dict[str, object], why: str) -> None:
    m = VrrpMachine(params())
    drive_to(m, State.MASTER)
    new = params(**change)  # type: ignore[arg-type]
    reason = VrrpMachine.needs_restart(m.params, new)
    assert reason is not None and reason.startswith(why)
    with pytest.raises(ValueError, match="must restart"):
        m.handle(Reconfigure(new), 5.0)


def test_hand_over_defers_to_a_lower_peer_for_the_hold_then_preempts() -> None:
    m = VrrpMachine(params(priority=200))
    now = drive_to(m, State.MASTER, 100.0)
    out = m.handle(HandOver(10.0), now)
    assert m.state is State.BACKUP
    assert [a.advert.priority for a in out if isinstance(a, SendAdvert)] == [0]
    assert any(isinstance(a, RemoveVips) for a in out)
    # The peer (lower priority) took over: deferred to during the hold, the timer re-armed.
    for step in range(1, 9):
        m.handle(from_peer(m, 100), now + step)
        m.handle(TimerFired(), now + step)
        assert m.state is State.BACKUP
    # After the hold, preempt applies again: the peer's adverts are ignored, the
    # Master_Down_Timer runs out and this node takes MASTER back.
    later = now + 10.5
    m.handle(from_peer(m, 100), later)
    m.handle(TimerFired(), later + m.master_down_interval + 0.01)
    assert m.state is State.MASTER


def test_hand_over_takes_over_again_when_no_peer_answers() -> None:
    m = VrrpMachine(params(priority=200))
    now = drive_to(m, State.MASTER, 100.0)
    m.handle(HandOver(60.0), now)
    m.handle(TimerFired(), now + m.master_down_interval + 0.01)
    assert m.state is State.MASTER


def test_hand_over_is_a_no_op_for_a_backup() -> None:
    m = VrrpMachine(params(priority=100))
    now = drive_to(m, State.BACKUP, 100.0)
    assert m.handle(HandOver(10.0), now) == []
    assert m.yielding_until is None


# ---- the one-shot timer -------------------------------------------------------------


class OneShotTimer:
    """The service's timer as the machine sees it: armed only by ``ScheduleTimer``,
    disarmed by firing."""

    def __init__(self) -> None:
        self.at: float | None = None

    def take(self, out: list[Action]) -> list[Action]:
        for action in out:
            if isinstance(action, ScheduleTimer):
                self.at = action.at
        return out

    def fire(self, m: VrrpMachine, now: float) -> list[Action]:
        assert self.at is not None, "the machine's timer is no longer armed"
        self.at = None
        return self.take(m.handle(TimerFired(), now))


@pytest.mark.parametrize("early", [0.002, 0.1, 0.5])
def test_a_master_woken_early_keeps_advertising(early: float) -> None:
    # A timer may fire early (a deadline computed across a thread switch): nothing is
    # due then, and the master must still get its next wake, or it stops advertising
    # for good and answers only lower priorities (the backup flaps every
    # Master_Down_Interval).
    m = VrrpMachine(params())
    timer = OneShotTimer()
    timer.take(m.handle(Startup(), 0.0))
    assert timer.at is not None
    timer.fire(m, timer.at)
    assert m.state is State.MASTER
    sent = 0
    for _ in range(5):
        assert timer.at is not None
        due = timer.at
        assert not [a for a in timer.fire(m, due - early) if isinstance(a, SendAdvert)]
        assert timer.at == pytest.approx(due)  # armed again for the same deadline
        sent += len([a for a in timer.fire(m, due) if isinstance(a, SendAdvert)])
    assert sent == 5


def test_a_backup_woken_early_still_takes_over() -> None:
    m = VrrpMachine(params())
    timer = OneShotTimer()
    timer.take(m.handle(Startup(), 0.0))
    assert timer.at is not None
    due = timer.at
    timer.fire(m, due - 0.2)
    assert m.state is State.BACKUP and timer.at == pytest.approx(due)
    timer.fire(m, due)
    assert m.state is State.MASTER
