"""What the VRRP netns tests share: instance configs and a ``Site`` that runs real
agents (``python -m agent run``) and keepalived on the lab's directors, and puts the
lab back (processes stopped, VIPs gone, links up) whatever the test did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.lab import netns
from agent.lab.addrwatch import AddressWatch
from agent.lab.agents import LabAgent, agent_config
from agent.lab.keepalived import Keepalived
from agent.lab.topology import Lab


def instance(
    vrid: int,
    vip: str,
    priority: int,
    interval: str = "200ms",
    *,
    name: str = "web",
    interface: str = "eth0",
    version: int = 3,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "interface": interface,
        "vrid": vrid,
        "version": version,
        "priority": priority,
        "advert_interval": interval,
        "virtual_ips": [vip],
        **extra,
    }


def address(vip: str) -> str:
    return vip.split("/")[0]


class Site:
    """Agents and keepalived started by one test, on the module's lab."""

    def __init__(self, lab: Lab, watch: AddressWatch, work: Path) -> None:
        self.lab = lab
        self.watch = watch
        self.work = work
        self.agents: list[LabAgent] = []
        self.keepaliveds: list[Keepalived] = []
        self.vips: set[str] = set()
        self.links_down: list[tuple[str, str]] = []  # (namespace, interface)
        self.isolated: list[int] = []  # directors whose front port is off the bridge
        self._count = 0

    def agent(
        self,
        i: int,
        instances: list[dict[str, Any]],
        groups: list[dict[str, Any]] | None = None,
    ) -> LabAgent:
        self._count += 1
        host = self.lab.director(i)
        for inst in instances:
            self.vips.update(inst["virtual_ips"])
        config = agent_config(
            host, self.work / f"state-{host.name}-{self._count}", instances, groups
        )
        agent = LabAgent(self.lab, host, config, self.work, tag=f"-{self._count}")
        self.agents.append(agent)
        return agent

    def keepalived(self, i: int, conf: str, vips: list[str]) -> Keepalived:
        self._count += 1
        self.vips.update(vips)
        ka = Keepalived(self.lab, self.lab.director(i), conf, self.work, tag=f"-{self._count}")
        self.keepaliveds.append(ka)
        return ka

    def link(self, ns: str, ifname: str, up: bool) -> None:
        netns.ip("link", "set", ifname, "up" if up else "down", netns=ns)
        if up:
            self.links_down = [x for x in self.links_down if x != (ns, ifname)]
        else:
            self.links_down.append((ns, ifname))

    def isolate(self, i: int, isolated: bool = True) -> None:
        """Take director ``i``'s front port off the bridge (its link stays up) or back."""
        port = f"d{i}-eth0"
        switch = self.lab.hosts["sw"].ns
        if isolated:
            netns.ip("link", "set", port, "nomaster", netns=switch)
            self.isolated.append(i)
        else:
            netns.ip("link", "set", port, "master", "front", netns=switch)
            self.isolated.remove(i)

    def holders(self, vip: str) -> list[str]:
        return self.lab.holders(address(vip))

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        for ka in self.keepaliveds:
            ka.close()
        for ns, ifname in list(self.links_down):
            self.link(ns, ifname, True)
        for i in list(self.isolated):
            self.isolate(i, False)
        for d in self.lab.director_list():
            for vip in self.vips:
                dev = "eth1" if vip.startswith("10.") else "eth0"
                netns.ip("addr", "del", vip, "dev", dev, netns=d.ns, check=False)
