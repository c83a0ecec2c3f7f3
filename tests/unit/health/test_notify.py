"""When quorum_up/quorum_down run (keepalived's rules) and the environment they get: pure."""

from __future__ import annotations

from agent.health.config import Check, Pool, PoolPolicy, SorryServer, member
from agent.health.core import MemberHealth, PoolState, decide
from agent.health.notify import quorum_command, quorum_env, quorum_event
from agent.ipvs.model import AF_INET, IPPROTO_UDP, ServiceKey

UP = ("/bin/up", "a b")
DOWN = ("/bin/down",)


def pool(**policy: object) -> Pool:
    members = tuple(member(f"10.0.1.{i}", 80, 10, (Check("tcp"),)) for i in (1, 2, 3))
    return Pool("web", members, PoolPolicy(quorum_up=UP, quorum_down=DOWN, **policy))  # type: ignore[arg-type]


def healthy(n: int) -> dict[tuple[str, int], MemberHealth]:
    return {(f"10.0.1.{i}", 80): MemberHealth(i <= n, 1.0, 10) for i in (1, 2, 3)}


def walk(p: Pool, counts: list[int]) -> list[str | None]:
    """The event due after each decision, healthy member counts in order, from start."""
    prev = PoolState()
    out: list[str | None] = []
    for n in counts:
        d = decide(p, healthy(n), prev, 0.0)
        out.append(quorum_event(p, prev, d))
        prev = d.state
    return out


def test_nothing_at_start_with_the_quorum_met_then_each_real_change_once() -> None:
    p = pool(quorum=20)
    assert walk(p, [3, 2, 1, 1, 0, 2, 3, 1]) == [
        None,
        None,
        "quorum_down",
        None,
        None,
        "quorum_up",
        None,
        "quorum_down",
    ]


def test_hysteresis_moves_both_edges() -> None:
    p = pool(quorum=20, hysteresis=10)  # lost below 10, regained at 30
    assert walk(p, [3, 1, 0, 1, 2, 3, 2, 1, 0]) == [
        None,
        None,
        "quorum_down",
        None,
        None,
        "quorum_up",
        None,
        None,
        "quorum_down",
    ]


def test_at_start_below_quorum_quorum_down_runs_only_with_a_sorry_server() -> None:
    assert walk(pool(quorum=40), [3, 3]) == [None, None]
    sorry = SorryServer("10.0.9.9", 80)
    assert walk(pool(quorum=40, sorry_server=sorry), [3]) == ["quorum_down"]
    # (keepalived) without a sorry server the first gain of the quorum still runs quorum_up
    assert walk(pool(quorum=20), [1, 2]) == [None, "quorum_up"]


def test_a_reload_that_keeps_the_state_runs_nothing() -> None:
    p = pool(quorum=20)
    d = decide(p, healthy(1), PoolState(quorum_up=False), 0.0)
    assert quorum_event(p, PoolState(quorum_up=False), d) is None
    assert quorum_command(p, "quorum_up") == UP and quorum_command(p, "quorum_down") == DOWN


def test_the_environment_names_the_service_and_the_numbers() -> None:
    p = pool(quorum=20, hysteresis=5)
    d = decide(p, healthy(1), PoolState(quorum_up=True), 0.0)
    env = quorum_env(p, d, ServiceKey(AF_INET, IPPROTO_UDP, "192.0.2.1", 53))
    assert env == {
        "LVS_VIRTUAL_SERVER": "web",
        "LVS_VIRTUAL_ADDRESS": "192.0.2.1",
        "LVS_VIRTUAL_PORT": "53",
        "LVS_VIRTUAL_PROTOCOL": "udp",
        "LVS_VIRTUAL_FWMARK": "",
        "LVS_QUORUM_STATE": "down",
        "LVS_QUORUM": "20",
        "LVS_HYSTERESIS": "5",
        "LVS_HEALTHY_WEIGHT": "10",
    }
    fwmark = quorum_env(p, d, ServiceKey(AF_INET, 0, "", 0, 7))
    assert fwmark["LVS_VIRTUAL_FWMARK"] == "7" and fwmark["LVS_VIRTUAL_ADDRESS"] == ""
    assert quorum_env(p, d, None)["LVS_VIRTUAL_SERVER"] == "web"
