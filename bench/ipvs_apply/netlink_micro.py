"""Micro-benchmark: the agent's IPVS netlink path against ipvsadm, in one VM boot.

For each size (services x 4 real servers, NAT, on an empty table, each run in a
fresh network namespace):

- apply: ``IpvsKernel.apply`` of the AddService/AddDest ops vs ``ipvsadm-restore``
  of the same rules (keepalived's reload is ~0.47x ipvsadm-restore: the target);
- full read: ``IpvsKernel.dump()`` (a no-op reconcile) vs ``ipvsadm -S -n``
  (target: <= 0.25x ipvsadm-restore);
- one SET_DEST (weight change): latency and netlink messages it took;
- how much of apply/dump is Python (encoding/decoding) rather than the kernel.

Run (needs the IPVS kernel, i.e. the lab VM)::

    .venv/bin/python -m agent.lab.vm --rwdir /work/main -- \\
        "cd /work/main && .venv/bin/python bench/ipvs_apply/netlink_micro.py"

Options: ``--sizes 1000,10000`` ``--dump-windows 1,1,4``: a window's first dump
runs with the decode cache cleared ("cold"), a repeat reuses it ("warm": what a
no-op reconcile of an idle table costs). BENCH_PAUSE_GC=0 leaves the GC on. Prints times and ratios;
compare ratios within one run only (software emulation is 5-20x slower).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.ipvs import netlink as nl
from agent.ipvs.kernel import IpvsKernel
from agent.ipvs.model import (
    AF_INET,
    IPPROTO_TCP,
    AddDest,
    AddService,
    Dest,
    DestKey,
    EditDest,
    Op,
    Service,
    ServiceKey,
)
from agent.lab import netns
from bench.ipvs_apply.workload import DESTS, ipvsadm_rules, rip, vip


def workload(n: int, scheduler: str = "wrr") -> tuple[list[Op], str]:
    """The ops and the equivalent ipvsadm-restore input for n services x 4 dests."""
    ops: list[Op] = []
    for i in range(n):
        key = ServiceKey(AF_INET, IPPROTO_TCP, vip(i), 80)
        ops.append(AddService(Service(key, scheduler)))
        for j in range(DESTS):
            ops.append(AddDest(key, Dest(DestKey(AF_INET, rip(i, j), 8080), weight=1)))
    return ops, ipvsadm_rules(n, scheduler)


@contextmanager
def fresh_netns() -> Iterator[str]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def open_kernel(name: str, **kw: Any) -> IpvsKernel:
    with netns.entered(name):
        return IpvsKernel(**kw)


PAUSE_GC = os.environ.get("BENCH_PAUSE_GC", "1") == "1"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


class PythonTime:
    """Accumulates time spent inside the pipelines' encode/decode methods."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._saved: list[tuple[type, str, Any]] = []

    def __enter__(self) -> PythonTime:
        for cls, meth in (
            (nl.ApplyPipeline, "next_batch"),
            (nl.ApplyPipeline, "feed"),
            (nl.DumpPipeline, "next_batch"),
            (nl.DumpPipeline, "feed"),
        ):
            orig = cls.__dict__.get(meth) or getattr(cls, meth)
            self._saved.append((cls, meth, cls.__dict__.get(meth)))

            def wrapper(self_: Any, *a: Any, _orig: Any = orig) -> Any:
                t = time.perf_counter()
                try:
                    return _orig(self_, *a)
                finally:
                    self.seconds += time.perf_counter() - t

            setattr(cls, meth, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, meth, orig in reversed(self._saved):
            if orig is None:
                delattr(cls, meth)
            else:
                setattr(cls, meth, orig)


def dump_labels(windows: list[int]) -> list[str]:
    """'w=1 cold' for a window's first run (decode cache cleared), then 'w=1 warm'."""
    return [f"w={w} " + ("warm" if w in windows[:i] else "cold") for i, w in enumerate(windows)]


def run_size(n: int, dump_windows: list[int], repeat: int) -> dict[str, float]:
    """Every measurement ``repeat`` times in fresh namespaces; the best time of each."""
    ops, rules = workload(n)
    r: dict[str, float] = {}

    def best(name: str, t: float) -> None:
        r[name] = min(r.get(name, float("inf")), t)

    for _round in range(repeat):
        with fresh_netns() as ns:
            t, proc = timed(
                lambda ns=ns: subprocess.run(
                    netns.exec_argv(ns, ["ipvsadm-restore"]),
                    input=rules,
                    text=True,
                    capture_output=True,
                )
            )
            if proc.returncode != 0:
                raise SystemExit(f"ipvsadm-restore failed: {proc.stderr[:500]}")
            best("ipvsadm-restore", t)
            t, proc = timed(
                lambda ns=ns: subprocess.run(
                    netns.exec_argv(ns, ["ipvsadm", "-S", "-n"]), text=True, capture_output=True
                )
            )
            best("ipvsadm -S -n", t)
            saved_lines = proc.stdout.count("\n")

        with fresh_netns() as ns:
            k = open_kernel(ns, pause_gc=PAUSE_GC)
            with PythonTime() as py:
                t, results = timed(lambda k=k: k.apply(ops))
            failed = [str(x) for x in results if x is not None]
            if failed:
                raise SystemExit(f"apply failed: {failed[:3]}")
            if t < r.get("apply", float("inf")):
                r["apply python"] = py.seconds
            best("apply", t)
            r["apply sendmsg calls"] = k.counters.sendmsg_calls
            mm = k._receiver._mm
            variants = [
                (w, label, True)
                for w, label in zip(dump_windows, dump_labels(dump_windows), strict=True)
            ]
            variants.append((1, "w=1 warm, plain recv", True))
            variants.append((1, "w=1 no decode cache", True))
            for w, label, _unused in variants:
                k.dump_window = w
                k._receiver._mm = None if "plain recv" in label else mm
                cache = k.dump_cache
                if "no decode cache" in label:
                    k.dump_cache = None
                if label.endswith("cold") and k.dump_cache is not None:
                    k.dump_cache.clear()
                before = (k.counters.sendmsg_calls, k.counters.recv_calls)
                with PythonTime() as py:
                    t, table = timed(k.dump)
                if t < r.get(f"dump {label}", float("inf")):
                    r[f"dump {label} python"] = py.seconds
                best(f"dump {label}", t)
                r[f"dump {label} syscalls"] = (
                    k.counters.sendmsg_calls - before[0] + k.counters.recv_calls - before[1]
                )
                k.dump_cache = cache
                got = len(table) + sum(len(ks.dests) for ks in table.values())
                if got != saved_lines or got != n * (1 + DESTS):
                    raise SystemExit(f"dump saw {got} objects, ipvsadm {saved_lines}")
            k._receiver._mm = mm
            key = next(iter(table))
            dest = next(iter(table[key].dests.values())).dest
            lat = []
            msgs = k.counters.messages_sent
            for w in range(2, 22):
                op = EditDest(key, Dest(dest.key, dest.fwd, w))
                t, res = timed(lambda k=k, op=op: k.apply([op]))
                assert res == [None]
                lat.append(t)
            best("set-dest median", statistics.median(lat))
            r["set-dest messages"] = (k.counters.messages_sent - msgs) / len(lat)
            k.close()
    return r


def _meminfo() -> str:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return f"guest MemTotal {info['MemTotal'].strip()}, MemAvailable {info['MemAvailable'].strip()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--dump-windows", default="1,1,4")
    ap.add_argument("--repeat", type=int, default=2, help="rounds; best time of each")
    args = ap.parse_args()
    subprocess.run(["modprobe", "ip_vs"], check=True)
    subprocess.run(["modprobe", "ip_vs_wrr"], check=True)
    windows = [int(w) for w in args.dump_windows.split(",")]
    labels = [*dump_labels(windows), "w=1 warm, plain recv", "w=1 no decode cache"]
    print(f"pause_gc={PAUSE_GC}")
    for n in (int(s) for s in args.sizes.split(",")):
        r = run_size(n, windows, args.repeat)
        restore = r["ipvsadm-restore"]
        print(
            f"\n== {n} services x {DESTS} dests ({n * (1 + DESTS)} objects),"
            f" best of {args.repeat} =="
        )
        print(f"ipvsadm-restore      {restore:8.3f} s")
        print(
            f"apply                {r['apply']:8.3f} s  = {r['apply'] / restore:.3f}x restore"
            f"  (target < 0.47x; python {r['apply python']:.3f} s,"
            f" {r['apply sendmsg calls']:.0f} sendmsg)"
        )
        print(
            f"ipvsadm -S -n        {r['ipvsadm -S -n']:8.3f} s"
            f"  = {r['ipvsadm -S -n'] / restore:.3f}x restore"
        )
        for label in labels:
            d = r[f"dump {label}"]
            print(
                f"dump {label:20s} {d:8.3f} s  = {d / restore:.3f}x restore,"
                f" {d / r['ipvsadm -S -n']:.3f}x ipvsadm -S (target <= 0.25x restore;"
                f" python {r[f'dump {label} python']:.3f} s,"
                f" {r[f'dump {label} syscalls']:.0f} send+recv)"
            )
        print(
            f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB,"
            f" {_meminfo()}"
        )
        print(
            f"one SET_DEST         {r['set-dest median'] * 1000:8.3f} ms median of 20,"
            f" {r['set-dest messages']:.0f} netlink message(s) each"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
