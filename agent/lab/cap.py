"""``lvs-agent lab --election quorum``: why the lock exists, shown end to end.

Two directors (d1, d2) and a witness (d3) on the lab's DR topology: a client, the
directors and two HTTP real servers on one LAN, the VIP 192.0.2.100 moved by the real
agent. The same cut is made twice:

1. ``election: vrrp`` — d1, the master, is cut off from the other directors with
   nftables in its own namespace (everything from and to d2 and d3 dropped, and VRRP
   adverts), while the client still reaches it. d2 stops hearing adverts and becomes
   master too: both hold the VIP and both answer — split brain.
2. ``election: quorum`` — the same cut. d1 can no longer renew its lease with a
   majority, so it gives the VIP up before the lease ends; d2 (with the witness) takes
   the lease and the VIP once d1's lease has run out: exactly one director answers.
   After the cut heals, the holder's agent gets ``kill -9``: its fence child removes
   the VIP before the other director takes over.

Who held the VIP comes from netlink address events of every director (one clock,
CLOCK_MONOTONIC). Who answered comes from the client: during the cut, every tick it
sends one request through each director: from two extra clients whose neighbour entry
for the VIP is pinned to one director's MAC, as LAN clients whose ARP caches point at
one or the other would. Directors do
not forward IP here (``ip_forward=0``), so a director without the VIP drops what it
receives instead of passing it on to the one that holds it.

The summary prints side by side; ``plot`` (optional, needs matplotlib) draws the
timelines to a PNG. Lab scaffolding: everything started here is stopped here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.lab import netns
from agent.lab.addrwatch import AddressEvent, AddressWatch, overlaps
from agent.lab.agents import METRICS_PORT, LabAgent
from agent.lab.demo import lab_config, wait_for_table
from agent.lab.quorum import write_key
from agent.lab.topology import Host, Lab

ADVERT = "1s"  # slow enough for an emulated VM
LEASE = "3s"
LOCK_PORT = 6741
CUT = 12.0  # seconds the master stays cut off
TICK = 0.25  # seconds between rounds of pinned requests
PROBE_TIMEOUT = 2.0  # Python under emulation answers in hundreds of milliseconds
FRONT = "192.0.2"
SETTLE = 4.0  # seconds one holder must hold the VIP alone before a cut
NFT_TABLE = "lvscap"


@dataclass
class Probe:
    at: float  # time.monotonic() when sent
    director: str
    answered: bool


@dataclass
class Phase:
    """What one election mode did while its master was cut off (and, for quorum, killed)."""

    election: str
    master: str
    other: str
    start: float
    cut_at: float
    heal_at: float
    end: float = 0.0
    events: list[AddressEvent] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    killed: str | None = None
    kill_at: float | None = None

    def _first(self, node: str, added: bool, after: float) -> float | None:
        return next(
            (
                e.at - after
                for e in sorted(self.events, key=lambda e: e.at)
                if e.node == node and e.added == added and e.at >= after
            ),
            None,
        )

    @property
    def double(self) -> float:
        """Seconds during which both directors held the VIP, from the cut to the end."""
        held = [n for n in (self.master, self.other) if _held(self.events, n, self.cut_at)]
        spans = overlaps([e for e in self.events if e.at >= self.cut_at], VIP_ADDRESS, held)
        return sum(min(b, self.end) - a for a, b, _ in spans if a < self.end)

    @property
    def gave_up(self) -> float | None:
        """Seconds from the cut until the isolated master removed the VIP."""
        t = self._first(self.master, False, self.cut_at)
        return t if t is not None and t < self.heal_at - self.cut_at else None

    @property
    def takeover(self) -> float | None:
        """Seconds from the cut until the other director added the VIP."""
        t = self._first(self.other, True, self.cut_at)
        return t if t is not None and t < self.heal_at - self.cut_at else None

    def answered(self, director: str) -> tuple[int, int]:
        during = [
            p for p in self.probes if p.director == director and self.cut_at <= p.at < self.heal_at
        ]
        return sum(p.answered for p in during), len(during)

    @property
    def fence(self) -> float | None:
        """After the kill: seconds until the killed holder's VIP was gone."""
        if self.killed is None or self.kill_at is None:
            return None
        return self._first(self.killed, False, self.kill_at)

    @property
    def kill_takeover(self) -> float | None:
        if self.killed is None or self.kill_at is None:
            return None
        survivor = self.other if self.killed == self.master else self.master
        return self._first(survivor, True, self.kill_at)


