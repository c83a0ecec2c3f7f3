"""The daemon's health service: health changes become single edits, reconciles see them.

The scheduler is the real one with its probing left off (``start`` does nothing): the
tests set check states and let the scheduler decide, as a probe result would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import load_config
from agent.daemon.health import STALLED, HealthService, pools_for
from agent.health.config import Check, Pool, PoolPolicy, SorryServer, member
from agent.health.core import CheckState
from agent.health.metrics import HealthCollector
from agent.health.scheduler import Scheduler
from agent.ipvs.model import (
    AF_INET,
    IPPROTO_TCP,
    DesiredService,
    DesiredTable,
    Dest,
    DestKey,
    EditDest,
    Op,
    Service,
    ServiceKey,
)

TCP = Check("tcp")
SVC = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.1", 80)
OTHER = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.1", 81)


class QuietScheduler(Scheduler):
    """The scheduler without probes: states are set by the test."""

    def start(self) -> None:
        pass

    def fail(self, address: str, port: int = 80) -> None:
        self._set(address, port, CheckState(up=False, changed_at=1.0))

    def recover(self, address: str, port: int = 80) -> None:
        self._set(address, port, CheckState(up=True, changed_at=None))

    def _set(self, address: str, port: int, state: CheckState) -> None:
        for entry in self._entries.values():
            if entry.key.target.address == address and entry.key.target.port == port:
                entry.state = state
                self._changed(entry.pools, 2.0)


class FakeKernel:
    def __init__(self) -> None:
        self.applied: list[Op] = []
        self.fail = False

    async def apply_async(self, ops: Sequence[Op]) -> list[OSError | None]:
        self.applied.extend(ops)
        return [OSError(2, "No such file or directory") if self.fail else None for _ in ops]


def table() -> DesiredTable:
    out: DesiredTable = {}
    for key, name in ((SVC, "web"), (OTHER, "other")):
        dests = {
            DestKey(AF_INET, f"10.0.1.{i}", 80): Dest(DestKey(AF_INET, f"10.0.1.{i}", 80), 3, 10)
            for i in (1, 2)
        }
        out[key] = DesiredService(Service(key, "wrr"), dests, name)
    return out


def pools(policy: PoolPolicy | None = None) -> list[Pool]:
    return [
        Pool(
            "web",
            tuple(member(f"10.0.1.{i}", 80, 10, (TCP,)) for i in (1, 2)),
            policy or PoolPolicy(),
        )
    ]


class Harness:
    def __init__(self, policy: PoolPolicy | None = None) -> None:
        self.kernel = FakeKernel()
        self.partials: list[frozenset[ServiceKey]] = []
        self.collector = HealthCollector()
        self.errors: list[str] = []
        self.health = HealthService(
            self.kernel,
            self._partial,
            collector=self.collector,
            on_error=self.errors.append,
            scheduler_factory=QuietScheduler,
        )
        self.desired = table()
        self.health.configure(pools(policy), self.desired)
        # the first full reconcile programs the table
        self.health.begin(self.desired)
        self.health.end()

    async def _partial(self, keys: frozenset[ServiceKey]) -> None:
        self.partials.append(keys)
        self.health.begin(self.desired)
        self.health.end()

    @property
    def scheduler(self) -> QuietScheduler:
        s = self.health.scheduler
        assert isinstance(s, QuietScheduler)
        return s


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def weight(t: DesiredTable, key: ServiceKey, address: str) -> int | None:
    d = t[key].dests.get(DestKey(AF_INET, address, 80))
    return None if d is None else d.weight


def test_a_failure_is_one_edit_and_the_reconcile_table_agrees() -> None:
    async def main() -> None:
        h = Harness()
        assert h.collector.scheduler is h.health.scheduler
        h.scheduler.fail("10.0.1.2")
        await settle()
        assert h.kernel.applied == [EditDest(SVC, Dest(DestKey(AF_INET, "10.0.1.2", 80), 3, 0))]
        assert not h.partials
        t = h.health.table(h.desired)
        assert weight(t, SVC, "10.0.1.2") == 0 and weight(t, SVC, "10.0.1.1") == 10
        assert t[OTHER] is h.desired[OTHER]
        assert h.health.table(h.desired) is t  # nothing changed: the same table
        h.scheduler.recover("10.0.1.2")
        await settle()
        assert h.kernel.applied[-1] == EditDest(SVC, Dest(DestKey(AF_INET, "10.0.1.2", 80), 3, 10))
        assert len(h.kernel.applied) == 2

    asyncio.run(main())


def test_remove_and_the_sorry_server_go_through_a_partial_reconcile() -> None:
    async def main() -> None:
        h = Harness(PoolPolicy(on_failure="remove", sorry_server=SorryServer("10.0.9.9", 80)))
        h.scheduler.fail("10.0.1.1")
        await settle()
        assert h.partials == [frozenset({SVC})] and not h.kernel.applied
        assert weight(h.health.table(h.desired), SVC, "10.0.1.1") is None
        h.scheduler.fail("10.0.1.2")
        await settle()
        t = h.health.table(h.desired)
        assert h.partials[-1] == frozenset({SVC})
        assert weight(t, SVC, "10.0.9.9") == 1 and weight(t, SVC, "10.0.1.2") is None

    asyncio.run(main())


def test_a_change_during_a_reconcile_is_sent_again_after_it() -> None:
    async def main() -> None:
        h = Harness()
        running = h.health.begin(h.desired)  # a reconcile starts with everything up
        h.scheduler.fail("10.0.1.1")
        await settle()
        assert len(h.kernel.applied) == 1  # at once, not after the reconcile
        h.health.end()  # the reconcile may have written weight 10 back
        await settle()
        assert weight(running, SVC, "10.0.1.1") == 10
        assert h.kernel.applied == [
            EditDest(SVC, Dest(DestKey(AF_INET, "10.0.1.1", 80), 3, 0)),
            EditDest(SVC, Dest(DestKey(AF_INET, "10.0.1.1", 80), 3, 0)),
        ]

    asyncio.run(main())


def test_a_failed_edit_falls_back_to_a_partial_reconcile() -> None:
    async def main() -> None:
        h = Harness()
        h.kernel.fail = True
        h.scheduler.fail("10.0.1.1")
        await settle()
        assert h.partials == [frozenset({SVC})]
        assert h.errors == ["ipvs_operation"]

    asyncio.run(main())


def test_maintenance_drains_and_counts_out_of_the_pool() -> None:
    async def main() -> None:
        h = Harness()
        h.health.set_maintenance({("web", ("10.0.1.1", 80))})
        await settle()
        assert h.kernel.applied == [EditDest(SVC, Dest(DestKey(AF_INET, "10.0.1.1", 80), 3, 0))]
        d = h.scheduler.decision("web")
        assert d is not None and d.healthy_weight == 10
        h.health.set_maintenance(set())
        await settle()
        assert h.kernel.applied[-1].dest.weight == 10  # type: ignore[union-attr]

    asyncio.run(main())


def test_maintenance_without_checks_still_applies() -> None:
    h = HealthService(FakeKernel(), lambda keys: asyncio.sleep(0))
    desired = table()
    h.configure([], desired)
    assert h.scheduler is None
    assert h.table(desired) is desired
    h.set_maintenance({("other", ("10.0.1.2", 80))})
    assert weight(h.table(desired), OTHER, "10.0.1.2") == 0


def bare_pool(name: str, policy: PoolPolicy, count: int = 2) -> Pool:
    """A pool whose real servers have no checks."""
    return Pool(name, tuple(member(f"10.0.1.{i}", 80, 10, ()) for i in range(1, count + 1)), policy)


SORRY = SorryServer("10.0.9.9", 80)


def test_a_sorry_server_without_checks_serves_while_maintenance_takes_the_quorum() -> None:
    async def main() -> None:
        partials: list[frozenset[ServiceKey]] = []

        async def partial(keys: frozenset[ServiceKey]) -> None:
            partials.append(keys)

        h = HealthService(FakeKernel(), partial, scheduler_factory=QuietScheduler)
        desired = table()
        h.configure([bare_pool("web", PoolPolicy(quorum=20, sorry_server=SORRY))], desired)
        assert h.scheduler is not None and h.scheduler.checks == 0
        assert h.table(desired)[SVC] == desired[SVC]  # 20 >= 20: met, as configured
        h.set_maintenance({("web", ("10.0.1.1", 80))})  # 10 < 20: lost
        await settle()
        t = h.table(desired)
        assert weight(t, SVC, "10.0.9.9") == 1
        assert weight(t, SVC, "10.0.1.1") == 0 and weight(t, SVC, "10.0.1.2") == 0
        assert partials == [frozenset({SVC})]
        h.set_maintenance(set())
        await settle()
        assert h.table(desired)[SVC] == desired[SVC]

    asyncio.run(main())


def test_a_sorry_server_without_checks_serves_from_the_start_below_quorum_plus_hysteresis() -> (
    None
):
    h = HealthService(FakeKernel(), lambda keys: asyncio.sleep(0), scheduler_factory=QuietScheduler)
    desired = table()
    empty = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.1", 82)
    desired[empty] = DesiredService(Service(empty, "wrr"), {}, "empty")
    policy = PoolPolicy(quorum=20, hysteresis=5, sorry_server=SORRY)
    # 20 < 20 + 5 at start (keepalived's rule); no real servers at all: 0 < 1
    h.configure(
        [bare_pool("web", policy), bare_pool("empty", PoolPolicy(sorry_server=SORRY), 0)], desired
    )
    t = h.table(desired)
    assert weight(t, SVC, "10.0.9.9") == 1 and weight(t, SVC, "10.0.1.1") == 0
    assert weight(t, empty, "10.0.9.9") == 1 and len(t[empty].dests) == 1
    assert t[OTHER] is desired[OTHER]


def test_a_reload_keeps_check_state_and_dropping_checks_stops_the_scheduler() -> None:
    async def main() -> None:
        h = Harness()
        h.scheduler.fail("10.0.1.2")
        await settle()
        s = h.health.scheduler
        h.desired = table()
        h.health.configure(pools(), h.desired)
        assert h.health.scheduler is s
        assert weight(h.health.table(h.desired), SVC, "10.0.1.2") == 0
        h.health.configure([Pool("web", (member("10.0.1.1", 80, 10, ()),))], h.desired)
        assert h.health.scheduler is None and h.collector.scheduler is None
        assert h.health.table(h.desired) is h.desired

    asyncio.run(main())


def test_progress_says_when_checking_stalls() -> None:
    h = Harness()
    assert h.health.progress() == 0.0 and h.health.healthy()
    s = h.scheduler
    s._push(next(iter(s._entries.values())), 0.0)  # a check due at monotonic 0: long overdue
    assert h.health.progress() >= STALLED and not h.health.healthy()


def test_pools_for_builds_the_checked_and_quorum_watching_pools(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """\
node: {name: x}
state_dir: /nonexistent
virtual_servers:
  - {name: plain, address: 192.0.2.1, port: 80, protocol: tcp, scheduler: rr,
     real_servers: [{address: 10.0.1.1, port: 80}]}
  - name: checked
    address: 192.0.2.1
    port: 81
    protocol: tcp
    scheduler: rr
    real_servers:
      - {address: 10.0.1.1, port: 80, health_checks: [{type: tcp}]}
      - {address: 10.0.1.2, port: 80}
  - {name: sorry, address: 192.0.2.1, port: 82, protocol: tcp, scheduler: rr,
     sorry_server: {address: 10.0.9.9}, real_servers: []}
  - {name: notify, address: 192.0.2.1, port: 83, protocol: tcp, scheduler: rr,
     quorum_down: /bin/down, real_servers: [{address: 10.0.1.1, port: 80}]}
