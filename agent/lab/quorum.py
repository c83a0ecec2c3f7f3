"""Quorum-election sites in the lab: agents with ``election: quorum``, a witness, faults.

Lab, test and benchmark scaffolding for the lock (tests/netns/lock, bench/lock_failover).
Directors ``d1..dN`` of a ``Lab`` run ``lvs-agent run`` with one VRRP instance under
quorum election; optionally one director namespace runs ``lvs-agent witness`` instead.
The lock talks UDP on the front LAN (``192.0.2.x:6741``).

Faults, all on processes and namespaces this module started: ``kill`` (SIGKILL),
``restart``, ``pause``/``resume`` (SIGSTOP/SIGCONT), ``partition`` (nftables in the
node's namespace dropping lock traffic, both ways or inbound only) and ``heal``.
Every fault is recorded with ``time.monotonic()`` so that ``check`` can line it up with
the address events of ``AddressWatch`` (all namespaces share CLOCK_MONOTONIC).

``check`` answers the two questions of the nemesis tests: was there any instant with
two VIP holders among nodes whose agent was running (a failure), and how long did a
killed or paused node's leftover VIP overlap a new holder (the residual overlap that
the kernel's address lifetime bounds). It also reports availability: the share of
time with exactly one holder while a majority of members was up and connected.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.config.duration import parse_duration
from agent.lab import netns
from agent.lab.addrwatch import AddressEvent, AddressWatch
from agent.lab.agents import METRICS_PORT, REPO, LabAgent, agent_config
from agent.lab.topology import Lab

LOCK_PORT = 6741
VIP = "192.0.2.100/24"
VRID = 61
NFT_TABLE = "lvsnemesis"


def write_key(path: Path) -> Path:
    """A fresh shared key (id 1, 32 random bytes), mode 600."""
    path.write_text(f"1 {secrets.token_hex(32)}\n")
    os.chmod(path, 0o600)
    return path


def node_name(i: int) -> str:
    return f"d{i}"


@dataclass
class Fault:
    kind: str  # kill | pause | partition | oneway | stop
    node: str
    start: float
    end: float = float("inf")  # when the node was back (restarted, resumed, healed)


@dataclass
class Report:
    """What ``QuorumSite.check`` found, over [start, end]."""

    double: list[tuple[float, float, frozenset[str]]]  # two running holders: failures
    residual: list[tuple[float, float, frozenset[str]]]  # overlaps with a faulted node
    availability: float  # holder time / time with a majority up and connected
    majority_time: float
    holder_time: float
    faults: int

    @property
    def residual_max(self) -> float:
        return max((b - a for a, b, _ in self.residual), default=0.0)

    def summary(self) -> str:
        return (
            f"{self.faults} faults; double-holder instants: {len(self.double)}; "
            f"residual overlaps: {len(self.residual)} (max {self.residual_max * 1000:.0f} ms); "
            f"availability {self.availability * 100:.1f}% of {self.majority_time:.1f} s "
            "with a majority connected"
        )


@dataclass
class QuorumSite:
    """Quorum-elected agents on ``lab``'s directors; ``witness``: which one is a witness."""

    lab: Lab
    watch: AddressWatch
    work: Path
    lease: str = "1s"
    witness: int | None = None
    priorities: dict[int, int] = field(default_factory=dict)
    interval: str = "100ms"
    preempt: bool = True
    agents: dict[str, LabAgent] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    partitioned: set[str] = field(default_factory=set)
    key: Path | None = None
    _starts: int = 0

    # ---- configuration

    @property
    def members(self) -> list[str]:
        return [node_name(i) for i in range(1, self.lab.directors + 1)]

    @property
    def directors(self) -> list[str]:
        return [n for n in self.members if n != self._witness_name]

    @property
    def _witness_name(self) -> str | None:
        return node_name(self.witness) if self.witness is not None else None

    def lock_section(self, i: int) -> dict[str, Any]:
        assert self.key is not None
        return {
            "cluster": "lab",
            "listen": f"{self.lab.director_address(i)}:{LOCK_PORT}",
            "peers": {
                node_name(j): f"{self.lab.director_address(j)}:{LOCK_PORT}"
                for j in range(1, self.lab.directors + 1)
            },
            "key_file": str(self.key),
            "lease": self.lease,
        }

    def config(self, i: int) -> str:
        host = self.lab.director(i)
        state = self.work / f"state-{host.name}"
        if node_name(i) == self._witness_name:
            doc = {
                "metrics": {"listen": f"127.0.0.1:{METRICS_PORT}"},
                "state_dir": str(state),
                "lock": self.lock_section(i),
            }
            return yaml.safe_dump(doc, sort_keys=False)
        inst = {
            "name": "web",
            "interface": "eth0",
            "vrid": VRID,
            "priority": self.priorities.get(i, 100),
            "advert_interval": self.interval,
            "preempt": self.preempt,
            "virtual_ips": [VIP],
            "election": "quorum",
            # every state change, with the term, appended to notify-dN.log
            "notify": f"sh -c 'echo \"$*\" >> {self.work}/notify-{host.name}.log' notify",
        }
        return agent_config(host, state, [inst], lock=self.lock_section(i))

    # ---- processes

    def start(self, names: Iterable[str] | None = None) -> None:
        if self.key is None:
            self.key = write_key(self.work / "cluster.key")
        for name in names if names is not None else self.members:
            self._start(name)

    def _start(self, name: str) -> LabAgent:
        i = int(name[1:])
        self._starts += 1
        host = self.lab.director(i)
        agent = LabAgent.__new__(LabAgent)
        agent.lab, agent.host = self.lab, host
        label = f"{host.name}-{self._starts}"
        agent.config = self.work / f"agent-{label}.yaml"
        agent.log = self.work / f"agent-{label}.log"
        agent.config.write_text(self.config(i))
        command = "witness" if name == self._witness_name else "run"
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "agent", command, "-c", str(agent.config)]
        agent.proc = self.lab.spawn(host, argv, agent.log, env)
        self.agents[name] = agent
        return agent

    def running(self, name: str) -> bool:
        agent = self.agents.get(name)
        return agent is not None and agent.running()

    # ---- who holds the VIP

    def holders(self) -> list[str]:
        have = self.lab.holders(VIP.split("/")[0])
        return [n for n in self.directors if n in have]

    def ns(self, name: str) -> str:
        return self.lab.director(int(name[1:])).ns

    def wait_holder(self, timeout: float, exclude: Iterable[str] = ()) -> str | None:
        """The one node holding the VIP (not in ``exclude``), polled from the kernel."""
        deadline = time.monotonic() + timeout
        skip = set(exclude)
        while time.monotonic() < deadline:
            held = [h for h in self.holders() if h not in skip]
            if len(held) == 1:
                return held[0]
            time.sleep(0.02)
        return None

    def vip_added(
        self, after: float, timeout: float, exclude: str | None = None
    ) -> AddressEvent | None:
        vip = VIP.split("/")[0]
        return self.watch.wait_for(
            lambda e: e.added and e.address == vip and e.node != exclude, timeout, after
        )

    # ---- faults

    def kill(self, name: str) -> float:
        agent = self.agents[name]
        at = time.monotonic()
        agent.signal(signal.SIGKILL)
        agent.proc.wait(timeout=10)
        self.faults.append(Fault("kill", name, at))
        return at

    def restart(self, name: str) -> None:
        self._end("kill", name)
        self._end("stop", name)
        self._start(name)

    def terminate(self, name: str) -> float:
        """SIGTERM (planned): not a fault; the node's leases are released."""
        agent = self.agents[name]
        at = time.monotonic()
        agent.signal(signal.SIGTERM)
        self.faults.append(Fault("stop", name, at))
        return at

    def wait_stopped(self, name: str, timeout: float = 20) -> None:
        self.lab.stop(self.agents[name].proc, signal.SIGTERM, timeout)

    def pause(self, name: str) -> float:
        at = time.monotonic()
        os.kill(self.agents[name].pid, signal.SIGSTOP)
        self.faults.append(Fault("pause", name, at))
        return at

    def resume(self, name: str) -> None:
        os.kill(self.agents[name].pid, signal.SIGCONT)
        self._end("pause", name)

    def partition(self, name: str, oneway: bool = False) -> float:
        """Drop the node's lock traffic: both ways, or (``oneway``) only what it receives."""

        def chain(name: str, hook: str) -> str:
            return (
                f" chain {name} {{\n  type filter hook {hook} priority 0; policy accept;\n"
                f"  udp dport {LOCK_PORT} drop\n }}\n"
            )

        chains = chain("lockin", "input") + ("" if oneway else chain("lockout", "output"))
        rules = f"table inet {NFT_TABLE} {{\n{chains}}}\n"
        at = time.monotonic()
        self._nft(name, rules)
        self.partitioned.add(name)
        self.faults.append(Fault("oneway" if oneway else "partition", name, at))
        return at

    def heal(self, name: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.ns(name), "nft", "delete", "table", "inet", NFT_TABLE],
            capture_output=True,
            check=False,
        )
        self.partitioned.discard(name)
        self._end("partition", name)
        self._end("oneway", name)

    def _nft(self, name: str, rules: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.ns(name), "nft", "-f", "-"],
            input=rules.encode(),
            capture_output=True,
            check=True,
        )

    def _end(self, kind: str, name: str) -> None:
        now = time.monotonic()
        for f in self.faults:
            if f.kind == kind and f.node == name and f.end == float("inf"):
                f.end = now

    def close(self) -> None:
        for name in list(self.partitioned):
            self.heal(name)
        for agent in self.agents.values():
            if agent.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent.pid, signal.SIGCONT)
                agent.stop()
        vip = VIP
        for d in self.lab.director_list():
            netns.ip("addr", "del", vip, "dev", "eth0", netns=d.ns, check=False)

    # ---- the checker

    def check(self, start: float, end: float, grace: float = 0.5) -> Report:
        """Double holders, residual overlaps and availability over [start, end].

        A *paused* node is excused while paused and until ``grace`` seconds after it
        resumed (its agent first has to run), and the VIP it held when the pause began
        until that VIP is gone (the fence child deletes it at the hold end; the kernel
        lifetime, at most ceil(lease) + 0.5 s after the pause, is the backstop): its
        leftover VIP overlapping a new holder is residual overlap, measured, not a
        failure (a process that is not scheduled cannot withdraw anything itself). A
        *killed* node is not excused: its fence child deletes its VIPs at once, so a
        killed holder's VIP overlapping a new holder counts as a double holder.
        """
        vip = VIP.split("/")[0]
        events = [e for e in self.watch.snapshot() if e.address == vip and e.node in self.directors]
        excused: dict[str, list[tuple[float, float]]] = {}
        down: dict[str, list[tuple[float, float]]] = {}
        fence = math.ceil(parse_duration(self.lease)) + 0.5
        for f in self.faults:
            if f.kind == "pause":
                back = min(f.end + grace, end) if f.end != float("inf") else end
                # The VIP the node held when it froze stays in its kernel until the fence
                # child deletes it at the hold end (or the address lifetime runs out):
                # that leftover is residual overlap too, for at most the lifetime
                # (ceil(lease) s) plus the kernel's rounding of its expiry work.
                if _held_at(events, f.node, f.start):
                    gone = next(
                        (e.at for e in sorted(events, key=lambda e: e.at)
                         if e.node == f.node and not e.added and e.at >= f.start),
                        end,
                    )  # fmt: skip
                    back = max(back, min(gone, f.start + fence, end))
                excused.setdefault(f.node, []).append((f.start, back))
            down.setdefault(f.node, []).append((f.start, min(f.end, end)))
        points = sorted(
            {start, end, *(e.at for e in events if start <= e.at <= end)}
            | {
                t
                for spans in list(excused.values()) + list(down.values())
                for span in spans
                for t in span
                if start <= t <= end
            }
        )
        holding: dict[str, bool] = {}
        for e in sorted(events, key=lambda e: e.at):
            if e.at < start:
                holding[e.node] = e.added
        by_time: dict[float, list[AddressEvent]] = {}
        for e in events:
            if start <= e.at <= end:
                by_time.setdefault(e.at, []).append(e)

        def inside(spans: list[tuple[float, float]], t: float) -> bool:
            return any(a <= t < b for a, b in spans)

        double: list[tuple[float, float, frozenset[str]]] = []
        residual: list[tuple[float, float, frozenset[str]]] = []
        majority_time = holder_time = 0.0
        quorum = len(self.members) // 2 + 1
        for a, b in itertools.pairwise(points):
            for e in by_time.get(a, ()):
                holding[e.node] = e.added
            if b <= a:
                continue
            mid = (a + b) / 2
            held = {n for n, h in holding.items() if h}
            live = {n for n in held if not inside(excused.get(n, []), mid)}
            up = [n for n in self.members if not inside(down.get(n, []), mid)]
            if len(up) >= quorum:
                majority_time += b - a
                if live:
                    holder_time += b - a
            if len(live) > 1:
                _extend(double, a, b, frozenset(held))
            elif len(held) > 1:
                _extend(residual, a, b, frozenset(held))
        availability = holder_time / majority_time if majority_time > 0 else 1.0
        return Report(
            double,
            residual,
            availability,
            majority_time,
            holder_time,
            len([f for f in self.faults if f.kind != "stop" and start <= f.start <= end]),
        )


