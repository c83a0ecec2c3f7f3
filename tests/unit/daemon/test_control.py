"""agent.daemon.control.Control over a stand-in agent: maint, failover, the snapshot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.config.model import RealServer, VirtualServer
from agent.daemon.control import Control
from agent.health.maint import MaintenanceStore, configured_servers

WEB = VirtualServer(
    name="web",
    family="ipv4",
    address="192.0.2.1",
    port=80,
    fwmark=0,
    protocol="tcp",
    scheduler="rr",
    real_servers=(RealServer("10.0.0.1", 80, weight=4),),
)


class Config:
    def __init__(self, state_dir: Path) -> None:
        self.virtual_servers = (WEB,)
        self.state_dir = str(state_dir)


class StandIn:
    def __init__(self, tmp_path: Path) -> None:
        self.config = Config(tmp_path)
        self.config_path = str(tmp_path / "c.yaml")
        self.started = 0.0
        self.last_dump = None
        self.kernel = None
        self.desired: dict[Any, Any] = {}
        self.vrrp = None
        self.lock = None
        self.maint = MaintenanceStore(tmp_path / "m.json", configured_servers([WEB]))
        self.changes = 0

    def health_scheduler(self) -> None:
        return None

    def maintenance_changed(self) -> None:
        self.changes += 1


def test_maint_through_control(tmp_path: Path) -> None:
    agent = StandIn(tmp_path)
    control = Control(agent)  # type: ignore[arg-type]
    on = asyncio.run(control.maint("web", "10.0.0.1:80", True))
    assert on == {
        "ok": True,
        "result": {"changed": True, "text": "web 10.0.0.1:80 now in maintenance"},
    }
    again = asyncio.run(control.maint("web", "10.0.0.1:80", True))
    assert again["result"]["text"] == "web 10.0.0.1:80 already in maintenance"  # type: ignore[index]
    assert agent.changes == 1  # only a change reaches the health overlay
    refused = asyncio.run(control.maint("web", "10.0.0.2:80", True))
    assert refused["ok"] is False and refused["code"] == "refused"
    bad = asyncio.run(control.maint("web", "nowhere", True))
    assert bad["ok"] is False and "not an IP address" in str(bad["error"])


def test_failover_without_vrrp_refused(tmp_path: Path) -> None:
    control = Control(StandIn(tmp_path))  # type: ignore[arg-type]
    answer = asyncio.run(control.failover("web"))
    assert answer == {"ok": False, "error": "no VRRP instances running", "code": "refused"}


def test_snapshot_without_kernel_vrrp_or_health(tmp_path: Path) -> None:
    agent = StandIn(tmp_path)
    agent.maint.set("web", ("10.0.0.1", 80), True)
    snap = Control(agent).snapshot()  # type: ignore[arg-type]
    assert snap["vrrp"] == [] and snap["lock"] is None and snap["health_checks"] is False
    assert snap["kernel"] == {"available": False, "age": None}
    assert snap["maintenance"] == [{"virtual_server": "web", "real_server": "10.0.0.1:80"}]
    assert snap["agent"]["state_dir"] == str(tmp_path)  # type: ignore[index]


def test_a_large_status_reads_through_the_worker_and_builds_its_view_off_the_loop(
    tmp_path: Path,
) -> None:
    import threading
    from dataclasses import replace

    from agent.daemon.control import SMALL_VIEW
    from agent.ipvs.desired import desired_table
    from tests.unit.ipvs.fake_kernel import FakeKernel

    servers = tuple(
        replace(WEB, name=f"vs{i}", address=f"192.0.2.{i % 250 + 1}", port=1000 + i)
        for i in range(SMALL_VIEW + 1)
    )
    desired = desired_table(servers)
    kernel = FakeKernel({})
    for key, svc in desired.items():
        from agent.ipvs.model import KernelDest, KernelService

        kernel.table[key] = KernelService(
            svc.service, {k: KernelDest(d) for k, d in svc.dests.items()}
        )
    threads: list[str] = []

    class Worker:
        def holds(self, base: object) -> bool:
            return base is servers

        async def dump(self, base: object) -> object:
            return kernel.dump()

    class Kernel:
        async def dump_services_async(self, keys: object) -> object:
            raise AssertionError("read in the daemon")

    async def offload(fn: Any) -> Any:
        def run() -> Any:
            threads.append(threading.current_thread().name)
            return fn()

        return await asyncio.to_thread(run)

    agent = StandIn(tmp_path)
    agent.config.virtual_servers = servers
    agent.desired = desired
    agent.kernel = Kernel()  # type: ignore[assignment]
    agent.worker = Worker()  # type: ignore[attr-defined]
    agent.offload = offload  # type: ignore[attr-defined]
    answer = asyncio.run(Control(agent).status())  # type: ignore[arg-type]
    view = answer["result"]["virtual_servers"]  # type: ignore[index]
    assert len(view) == SMALL_VIEW + 1
    assert {rs["kernel_weight"] for vs in view for rs in vs["real_servers"]} == {4}
    assert threads and threads[0] != threading.main_thread().name
    assert list(answer["result"]) == [  # type: ignore[call-overload]
        "agent",
        "vrrp",
        "lock",
        "kernel",
        "health_checks",
        "maintenance",
        "virtual_servers",
    ]
