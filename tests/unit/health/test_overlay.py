"""The health overlay: configured table + pool decisions + maintenance -> the table programmed."""

from __future__ import annotations

from agent.health.config import Check, MinHealthy, Pool, PoolPolicy, SorryServer, member
from agent.health.core import MemberHealth, PoolDecision, PoolState, decide, ramp
from agent.health.overlay import adjust_service, adjust_table
from agent.ipvs.model import (
    AF_INET,
    IPPROTO_TCP,
    DesiredService,
    DesiredTable,
    Dest,
    DestKey,
    Forwarding,
    Service,
    ServiceKey,
)

TCP = Check("tcp")
RS = (("10.0.1.1", 80, 10), ("10.0.1.2", 80, 20), ("10.0.1.3", 80, 30))


def service(name: str = "web", port: int = 80) -> DesiredService:
    key = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.1", port)
    dests = {
        DestKey(AF_INET, a, p): Dest(DestKey(AF_INET, a, p), Forwarding.DR, w) for a, p, w in RS
    }
    return DesiredService(Service(key, "wrr"), dests, name)


def pool(policy: PoolPolicy | None = None, name: str = "web") -> Pool:
    return Pool(name, tuple(member(a, p, w, (TCP,)) for a, p, w in RS), policy or PoolPolicy())


def decision(
    p: Pool, down: dict[str, float | None], now: float = 100.0, prev: PoolState | None = None
) -> PoolDecision:
    """``down``: address -> when it went down; every other member up since ``None``."""
    health = {
        m.key: MemberHealth(False, down[m.address], m.weight)
        if m.address in down
        else MemberHealth(True, None, m.weight)
        for m in p.members
    }
    return decide(p, health, prev or PoolState(), now)


def weights(ds: DesiredService) -> dict[str, int]:
    return {k.address: d.weight for k, d in ds.dests.items()}


def test_nothing_to_do_returns_the_same_objects() -> None:
    ds = service()
    table: DesiredTable = {ds.service.key: ds}
    assert adjust_table(table, {}, {}) is table
    p = pool()
    d = decision(p, {})
    assert adjust_service(ds, d, p.policy) is ds
    assert adjust_table(table, {"web": d}, {"web": p.policy}) is table


def test_a_failed_server_is_drained_to_weight_0_by_default() -> None:
    p = pool()
    out = adjust_service(service(), decision(p, {"10.0.1.2": 50.0}), p.policy)
    assert weights(out) == {"10.0.1.1": 10, "10.0.1.2": 0, "10.0.1.3": 30}
    assert all(d.fwd == Forwarding.DR for d in out.dests.values())  # only the weight changes


def test_on_failure_remove_takes_it_out_of_the_table() -> None:
    p = pool(PoolPolicy(on_failure="remove"))
    out = adjust_service(service(), decision(p, {"10.0.1.2": 50.0}), p.policy)
    assert weights(out) == {"10.0.1.1": 10, "10.0.1.3": 30}


def test_a_recovered_server_ramps_over_slow_start() -> None:
    p = pool(PoolPolicy(slow_start=30.0))
    health = {m.key: MemberHealth(True, None, m.weight) for m in p.members}
    health[("10.0.1.3", 80)] = MemberHealth(True, 100.0, 30)  # back up at t=100
    seen = []
    for now in (100.0, 110.0, 120.0, 130.0, 200.0):
        d = decide(p, health, PoolState(), now)
        seen.append(weights(adjust_service(service(), d, p.policy))["10.0.1.3"])
        assert seen[-1] == ramp(30, 100.0, 30.0, now)[0]
    assert seen == [1, 10, 20, 30, 30]
    assert sorted(seen) == seen


def test_the_floor_keeps_failing_servers_with_their_weight() -> None:
    p = pool(PoolPolicy(min_healthy=MinHealthy(50, percent=True)))
    # every check fails (the director's own link cut): 2 of 3 stay, the last to fail
    d = decision(p, {"10.0.1.1": 10.0, "10.0.1.2": 20.0, "10.0.1.3": 30.0})
    assert d.events[0] == "floor_held"
    out = adjust_service(service(), d, p.policy)
    assert weights(out) == {"10.0.1.1": 0, "10.0.1.2": 20, "10.0.1.3": 30}
    released = decision(p, {}, prev=d.state)
    assert released.events[0] == "floor_released"
    assert weights(adjust_service(service(), released, p.policy)) == {
        "10.0.1.1": 10,
        "10.0.1.2": 20,
        "10.0.1.3": 30,
    }


