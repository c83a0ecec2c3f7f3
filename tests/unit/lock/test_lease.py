"""Scripted scenarios for the lease state machine: one rule per test, no randomness."""

from __future__ import annotations

import itertools

import pytest

from agent.lock.lease import ROUND_BUCKETS, Flaw
from agent.lock.messages import (
    Accept,
    Accepted,
    Ballot,
    Kind,
    Message,
    Prepare,
    Promise,
    Release,
)
from agent.lock.node import MAX_LEASES, LockCore
from agent.lock.timing import Timing, TimingError

from .harness import TIMING, Net, acquire, kind


def test_timing_formulas() -> None:
    t = Timing.from_lease(1.0)
    assert t.guard == pytest.approx(0.1)
    assert t.renew_interval == pytest.approx(0.25)
    assert t.acceptor_lease == pytest.approx(1.0 * 1.001 / 0.999 + 0.05)
    assert t.quarantine == pytest.approx(t.acceptor_lease * 1.001 / 0.999)
    assert t.acceptor_lease > t.lease * (1 + t.rho) / (1 - t.rho)
    assert len(t.fingerprint()) == 8
    assert Timing.from_lease(2.0).fingerprint() != t.fingerprint()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"acceptor_lease": 1.0},  # not > D_P(1+ρ)/(1−ρ)
        {"quarantine": 0.5},  # < D_A
        {"guard": 1.0},  # ≥ lease
        {"renew_interval": 0.95},  # ≥ lease − guard
    ],
)
def test_unsafe_timing_refused(kwargs: dict[str, float]) -> None:
    base = Timing.from_lease(1.0)
    fields = {
        "lease": base.lease,
        "guard": base.guard,
        "acceptor_lease": base.acceptor_lease,
        "quarantine": base.quarantine,
        "renew_interval": base.renew_interval,
    }
    fields.update(kwargs)
    with pytest.raises(TimingError):
        Timing(**fields)


def test_acquire_renew_and_term_is_stable() -> None:
    net = Net()
    t = acquire(net, "n1", 0.0)
    lease = net.nodes["n1"].lease("vip")
    term = lease.term
    assert term is not None and term.node == "n1"
    for _ in range(40):  # 2 s of renewals
        t += 0.05
        for n in net.members:
            net.tick(n, t)
        net.settle(t)
        assert net.holders(t) == ["n1"]
    assert lease.term == term  # renewals keep the term (fencing number)
    assert lease.acquisitions == 1
    events = net.nodes["n1"].drain_events()
    assert [e.kind for e in events] == ["acquired"]


def test_slow_rounds_still_renew() -> None:
    """A round slower than the renewal period is waited for while it can still give a
    hold (lease − guard), not abandoned: cut at the renewal period, its retry came too
    late and the lease was lost although every acceptor answered."""
    net = Net()
    t = acquire(net, "n1", 0.0)
    lease = net.nodes["n1"].lease("vip")
    net.queue.clear()
    hop = 0.08  # each datagram takes 80 ms: a round (4 hops) 320 ms > renew 250 ms
    assert 4 * hop > TIMING.renew_interval
    in_flight: list[tuple[float, Message]] = []
    start = t
    while t < start + 5.0:
        t = round(t + 0.01, 2)
        for n in net.members:
            net.tick(n, t)
        in_flight += [(t + hop, m) for m in net.take(lambda m: m.kind is not Kind.ANNOUNCE)]
        net.drop_announces()
        due = [m for at, m in in_flight if at <= t]
        in_flight = [(at, m) for at, m in in_flight if at > t]
        for m in due:
            net.emit(m.receiver, net.nodes[m.receiver].handle(m, t), t)
        assert net.holders(t) == ["n1"], t
    assert lease.losses == 0
    # Every renewal took 320 ms: all in the (0.25, 0.5] bucket of the round histogram.
    cumulative = net.nodes["n1"].counters.rounds.cumulative()
    bounds = dict(zip(ROUND_BUCKETS, cumulative, strict=False))
    total = cumulative[-1]
    assert total >= 10
    assert bounds[0.25] <= 1  # the acquisition, on the fast network
    assert bounds[0.5] == total


