"""The scheduler's bookkeeping without a loop: one state per check identity, reloads."""

from __future__ import annotations

from agent.health.config import Check, Pool, PoolPolicy, member
from agent.health.core import CheckState
from agent.health.scheduler import Histogram, Scheduler

HTTP = Check("http", path="/healthz")
TCP = Check("tcp")


def pools(ports: tuple[int, ...] = (80, 443), servers: int = 3) -> list[Pool]:
    # the same real servers behind several virtual servers, checked the same way
    return [
        Pool(
            f"vs{port}",
            tuple(member(f"10.0.1.{i}", 8080, 1, (HTTP, TCP)) for i in range(1, servers + 1)),
        )
        for port in ports
    ]


def test_identical_checks_run_once_and_feed_every_pool() -> None:
    s = Scheduler(pools((80, 443, 8443)))
    assert s.checks == 6  # 3 servers x 2 checks, not x 3 virtual servers
    key = s.pool("vs80").members[0].checks[0]  # type: ignore[union-attr]
    s._entries[key].state = CheckState(up=False, changed_at=1.0)
    s._changed(s._entries[key].pools, 2.0)
    for name in ("vs80", "vs443", "vs8443"):
        assert s.weight(name, ("10.0.1.1", 8080)) == 0
        assert s.weight(name, ("10.0.1.2", 8080)) == 1


def test_a_reload_keeps_the_state_of_unchanged_checks() -> None:
    s = Scheduler(pools((80,)))
    key = s.pool("vs80").members[0].checks[0]  # type: ignore[union-attr]
    down = CheckState(up=False, changed_at=1.0, probes=42)
    s._entries[key].state = down
    s.reload(pools((80, 443), servers=4))
    assert s.checks == 8
    assert s.states()[key] is down
    assert s.weight("vs443", ("10.0.1.1", 8080)) == 0  # the new pool reads the kept state
    assert s.weight("vs443", ("10.0.1.4", 8080)) == 1  # a new server starts up (initial)
    s.reload(pools((443,), servers=1))
    assert s.checks == 2
    assert s.decision("vs80") is None


def test_initial_down_when_a_pool_asks_for_it() -> None:
    p = Pool("vs", (member("10.0.1.1", 80, 5, (TCP,)),), PoolPolicy(initial="down"))
    s = Scheduler([p])
    assert s.weight("vs", ("10.0.1.1", 80)) == 0


def test_histogram_buckets() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.cumulative() == [2, 3, 4]
    assert h.n == 4


def test_a_timeout_during_a_loop_stall_is_inconclusive_up_to_fall_times() -> None:
    from agent.health.core import Result

    check = Check("http", fall=2)
    s = Scheduler([Pool("vs", (member("10.0.1.1", 80, 1, (check,)),))])
    (key,) = s.states()
    entry = s._entries[key]
    timeout = Result(False, "timeout", 1.0)
    s._stalled_at = 10.0  # the loop woke late at 10.0
    for _ in range(2):  # started before the stall: not counted, up to fall times
        s._in_flight += 1
        s._done(entry, 9.5, timeout)
        assert entry.state.streak == 0
    assert s.stats.inconclusive["http"] == 2
    for _ in range(2):  # then timeouts count again
        s._in_flight += 1
        s._done(entry, 9.5, timeout)
    assert not entry.state.up
    s._in_flight += 1
    s._done(entry, 10.5, Result(False, "refused"))  # not a timeout: always counted
    assert s.stats.inconclusive["http"] == 2


def test_the_collector_exports_health_weight_floor_and_quorum() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.health.config import MinHealthy
    from agent.health.metrics import HealthCollector

    p = Pool(
        "web",
        tuple(member(f"10.0.1.{i}", 80, 3, (TCP,)) for i in (1, 2)),
        PoolPolicy(min_healthy=MinHealthy(2)),
    )
    s = Scheduler([p])
    key = p.members[0].checks[0]
    s._entries[key].state = CheckState(up=False, changed_at=1.0)
    s._changed(["web"], 2.0)
    registry = CollectorRegistry()
    registry.register(HealthCollector(s))
    text = generate_latest(registry).decode()
    labels = 'remote_address="10.0.1.1",remote_port="80",virtual_server="web"'
    assert f"lvs_agent_health_real_server_up{{{labels}}} 0.0" in text
    assert f"lvs_agent_health_real_server_held{{{labels}}} 1.0" in text
    assert f"lvs_agent_health_real_server_effective_weight{{{labels}}} 3.0" in text
    assert 'lvs_agent_health_pool_floor_held{virtual_server="web"} 1.0' in text
    assert 'lvs_agent_health_pool_quorum_up{virtual_server="web"} 1.0' in text
    assert "lvs_agent_health_schedule_lateness_seconds_bucket" in text
