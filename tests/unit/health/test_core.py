"""The pure health core on a fake clock: rise/fall, intervals, weights, floor, quorum, ramp."""

from __future__ import annotations

from agent.health.config import Check, MinHealthy, Pool, PoolPolicy, SorryServer, member
from agent.health.core import (
    CheckState,
    DynamicWeight,
    MemberHealth,
    PoolState,
    Result,
    agent_result,
    carry_over,
    decide,
    exec_result,
    initial_state,
    member_health,
    next_interval,
    observe,
    ramp,
)

OK = Result(True, "ok")
FAIL = Result(False, "refused")
CHECK = Check("tcp", interval=2.0, fast_interval=0.5, down_interval=10.0, rise=2, fall=3)


def run(state: CheckState, results: list[Result], start: float = 0.0) -> list[CheckState]:
    """Feed results one per second; the states after each."""
    out = []
    for i, r in enumerate(results):
        state = observe(state, CHECK, r, start + i)
        out.append(state)
    return out


def test_up_goes_down_after_fall_consecutive_failures() -> None:
    states = run(initial_state(True), [FAIL, FAIL, FAIL])
    assert [s.up for s in states] == [True, True, False]
    assert states[-1].changed_at == 2.0
    assert states[-1].streak == 0


def test_a_success_resets_the_failure_count() -> None:
    states = run(initial_state(True), [FAIL, FAIL, OK, FAIL, FAIL])
    assert all(s.up for s in states)
    assert states[-1].streak == 2


def test_down_comes_back_after_rise_consecutive_successes_not_one() -> None:
    # keepalived's retry brings a DOWN server back on one success; rise does not
    states = run(initial_state(False), [OK, FAIL, OK, OK])
    assert [s.up for s in states] == [False, False, False, True]


def test_intervals_fast_while_changing_down_while_down() -> None:
    s = initial_state(True)
    assert next_interval(s, CHECK) == 2.0
    s = observe(s, CHECK, FAIL, 0.0)
    assert next_interval(s, CHECK) == 0.5  # transitioning down
    s = observe(observe(s, CHECK, FAIL, 1.0), CHECK, FAIL, 2.0)
    assert not s.up
    assert next_interval(s, CHECK) == 10.0  # settled down
    s = observe(s, CHECK, OK, 3.0)
    assert next_interval(s, CHECK) == 0.5  # transitioning up
    s = observe(s, CHECK, OK, 4.0)
    assert s.up
    assert next_interval(s, CHECK) == 2.0


def test_unset_fast_and_down_intervals_are_the_interval() -> None:
    check = Check("tcp", interval=3.0)
    s = observe(initial_state(True), check, FAIL, 0.0)
    assert next_interval(s, check) == 3.0
    assert next_interval(initial_state(False), check) == 3.0


def test_exec_dynamic_weight_mapping() -> None:
    assert exec_result(0, dynamic=True) == Result(True, "exit 0")
    assert not exec_result(1, dynamic=True).ok
    r = exec_result(7, dynamic=True)
    assert r.ok
    assert r.weight == DynamicWeight(absolute=5)
    assert exec_result(2, dynamic=True).weight == DynamicWeight(absolute=0)
    assert exec_result(255, dynamic=True).weight == DynamicWeight(absolute=253)
    # without misc_dynamic every non-zero status fails
    assert not exec_result(7, dynamic=False).ok


def test_agent_answers() -> None:
    assert agent_result(b"75%").weight == DynamicWeight(percent=75)
    assert agent_result(b"75%").weight is not None
    assert agent_result(b"up 50%\r").weight == DynamicWeight(percent=50)
    assert agent_result(b"drain").weight == DynamicWeight(drain=True)
    assert agent_result(b"drain").ok
    assert not agent_result(b"down").ok
    assert not agent_result(b"stopped").ok
    maint = agent_result(b"maint")
    assert maint.ok
    assert maint.weight is not None and maint.weight.maint
    assert agent_result(b"ready").weight == DynamicWeight()
    assert not agent_result(b"hello").ok
    assert DynamicWeight(percent=75).apply(10) == 8  # rounded to nearest
    assert DynamicWeight(percent=150).apply(10) == 15


def test_dynamic_weight_is_the_last_answer_never_accumulated() -> None:
    # keepalived #2720: a timeout between answers made the weight grow
    m = member("10.0.0.1", 80, 10, (Check("exec", command=("/x",), dynamic_weight=True),))
    key = m.checks[0]
    s = initial_state(True)
    for status in (7, 7, 7):
        s = observe(s, key.check, exec_result(status, dynamic=True), 0.0)
    assert member_health(m, {key: s}).weight == 5
    s = observe(s, key.check, Result(False, "timeout"), 1.0)  # a failure below fall
    assert member_health(m, {key: s}).weight == 5
    s = observe(s, key.check, exec_result(3, dynamic=True), 2.0)
    assert member_health(m, {key: s}).weight == 1
    s = observe(s, key.check, exec_result(0, dynamic=True), 3.0)
    assert member_health(m, {key: s}).weight == 10


