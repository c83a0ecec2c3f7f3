"""agent.daemon.syncd: the sync daemons follow the holder; nothing changed, nothing sent."""

from __future__ import annotations

import asyncio
import errno
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.config import parse_config
from agent.config.model import Config
from agent.daemon.syncd import SyncDaemons
from agent.ipvs.model import IP_VS_STATE_BACKUP, IP_VS_STATE_MASTER, SyncDaemon
from agent.ipvs.netlink import NetlinkError
from agent.metrics import AgentMetrics
from agent.vrrp.machine import State

CONFIG = """
ipvs:
  sync: {instance: VI_1, interface: eth1}
vrrp_instances:
  - {name: VI_1, interface: eth0, vrid: 51, virtual_ips: [192.0.2.100/24]}
"""


@dataclass
class FakeKernel:
    daemons: dict[int, SyncDaemon] = field(default_factory=dict)
    requests: list[tuple[tuple[int, ...], tuple[SyncDaemon, ...]]] = field(default_factory=list)
    refuse_start: bool = False

    async def sync_daemons_async(self) -> dict[int, SyncDaemon]:
        # the kernel fills in the length it chose from the MTU
        return {s: SyncDaemon(s, d.interface, d.sync_id, d.max_len or 1472, d.group, d.port,
                              d.ttl) for s, d in self.daemons.items()}  # fmt: skip

    async def control_daemons_async(
        self, stop: Sequence[int] = (), start: Sequence[SyncDaemon] = ()
    ) -> list[NetlinkError | None]:
        self.requests.append((tuple(stop), tuple(start)))
        out: list[NetlinkError | None] = []
        for state in stop:
            out.append(None if self.daemons.pop(state, None) else NetlinkError(errno.ESRCH, "x"))
        for d in start:
            if self.refuse_start or d.state in self.daemons:
                out.append(
                    NetlinkError(errno.EEXIST if not self.refuse_start else errno.ENODEV, "x")
                )
            else:
                self.daemons[d.state] = d
                out.append(None)
        return out


class FakeVrrp:
    def __init__(self) -> None:
        self.state = State.BACKUP

    def states(self) -> dict[str, State]:
        return {"VI_1": self.state}


def make(config: Config, kernel: FakeKernel, vrrp: FakeVrrp | None) -> tuple[SyncDaemons, Any]:
    holder: dict[str, Any] = {"config": config}
    metrics = AgentMetrics()
    s = SyncDaemons(kernel, metrics, lambda: holder["config"], lambda: vrrp)  # type: ignore[arg-type]
    return s, holder


def running(metrics_text: bytes, role: str) -> bool:
    return f'lvs_agent_ipvs_sync_daemon_running{{role="{role}"}} 1.0' in metrics_text.decode()


def test_backup_always_master_while_holding_and_no_request_when_nothing_changed() -> None:
    config = parse_config(textwrap.dedent(CONFIG), "c.yaml")
    kernel, vrrp = FakeKernel(), FakeVrrp()
    s, holder = make(config, kernel, vrrp)

    async def scenario() -> None:
        await s.step()
        assert set(kernel.daemons) == {IP_VS_STATE_BACKUP}
        assert kernel.daemons[IP_VS_STATE_BACKUP].sync_id == 51
        vrrp.state = State.MASTER
        await s.step()
        assert set(kernel.daemons) == {IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP}
        assert running(s.metrics.exposition(), "master")
        sent = len(kernel.requests)
        await s.step()  # a kick with nothing changed (a reload keeping ipvs.sync)
        holder["config"] = parse_config(textwrap.dedent(CONFIG), "c.yaml")
        await s.step()
        assert len(kernel.requests) == sent
        vrrp.state = State.BACKUP
        await s.step()
        assert set(kernel.daemons) == {IP_VS_STATE_BACKUP}
        assert not running(s.metrics.exposition(), "master")

    asyncio.run(scenario())


def test_a_changed_setting_restarts_and_removing_the_section_stops_only_ours() -> None:
    config = parse_config(textwrap.dedent(CONFIG), "c.yaml")
    kernel, vrrp = FakeKernel(), FakeVrrp()
    s, holder = make(config, kernel, vrrp)

    async def scenario() -> None:
        await s.step()
        holder["config"] = parse_config(
            textwrap.dedent(CONFIG).replace("eth1}", "eth1, port: 9000}"), "c.yaml"
        )
        await s.step()
        assert kernel.daemons[IP_VS_STATE_BACKUP].port == 9000
        assert kernel.requests[-1][0] == (IP_VS_STATE_BACKUP,)
        holder["config"] = parse_config("vrrp_instances: []\n", "c.yaml")
        await s.step()
        assert kernel.daemons == {}

    asyncio.run(scenario())


def test_without_ipvs_sync_foreign_daemons_are_never_touched_nor_read() -> None:
    foreign = SyncDaemon(IP_VS_STATE_MASTER, "eth9", 3)
    kernel = FakeKernel({IP_VS_STATE_MASTER: foreign})
    s, _ = make(parse_config("vrrp_instances: []\n", "c.yaml"), kernel, None)
    asyncio.run(s.step())
    assert kernel.requests == [] and kernel.daemons == {IP_VS_STATE_MASTER: foreign}


def test_a_refused_start_is_counted_and_retried() -> None:
    kernel, vrrp = FakeKernel(refuse_start=True), FakeVrrp()
    s, _ = make(parse_config(textwrap.dedent(CONFIG), "c.yaml"), kernel, vrrp)
    asyncio.run(s.step())
    assert 'lvs_agent_errors_total{kind="sync_daemon"} 1.0' in s.metrics.exposition().decode()
    kernel.refuse_start = False
    asyncio.run(s.step())
    assert set(kernel.daemons) == {IP_VS_STATE_BACKUP}
