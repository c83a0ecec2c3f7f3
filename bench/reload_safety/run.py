"""Benchmark: reloading a 10,000-service table never costs the VIPs.

In one VM boot (re-runs itself inside the lab VM when this kernel has no IPVS): three
namespaces on one LAN, two directors running `lvs-agent run` with N services x 4 real
servers each in their own IPVS table, a VRRPv3 instance at 100 ms adverts and a quorum
instance at a 200 ms lease (``--advert``, ``--lease``), and a witness. Director 1 (the
better priority) holds both.
It is reloaded R times (SIGHUP), each time with one weight changed, and runs its full
reconciles (after each reload and every ``--interval``). Reported:

  - VRRP state changes and lease losses on both directors during the reloads (target 0)
  - the event-loop lag of both directors during the reloads, from
    lvs_agent_event_loop_lag_seconds: p50, p99 and max as the histogram's bucket
    bounds (target: max <= 50 ms, half the advert interval)
  - the lock's rounds (lvs_agent_lock_round_seconds) and each agent's CPU, in vCPUs
  - the time from SIGHUP until the new weight is in director 1's kernel, beside
    keepalived's reload of the same one-weight change of the same table in the same boot
    (bench/ipvs_apply's (f)), in a fresh namespace, with the cluster stopped

Writes results.json next to this file.

    .venv/bin/python bench/reload_safety/run.py [--services 10000] [--reloads 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.reload_safety.threads import SPAN, ThreadSampler  # noqa: E402
from tests.kernel.test_reload_safety import (  # noqa: E402
    DESTS,
    Cluster,
    by_reason,
    rip,
    scrape,
    total,
    vip,
)

LAG = "lvs_agent_event_loop_lag_seconds"


def weight(kernel: Any, i: int, j: int) -> int | None:
    from agent.ipvs.model import AF_INET, IPPROTO_TCP, DestKey, ServiceKey

    key = ServiceKey(AF_INET, IPPROTO_TCP, vip(i), 80)
    svc = kernel.dump_services([key]).get(key)
    if svc is None:
        return None
    kd = svc.dests.get(DestKey(AF_INET, rip(i, j), 8080))
    return None if kd is None else int(kd.dest.weight)


ROUND = "lvs_agent_lock_round_seconds"


def buckets(text: str, name: str = LAG) -> dict[float, float]:
    from agent.lab.agents import metric_values

    out: dict[float, float] = {}
    for labels, value in metric_values(text, f"{name}_bucket").items():
        out[float(dict(labels)["le"])] = value
    return out


def since_sighup(t: float, hups: list[float]) -> float | None:
    """Seconds from the last SIGHUP at or before ``t`` to ``t`` (None: none before it)."""
    return min((t - h for h in hups if h <= t), default=None)


class LossWatch:
    """When d1 lost its lease, from its lock status file (read every 0.1 s: the
    counters in /metrics would cost the agent a 10,000-service render per look)."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self.times: list[float] = []  # monotonic, one per lease lost
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _losses(self) -> int | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return sum(int(ls["losses"]) for ls in data["leases"])

    def _run(self) -> None:
        last = self._losses()
        while not self._done.wait(0.1):
            now = self._losses()
            if now is None:
                continue
            if last is not None and now > last:
                self.times += [time.monotonic()] * (now - last)
            last = now

    def stop(self, hups: list[float]) -> dict[str, int]:
        """How many losses came how long after the last SIGHUP before them."""
        self._done.set()
        self._thread.join(5)
        bins = {"before the first": 0, "0-1 s": 0, "1-3 s": 0, "3-6 s": 0, "6-12 s": 0}
        bins["12 s or more"] = 0
        for t in self.times:
            gap = since_sighup(t, hups)
            if gap is None:
                bins["before the first"] += 1
                continue
            key = next(
                (
                    k
                    for k, hi in (("0-1 s", 1), ("1-3 s", 3), ("3-6 s", 6), ("6-12 s", 12))
                    if gap < hi
                ),
                "12 s or more",
            )
            bins[key] += 1
        return bins