def test_agent_maint_takes_the_server_out_at_once_and_ready_brings_it_back() -> None:
    m = member("10.0.0.1", 80, 10, (Check("agent", connect_port=9999),))
    key = m.checks[0]
    s = observe(initial_state(True), key.check, agent_result(b"maint"), 0.0)
    h = member_health(m, {key: s})
    assert not h.up and h.maint
    s = observe(s, key.check, agent_result(b"ready"), 1.0)
    assert member_health(m, {key: s}).up


def test_healthy_only_when_every_check_passes() -> None:
    m = member("10.0.0.1", 80, 10, (Check("tcp"), Check("http", path="/healthz")))
    tcp, http = m.checks
    down = CheckState(up=False, changed_at=5.0, last=Result(False, "status 503"))
    h = member_health(m, {tcp: initial_state(True), http: down})
    assert not h.up
    assert h.reason == "http: status 503"
    assert h.since == 5.0
    assert member_health(m, {tcp: initial_state(True), http: initial_state(True)}).up


def pool(n: int, policy: PoolPolicy, weight: int = 10) -> Pool:
    return Pool(
        "vs", tuple(member(f"10.0.0.{i}", 80, weight, (CHECK,)) for i in range(1, n + 1)), policy
    )


def health(p: Pool, down: dict[int, float | None]) -> dict[tuple[str, int], MemberHealth]:
    """Members by index down since the given time (None: from start); the others up."""
    out = {}
    for i, m in enumerate(p.members):
        if i in down:
            out[m.key] = MemberHealth(False, down[i], m.weight, reason="refused")
        else:
            out[m.key] = MemberHealth(True, None, m.weight)
    return out


def test_on_failure_drain_and_remove() -> None:
    p = pool(3, PoolPolicy())
    d = decide(p, health(p, {1: 1.0}), PoolState(), 2.0)
    assert d.weights == {("10.0.0.1", 80): 10, ("10.0.0.2", 80): 0, ("10.0.0.3", 80): 10}
    p = pool(3, PoolPolicy(on_failure="remove"))
    d = decide(p, health(p, {1: 1.0}), PoolState(), 2.0)
    assert d.weights[("10.0.0.2", 80)] is None


def test_floor_holds_the_last_to_fail_and_releases_on_recovery() -> None:
    p = pool(4, PoolPolicy(min_healthy=MinHealthy(50, percent=True)))
    # three down: 0 first, then 2, then 3; the floor is 2 so one failing server is held,
    # the one that failed last
    d = decide(p, health(p, {0: 1.0, 2: 2.0, 3: 3.0}), PoolState(), 4.0)
    assert d.floor == 2
    assert d.held == (("10.0.0.4", 80),)
    assert d.weights[("10.0.0.4", 80)] == 10
    assert d.weights[("10.0.0.1", 80)] == 0
    assert d.events == ("floor_held",)
    d2 = decide(p, health(p, {0: 1.0, 2: 2.0, 3: 3.0}), d.state, 5.0)
    assert d2.events == ()  # reported once
    d3 = decide(p, health(p, {0: 1.0, 2: 2.0}), d2.state, 6.0)
    assert d3.held == ()
    assert d3.events == ("floor_released",)


def test_floor_when_every_check_fails_keeps_the_floor_in() -> None:
    # the director's own link is cut: everything fails at once
    p = pool(3, PoolPolicy(min_healthy=MinHealthy(2)))
    d = decide(p, health(p, {0: 1.0, 1: 1.0, 2: 1.0}), PoolState(), 2.0)
    assert d.held == (("10.0.0.1", 80), ("10.0.0.2", 80))
    assert sum(1 for w in d.weights.values() if w) == 2
    assert d.healthy_weight == 0  # held servers are not healthy weight


def test_floor_percent_rounds_up_and_never_exceeds_the_pool() -> None:
    assert MinHealthy(50, percent=True).floor(3) == 2
    assert MinHealthy(10).floor(3) == 3
    assert MinHealthy(0, percent=True).floor(5) == 0


def test_quorum_with_hysteresis_and_sorry_server() -> None:
    policy = PoolPolicy(quorum=25, hysteresis=5, sorry_server=SorryServer("10.0.9.9", 80))
    p = pool(4, policy)  # 4 x 10
    d = decide(p, health(p, {}), PoolState(), 0.0)
    assert d.quorum_up and not d.sorry and d.events == ()
    d = decide(p, health(p, {0: 1.0, 1: 1.0}), d.state, 1.0)  # 20 >= 25 - 5
    assert d.quorum_up
    d = decide(p, health(p, {0: 1.0, 1: 1.0, 2: 2.0}), d.state, 2.0)  # 10 < 20
    assert not d.quorum_up and d.sorry and d.events == ("quorum_down",)
    d = decide(p, health(p, {0: 1.0, 1: 1.0}), d.state, 3.0)  # 20 < 25 + 5
    assert not d.quorum_up and d.events == ()
    d = decide(p, health(p, {}), d.state, 4.0)  # 40 >= 30
    assert d.quorum_up and d.events == ("quorum_up",)
    assert not d.sorry