VIP_ADDRESS = "192.0.2.100"


def _held(events: list[AddressEvent], node: str, at: float) -> bool:
    held = False
    for e in sorted(events, key=lambda e: e.at):
        if e.at > at:
            break
        if e.node == node and e.address == VIP_ADDRESS:
            held = e.added
    return held


def _lock(lab: Lab, i: int, key: Path) -> dict[str, Any]:
    return {
        "cluster": "lab",
        "listen": f"{lab.director_address(i)}:{LOCK_PORT}",
        "peers": {f"d{j}": f"{lab.director_address(j)}:{LOCK_PORT}" for j in (1, 2, 3)},
        "key_file": str(key),
        "lease": LEASE,
    }


def director_config(lab: Lab, i: int, election: str, work: Path, key: Path) -> str:
    """Director ``i``'s file: the lab's virtual server, the VIP instance, and the lock."""
    instances, groups = lab.vrrp_instances(
        i, priority=150 if i == 1 else 100, advert_interval=ADVERT
    )
    doc: dict[str, Any] = {"vrrp_instances": instances}
    if groups:
        doc["vrrp_sync_groups"] = groups
    if election == "quorum":
        for inst in instances:
            inst["election"] = "quorum"
        doc["lock"] = _lock(lab, i, key)
    state = work / f"state-{election}-d{i}"
    return lab_config(lab, str(state), director=i) + yaml.safe_dump(doc, sort_keys=False)


def witness_config(lab: Lab, work: Path, key: Path) -> str:
    doc = {
        "metrics": {"listen": f"127.0.0.1:{METRICS_PORT}"},
        "state_dir": str(work / "state-witness"),
        "lock": _lock(lab, 3, key),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def cut(lab: Lab, name: str) -> None:
    """Cut director ``name`` off from the other directors; the client still reaches it."""
    me = lab.director(int(name[1:]))
    others = ", ".join(
        lab.director_address(i) for i in (1, 2, 3) if lab.director(i).name != me.name
    )
    rules = (
        f"table inet {NFT_TABLE} {{\n"
        " chain cutin {\n  type filter hook input priority 0; policy accept;\n"
        f"  ip saddr {{ {others} }} drop\n  ip protocol vrrp drop\n }}\n"
        " chain cutout {\n  type filter hook output priority 0; policy accept;\n"
        f"  ip daddr {{ {others} }} drop\n  ip protocol vrrp drop\n }}\n"
        "}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", me.ns, "nft", "-f", "-"],
        input=rules.encode(),
        capture_output=True,
        check=True,
    )


def heal(lab: Lab, name: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", lab.director(int(name[1:])).ns, "nft", "delete", "table", "inet",
         NFT_TABLE],
        capture_output=True,
        check=False,
    )  # fmt: skip


def pinned_clients(lab: Lab) -> dict[str, Host]:
    """One extra client per director whose neighbour entry for the VIP is that director's MAC.

    A permanent entry: gratuitous ARPs do not move it, as they would not move a LAN client
    that last heard the other side."""
    clients = {}
    for i in (1, 2):
        d = lab.director(i)
        host = lab.add_client(f"c{d.name}", f"{FRONT}.{20 + i}")
        netns.ip(
            "neigh", "replace", VIP_ADDRESS, "lladdr", d.macs["eth0"], "dev", "eth0",
            "nud", "permanent", netns=host.ns,
        )  # fmt: skip
        clients[d.name] = host
    return clients


def settle(lab: Lab, watch: AddressWatch, timeout: float = 120.0) -> str | None:
    """The one director that has held the VIP alone for SETTLE seconds, or None."""
    deadline = time.monotonic() + timeout
    last, since = "", time.monotonic()
    while time.monotonic() < deadline:
        held = lab.holders(VIP_ADDRESS)
        now = time.monotonic()
        if len(held) != 1 or held[0] != last:
            last, since = (held[0] if len(held) == 1 else ""), now
        elif now - since >= SETTLE:
            return last
        time.sleep(0.2)
    return None