def test_resends_to_silent_acceptors_back_off() -> None:
    """A request unanswered is re-sent after renew_interval / 5, then at doubling gaps
    up to renew_interval: a lost datagram is re-sent as soon as ever, a slow peer is not
    sent the same request every renew_interval / 5."""
    net = Net()
    t = acquire(net, "n1", 0.0)
    net.queue.clear()
    sent: list[tuple[float, Ballot]] = []
    start = t
    while t < start + 0.8:  # one attempt: no answer ever arrives
        t = round(t + 0.01, 2)
        net.tick("n1", t)
        sent += [(t, m.ballot) for m in net.take(kind(Kind.PREPARE, to="n2"))]  # type: ignore[attr-defined]
        net.queue.clear()
    assert len({b for _, b in sent}) == 1, "one attempt, one ballot"
    gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(sent)]
    r = TIMING.renew_interval
    assert gaps == [round(r / 5, 2), round(2 * r / 5, 2), round(4 * r / 5, 2)], gaps


def test_a_candidate_polling_a_held_lease_never_outbids_the_renewal() -> None:
    """R7: while n1's lease is live at an acceptor, n2's PREPARE there is refused without
    a promise, however high its ballot, so n1's next renewal is still promised. (With a
    promise, n2's poll made n1's renewal fail: its ballot was now below the promise.)"""
    net = Net()
    t = acquire(net, "n1", 0.0)
    net.queue.clear()
    acceptor = net.nodes["n3"]
    held = acceptor.lease("vip").accepted_record()
    assert held is not None and held[0].node == "n1"
    poll = Ballot(held[0].counter + 1, 1, "n2")  # above n1's next renewal (n1 < n2)
    net.emit("n3", acceptor.handle(Prepare("vip", "n2", "n3", poll), t), t)
    [answer] = net.take(kind(Kind.REJECT, to="n2"))
    assert answer.accepted == held[0] and answer.remaining > 0  # wait this long
    assert acceptor.counters.refused == {"prepare-live-lease": 1}
    renewal = Ballot(held[0].counter + 1, 1, "n1")
    assert renewal < poll
    net.emit("n3", acceptor.handle(Prepare("vip", "n1", "n3", renewal), t), t)
    assert net.take(kind(Kind.PROMISE, to="n1"))


def test_holder_steps_down_at_d_minus_guard_without_quorum() -> None:
    net = Net()
    t0 = acquire(net, "n1", 0.0)
    lease = net.nodes["n1"].lease("vip")
    end = lease.hold_until()
    assert end is not None
    net.queue.clear()
    # Partition n1: everything it sends is lost from now on.
    t = t0
    while t < end + 0.5:
        t += 0.01
        net.tick("n1", t)
        net.take(lambda m: True)
        assert net.nodes["n1"].is_holder("vip", t) == (t < end)
    assert lease.losses == 1


def test_is_holder_boundary_is_strict() -> None:
    net = Net()
    acquire(net, "n1", 0.0)
    lease = net.nodes["n1"].lease("vip")
    end = lease.hold_until()
    assert end is not None
    assert lease.is_holder(end - 1e-9)
    assert not lease.is_holder(end)


def test_duplicate_promises_and_accepteds_count_once() -> None:
    net = Net(members=("n1", "n2", "n3", "n4", "n5"))
    net.campaign("n1", 0.0)
    net.drop_announces()
    net.tick("n1", 1.0)
    prepares = net.take(kind(Kind.PREPARE))
    n2 = [m for m in prepares if m.receiver == "n2"]
    # Only n2 answers, three times: with the self-promise that is 2 distinct of 5 — no quorum.
    for _ in range(3):
        net.queue += n2
        net.deliver(kind(Kind.PREPARE), 1.0)
    net.deliver(kind(Kind.PROMISE), 1.0)
    assert not net.take(kind(Kind.ACCEPT))
    assert net.nodes["n1"].lease("vip").phase.value == "preparing"


def test_scalar_quorum_flaw_counts_duplicates() -> None:
    net = Net(members=("n1", "n2", "n3", "n4", "n5"), flaws=[Flaw.SCALAR_QUORUM])
    net.campaign("n1", 0.0)
    net.drop_announces()
    net.tick("n1", 1.0)
    n2 = [m for m in net.take(kind(Kind.PREPARE)) if m.receiver == "n2"]
    for _ in range(3):
        net.queue += n2
    net.deliver(kind(Kind.PREPARE), 1.0)
    net.deliver(kind(Kind.PROMISE), 1.0)
    assert net.take(kind(Kind.ACCEPT))  # the mutant thinks it has a quorum


