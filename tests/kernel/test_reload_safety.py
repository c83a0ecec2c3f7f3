"""Reloads of a large table never cost the VIPs (real IPVS, real agents, one VM).

Two directors, each in its own namespace with its own IPVS table of 2,000 services
x 4 real servers, elect with VRRPv3 (one instance) and with the quorum lock (another
instance; a third namespace runs the witness). The timings are those of a director at
100 ms adverts and a 200 ms lease, scaled by ten for software emulation: measured in
this VM, two such agents at 100 ms / 200 ms change state and lose leases with no
reload at all (the loop wakes 100-400 ms late under emulation whatever it does).
The master is reloaded five times, each time with one weight changed, while full
reconciles run every few seconds. Throughout: no VRRP state change, no lease lost,
every weight in the kernel (ipvsadm), and no loop wake later than half the advert
interval (lvs_agent_event_loop_lag_seconds). The same counts over a quiet
window before the reloads are printed beside them.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.ipvs.kernel import IpvsKernel
from agent.ipvs.model import AF_INET, IPPROTO_TCP, DestKey, ServiceKey
from agent.lab import netns
from agent.lab.agents import METRICS_PORT, REPO, LabAgent, metric_values
from agent.lab.quorum import LOCK_PORT, write_key
from agent.lab.topology import Lab
from tests.kernel.conftest import ipvsadm

SERVICES = 2000
DESTS = 4
RELOADS = 5
ADVERT = 1.0  # seconds: the VRRP instance's advert interval (100 ms x 10)
LEASE = "2s"  # the quorum lease (200 ms x 10)
LAG_LIMIT = ADVERT / 2  # a backup takes over after ~3 missed adverts; half of one is the limit
QUIET = 10.0  # seconds of each quiet window
GAP = 8.0  # seconds between reloads (the full reconcile after each, and periodic ones)


def vip(i: int) -> str:
    return f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def rip(i: int, j: int) -> str:
    return f"172.{16 + j}.{i // 250 % 250}.{i % 250 + 1}"


def servers_text(weights: dict[tuple[int, int], int], services: int = SERVICES) -> str:
    out = ["virtual_servers:"]
    for i in range(services):
        out.append(
            f"  - name: vs{i}\n    address: {vip(i)}\n    port: 80\n    scheduler: wlc\n"
            "    real_servers:"
        )
        for j in range(DESTS):
            w = weights.get((i, j), 1)
            out.append(f"      - {{address: {rip(i, j)}, port: 8080, weight: {w}}}")
    return "\n".join(out) + "\n"


class Cluster:
    """d1 and d2 run the agent (d1 the better priority), d3 the witness."""

    def __init__(
        self,
        lab: Lab,
        work: Path,
        services: int = SERVICES,
        reconcile_interval: str = "10s",
        advert: float = ADVERT,
        lease: str = LEASE,
        per_real_server: str = "full",
        realtime_priority: int | None = None,
    ) -> None:
        self.lab, self.work = lab, work
        self.realtime_priority = realtime_priority  # node.realtime_priority of all three
        self.per_real_server = per_real_server
        self.services, self.reconcile_interval = services, reconcile_interval
        self.advert, self.lease = advert, lease
        self.key = write_key(work / "cluster.key")
        self.agents: dict[int, LabAgent] = {}

    def lock(self, i: int) -> dict[str, object]:
        return {
            "cluster": "reload",
            "listen": f"{self.lab.director_address(i)}:{LOCK_PORT}",
            "peers": {f"d{j}": f"{self.lab.director_address(j)}:{LOCK_PORT}" for j in (1, 2, 3)},
            "key_file": str(self.key),
            "lease": self.lease,
        }

    def config(self, i: int, weights: dict[tuple[int, int], int]) -> str:
        state = str(self.work / f"state-d{i}")
        node: dict[str, object] = {"name": f"d{i}"}
        if self.realtime_priority is not None:
            node["realtime_priority"] = self.realtime_priority
        if i == 3:
            doc: dict[str, object] = {
                "node": node,
                "metrics": {"listen": f"127.0.0.1:{METRICS_PORT}"},
                "state_dir": state,
                "lock": self.lock(i),
            }
            return yaml.safe_dump(doc, sort_keys=False)
        priority = 200 if i == 1 else 100
        doc = {
            "node": node,
            "metrics": {
                "listen": f"127.0.0.1:{METRICS_PORT}",
                "per_real_server": self.per_real_server,
            },
            "state_dir": state,
            "reconcile_interval": self.reconcile_interval,
            "lock": self.lock(i),
            "vrrp_instances": [
                {
                    "name": "adverts",
                    "interface": "eth0",
                    "vrid": 71,
                    "priority": priority,
                    "advert_interval": f"{self.advert:g}s",
                    "virtual_ips": ["192.0.2.171/32"],
                },
                {
                    "name": "quorum",
                    "interface": "eth0",
                    "vrid": 72,
                    "priority": priority,
                    "advert_interval": f"{self.advert:g}s",
                    "virtual_ips": ["192.0.2.172/32"],
                    "election": "quorum",
                },
            ],
        }
        return yaml.safe_dump(doc, sort_keys=False) + servers_text(weights, self.services)

    def start(self, i: int, weights: dict[tuple[int, int], int]) -> LabAgent:
        agent = LabAgent.__new__(LabAgent)
        host = self.lab.director(i)
        agent.lab, agent.host = self.lab, host
        agent.config = self.work / f"agent-d{i}.yaml"
        agent.log = self.work / f"agent-d{i}.log"
        agent.config.write_text(self.config(i, weights))
        command = "witness" if i == 3 else "run"
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", LVS_AGENT_CACHE_DIR="")
        argv = [sys.executable, "-m", "agent", command, "-c", str(agent.config)]
        agent.proc = self.lab.spawn(host, argv, agent.log, env)
        self.agents[i] = agent
        return agent


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Lab(forwarding="nat", directors=3, real_servers=1, vip_on_director=False) as lab:
        c = Cluster(lab, tmp_path)
        try:
            yield c
        finally:
            for agent in c.agents.values():
                agent.stop(timeout=60)


def scrape(agent: LabAgent) -> str:
    # Rendering every real server's counters takes seconds under emulation: scrape
    # only before and after, never in a polling loop (it would load the agent).
    text = agent.metrics(timeout=300)
    assert text is not None, agent.text()[-3000:]
    return text


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        v for have, v in metric_values(text, name).items() if set(labels.items()) <= set(have)
    )


def by_reason(before: str, after: str, name: str) -> dict[str, float]:
    """The growth of counter ``name`` between two scrapes, by its ``reason`` label."""
    grown: dict[str, float] = {}
    for when, sign in ((after, 1), (before, -1)):
        for have, v in metric_values(when, name).items():
            reason = dict(have).get("reason", "")
            grown[reason] = grown.get(reason, 0.0) + sign * v
    return {k: v for k, v in grown.items() if v}


def late_wakes(text: str, limit: float) -> float:
    """Wakes later than ``limit`` (a bucket bound) in the loop-lag histogram."""
    name = "lvs_agent_event_loop_lag_seconds"
    count = total(text, f"{name}_count")
    within = total(text, f"{name}_bucket", le=str(limit))
    return count - within


def weight_in_kernel(ns: str, i: int, j: int) -> int | None:
    """The weight ipvsadm shows for real server j of service i in ``ns``."""
    for line in ipvsadm(ns, "-L", "-n", "-t", f"{vip(i)}:80").splitlines():
        tok = line.split()
        if len(tok) >= 4 and tok[0] == "->" and tok[1] == f"{rip(i, j)}:8080":
            return int(tok[3])
    return None


def weight_read(kernel: IpvsKernel, i: int, j: int) -> int | None:
    """The same, read with one netlink request (polling ipvsadm, a process each time,
    would load the emulated machine more than the agents)."""
    key = ServiceKey(AF_INET, IPPROTO_TCP, vip(i), 80)
    svc = kernel.dump_services([key]).get(key)
    dest = None if svc is None else svc.dests.get(DestKey(AF_INET, rip(i, j), 8080))
    return None if dest is None else dest.dest.weight


def wait(what: str, check: object, timeout: float, agents: list[LabAgent]) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for a in agents:
            assert a.running(), f"an agent exited before {what}:\n{a.text()[-3000:]}"
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def window(before: dict[str, str], after: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per director: VRRP state changes, lease losses and late loop wakes between scrapes."""
    out = {}
    for name in before:
        b, a = before[name], after[name]
        out[name] = {
            "transitions": total(a, "lvs_agent_vrrp_transitions_total")
            - total(b, "lvs_agent_vrrp_transitions_total"),
            **{
                f"{inst}_{state}": total(
                    a, "lvs_agent_vrrp_transitions_total", instance=inst, state=state
                )
                - total(b, "lvs_agent_vrrp_transitions_total", instance=inst, state=state)
                for inst in ("adverts", "quorum")
                for state in ("init", "backup", "master", "fault")
            },
            # what the instances heard: a backup that takes over hears no master
            "adverts_received": total(a, "lvs_agent_vrrp_adverts_received_total")
            - total(b, "lvs_agent_vrrp_adverts_received_total"),
            "invalid_adverts": total(a, "lvs_agent_vrrp_invalid_packets_total")
            - total(b, "lvs_agent_vrrp_invalid_packets_total"),
            "adverts_sent": total(a, "lvs_agent_vrrp_adverts_sent_total", instance="adverts")
            - total(b, "lvs_agent_vrrp_adverts_sent_total", instance="adverts"),
            "socket_dropped": total(a, "lvs_agent_vrrp_socket_invalid_packets_total")
            - total(b, "lvs_agent_vrrp_socket_invalid_packets_total"),
            "lease_losses": total(a, "lvs_agent_lock_losses_total")
            - total(b, "lvs_agent_lock_losses_total"),
            "wakes": total(a, "lvs_agent_event_loop_lag_seconds_count")
            - total(b, "lvs_agent_event_loop_lag_seconds_count"),
            "late": late_wakes(a, LAG_LIMIT) - late_wakes(b, LAG_LIMIT),
            # why lock rounds failed: refused by a peer, timed out, or dropped unanswered
            "lock_refusals": by_reason(b, a, "lvs_agent_lock_refusals_total"),
            "lock_rejected": by_reason(b, a, "lvs_agent_lock_messages_rejected_total"),
        }
    return out