def _probe_round(
    lab: Lab, clients: dict[str, Host], probes: list[Probe], pool: ThreadPoolExecutor
) -> None:
    """One request through each director at once (a thread each: a director that has let
    the VIP go costs a whole timeout, and the other's answer must not wait for it)."""

    def ask(name: str) -> Probe:
        at = time.monotonic()
        answer = lab.get(clients[name], VIP_ADDRESS, 80, timeout=PROBE_TIMEOUT)
        return Probe(at, name, answer is not None)

    probes.extend(pool.map(ask, clients))


def run_phase(
    lab: Lab, clients: dict[str, Host], election: str, work: Path, key: Path
) -> Phase | None:
    """Start the agents with ``election``, cut the master off, heal; for quorum, kill -9."""
    watch = AddressWatch({d.name: d.ns for d in lab.director_list()[:2]})
    agents: dict[str, LabAgent] = {}
    witness: subprocess.Popen[bytes] | None = None
    pool = ThreadPoolExecutor(max_workers=len(clients))
    try:
        if election == "quorum":
            wconf = work / "witness.yaml"
            wconf.write_text(witness_config(lab, work, key))
            witness = lab.spawn(
                lab.director(3),
                [sys.executable, "-m", "agent", "witness", "-c", str(wconf)],
                work / "witness.log",
            )
        for i in (1, 2):
            d = lab.director(i)
            agents[d.name] = LabAgent(
                lab, d, director_config(lab, i, election, work, key), work, f"-{election}"
            )
        for i in (1, 2):
            if not wait_for_table(lab, 1, lab.real_servers, director=i):
                print(f"lab: d{i} did not program IPVS; see {work}", file=sys.stderr)
                return None
        start = time.monotonic()
        master = settle(lab, watch)
        if master is None:
            print(
                f"lab: no single VIP holder with election {election}; see {work}", file=sys.stderr
            )
            return None
        other = "d2" if master == "d1" else "d1"
        probes: list[Probe] = []
        for _ in range(2):
            _probe_round(lab, clients, probes, pool)
            time.sleep(TICK)
        cut_at = time.monotonic()
        cut(lab, master)
        print(f"lab: [{election}] t=0: {master} (master) cut off from the other directors")
        while time.monotonic() - cut_at < CUT:
            _probe_round(lab, clients, probes, pool)
            time.sleep(TICK)
        heal_at = time.monotonic()
        heal(lab, master)
        print(f"lab: [{election}] t={heal_at - cut_at:.1f}s: cut healed")
        phase = Phase(election, master, other, start, cut_at, heal_at, probes=probes)
        if election == "quorum":
            holder = settle(lab, watch, timeout=60)
            if holder is not None:
                phase.killed = holder
                phase.kill_at = time.monotonic()
                agents[holder].kill()
                print(f"lab: [{election}] kill -9 of {holder}'s agent (the holder)")
                survivor = "d2" if holder == "d1" else "d1"
                watch.wait_added(VIP_ADDRESS, 30, node=survivor, after=phase.kill_at)
                time.sleep(1.0)
        else:
            settle(lab, watch, timeout=30)
        phase.end = time.monotonic()
        phase.events = [e for e in watch.snapshot() if e.address == VIP_ADDRESS]
        return phase
    finally:
        for agent in agents.values():
            if agent.running():
                agent.stop()
        if witness is not None:
            lab.stop(witness)
        for d in lab.director_list():
            heal(lab, d.name)
            netns.ip("addr", "del", f"{VIP_ADDRESS}/32", "dev", "eth0", netns=d.ns, check=False)
        watch.close()
        pool.shutdown()


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def summary(vrrp: Phase, quorum: Phase) -> str:
    """The side-by-side comparison of the two runs."""
    rows: list[tuple[str, str, str]] = [
        ("master cut off for", f"{CUT:.0f} s", f"{CUT:.0f} s"),
        ("both directors held the VIP", f"{vrrp.double:.2f} s", f"{quorum.double:.2f} s"),
    ]
    for phase_role in ("master", "other"):
        cells = []
        for p in (vrrp, quorum):
            name = p.master if phase_role == "master" else p.other
            ok, n = p.answered(name)
            cells.append(f"{ok}/{n} ({name})")
        label = (
            "answers via the isolated master"
            if phase_role == "master"
            else ("answers via the other director")
        )
        rows.append((label, cells[0], cells[1]))
    rows.append(
        ("isolated master gave the VIP up", _seconds(vrrp.gave_up), _seconds(quorum.gave_up))
    )
    rows.append(("other director took the VIP", _seconds(vrrp.takeover), _seconds(quorum.takeover)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'election: vrrp':>22}  {'election: quorum':>22}"]
    lines += [f"{a:{width}}  {b:>22}  {c:>22}" for a, b, c in rows]
    if quorum.killed is not None:
        lines.append(
            f"kill -9 of the holder ({quorum.killed}) with election: quorum: its fence removed "
            f"the VIP after {_seconds(quorum.fence)}, the other director took it after "
            f"{_seconds(quorum.kill_takeover)}"
        )
    return "\n".join(lines)


def plot(phases: list[Phase], path: str) -> None:
    """A PNG timeline per phase: when each director held the VIP, which requests it answered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(phases), 1, figsize=(10, 2.6 * len(phases)), squeeze=False)
    for ax, p in zip((a[0] for a in axes), phases, strict=True):
        t0 = p.cut_at
        for row, name in enumerate(("d1", "d2")):
            spans: list[tuple[float, float]] = []
            since = p.start if _held(p.events, name, p.start) else None
            for e in sorted(p.events, key=lambda e: e.at):
                if e.node != name or e.at < p.start:
                    continue
                if e.added and since is None:
                    since = e.at
                elif not e.added and since is not None:
                    spans.append((since, e.at))
                    since = None
            if since is not None:
                spans.append((since, p.end))
            ax.broken_barh(
                [(a - t0, b - a) for a, b in spans], (row - 0.3, 0.6), color="tab:blue", alpha=0.35
            )
            mine = [q for q in p.probes if q.director == name]
            ax.scatter(
                [q.at - t0 for q in mine if q.answered],
                [row] * sum(q.answered for q in mine),
                marker="o", color="tab:green", s=14, label="answered" if row == 0 else None,
            )  # fmt: skip
            ax.scatter(
                [q.at - t0 for q in mine if not q.answered],
                [row] * sum(not q.answered for q in mine),
                marker="x", color="tab:red", s=14, label="no answer" if row == 0 else None,
            )  # fmt: skip
        ax.axvspan(0, p.heal_at - t0, color="grey", alpha=0.12, label="master cut off")
        if p.kill_at is not None:
            ax.axvline(p.kill_at - t0, color="black", linestyle="--", label="kill -9")
        ax.set_yticks([0, 1], ["d1", "d2"])
        ax.set_title(f"election: {p.election} (bars: VIP held)")
        ax.set_xlabel("seconds from the cut")
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_cap_lab(plot_file: str | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="lvs-agent-cap-"))
    if plot_file is not None:
        # The VM's home is read-only: matplotlib's cache goes with the lab's files.
        os.environ.setdefault("MPLCONFIGDIR", str(work / "matplotlib"))
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "lvs-agent lab: --plot needs matplotlib (pip install 'lvs-agent[plot]')",
                file=sys.stderr,
            )
            return 1
    key = write_key(work / "cluster.key")
    with Lab(forwarding="dr", directors=3, vip_on_director=False) as lab:
        for d in lab.director_list():
            netns.sysctl(d.ns, "net.ipv4.ip_forward", "0")
        print(
            "lab: DR, directors d1 and d2 (VIP 192.0.2.100, VRRP adverts "
            f"{ADVERT}), d3 the witness, lease {LEASE}; the master will be cut off from the "
            f"other directors for {CUT:.0f} s while the client still reaches it"
        )
        lab.start_http_servers(work)
        clients = pinned_clients(lab)
        phases: list[Phase] = []
        for election in ("vrrp", "quorum"):
            phase = run_phase(lab, clients, election, work, key)
            if phase is None:
                return 1
            phases.append(phase)
        vrrp, quorum = phases
        print()
        print(summary(vrrp, quorum))
        if plot_file is not None:
            plot(phases, plot_file)
            print(f"lab: timeline written to {plot_file}")
        ok = (
            quorum.double == 0.0
            and quorum.gave_up is not None
            and quorum.takeover is not None
            and (quorum.fence is None or quorum.kill_takeover is None
                 or quorum.fence <= quorum.kill_takeover)
        )  # fmt: skip
        print(
            "lab: with election: vrrp both sides held the VIP; with election: quorum exactly "
            "one did, and the isolated master gave it up first"
            if ok and vrrp.double > 0
            else "lab: quorum held: never two holders"
            if ok
            else "lab: FAILED — the quorum run did not behave as described; logs in " + str(work)
        )
        print("lab: tearing down")
    return 0 if ok else 1