def test_quorum_lost_programs_the_sorry_server_alone_until_it_is_back() -> None:
    policy = PoolPolicy(quorum=40, hysteresis=5, sorry_server=SorryServer("10.0.9.9", 8080, 1))
    p = pool(policy)
    d = decision(p, {"10.0.1.3": 50.0})  # healthy weight 30 < 40
    assert d.sorry and d.events == ("quorum_down",)
    out = adjust_service(service(), d, policy)
    assert weights(out) == {"10.0.1.1": 0, "10.0.1.2": 0, "10.0.1.3": 0, "10.0.9.9": 1}
    sorry = out.dests[DestKey(AF_INET, "10.0.9.9", 8080)]
    assert sorry.fwd == Forwarding.DR  # the virtual server's forwarding
    # hysteresis: 40 is not enough to come back (needs 45), 60 is
    p2 = Pool("web", (*p.members[:2], member("10.0.1.3", 80, 10, (TCP,))), policy)
    d2 = decision(p2, {"10.0.1.2": 60.0}, prev=d.state)
    assert d2.healthy_weight == 20 and d2.sorry
    d3 = decision(p, {}, prev=d.state)
    assert not d3.sorry and d3.events == ("quorum_up",)
    assert weights(adjust_service(service(), d3, policy)) == {
        "10.0.1.1": 10,
        "10.0.1.2": 20,
        "10.0.1.3": 30,
    }


def test_quorum_lost_under_remove_takes_the_others_out() -> None:
    policy = PoolPolicy(on_failure="remove", sorry_server=SorryServer("10.0.9.9", 80))
    p = pool(policy)
    d = decision(p, {"10.0.1.1": 1.0, "10.0.1.2": 1.0, "10.0.1.3": 1.0})
    assert weights(adjust_service(service(), d, policy)) == {"10.0.9.9": 1}


def test_the_floor_wins_over_the_sorry_server() -> None:
    policy = PoolPolicy(
        min_healthy=MinHealthy(1), quorum=1, sorry_server=SorryServer("10.0.9.9", 80)
    )
    p = pool(policy)
    d = decision(p, {"10.0.1.1": 1.0, "10.0.1.2": 2.0, "10.0.1.3": 3.0})
    assert d.held == (("10.0.1.3", 80),) and d.sorry
    assert weights(adjust_service(service(), d, policy)) == {
        "10.0.1.1": 0,
        "10.0.1.2": 0,
        "10.0.1.3": 30,
    }


def test_a_sorry_server_that_is_a_real_server_gets_the_sorry_weight() -> None:
    policy = PoolPolicy(quorum=100, sorry_server=SorryServer("10.0.1.1", 80, 5))
    p = pool(policy)
    out = adjust_service(service(), decision(p, {}), policy)
    assert weights(out) == {"10.0.1.1": 5, "10.0.1.2": 0, "10.0.1.3": 0}


def test_maintenance_is_weight_0_whatever_the_checks_and_policy_say() -> None:
    ds = service()
    table: DesiredTable = {
        ds.service.key: ds,
        **{service("other", 81).service.key: service("other", 81)},
    }
    maint = frozenset({("web", ("10.0.1.1", 80))})
    out = adjust_table(table, {}, {}, maint)
    assert weights(out[ds.service.key]) == {"10.0.1.1": 0, "10.0.1.2": 20, "10.0.1.3": 30}
    other = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.1", 81)
    assert out[other] is table[other]  # untouched services are shared, not copied
    p = pool(PoolPolicy(on_failure="remove"))
    d = decision(p, {"10.0.1.1": 5.0})
    assert weights(adjust_service(ds, d, p.policy, {("10.0.1.1", 80)}))["10.0.1.1"] == 0


def test_dynamic_weights_are_applied_as_given_never_accumulated() -> None:
    p = pool()
    health = {m.key: MemberHealth(True, None, m.weight) for m in p.members}
    health[("10.0.1.2", 80)] = MemberHealth(True, None, 7)  # an agent answered "35%"
    d = decide(p, health, PoolState(), 0.0)
    once = adjust_service(service(), d, p.policy)
    twice = adjust_service(once, d, p.policy)
    assert weights(once)["10.0.1.2"] == weights(twice)["10.0.1.2"] == 7
