"""Quorum-election failover: lvs-agent with ``election: quorum`` at two lease settings,
keepalived's plain VRRP (v3, 100 ms adverts) measured in the same lab and run.

    sudo .venv/bin/python -m bench.lock_failover                  # 20 runs per cell, records
    sudo .venv/bin/python -m bench.lock_failover --runs 3 --no-record --faults 0   # quick
    sudo .venv/bin/python -m bench.lock_failover --faults 1000   # + 1,000 faults per lease

Topology (agent.lab.topology): a client and three directors on one bridge, no IPVS.
Each director runs the UDP responder of bench.vrrp_failover.probe, the client sends to
the VIP every millisecond and notes when the answering director changes; netlink
address events of every director are stamped on the shared CLOCK_MONOTONIC.

- keepalived (v3/100 ms, d1 priority 200, d2 100): bench.vrrp_failover's own runs,
  on this lab, before the agent's (``--no-keepalived`` skips them).
- lvs-agent: three agents (priorities 150/100/50, preempt off), one instance under
  quorum election, ``lease: 1s`` and ``lease: 200ms``. A run waits for a stable holder,
  then a seeded phase of the renew interval, then ``kill -9`` or ``SIGTERM`` of the
  holder, and measures the time until the client's first answer from another
  director; the killed or stopped agent is restarted and out of quarantine before the
  next run.
- ``--faults N``: afterwards, per lease, N random faults (agent.lab.quorum.run_nemesis:
  kill -9/restart, SIGSTOP/SIGCONT, full and one-way partitions, durations scaled to
  the lease) with the dual-holder checker; the residual overlap of killed or paused
  holders (their VIP until the kernel lifetime expires) is reported separately.

Results: a table on stdout, every run in bench/lock_failover/results.json, and the
"lock_failover" section of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.lab.quorum import QuorumSite, run_nemesis
from agent.lab.topology import Lab
from bench.vrrp_failover.run import Bench as VrrpBench
from bench.vrrp_failover.run import load_report, machine, percentile, replace_section

LEASES = {"1s": 1.0, "200ms": 0.2}
MODES = ("kill", "term")
KEEPALIVED = {"kill": 301.0, "term": 67.0}  # keepalived v3/100 ms medians, ms (bench/vrrp_failover)
TARGETS = {("1s", "kill"): 1500.0, ("200ms", "kill"): 300.0, ("1s", "term"): 70.0,
           ("200ms", "term"): 70.0}  # fmt: skip
REPO = Path(__file__).resolve().parents[2]
RESULTS_MD = REPO / "bench" / "RESULTS.md"
RESULTS_JSON = Path(__file__).with_name("results.json")


@dataclass
class Run:
    impl: str  # agent | keepalived
    setting: str  # lease, or v3/100ms
    mode: str
    index: int
    answered_ms: float | None
    vip_added_ms: float | None
    from_node: str = ""
    to_node: str = ""
    error: str = ""


@dataclass
class NemesisResult:
    lease: str
    faults: int
    seconds: float
    double: int
    residual: int
    residual_max_ms: float
    availability: float
    seed: int
    by_kind: dict[str, int] = field(default_factory=dict)


def wait_answer_other(
    bench: VrrpBench, old: str, after: float, timeout: float
) -> tuple[float, str] | None:
    """The first change of the client's answers to a director other than ``old``."""
    probe = bench.probe
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with probe._cond:
            for at, who in probe.changes:
                if at >= after and who != old and who.startswith("d"):
                    return at, who
            probe._cond.wait(0.1)
    return None


