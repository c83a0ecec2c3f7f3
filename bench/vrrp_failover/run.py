"""VRRP failover: lvs-agent against keepalived 2.2, same lab, same settings, interleaved.

    sudo .venv/bin/python -m bench.vrrp_failover            # 20 runs per cell, records
    sudo .venv/bin/python -m bench.vrrp_failover --runs 3 --no-record   # a quick look

Topology (agent.lab.topology, as ``lvs-agent lab``): a client and two directors on
one bridge. d1 runs the master (priority 200), d2 the backup (priority 100), both
agents or both keepalived (``-P``, VRRP only), one VRRP instance holding the VIP
192.0.2.100/32 with each implementation's default GARP settings. Each director runs
a UDP responder that answers with its name; the client sends to the VIP every
millisecond and notes when the answering director changes.

A run starts both speakers, waits until d1 holds the VIP and the client gets
answers from it, waits for one of d1's adverts plus a phase (a seeded fraction of
the advert interval, the same for both implementations in run i, so that the
comparison is paired), then either

- ``kill``: SIGKILL the master's VRRP process (keepalived: parent stopped first so it
  cannot respawn its VRRP child; the child then the parent get SIGKILL), or
- ``term``: SIGTERM the master (priority 0, VIPs removed),

and measures the time until the client's first answer from d2. The VIP stays in a
SIGKILLed master's kernel, so that director's responder keeps answering until the
client's ARP entry moves to d2: this is the real "answers from the backup" time.

Dual holders: a netlink listener per director namespace stamps every address
add/remove with time.monotonic() (agent.lab.addrwatch). A run has an overlap if two
live directors held the VIP at once (a SIGKILLed director counts as dead from the
kill on). Every namespace shares CLOCK_MONOTONIC with this process.

Runs alternate between the implementations (ABBA order) so both see the same load.
Results: a table on stdout, every run in bench/vrrp_failover/results.json, and the
"vrrp_failover" section of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.lab import netns
from agent.lab.addrwatch import AddressWatch, overlaps
from agent.lab.agents import REPO, LabAgent, agent_config
from agent.lab.keepalived import Keepalived, keepalived_conf
from agent.lab.topology import VIP, Lab

SETTINGS: dict[str, tuple[int, float]] = {
    "v2/1s": (2, 1.0),
    "v3/100ms": (3, 0.1),
    "v3/10ms": (3, 0.01),
}
MODES = ("kill", "term")
IMPLS = ("agent", "keepalived")
# keepalived 2.2.7 measured on this machine (median of 10), milliseconds.
REFERENCE = {
    ("v2/1s", "kill"): 3245,
    ("v2/1s", "term"): 615,
    ("v3/100ms", "kill"): 301,
    ("v3/100ms", "term"): 67,
    ("v3/10ms", "kill"): 39,
    ("v3/10ms", "term"): 13,
}
VRID = 51
MASTER_PRIORITY, BACKUP_PRIORITY = 200, 100
PORT = 7777
PROBE_INTERVAL = 0.001
SETUP_ERRORS = ("d1 never", "d2 never", "the client got no", "no advert", "not settled")
RESULTS_MD = REPO / "bench" / "RESULTS.md"
RESULTS_JSON = Path(__file__).with_name("results.json")


@dataclass
class Run:
    impl: str
    setting: str
    mode: str
    index: int
    phase: float  # fraction of the advert interval between d1's advert and the kill
    answered_ms: float | None  # kill/SIGTERM -> first answer from d2
    vip_added_ms: float | None  # kill/SIGTERM -> VIP added on d2 (netlink event)
    vip_removed_ms: float | None  # SIGTERM -> VIP removed on d1 (netlink event)
    overlap_ms: float  # total time two live directors held the VIP
    error: str = ""


class Probe:
    """The client prober's output, read by a thread: (time, director) changes."""

    def __init__(self, lab: Lab) -> None:
        self.changes: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self.proc = lab.spawn(
            lab.client,
            [
                sys.executable,
                "-m",
                "bench.vrrp_failover.probe",
                "client",
                VIP,
                str(PORT),
                str(PROBE_INTERVAL),
                "36000",
            ],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            pipe=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, _, name = line.decode().strip().partition(" ")
            with self._cond:
                self.changes.append((float(at), name))
                self._cond.notify_all()

    def wait(self, name: str, after: float, timeout: float) -> float | None:
        """When the answers switched to ``name`` after ``after`` (or were already
        ``name`` at ``after`` if ``after`` is 0), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, who in self.changes:
                    if who == name and at >= after:
                        return at
                if self.changes and self.changes[-1][1] == name and after == 0:
                    return self.changes[-1][0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    def current(self) -> str | None:
        with self._cond:
            return self.changes[-1][1] if self.changes else None


class AdvertSync:
    """A raw VRRP socket on the client: wait for the next advert from an address."""

    def __init__(self, lab: Lab) -> None:
        with netns.entered(lab.client.ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
            index = socket.if_nametoindex("eth0")
        mreqn = struct.pack("4s4si", socket.inet_aton("224.0.0.18"), bytes(4), index)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)

    def next_from(self, source: str, timeout: float) -> float | None:
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while self.sock.recv(4096):
                pass
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                _, (src, _) = self.sock.recvfrom(4096)
            except TimeoutError:
                return None
            if src == source:
                return time.monotonic()
        return None


class Speaker:
    """Either implementation, started with the same settings."""

    def __init__(
        self,
        impl: str,
        lab: Lab,
        i: int,
        priority: int,
        version: int,
        interval: float,
        work: Path,
        tag: str,
    ) -> None:
        self.impl = impl
        host = lab.director(i)
        self.agent: LabAgent | None = None
        self.ka: Keepalived | None = None
        if impl == "agent":
            instance = {
                "name": "vip",
                "interface": "eth0",
                "vrid": VRID,
                "version": version,
                "priority": priority,
                "advert_interval": f"{round(interval * 1000)}ms",
                "virtual_ips": [f"{VIP}/32"],
            }
            config = agent_config(host, work / f"state-{host.name}{tag}", [instance])
            self.agent = LabAgent(lab, host, config, work, tag)
        else:
            conf = keepalived_conf(
                version=version,
                vrid=VRID,
                priority=priority,
                interval=interval,
                vips=[f"{VIP}/32"],
            )
            self.ka = Keepalived(lab, host, conf, work, tag)

    def wait_backup(self, timeout: float) -> bool:
        """The speaker logged that it entered BACKUP."""
        if self.agent is not None:
            return self.agent.wait_for("vip: INIT -> BACKUP", timeout) is not None
        assert self.ka is not None
        return self.ka.wait_for("Entering BACKUP STATE", timeout) is not None

    def kill(self) -> float:
        """SIGKILL the VRRP speaker; the time just before the fatal signal."""
        if self.agent is not None:
            at = time.monotonic()
            os.kill(self.agent.pid, signal.SIGKILL)
            self.agent.proc.wait(timeout=10)
            return at
        assert self.ka is not None
        child = self.ka.child_pid(5)
        self.ka.proc.send_signal(signal.SIGSTOP)  # no respawn
        at = time.monotonic()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.ka.kill()
        return at

    def terminate(self) -> float:
        at = time.monotonic()
        if self.agent is not None:
            os.kill(self.agent.pid, signal.SIGTERM)
        else:
            assert self.ka is not None
            self.ka.signal_terminate()
        return at

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        if self.ka is not None:
            self.ka.close()

    def log(self) -> str:
        if self.agent is not None:
            return self.agent.text()
        assert self.ka is not None
        return self.ka.text()


class Bench:
    def __init__(self, lab: Lab, work: Path) -> None:
        self.lab = lab
        self.work = work
        self.watch = AddressWatch({d.name: d.ns for d in lab.director_list()})
        self.sync = AdvertSync(lab)
        for d in lab.director_list():
            # No forwarding: a director without the VIP drops what still comes to it.
            netns.sysctl(d.ns, "net.ipv4.ip_forward", "0")
            lab.spawn(
                d,
                [sys.executable, "-m", "bench.vrrp_failover.probe", "echo", d.name, str(PORT)],
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )
        self.probe = Probe(lab)
        self.count = 0

    def clean(self) -> None:
        for d in self.lab.director_list():
            netns.ip("addr", "del", f"{VIP}/32", "dev", "eth0", netns=d.ns, check=False)

    def run(self, impl: str, setting: str, mode: str, index: int, phase: float) -> Run:
        version, interval = SETTINGS[setting]
        self.count += 1
        tag = f"-{self.count}"
        self.clean()
        started = time.monotonic()
        mdi = 3 * interval + interval
        result = Run(impl, setting, mode, index, phase, None, None, None, 0.0)
        # The master first, the backup once the master holds the VIP: a backup that
        # started first could win the first election and be preempted (not measured here).
        master = Speaker(impl, self.lab, 1, MASTER_PRIORITY, version, interval, self.work, tag)
        backup: Speaker | None = None
        try:
            added = self.watch.wait_added(VIP, 15 + 3 * mdi, node="d1", after=started)
            if added is None:
                result.error = "d1 never became master"
                return result
            backup = Speaker(impl, self.lab, 2, BACKUP_PRIORITY, version, interval, self.work, tag)
            if not backup.wait_backup(15):
                result.error = "d2 never became backup"
                return result
            # Any answer from d1 in this run (its VIP was removed before ``started``); not
            # after ``added.at``: this process may read the netlink event a little late.
            if self.probe.wait("d1", started, 10) is None:
                result.error = "the client got no answer from d1"
                return result
            time.sleep(3 * interval + 0.05)  # the backup has heard several adverts
            seen = self.sync.next_from(self.lab.director_address(1), 2 * interval + 1)
            if seen is None:
                result.error = "no advert from d1"
                return result
            time.sleep(max(0.0, seen + phase * interval - time.monotonic()))
            if self.probe.current() != "d1" or self.lab.holders() != ["d1"]:
                result.error = f"not settled: {self.probe.current()} {self.lab.holders()}"
                return result
            at = master.kill() if mode == "kill" else master.terminate()
            answered = self.probe.wait("d2", at, 10 + 3 * mdi)
            vip = self.watch.wait_added(VIP, 2, node="d2", after=at)
            if answered is not None:
                result.answered_ms = (answered - at) * 1000
            else:
                result.error = "no answer from d2"
            if vip is not None:
                result.vip_added_ms = (vip.at - at) * 1000
            if mode == "term":
                gone = self.watch.wait_removed(VIP, 2, node="d1", after=at)
                result.vip_removed_ms = None if gone is None else (gone.at - at) * 1000
            # A little longer, so that a late dual holder would show.
            time.sleep(min(1.0, 3 * interval))
            ended = time.monotonic()
            events = [e for e in self.watch.snapshot() if at <= e.at <= ended]
            dead = {"d1": at} if mode == "kill" else {}
            spans = overlaps(events, VIP, held_at_start=["d1"], dead=dead)
            result.overlap_ms = sum(end - begin for begin, end, _ in spans) * 1000
            return result
        finally:
            if result.error:
                (self.work / f"failed{tag}-d1.log").write_text(master.log())
                if backup is not None:
                    (self.work / f"failed{tag}-d2.log").write_text(backup.log())
            if backup is not None:
                backup.close()
            master.close()
            self.clean()

    def close(self) -> None:
        self.watch.close()
        self.sync.sock.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for setting in SETTINGS:
        for mode in MODES:
            row: dict[str, Any] = {"setting": setting, "mode": mode}
            for impl in IMPLS:
                cell = [r for r in runs if (r.setting, r.mode, r.impl) == (setting, mode, impl)]
                times = [r.answered_ms for r in cell if r.answered_ms is not None]
                row[impl] = {
                    "runs": len(cell),
                    "ok": len(times),
                    "median": statistics.median(times) if times else None,
                    "p95": percentile(times, 0.95) if times else None,
                    "overlaps": sum(1 for r in cell if r.overlap_ms > 0),
                    "errors": sorted({r.error for r in cell if r.error}),
                }
            pairs = {
                (r.index, r.impl): r.answered_ms
                for r in runs
                if (r.setting, r.mode) == (setting, mode) and r.answered_ms is not None
            }
            diffs = [
                a_ms - k_ms
                for (index, impl), a_ms in pairs.items()
                if impl == "agent" and (k_ms := pairs.get((index, "keepalived"))) is not None
            ]
            row["paired_diff"] = statistics.median(diffs) if diffs else None
            row["agent_faster"] = sum(1 for d in diffs if d < 0)
            row["pairs"] = len(diffs)
            a, k = row["agent"]["median"], row["keepalived"]["median"]
            row["ratio"] = a / k if a is not None and k else None
            a95, k95 = row["agent"]["p95"], row["keepalived"]["p95"]
            row["ratio_p95"] = a95 / k95 if a95 is not None and k95 else None
            if row["agent"]["runs"] or row["keepalived"]["runs"]:
                rows.append(row)
    return rows


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| adverts | failover | agent median | agent p95 | keepalived median | keepalived p95 "
        "| ratio (median) | ratio (p95) | paired diff (median) | agent faster | "
        "reference keepalived | runs ok (agent / ka) | dual-holder runs (agent / ka) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        a, k = row["agent"], row["keepalived"]
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.3f}"
        ratio95 = "—" if row["ratio_p95"] is None else f"{row['ratio_p95']:.3f}"
        diff = "—" if row.get("paired_diff") is None else f"{row['paired_diff']:+.1f}"
        what = "kill -9" if row["mode"] == "kill" else "SIGTERM"
        lines.append(
            f"| {row['setting']} | {what} | {_ms(a['median'])} | {_ms(a['p95'])} "
            f"| {_ms(k['median'])} | {_ms(k['p95'])} | {ratio} | {ratio95} | {diff} "
            f"| {row.get('agent_faster', 0)}/{row.get('pairs', 0)} "
            f"| {REFERENCE[(row['setting'], row['mode'])]} "
            f"| {a['ok']}/{a['runs']} / {k['ok']}/{k['runs']} "
            f"| {a['overlaps']} / {k['overlaps']} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ka = subprocess.run(
        ["keepalived", "--version"], capture_output=True, text=True, check=False
    ).stderr.splitlines()
    return (
        f"nproc {os.cpu_count()}, {cpu}, kernel {platform.release()}, "
        f"Python {platform.python_version()}, {ka[0] if ka else 'keepalived ?'}"
    )


def record(
    rows: list[dict[str, Any]], runs: list[Run], notes: str, loads: str, day: str | None = None
) -> None:
    today = day or datetime.date.today().isoformat()
    count = max((r["agent"]["runs"] for r in rows), default=0)
    section = f"""## vrrp_failover

`sudo .venv/bin/python -m bench.vrrp_failover` — {today}; {machine()}.
Load average {loads}.

Time from the master's death (`kill -9`) or `SIGTERM` until the client's first answer
through the VIP from the backup, in milliseconds; {count} runs per cell, agent and
keepalived interleaved, d1 master (priority 200), d2 backup (priority 100), default
GARP settings; the kill comes at the same seeded phase after one of d1's adverts in
run i of both implementations, so the runs pair up. "Reference" is keepalived 2.2.7
measured here before (median of 10). Ratio = agent / keepalived; paired diff = median
over i of (agent run i − keepalived run i); "agent faster" = pairs where the agent
was faster. Dual-holder runs: runs in which both live directors held the VIP at the
same time, from netlink address events on the shared monotonic clock (a killed
director counts as dead from the kill, though its VIP stays in its kernel).

{table(rows)}

{notes}
"""
    replace_section(RESULTS_MD, "vrrp_failover", section)


def load_report(before: tuple[float, float, float]) -> str:
    """The 1-minute load average before the run (``before``) and now, for the record."""
    after = os.getloadavg()
    return f"{before[0]:.2f} before, {after[0]:.2f} after (1-minute; {os.cpu_count()} CPUs)"


def replace_section(path: Path, name: str, section: str) -> None:
    """Put ``section`` in place of the ``## name`` section of ``path`` (or append it)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(f"## {name}")
    if start >= 0:
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=5798)
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--notes", default="", help="text added under the table")
    parser.add_argument(
        "--from-json",
        nargs="?",
        const=str(RESULTS_JSON),
        metavar="PATH",
        help=f"do not run: summarise (and record) saved runs (default {RESULTS_JSON.name})",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        runs = [Run(**r) for r in saved["runs"]]
        rows = summarise(runs)
        print(table(rows))
        if not args.no_record:
            record(rows, runs, args.notes, saved["load"], saved.get("date"))
            print(f"recorded in {RESULTS_MD}")
        return 0
    if os.geteuid() != 0:
        print("bench.vrrp_failover: needs root (network namespaces)", file=sys.stderr)
        return 1
    for tool in ("keepalived", "ip"):
        if shutil.which(tool) is None:
            print(f"bench.vrrp_failover: needs {tool}", file=sys.stderr)
            return 1
    settings = [s for s in args.settings.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    rng = random.Random(args.seed)
    phases = [rng.random() for _ in range(args.runs)]
    load_before = os.getloadavg()
    print(f"machine: {machine()}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    runs: list[Run] = []
    work = Path(tempfile.mkdtemp(prefix="vrrp-failover-"))
    try:
        with Lab(forwarding="dr", directors=2, real_servers=0, vip_on_director=False) as lab:
            bench = Bench(lab, work)
            try:
                for setting in settings:
                    for i in range(args.runs):
                        order = IMPLS if i % 2 == 0 else IMPLS[::-1]
                        for mode in modes:
                            for impl in order:
                                r = bench.run(impl, setting, mode, i, phases[i])
                                for _ in range(2):  # set-up failures (before the kill): again
                                    if r.answered_ms is not None or not r.error.startswith(
                                        SETUP_ERRORS
                                    ):
                                        break
                                    print(f"  retrying after: {r.error}", flush=True)
                                    r = bench.run(impl, setting, mode, i, phases[i])
                                runs.append(r)
                                print(
                                    f"{setting:9} {mode:4} {impl:10} run {i + 1:2}: "
                                    f"answer {_ms(r.answered_ms):>6} ms, VIP added "
                                    f"{_ms(r.vip_added_ms):>6} ms, d1 removed "
                                    f"{_ms(r.vip_removed_ms):>6} ms, overlap "
                                    f"{r.overlap_ms:.1f} ms {r.error}",
                                    flush=True,
                                )
            finally:
                bench.close()
    finally:
        if not any(r.error for r in runs):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs of failed runs kept in {work}")
    loads = load_report(load_before)
    rows = summarise(runs)
    print()
    print(table(rows))
    print(f"load average: {loads}")
    RESULTS_JSON.write_text(
        json.dumps(
            {
                "date": datetime.date.today().isoformat(),
                "machine": machine(),
                "load": loads,
                "runs": [asdict(r) for r in runs],
            },
            indent=1,
        )
    )
    if not args.no_record:
        record(rows, runs, args.notes, loads)
        print(f"recorded in {RESULTS_MD}")
    worst = [r for r in rows if r["ratio"] is not None and r["ratio"] > 1.0]
    dual = sum(r["agent"]["overlaps"] for r in rows)
    return 1 if worst or dual else 0