def test_quorum_lost_at_start_is_an_event() -> None:
    p = pool(2, PoolPolicy(quorum=1))
    d = decide(p, health(p, {0: None, 1: None}), PoolState(), 0.0)
    assert d.events == ("quorum_down",)
    assert not d.sorry  # no sorry server configured


def test_quorum_at_start_needs_quorum_plus_hysteresis_as_keepalived() -> None:
    # keepalived's set_quorum_states: at start the quorum is met only at quorum + hysteresis
    policy = PoolPolicy(quorum=25, hysteresis=5, sorry_server=SorryServer("10.0.9.9", 80))
    p = pool(4, policy)  # 4 x 10
    d = decide(p, health(p, {0: None, 1: None}), PoolState(), 0.0)  # 20: >= 25 - 5, < 25 + 5
    assert not d.quorum_up and d.sorry and d.events == ("quorum_down",)
    d = decide(p, health(p, {0: None}), d.state, 1.0)  # 30 = 25 + 5: regained
    assert d.quorum_up and not d.sorry and d.events == ("quorum_up",)
    d = decide(p, health(p, {0: None, 1: 2.0}), d.state, 2.0)  # 20 = 25 - 5: kept
    assert d.quorum_up and d.events == ()
    d = decide(p, health(p, {0: None}), PoolState(), 3.0)  # 30 at start: met
    assert d.quorum_up and d.events == ()
    # a pool new on a reload starts the same way
    d = decide(p, health(p, {0: None, 1: None, 2: None}), PoolState(), 4.0)
    assert not d.quorum_up and d.events == ("quorum_down",)


def test_zero_real_servers_get_the_sorry_server() -> None:
    # keepalived programs the sorry server of a virtual server with no real servers
    p = Pool("vs", (), PoolPolicy(sorry_server=SorryServer("10.0.9.9", 80)))
    d = decide(p, {}, PoolState(), 0.0)
    assert not d.quorum_up and d.sorry and d.healthy_weight == 0


def test_slow_start_ramps_linearly_from_recovery() -> None:
    assert ramp(100, None, 30.0, 5.0) == (100, None)  # up since start: no ramp
    assert ramp(100, 0.0, 30.0, 0.0) == (1, 1.0)  # one change a second at most
    assert ramp(100, 0.0, 30.0, 15.0) == (50, 16.0)
    assert ramp(100, 0.0, 30.0, 29.5) == (99, 30.0)
    assert ramp(100, 0.0, 30.0, 30.0) == (100, None)
    w, nxt = ramp(10, 0.0, 30.0, 4.0)
    assert w == 2 and nxt == 6.0
    p = pool(2, PoolPolicy(slow_start=30.0), weight=100)
    h = health(p, {})
    h[p.members[0].key] = MemberHealth(True, 10.0, 100)
    d = decide(p, h, PoolState(), 25.0)
    assert d.weights[p.members[0].key] == 50
    assert d.weights[p.members[1].key] == 100
    assert d.next_change == 26.0


def test_state_carried_over_a_reload_by_identity() -> None:
    a = member("10.0.0.1", 80, 1, (Check("tcp"),)).checks[0]
    b = member("10.0.0.2", 80, 1, (Check("tcp"),)).checks[0]
    changed = member("10.0.0.1", 80, 1, (Check("tcp", rise=5),)).checks[0]
    down = CheckState(up=False, changed_at=3.0, probes=7)
    new = carry_over({a: down, b: initial_state(True)}, [(a, True), (changed, False)])
    assert new[a] is down  # unchanged identity: same state, counters included
    assert new[changed] == initial_state(False)  # a changed check starts afresh
    assert b not in new


def test_identical_checks_share_one_identity() -> None:
    # the same backend behind two VIPs (ports 80 and 443) with the same check
    a = member("10.0.0.1", 8080, 1, (Check("http", path="/healthz"),)).checks[0]
    b = member("10.0.0.1", 8080, 5, (Check("http", path="/healthz"),)).checks[0]
    assert a == b and hash(a) == hash(b)
    c = member("10.0.0.1", 8443, 1, (Check("tcp", connect_port=8080),)).checks[0]
    d = member("10.0.0.1", 8080, 1, (Check("tcp"),)).checks[0]
    assert c == d  # connect_port resolved into the target: one probe
