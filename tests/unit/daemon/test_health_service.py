"""The daemon's health service: health changes become single edits, reconciles see them.

The scheduler is the real one with its probing left off (``start`` does nothing): the
tests set check states and let the scheduler decide, as a probe result would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

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


def test_pools_for_builds_only_the_virtual_servers_with_checks(tmp_path: Path) -> None:
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
"""
    )
    assert [p.name for p in pools_for(load_config(str(path)))] == ["checked"]