def test_deadline_is_taken_at_prepare_time() -> None:
    net = Net()
    net.campaign("n1", 0.0)
    net.drop_announces()
    net.tick("n1", 1.0)
    net.deliver(kind(Kind.PREPARE), 1.0)
    # The PROMISEs arrive 0.95 s after PREPARE was sent: too late to be useful.
    net.deliver(kind(Kind.PROMISE), 1.95)
    assert not net.take(kind(Kind.ACCEPT))
    assert net.holders(1.95) == []


def test_acceptor_refuses_to_overwrite_live_foreign_lease() -> None:
    net = Net()
    t = acquire(net, "n1", 0.0)
    n2 = net.nodes["n2"].lease("vip")
    out = n2.handle(Accept("vip", "n3", "n2", Ballot(99, 1, "n3")), t)
    assert [m.kind for m in out] == [Kind.REJECT]
    assert net.nodes["n2"].counters.refused["live-foreign-lease"] == 1
    # The same owner may replace its own lease (renewal).
    out = n2.handle(Accept("vip", "n1", "n2", Ballot(99, 1, "n1")), t)
    assert [m.kind for m in out] == [Kind.ACCEPTED]


def test_earlier_incarnation_of_the_holder_is_foreign() -> None:
    # A restarted n1 holds; a delayed ACCEPT from n1's previous process (higher counter,
    # older incarnation) must not replace that lease, so its delayed RELEASE cannot
    # erase it either (simulator seed 472242 before the fix: two holders).
    net = Net()
    t = acquire(net, "n1", 0.0)
    n2 = net.nodes["n2"].lease("vip")
    live = n2._acc_ballot
    assert live is not None and live.node == "n1"
    ghost = Ballot(live.counter + 5, live.incarnation - 1, "n1")
    out = n2.handle(Accept("vip", "n1", "n2", ghost), t)
    assert [m.kind for m in out] == [Kind.REJECT]
    n2.handle(Release("vip", "n1", "n2", ghost), t)
    assert n2._acc_ballot == live


def test_own_lease_not_open_outside_renewal() -> None:
    # n1's leftover lease (abandoned attempt) must block n1's fresh acquisition.
    core = LockCore("n1", ("n1", "n2", "n3"), TIMING, 1, -10.0, ("vip",))
    lease = core.lease("vip")
    out = core.campaign("vip", 0.0)
    out = core.tick(1.0)
    b = next(m.ballot for m in out if isinstance(m, Prepare))
    leftover = Ballot(b.counter - 1 if b.counter > 1 else 0, 1, "n1")
    for a in ("n2", "n3"):
        core.handle(Promise("vip", a, "n1", b, leftover, 0.5), 1.0)
    assert lease.phase.value == "idle"  # blocked, attempt failed
    assert not lease.is_holder(1.0)


def test_release_matches_owner_and_ballot() -> None:
    net = Net()
    acquire(net, "n1", 0.0)
    n2 = net.nodes["n2"].lease("vip")
    live = n2._acc_ballot
    assert live is not None and live.node == "n1"
    old = Ballot(live.counter - 1, live.incarnation, "n1")
    n2.handle(Release("vip", "n1", "n2", old), 1.5)
    assert n2._acc_ballot == live
    n2.handle(Release("vip", "n1", "n2", live), 1.5)
    assert n2._acc_ballot is None


def test_quarantine_silences_acceptor_and_proposer() -> None:
    core = LockCore("n1", ("n1", "n2", "n3"), TIMING, 2, 100.0, ("vip",))
    assert core.handle(Prepare("vip", "n2", "n1", Ballot(1, 1, "n2")), 100.5) == []
    assert core.counters.dropped["quarantine"] == 1
    out = core.campaign("vip", 100.5)
    assert not any(m.kind is Kind.PREPARE for m in out)
    nd = core.next_deadline()
    assert nd is not None and nd >= 100.0 + TIMING.quarantine
    out = core.tick(100.0 + TIMING.quarantine + 0.5)
    assert any(m.kind is Kind.PREPARE for m in out)


def test_release_hands_over_and_holdoff_keeps_releaser_out() -> None:
    net = Net()
    t = acquire(net, "n1", 0.0)
    net.campaign("n2", t, priority=100)
    net.emit("n1", net.nodes["n1"].release("vip", t), t)
    assert net.holders(t) == []
    assert [e.kind for e in net.nodes["n1"].drain_events()] == ["acquired", "released"]
    for _ in range(60):
        t += 0.05
        for n in net.members:
            net.tick(n, t)
        net.settle(t)
        if net.holders(t):
            break
    assert net.holders(t) == ["n2"]
    assert t < 2.0  # announce-triggered, not after the acceptor exclusion