"""
    )
    pools = pools_for(load_config(str(path)))
    assert [p.name for p in pools] == ["checked", "sorry", "notify"]
    assert pools[1].members == () and pools[1].policy.sorry_server == SorryServer("10.0.9.9", 82)


class FakeRunner:
    """``run_status`` as the health service calls it, recording each command."""

    def __init__(self, status: int | None = 0, reason: str = "") -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.result = (status, reason)
        self.gate: asyncio.Event | None = None

    async def __call__(
        self, argv: list[str], timeout: float, env: dict[str, str] | None = None
    ) -> tuple[int | None, str]:
        assert env is not None and timeout > 0
        self.calls.append((argv, env))
        if self.gate is not None:
            await self.gate.wait()
        return self.result


QUORUM = PoolPolicy(quorum=20, quorum_up=("/bin/up", "x"), quorum_down=("/bin/down",))


def test_quorum_commands_run_once_per_real_change_with_the_service_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = FakeRunner()
    monkeypatch.setattr("agent.vrrp.command.run_status", runner)

    async def main() -> None:
        h = Harness(QUORUM)
        await settle()
        assert runner.calls == []  # quorum met at start: nothing
        h.scheduler.fail("10.0.1.2")
        await settle()
        h.scheduler.fail("10.0.1.1")  # still down: nothing more
        await settle()
        h.scheduler.recover("10.0.1.1")
        h.scheduler.recover("10.0.1.2")
        await settle()
        assert [argv for argv, _ in runner.calls] == [["/bin/down"], ["/bin/up", "x"]]
        env = runner.calls[0][1]
        assert env["LVS_VIRTUAL_SERVER"] == "web" and env["LVS_VIRTUAL_ADDRESS"] == "192.0.2.1"
        assert env["LVS_VIRTUAL_PORT"] == "80" and env["LVS_QUORUM_STATE"] == "down"
        assert env["LVS_HEALTHY_WEIGHT"] == "10" and env["LVS_QUORUM"] == "20"
        assert runner.calls[1][1]["LVS_QUORUM_STATE"] == "up"
        assert h.health.commands_run == 2 and not h.errors
        # a reload that keeps the pool runs nothing
        h.health.configure(pools(QUORUM), h.desired)
        await settle()
        assert len(runner.calls) == 2
        h.health.stop()

    asyncio.run(main())


def test_quorum_commands_of_a_pool_run_in_order_and_failures_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = FakeRunner(None, "No such file or directory")
    runner.gate = asyncio.Event()
    monkeypatch.setattr("agent.vrrp.command.run_status", runner)

    async def main() -> None:
        h = Harness(QUORUM)
        h.scheduler.fail("10.0.1.2")
        await settle()
        h.scheduler.recover("10.0.1.2")
        await settle()
        # the second waits for the first, which is still running; checking goes on
        assert [argv for argv, _ in runner.calls] == [["/bin/down"]]
        h.scheduler.fail("10.0.1.1")
        await settle()
        assert h.kernel.applied  # the kernel followed meanwhile
        assert runner.gate is not None
        runner.gate.set()
        await settle()
        assert [argv[0] for argv, _ in runner.calls] == ["/bin/down", "/bin/up", "/bin/down"]
        assert h.health.commands_failed == 3 and h.errors == ["quorum_command"] * 3
        h.health.stop()

    asyncio.run(main())


def test_quorum_down_at_start_only_with_a_sorry_server(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = FakeRunner()
    monkeypatch.setattr("agent.vrrp.command.run_status", runner)

    async def main() -> None:
        Harness(replace(QUORUM, quorum=30))
        await settle()
        assert runner.calls == []
        Harness(replace(QUORUM, quorum=30, sorry_server=SorryServer("10.0.9.9", 80)))
        await settle()
        assert [argv for argv, _ in runner.calls] == [["/bin/down"]]

    asyncio.run(main())


def test_quorum_commands_due_before_the_loop_runs_wait_for_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = FakeRunner()
    monkeypatch.setattr("agent.vrrp.command.run_status", runner)
    policy = replace(QUORUM, quorum=30, sorry_server=SorryServer("10.0.9.9", 80))
    health = HealthService(FakeKernel(), lambda keys: settle(), scheduler_factory=QuietScheduler)
    health.configure(pools(policy), table())  # no loop yet: the start's quorum_down waits

    async def main() -> None:
        health.start()
        await settle()
        assert [argv for argv, _ in runner.calls] == [["/bin/down"]]
        health.stop()

    asyncio.run(main())


def test_a_real_quorum_command_runs_with_its_environment(tmp_path: Path) -> None:
    marker = tmp_path / "down"
    script = f'echo "$LVS_VIRTUAL_SERVER $LVS_QUORUM_STATE $LVS_HEALTHY_WEIGHT" > {marker}'
    policy = replace(QUORUM, quorum_down=("/bin/sh", "-c", script))

    async def main() -> None:
        h = Harness(policy)
        h.scheduler.fail("10.0.1.2")
        for _ in range(200):  # bounded: 10 s
            if marker.exists() and h.health.commands_run:
                break
            await asyncio.sleep(0.05)
        assert marker.read_text() == "web down 10\n"
        assert h.health.commands_failed == 0
        h.health.stop()

    asyncio.run(main())