def _held_at(events: list[AddressEvent], node: str, at: float) -> bool:
    held = False
    for e in sorted(events, key=lambda e: e.at):
        if e.at > at:
            break
        if e.node == node:
            held = e.added
    return held


def _extend(
    spans: list[tuple[float, float, frozenset[str]]], a: float, b: float, who: frozenset[str]
) -> None:
    if spans and abs(spans[-1][1] - a) < 1e-9:
        prev = spans[-1]
        spans[-1] = (prev[0], b, prev[2] | who)
    else:
        spans.append((a, b, who))


def run_nemesis(
    site: QuorumSite,
    seconds: float,
    seed: int,
    *,
    scale: float = 1.0,
    log: list[str] | None = None,
    max_faults: int | None = None,
) -> int:
    """Inject random faults, one at a time, for ``seconds``; returns how many.

    Each fault hits the current VIP holder half of the time (else any member, the
    witness included): kill -9 then restart, SIGSTOP then SIGCONT, a full partition or
    a one-way (inbound) partition of its lock traffic, then heals. Durations are drawn
    in units of ``scale`` seconds (the lease), so faults both shorter and longer than
    a lease happen; between faults the cluster gets a short, random rest.
    """
    import random

    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    count = 0
    kinds = ("kill", "pause", "partition", "oneway")
    while time.monotonic() < deadline and (max_faults is None or count < max_faults):
        held = site.holders()
        target = held[0] if held and rng.random() < 0.5 else rng.choice(site.members)
        kind = rng.choice(kinds)
        hold = rng.uniform(0.2, 3.0) * scale
        if log is not None:
            log.append(f"{time.monotonic():.3f} {kind} {target} {hold:.2f}s")
        if kind == "kill":
            site.kill(target)
            time.sleep(hold)
            site.restart(target)
        elif kind == "pause":
            site.pause(target)
            time.sleep(hold)
            site.resume(target)
        else:
            site.partition(target, oneway=kind == "oneway")
            time.sleep(hold)
            site.heal(target)
        count += 1
        time.sleep(rng.uniform(0.3, 2.0) * scale)
    return count