def test_preempt_by_higher_priority_announce() -> None:
    net = Net()
    for core in net.nodes.values():
        core.lease("vip").preempt = True
    t = acquire(net, "n1", 0.0)
    net.nodes["n1"].set_priority("vip", t, 100)
    net.campaign("n2", t, priority=200)
    for _ in range(80):
        t += 0.05
        for n in net.members:
            net.tick(n, t)
        net.settle(t)
        assert len(net.holders(t)) <= 1
        if net.holders(t) == ["n2"]:
            break
    assert net.holders(t) == ["n2"]
    reasons = [e.reason for e in net.nodes["n1"].drain_events() if e.kind == "released"]
    assert reasons == ["preempted"]


def test_multiplexed_leases_are_independent() -> None:
    net = Net(leases=("vi_1", "vi_2"))
    t = 0.0
    net.emit("n1", net.nodes["n1"].campaign("vi_1", t, 200), t)
    net.emit("n2", net.nodes["n2"].campaign("vi_2", t, 200), t)
    for _ in range(40):
        t += 0.05
        for n in net.members:
            net.tick(n, t)
        net.settle(t)
    assert net.holders(t, "vi_1") == ["n1"]
    assert net.holders(t, "vi_2") == ["n2"]
    st = net.nodes["n1"].status(t)
    by_name = {ls.name: ls for ls in st.leases}
    assert by_name["vi_1"].holder and not by_name["vi_2"].holder
    assert by_name["vi_1"].term is not None
    assert st.quorum_reachable
    assert net.nodes["n1"].counters.messages_in["PROMISE"] > 0


def test_acceptor_learns_lease_names_up_to_a_bound() -> None:
    """A witness declares no leases: it answers for names the proposers use."""
    core = LockCore("n1", ("n1", "n2", "n3"), TIMING, 1, -10.0, ("vip",))
    (promise,) = core.handle(Prepare("other", "n2", "n1", Ballot(1, 1, "n2")), 0.0)
    assert promise.kind is Kind.PROMISE and "other" in core.lease_names
    # A reply for a lease we never proposed on is not a reason to learn it.
    core.handle(Accepted("stray", "n2", "n1", Ballot(1, 1, "n1")), 0.0)
    assert core.counters.dropped["unknown-lease"] == 1
    for i in range(MAX_LEASES + 5):
        core.handle(Prepare(f"l{i}", "n2", "n1", Ballot(1, 1, "n2")), 0.0)
    assert len(core.lease_names) == MAX_LEASES
    assert core.counters.dropped["unknown-lease"] == 1 + 7


def test_stale_owner_witness_needs_both_flaws() -> None:
    """Revisited's StaleOwnerOpen, scripted on 2 directors + witness.

    d2's ACCEPT is stuck in the network, the witness restarts, d1 acquires with a lower
    ballot, the stale ACCEPT lands, d2 retries.  Two holders only when BOTH the renewal
    qualifier (R3) and the acceptor-side refusal (R5/A2) are removed.
    """

    def run(flaws: list[Flaw]) -> bool:
        net = Net(members=("d1", "d2", "w1"), flaws=flaws)
        t = 0.0
        net.campaign("d2", t)
        t = 1.0
        net.tick("d2", t)
        net.drop_announces()
        net.take(kind(Kind.PREPARE, to="d1"))
        net.deliver(kind(Kind.PREPARE, to="w1"), t)
        net.deliver(kind(Kind.PROMISE), t)
        stale = net.take(kind(Kind.ACCEPT))
        net.restart("w1", t)
        t += TIMING.quarantine + 0.01
        net.tick("d2", t)
        net.take(lambda m: m.sender == "d2")
        net.campaign("d1", t)
        t += 0.5
        net.tick("d1", t)
        net.take(lambda m: m.receiver == "d2")
        net.settle(t, lambda m: m.receiver in ("d1", "w1"))
        assert net.holders(t) == ["d1"]
        net.queue += stale
        net.deliver(kind(Kind.ACCEPT, frm="d2"), t)
        net.queue.clear()
        for _ in range(20):
            t += 0.05
            net.tick("d2", t)
            net.settle(t, lambda m: m.sender == "d2" or m.receiver == "d2")
            net.queue.clear()
            if len(net.holders(t)) > 1:
                return True
        return False

    assert run([Flaw.STALE_OWNER_OPEN, Flaw.OVERWRITE_LIVE_LEASE])
    assert not run([Flaw.OVERWRITE_LIVE_LEASE])
    assert not run([Flaw.STALE_OWNER_OPEN])
    assert not run([])