def mean_of(before: str, after: str, histogram: str) -> float | None:
    """The mean of ``histogram``'s observations between two scrapes."""
    count = total(after, f"{histogram}_count") - total(before, f"{histogram}_count")
    if not count:
        return None
    return round((total(after, f"{histogram}_sum") - total(before, f"{histogram}_sum")) / count, 2)


def summarize(cum: list[tuple[float, float]]) -> dict[str, Any]:
    """p50, p99 and max of wakes given as cumulative (bucket bound, count) pairs, as
    bucket upper bounds, with the counts beyond 25, 50 and 100 ms."""
    count = cum[-1][1] if cum else 0.0

    def quantile(q: float) -> float:
        for le, n in cum:
            if n >= q * count:
                return le
        return float("inf")

    return {
        "wakes": count,
        "p50_le": quantile(0.5),
        "p99_le": quantile(0.99),
        "max_le": quantile(1.0),
        "over_25ms": count - dict(cum).get(0.025, 0.0),
        "over_50ms": count - dict(cum).get(0.05, 0.0),
        "over_100ms": count - dict(cum).get(0.1, 0.0),
    }


def lag_summary(before: str, after: str, name: str = LAG) -> dict[str, Any]:
    """The wakes (or, for ROUND, the lock's rounds) between two scrapes (see summarize)."""
    b, a = buckets(before, name), buckets(after, name)
    return summarize(sorted((le, a[le] - b.get(le, 0.0)) for le in a))