def story(logs: dict[str, str], keep: int = 40) -> str:
    """Each agent's last lock, VRRP and stall lines: why a lease went or a state changed."""
    marks = ("lock ", " -> ", "late", "stall", "held", "ERROR", "WARNING")
    parts = []
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if any(m in line for m in marks)]
        parts.append(f"--- {name} ({len(lines)} lines, the last {keep}):")
        parts += lines[-keep:]
    return "\n".join(parts)


def test_reloads_of_a_large_table_keep_vrrp_and_the_lease(cluster: Cluster) -> None:
    weights: dict[tuple[int, int], int] = {}
    witness = cluster.start(3, weights)
    d1 = cluster.start(1, weights)
    d2 = cluster.start(2, weights)
    agents = [d1, d2, witness]
    ns1 = cluster.lab.director(1).ns
    last = (SERVICES - 1, DESTS - 1)
    with netns.entered(ns1):
        kernel = IpvsKernel()

    def settled() -> bool:
        log = d1.text()
        return "adverts: BACKUP -> MASTER" in log and "quorum: BACKUP -> MASTER" in log

    wait("d1 to be master of both instances", settled, 600, agents)
    with netns.entered(cluster.lab.director(2).ns):
        kernel2 = IpvsKernel()
    wait("d2's table", lambda: weight_read(kernel2, *last) == 1, 600, agents)
    kernel2.close()
    time.sleep(QUIET)  # the configuration workers start; a few full reconciles
    start = {a.host.name: scrape(a) for a in (d1, d2)}
    time.sleep(QUIET)
    # The same machine without reloads: what it holds when nothing but the
    # periodic reconciles runs (software emulation on a shared host can miss
    # 100 ms adverts by itself; the failure message shows both).
    before = {a.host.name: scrape(a) for a in (d1, d2)}
    quiet = window(start, before)
    print(f"quiet window ({QUIET:g}s): {quiet}")

    for n in range(RELOADS):
        i, j = (SERVICES - 1 - 97 * n, n % DESTS)
        weights[(i, j)] = 10 + n
        d1.config.write_text(cluster.config(1, weights))
        d1.signal(signal.SIGHUP)
        took = wait(
            f"reload {n}: weight {10 + n}",
            lambda i=i, j=j, n=n: weight_read(kernel, i, j) == 10 + n,  # type: ignore[misc]
            300,
            agents,
        )
        assert weight_in_kernel(ns1, i, j) == 10 + n
        print(f"reload {n}: weight in the kernel {took:.2f}s after SIGHUP")
        time.sleep(GAP)  # the full reconcile after the reload, and a periodic one

    # ``lvs-agent status`` reads the table through the configuration worker: the last
    # reload's weight, from the kernel, for every configured service
    from agent.status import ask

    answer = ask(str(cluster.work / "state-d1"), {"command": "status"}, timeout=300)
    shown = {vs["name"]: vs for vs in answer["result"]["virtual_servers"]}  # type: ignore[index]
    assert len(shown) == SERVICES
    last_reload = next(
        rs for rs in shown[f"vs{i}"]["real_servers"] if rs["address"] == rip(i, j)
    )
    assert last_reload["kernel_weight"] == last_reload["configured_weight"] == 10 + n

    after = {a.host.name: scrape(a) for a in (d1, d2)}
    reloads = window(before, after)
    print(f"reload window: {reloads}")
    kernel.close()
    assert total(after["d1"], "lvs_agent_config_reloads_total", result="applied") == RELOADS
    assert total(after["d1"], "lvs_agent_reconcile_duration_seconds_count") > total(
        before["d1"], "lvs_agent_reconcile_duration_seconds_count"
    )
    logs = {a.host.name: a.text() for a in agents}
    for a in (d1, d2):  # the dumps are decoded in the configuration worker, not the daemon
        assert "full reconciles now run in the configuration worker" in logs[a.host.name]
        assert "reconciling in this process" not in logs[a.host.name]
    for name, found in reloads.items():
        what = (
            f"{name} during the reloads: {found}; without reloads: {quiet[name]}"
            f"\n{story(logs)}"
        )
        assert found["transitions"] == 0, f"VRRP state changes on {what}"
        assert found["lease_losses"] == 0, f"a lease lost on {what}"
        assert found["late"] == 0, f"loop wakes later than {LAG_LIMIT}s on {what}"