def test_late_timer_needs_both_flaws() -> None:
    """Revisited's LateTimer trace (its results/counterexample-latetimer.txt), 3 nodes.

    n1 and n2 each hold a PROMISE quorum (their own acceptor and n3); n3 restarts and
    forgets its promise; after n3's quarantine both quorums arrive, and with the deadline
    taken at the PROMISE quorum both look fresh.  Two holders only when the acceptors may
    also overwrite a live foreign lease: with A2 alone the ACCEPTs of n2 are refused.
    """

    def run(flaws: list[Flaw]) -> list[str]:
        net = Net(flaws=flaws)
        net.campaign("n1", 0.0)
        net.campaign("n2", 0.0)
        t = 1.0
        net.tick("n1", t)  # PREPARE b1; n1's own acceptor promises at once
        net.tick("n2", t)  # PREPARE b2 > b1; likewise
        net.drop_announces()
        net.deliver(kind(Kind.PREPARE, frm="n1", to="n3"), t)
        net.deliver(kind(Kind.PREPARE, frm="n2", to="n3"), t)
        held = net.take(kind(Kind.PROMISE, frm="n3"))
        net.queue.clear()
        net.restart("n3", t)
        # n1 and n2 are paused meanwhile: no tick, so the late attempt is not timed out.
        t += TIMING.quarantine + 0.01
        for m in held:
            net.emit(m.receiver, net.nodes[m.receiver].handle(m, t), t)
        net.drop_announces()
        assert sorted(m.sender for m in net.queue if m.kind is Kind.ACCEPT) == (
            ["n1", "n1", "n2", "n2"] if Flaw.LATE_DEADLINE in flaws else []
        )
        net.deliver(kind(Kind.ACCEPT, frm="n1"), t)
        net.deliver(kind(Kind.ACCEPT, frm="n2"), t)
        net.deliver(kind(Kind.ACCEPTED), t)
        if flaws == [Flaw.LATE_DEADLINE]:
            refused = sum(
                c.counters.refused.get("live-foreign-lease", 0) for c in net.nodes.values()
            )
            assert refused == 2  # A2 at n1 and n3
        return net.holders(t)

    assert run([Flaw.LATE_DEADLINE, Flaw.OVERWRITE_LIVE_LEASE]) == ["n1", "n2"]
    assert run([Flaw.LATE_DEADLINE]) == ["n1"]
    assert run([Flaw.OVERWRITE_LIVE_LEASE]) == []
    assert run([]) == []


def test_deadline_at_accepted_quorum_outlives_the_acceptors() -> None:
    """Flaw.ACCEPTED_DEADLINE: A2 does not help when the hold starts after the ACCEPTs.

    n1's ACCEPTs land at t=1.0 (the acceptors' D_A runs from there); n1 is paused and
    handles the ACCEPTEDs at 1.24, within its attempt timeout; then it is cut off.  The
    acceptors forget n1 at 1.0 + D_A and n2 acquires while the mutant n1 still holds.
    """

    def run(flaws: list[Flaw]) -> tuple[list[str], float]:
        net = Net(flaws=flaws)
        net.campaign("n1", 0.0, priority=255)
        t = 1.0
        net.tick("n1", t)
        net.drop_announces()
        net.settle(t, lambda m: m.kind in (Kind.PREPARE, Kind.PROMISE, Kind.ACCEPT))
        late = net.take(kind(Kind.ACCEPTED))
        assert len(late) == 2 and net.holders(t) == []
        t = 1.24
        net.queue += late
        net.deliver(kind(Kind.ACCEPTED), t)
        assert net.holders(t) == ["n1"]
        net.queue.clear()
        net.campaign("n2", t, priority=255)
        while t < 2.3:
            t += 0.01
            net.tick("n2", t)
            net.tick("n3", t)
            net.queue = [m for m in net.queue if "n1" not in (m.sender, m.receiver)]
            net.settle(t, lambda m: m.kind is not Kind.ANNOUNCE)
            net.drop_announces()
            if "n2" in net.holders(t):
                break
        assert t > 1.0 + TIMING.acceptor_lease  # n2 waited for the acceptors to forget n1
        return net.holders(t), t

    holders, _ = run([Flaw.ACCEPTED_DEADLINE])
    assert holders == ["n1", "n2"]
    holders, _ = run([])
    assert holders == ["n2"]