def stable_holder(site: QuorumSite, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        held = site.holders()
        current = held[0] if len(held) == 1 else None
        now = time.monotonic()
        if current != last:
            last, since = current, now
        elif current is not None and now - since > 0.5:
            return current
        time.sleep(0.02)
    return None


def agent_runs(
    lab: Lab, bench: VrrpBench, work: Path, lease: str, runs: int, modes: list[str], seed: int
) -> list[Run]:
    out: list[Run] = []
    seconds = LEASES[lease]
    rng = random.Random(seed)
    site = QuorumSite(
        lab, bench.watch, work / f"lease-{lease}", lease=lease, preempt=False,
        priorities={1: 150, 2: 100, 3: 50},
    )  # fmt: skip
    site.work.mkdir(parents=True, exist_ok=True)
    site.start()
    try:
        for i in range(runs):
            for mode in modes:
                result = Run("agent", lease, mode, i, None, None)
                holder = stable_holder(site, 30)
                if holder is None or bench.probe.wait(holder, 0.0, 5) is None:
                    result.error = f"no stable holder answering: {site.holders()}"
                    out.append(result)
                    continue
                time.sleep(rng.random() * seconds / 4)  # a phase of the renew interval
                result.from_node = holder
                at = site.kill(holder) if mode == "kill" else site.terminate(holder)
                answered = wait_answer_other(bench, holder, at, 10 + 3 * seconds)
                added = site.vip_added(at, 2, exclude=holder)
                if answered is not None:
                    result.answered_ms = (answered[0] - at) * 1000
                    result.to_node = answered[1]
                else:
                    result.error = "no answer from another director"
                if added is not None:
                    result.vip_added_ms = (added.at - at) * 1000
                if mode == "term":
                    site.wait_stopped(holder)
                site.restart(holder)
                # Out of quarantine (one acceptor lease, ~1.1 x lease) before the next run.
                time.sleep(1.5 * seconds + 1.5)
                out.append(result)
                print(
                    f"agent lease {lease:5} {mode:4} run {i + 1:2}: answer "
                    f"{_ms(result.answered_ms):>6} ms, VIP added {_ms(result.vip_added_ms):>6} ms "
                    f"{holder}->{result.to_node} {result.error}",
                    flush=True,
                )
    finally:
        site.close()
    return out


def nemesis(
    lab: Lab, bench: VrrpBench, work: Path, lease: str, faults: int, seed: int
) -> NemesisResult:
    seconds = LEASES[lease]
    site = QuorumSite(
        lab, bench.watch, work / f"nemesis-{lease}", lease=lease,
        priorities={1: 150, 2: 100, 3: 50},
    )  # fmt: skip
    site.work.mkdir(parents=True, exist_ok=True)
    site.start()
    try:
        stable_holder(site, 30)
        start = time.monotonic()
        schedule: list[str] = []
        # Faults from 0.2 to 3 units of max(lease, 0.5 s): shorter and longer than a lease.
        count = run_nemesis(site, 1e9, seed, scale=max(seconds, 0.5) * 0.6, log=schedule,
                            max_faults=faults)  # fmt: skip
        site.wait_holder(15)
        end = time.monotonic()
        report = site.check(start, end)
        (work / f"nemesis-{lease}-schedule.txt").write_text("\n".join(schedule) + "\n")
        raw = {
            "start": start,
            "end": end,
            "events": [(e.at, e.node, e.added) for e in bench.watch.snapshot()
                       if e.address == "192.0.2.100"],
            "faults": [asdict(f) for f in site.faults],
        }  # fmt: skip
        (work / f"nemesis-{lease}-events.json").write_text(json.dumps(raw))
    finally:
        site.close()
    kinds: dict[str, int] = {}
    for f in site.faults:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    result = NemesisResult(
        lease, count, end - start, len(report.double), len(report.residual),
        report.residual_max * 1000, report.availability, seed, kinds,
    )  # fmt: skip
    print(f"nemesis lease {lease}: {report.summary()}", flush=True)
    for a, b, who in report.double:
        print(f"  DOUBLE HOLDER {a:.3f}..{b:.3f} {sorted(who)}")
    return result


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    settings = ["v3/100ms", *LEASES]
    for setting in settings:
        for mode in MODES:
            cell = [r for r in runs if (r.setting, r.mode) == (setting, mode)]
            times = [r.answered_ms for r in cell if r.answered_ms is not None]
            if not cell:
                continue
            median = statistics.median(times) if times else None
            p95 = percentile(times, 0.95) if times else None
            rows.append(
                {
                    "impl": cell[0].impl,
                    "setting": setting,
                    "mode": mode,
                    "runs": len(cell),
                    "ok": len(times),
                    "median": median,
                    "p95": p95,
                    "ratio": median / KEEPALIVED[mode] if median is not None else None,
                    "target": TARGETS.get((setting, mode)),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| implementation | setting | failover | median | p95 | vs keepalived 301/67 ms (median) "
        "| target p50 | runs ok |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        what = "kill -9" if r["mode"] == "kill" else "SIGTERM"
        name = "keepalived VRRP" if r["impl"] == "keepalived" else "lvs-agent quorum"
        setting = r["setting"] if r["impl"] == "keepalived" else f"lease: {r['setting']}"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        target = "—" if r["target"] is None else f"≤ {r['target']:.0f}"
        lines.append(
            f"| {name} | {setting} | {what} | {_ms(r['median'])} | {_ms(r['p95'])} | {ratio} "
            f"| {target} | {r['ok']}/{r['runs']} |"
        )
    return "\n".join(lines)


def nemesis_table(results: list[NemesisResult]) -> str:
    lines = [
        "| lease | faults | kinds | duration | double-holder instants | residual overlaps "
        "(paused holder) | max residual | availability |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in results:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(n.by_kind.items()))
        lines.append(
            f"| {n.lease} | {n.faults} | {kinds} | {n.seconds:.0f} s | {n.double} | {n.residual} "
            f"| {n.residual_max_ms:.0f} ms | {n.availability * 100:.1f}% |"
        )
    return "\n".join(lines)


def record(rows: list[dict[str, Any]], nem: list[NemesisResult], notes: str, loads: str,
           day: str, count: int) -> None:  # fmt: skip
    section = f"""## lock_failover

`sudo .venv/bin/python -m bench.lock_failover --faults 1000` — {day}; {machine()}.
Load average {loads}.

Time from the holder's `kill -9` or `SIGTERM` until the client's first answer through
the VIP from another director, in milliseconds; {count} runs per cell. lvs-agent: three
directors (priorities 150/100/50, preempt off), one VRRP instance with
`election: quorum`; the fault comes at a seeded phase of the renew interval after a
stable holder. keepalived: bench.vrrp_failover's v3/100 ms runs (two directors, plain
VRRP) in the same lab and process, for the anchors 301 ms (kill -9) and 67 ms
(SIGTERM); the ratio column divides by those anchors.

{table(rows)}

Random faults (agent.lab.quorum.run_nemesis; kill -9 + restart, SIGSTOP/SIGCONT, full
and one-way nftables partitions of the lock traffic; half aimed at the holder) with the
dual-holder checker over netlink address events on the shared monotonic clock. A killed
or paused node's VIP stays in its kernel until its valid lifetime (refreshed on every
renewal) runs out: time it overlaps a new holder is reported as residual overlap, not as
a double holder. Availability: share of the time with a majority of members up and
connected during which a running node held the VIP.

{nemesis_table(nem) if nem else "(not run)"}

{notes}
"""
    replace_section(RESULTS_MD, "lock_failover", section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--leases", default=",".join(LEASES))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--faults", type=int, default=1000, help="nemesis faults per lease")
    parser.add_argument("--no-keepalived", action="store_true")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--notes", default="")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument(
        "--from-json", metavar="PATH", help="do not run: summarise (and record) saved results"
    )
    parser.add_argument(
        "--json", default=str(RESULTS_JSON), help=f"results file (default {RESULTS_JSON.name})"
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the runs and nemesis results saved in results.json and add this run's",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        runs = [Run(**r) for r in saved["runs"]]
        nem = [NemesisResult(**n) for n in saved["nemesis"]]
        rows = summarise(runs)
        print(table(rows))
        print(nemesis_table(nem))
        if not args.no_record:
            record(rows, nem, args.notes, saved["load"], saved["date"], saved["count"])
        return 0
    if os.geteuid() != 0:
        print("bench.lock_failover: needs root (network namespaces)", file=sys.stderr)
        return 1
    tools = ["ip", "nft"] + ([] if args.no_keepalived else ["keepalived"])
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"bench.lock_failover: needs {tool}", file=sys.stderr)
            return 1
    leases = [x for x in args.leases.split(",") if x]
    modes = [m for m in args.modes.split(",") if m]
    load_before = os.getloadavg()
    print(f"machine: {machine()}")
    runs: list[Run] = []
    nem: list[NemesisResult] = []
    results_json = Path(args.json)
    if args.append and results_json.exists():
        saved = json.loads(results_json.read_text())
        runs = [Run(**r) for r in saved["runs"]]
        nem = [NemesisResult(**n) for n in saved["nemesis"]]
    work = Path(tempfile.mkdtemp(prefix="lock-failover-"))
    phases = [random.Random(args.seed + i).random() for i in range(args.runs)]
    try:
        with Lab(forwarding="dr", directors=3, real_servers=0, vip_on_director=False) as lab:
            bench = VrrpBench(lab, work)
            try:
                if not args.no_keepalived and args.runs:
                    for i in range(args.runs):
                        for mode in modes:
                            r = bench.run("keepalived", "v3/100ms", mode, i, phases[i])
                            runs.append(Run("keepalived", "v3/100ms", mode, i, r.answered_ms,
                                            r.vip_added_ms, "d1", "d2", r.error))  # fmt: skip
                            print(f"keepalived v3/100ms {mode:4} run {i + 1:2}: answer "
                                  f"{_ms(r.answered_ms):>6} ms {r.error}", flush=True)  # fmt: skip
                    bench.clean()
                for lease in leases if args.runs else []:
                    runs += agent_runs(lab, bench, work, lease, args.runs, modes, args.seed)
                for lease in leases if args.faults else []:
                    nem.append(nemesis(lab, bench, work, lease, args.faults, args.seed))
            finally:
                bench.close()
    finally:
        print(f"logs in {work}")
    loads = load_report(load_before)
    rows = summarise(runs)
    print()
    print(table(rows))
    print(nemesis_table(nem))
    results_json.write_text(
        json.dumps(
            {
                "date": args.date,
                "machine": machine(),
                "load": loads,
                "count": max(args.runs, max((r.index + 1 for r in runs), default=0)),
                "runs": [asdict(r) for r in runs],
                "nemesis": [asdict(n) for n in nem],
            },
            indent=1,
        )
    )
    if not args.no_record:
        count = max((r.index + 1 for r in runs), default=0)
        record(rows, nem, args.notes, loads, args.date, count)
        print(f"recorded in {RESULTS_MD}")
    return 1 if any(n.double for n in nem) else 0