def bare_summary(raw: dict[str, Any]) -> dict[str, Any]:
    """bare_probe.py's record in lag_summary's terms, with its exact worst wake."""
    cum = sorted((float(le), float(n)) for le, n in raw["le"].items())
    return {**summarize(cum), "max_s": raw["max_s"]}


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its children so far."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        times = p.cpu_times()
        total += times.user + times.system
    return total


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory of a process and of its children (the configuration worker)."""
    import psutil

    proc = psutil.Process(pid)
    kids = proc.children(recursive=True)
    return {
        "agent": round(proc.memory_info().rss / 2**20, 1),
        "children": round(sum(k.memory_info().rss for k in kids) / 2**20, 1),
    }


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def wait(what: str, check: Any, timeout: float, cluster: Cluster) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for a in cluster.agents.values():
            if not a.running():
                raise RuntimeError(f"an agent exited before {what}:\n{a.text()[-3000:]}")
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout:g}s")


def run_cluster(
    services: int,
    reloads: int,
    interval: str,
    gap: float,
    advert: float,
    lease: str,
    work: Path,
    realtime: int = 0,
) -> dict[str, Any]:
    from agent.ipvs.kernel import IpvsKernel
    from agent.lab import netns
    from agent.lab.topology import Lab

    res: dict[str, Any] = {"services": services, "real_servers": services * DESTS}
    with Lab(forwarding="nat", directors=3, real_servers=1, vip_on_director=False) as lab:
        # Counters per real server would make each scrape render 410,000 series
        # (bench/metrics_scale: ~5 s of CPU on hardware, minutes under emulation), a
        # load of its own in the window: the agents export them per virtual server.
        cluster = Cluster(
            lab,
            work,
            services=services,
            reconcile_interval=interval,
            advert=advert,
            lease=lease,
            per_real_server="aggregate",
            realtime_priority=realtime or None,
        )
        weights: dict[tuple[int, int], int] = {}
        try:
            started = time.monotonic()
            w = cluster.start(3, weights)
            d1 = cluster.start(1, weights)
            d2 = cluster.start(2, weights)
            last = (services - 1, DESTS - 1)
            with netns.entered(lab.director(1).ns):
                k1 = IpvsKernel()
            with netns.entered(lab.director(2).ns):
                k2 = IpvsKernel()

            from agent.daemon.worker import SMALL_FILE

            small = d1.config.stat().st_size < SMALL_FILE

            def settled() -> bool:
                log = d1.text()
                return (
                    "adverts: BACKUP -> MASTER" in log
                    and "quorum: BACKUP -> MASTER" in log
                    # the daemon is idle (a file under SMALL_FILE is read without the worker)
                    and ("configuration worker ready" in log or small)
                    and weight(k2, *last) == 1
                )

            res["start_s"] = round(wait("the cluster to settle", settled, 1800, cluster), 2)
            print(f"cluster up in {res['start_s']}s (both tables programmed)", flush=True)
            time.sleep(5)
            bare_argv = [sys.executable, str(Path(__file__).with_name("bare_probe.py"))]
            bare_out = work / "bare-probe.json"
            bare = subprocess.Popen([*bare_argv, str(bare_out)])
            # the same loop one real-time priority above the agents' loops: the machine's
            # floor. At their own priority it shared a CPU round-robin (100 ms slices) with
            # whichever agent loop was busy, and measured the agents as much as the machine.
            bare_rt_out = work / "bare-probe-rt.json"
            bare_rt = (
                subprocess.Popen([*bare_argv, str(bare_rt_out), str(realtime + 1)])
                if realtime
                else None
            )
            before = {n: scrape(a) for n, a in (("d1", d1), ("d2", d2), ("w", w))}
            cpu_before = {n: cpu_seconds(a.pid) for n, a in (("d1", d1), ("d2", d2), ("w", w))}
            window_start = time.monotonic()
            losses = LossWatch(work / "state-d1" / "lock-status.json")
            pids = {"d1": d1.pid, "d2": d2.pid, "w": w.pid, "bare": bare.pid}
            sampler = ThreadSampler(pids | ({"bare_rt": bare_rt.pid} if bare_rt else {}))
            took: list[float] = []
            hups: list[float] = []
            for n in range(reloads):
                i, j = (services - 1 - 97 * n) % services, n % DESTS
                weights[(i, j)] = 10 + n
                d1.config.write_text(cluster.config(1, weights))
                hups.append(time.monotonic())
                d1.signal(signal.SIGHUP)
                took.append(
                    wait(
                        f"reload {n}",
                        lambda i=i, j=j, n=n: weight(k1, i, j) == 10 + n,
                        600,
                        cluster,
                    )
                )
                print(f"reload {n}: weight in the kernel {took[-1]:.2f}s after SIGHUP", flush=True)
                # the full reconcile that follows a reload, before the next one (scraping
                # /metrics to see it would itself load the agent: every real server's counters)
                time.sleep(gap)
            time.sleep(2)
            res["d1_losses_after_sighup"] = losses.stop(hups)
            sampler.stop()
            res["rss_mib"] = {n: memory_mib(a.pid) for n, a in (("d1", d1), ("d2", d2), ("w", w))}
            res["mem_available_mib"] = mem_available_mib()
            after = {n: scrape(a) for n, a in (("d1", d1), ("d2", d2), ("w", w))}
            window = time.monotonic() - window_start
            # each agent's CPU over the window (its fence child included), in vCPUs
            res["cpu_vcpu"] = {
                n: round((cpu_seconds(a.pid) - cpu_before[n]) / window, 3)
                for n, a in (("d1", d1), ("d2", d2), ("w", w))
            }
            bare.send_signal(signal.SIGTERM)
            bare.wait(timeout=60)
            res["bare_loop"] = bare_summary(json.loads(bare_out.read_text()))
            if bare_rt is not None:
                bare_rt.send_signal(signal.SIGTERM)
                bare_rt.wait(timeout=60)
                rt_probe = json.loads(bare_rt_out.read_text())
                res["bare_loop_rt"] = bare_summary(rt_probe)
                res["bare_loop_rt_priority"] = realtime + 1
                rt_late = rt_probe.get("late", [])
            else:
                rt_late = []
            # each thread's CPU and run-queue wait over the window, and around each loss:
            # the busiest threads, the loops' waits for a CPU, the real-time bare loop's
            # worst wake (the machine's own stall) in the same span
            res["threads"] = sampler.totals()
            res["d1_losses"] = [
                {
                    "after_sighup_s": round(since_sighup(t, hups) or 0.0, 2),
                    **sampler.around(t),
                    "bare_rt_worst_s": max(
                        (lag for at, lag in rt_late if t - SPAN <= at <= t), default=0.0
                    ),
                }
                for t in losses.times[:60]
            ]
            res["realtime_priority"] = realtime
            res["reload_seconds"] = [round(t, 3) for t in took]
            res["reload_median_s"] = round(statistics.median(took), 3)
            res["reload_max_s"] = round(max(took), 3)
            res["elapsed_s"] = round(time.monotonic() - started, 1)
            for name in ("d1", "d2"):
                b, a = before[name], after[name]
                res[name] = {
                    "vrrp_transitions": total(a, "lvs_agent_vrrp_transitions_total")
                    - total(b, "lvs_agent_vrrp_transitions_total"),
                    # by instance: "adverts" is elected by VRRP alone, "quorum" by the lease
                    "transitions_by_instance": {
                        inst: total(a, "lvs_agent_vrrp_transitions_total", instance=inst)
                        - total(b, "lvs_agent_vrrp_transitions_total", instance=inst)
                        for inst in ("adverts", "quorum")
                    },
                    "lease_losses": total(a, "lvs_agent_lock_losses_total")
                    - total(b, "lvs_agent_lock_losses_total"),
                    "full_reconciles": total(a, "lvs_agent_reconcile_duration_seconds_count")
                    - total(b, "lvs_agent_reconcile_duration_seconds_count"),
                    # the mean duration of those, and of all since start (None: none ran)
                    "full_reconcile_mean_s": mean_of(b, a, "lvs_agent_reconcile_duration_seconds"),
                    "full_reconcile_mean_s_since_start": mean_of(
                        "", a, "lvs_agent_reconcile_duration_seconds"
                    ),
                    # full reconciles stopped before writing because a reload came
                    "reconciles_abandoned": {"d1": d1, "d2": d2}[name]
                    .text()
                    .count("reconcile: abandoned"),
                    "reloads_applied": total(a, "lvs_agent_config_reloads_total", result="applied"),
                    "loop_lag": lag_summary(b, a),
                    # PREPARE to hold, of the rounds that gave one ("wakes": rounds)
                    "lock_rounds": lag_summary(b, a, ROUND),
                    # why renewals failed: refused or timed out rounds, dropped datagrams
                    "lock_refusals": by_reason(b, a, "lvs_agent_lock_refusals_total"),
                    "lock_rejected": by_reason(b, a, "lvs_agent_lock_messages_rejected_total"),
                }
            # the witness answers every round too (it has no loop-lag probe)
            res["witness"] = {
                "lock_refusals": by_reason(
                    before["w"], after["w"], "lvs_agent_lock_refusals_total"
                ),
                "lock_rejected": by_reason(
                    before["w"], after["w"], "lvs_agent_lock_messages_rejected_total"
                ),
            }
            # the agents' own account of each reload, of late wakes and of what held
            # the loop up (agent.daemon.lag.StallWatch)
            marks = ("reload", "abandoned", " late", "not woken", "lock was held", "collection")
            for name, agent in (("d1", d1), ("d2", d2)):
                lines = agent.text().splitlines()
                res[f"{name}_log"] = [line for line in lines if any(m in line for m in marks)][
                    -150:
                ]
                # the lease's own lines apart: at a lease that flaps they would fill the rest
                res[f"{name}_lock_log"] = [line for line in lines if "lock " in line][-100:]
            k1.close()
            k2.close()
        finally:
            for agent in cluster.agents.values():
                agent.stop(timeout=120)
    return res


def keepalived_reload(services: int, work: Path) -> float:
    from bench.ipvs_apply.run import fresh_netns
    from bench.ipvs_apply.run import keepalived_reload as reload

    with fresh_netns() as ns:
        return reload(ns, services, work, 1800)


def keepalived_floor(advert: float, seconds: float, work: Path) -> dict[str, Any]:
    """keepalived's own VRRP at the same advert interval in the same boot: two
    directors (priorities 200 and 100), VRRPv3, one VIP, no IPVS; state changes over a
    quiet window of ``seconds``. What the emulated machine holds for a C speaker."""
    from agent.lab.keepalived import Keepalived, keepalived_conf
    from agent.lab.topology import Lab

    entered = ("Entering MASTER STATE", "Entering BACKUP STATE", "Entering FAULT STATE")
    res: dict[str, Any] = {"advert_s": advert, "window_s": seconds}
    with Lab(forwarding="nat", directors=2, real_servers=1, vip_on_director=False) as lab:
        speakers = [
            Keepalived(
                lab,
                lab.director(i),
                keepalived_conf(
                    version=3,
                    vrid=73,
                    priority=200 if i == 1 else 100,
                    interval=advert,
                    vips=["192.0.2.173/32"],
                ),
                work,
                tag="-floor",
            )
            for i in (1, 2)
        ]
        try:
            if speakers[0].wait_for("Entering MASTER STATE", 120) is None:
                res["error"] = "keepalived d1 never became master"
                return res
            time.sleep(5)
            before = [sum(k.count(e) for e in entered) for k in speakers]
            time.sleep(seconds)
            after = [sum(k.count(e) for e in entered) for k in speakers]
            res["d1_transitions"] = after[0] - before[0]
            res["d2_transitions"] = after[1] - before[1]
        finally:
            for k in speakers:
                k.close()
    return res


def ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--interval", default="60s", help="the agents' reconcile_interval")
    parser.add_argument("--advert", type=float, default=0.1, help="VRRP advert interval, s")
    parser.add_argument("--lease", default="200ms", help="the quorum instance's lease")
    parser.add_argument("--gap", type=float, default=20.0, help="seconds between reloads")
    parser.add_argument(
        "--floor",
        type=float,
        default=0.0,
        help="seconds of keepalived's own VRRP at --advert in the same boot (0: none)",
    )
    parser.add_argument(
        "--no-anchor", action="store_true", help="leave out keepalived's reload (a shorter run)"
    )
    parser.add_argument(
        "--realtime",
        type=int,
        default=0,
        help="the agents' node.realtime_priority (their event loop at SCHED_RR), 0: not set",
    )
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    from agent.lab.topology import ipvs_available

    if not ipvs_available():
        from agent.lab.vm import run_in_vm

        print("no IPVS in this kernel: running in the lab VM (software emulation)", flush=True)
        cmd = (
            f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} "
            f"{shlex.quote(__file__)} --services {args.services} --reloads {args.reloads} "
            f"--interval {args.interval} --gap {args.gap} --advert {args.advert} "
            f"--lease {args.lease} --floor {args.floor} --out {shlex.quote(args.out)}"
            + f" --realtime {args.realtime}"
            + (" --no-anchor" if args.no_anchor else "")
        )
        return run_in_vm(cmd, rwdirs=[str(ROOT)], memory="4G")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="reload-safety-") as tmp:
        work = Path(tmp)
        results["agent"] = run_cluster(
            args.services,
            args.reloads,
            args.interval,
            args.gap,
            args.advert,
            args.lease,
            work,
            args.realtime,
        )
        if not args.no_anchor:
            print("keepalived: the same one-weight reload", flush=True)
            results["keepalived_reload_s"] = round(keepalived_reload(args.services, work), 3)
        if args.floor > 0:
            print(f"keepalived: VRRP alone at {args.advert:g}s adverts", flush=True)
            results["keepalived_floor"] = keepalived_floor(args.advert, args.floor, work)
    a = results["agent"]
    print(f"\n== {args.services} services x {DESTS}, {args.reloads} reloads")
    for name in ("d1", "d2"):
        d, lag = a[name], a[name]["loop_lag"]
        each = ", ".join(f"{k} {v:g}" for k, v in d["transitions_by_instance"].items())
        print(
            f"{name}: VRRP transitions {d['vrrp_transitions']:g} ({each}), lease losses "
            f"{d['lease_losses']:g}, full reconciles {d['full_reconciles']:g} (mean "
            f"{d['full_reconcile_mean_s']} s, since start {d['full_reconcile_mean_s_since_start']}"
            f" s; {d['reconciles_abandoned']} abandoned in all); loop lag "
            f"p50 <= {ms(lag['p50_le'])}, p99 <= {ms(lag['p99_le'])}, max <= {ms(lag['max_le'])}"
            f" ({lag['wakes']:g} wakes, {lag['over_50ms']:g} over 50 ms, "
            f"{lag['over_100ms']:g} over 100 ms)"
        )
    for name in ("d1", "d2"):
        d, rounds = a[name], a[name]["lock_rounds"]
        if rounds["wakes"]:
            print(
                f"{name}: lock rounds that gave a hold {rounds['wakes']:g}, p50 <= "
                f"{ms(rounds['p50_le'])}, p99 <= {ms(rounds['p99_le'])}, max <= "
                f"{ms(rounds['max_le'])}"
            )
        print(f"{name}: lock refusals {d['lock_refusals']}, rejected {d['lock_rejected']}")
    cpu = a["cpu_vcpu"]
    print(
        f"CPU over the reloads (agent and its fence child): d1 {cpu['d1']:g}, d2 {cpu['d2']:g}, "
        f"witness {cpu['w']:g} vCPU of {os.cpu_count()}"
    )
    wit = a["witness"]
    print(f"witness: lock refusals {wit['lock_refusals']}, rejected {wit['lock_rejected']}")
    print(f"d1: lease losses by time since the last SIGHUP: {a['d1_losses_after_sighup']}")
    print("threads by CPU over the reloads (CPU s, run-queue wait s):")
    for row in a["threads"][:14]:
        print(
            f"  {row['thread']}: {row['cpu_s']} (system {row['system_s']}) / {row['wait_s']} "
            f"({row['policy']}; switches {row['switches']}, preempted {row['preempted']})"
        )
    for loss in a["d1_losses"]:
        print(
            f"d1 lease loss {loss['after_sighup_s']} s after SIGHUP: real-time bare loop worst "
            f"{ms(loss['bare_rt_worst_s'])}; loops waiting for a CPU {loss.get('loop_wait_s')}, "
            f"their system CPU {loss.get('loop_system_s')}, switches (voluntary, preempted) "
            f"{loss.get('loop_switches')}; "
            f"busiest {loss.get('busiest_cpu_s')}"
        )
    print(f"resident MiB (agent, children): {a['rss_mib']}; available {a['mem_available_mib']}")
    bare = a["bare_loop"]
    print(
        f"bare Python loop beside them (the machine's floor): p50 <= {ms(bare['p50_le'])}, "
        f"p99 <= {ms(bare['p99_le'])}, max {ms(bare['max_s'])} ({bare['wakes']:g} wakes, "
        f"{bare['over_50ms']:g} over 50 ms, {bare['over_100ms']:g} over 100 ms)"
    )
    if "bare_loop_rt" in a:
        rt = a["bare_loop_rt"]
        print(
            f"bare Python loop at SCHED_RR {args.realtime + 1}: p99 <= {ms(rt['p99_le'])}, "
            f"max {ms(rt['max_s'])} ({rt['wakes']:g} wakes, {rt['over_50ms']:g} over 50 ms, "
            f"{rt['over_100ms']:g} over 100 ms)"
        )
    print(
        f"SIGHUP -> weight in the kernel: median {a['reload_median_s']} s, max "
        f"{a['reload_max_s']} s; keepalived {results.get('keepalived_reload_s', '-')} s"
    )
    if "keepalived_floor" in results:
        f = results["keepalived_floor"]
        print(
            f"keepalived VRRP alone at {args.advert:g}s adverts, {args.floor:g}s quiet: "
            f"{f.get('d1_transitions', '?')} / {f.get('d2_transitions', '?')} state changes "
            f"(d1 / d2){' ' + f['error'] if 'error' in f else ''}"
        )
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
