"""Which threads of the machine ran, and which waited for a CPU, around each lease loss.

``ThreadSampler`` reads every thread of the given processes and their descendants from
/proc once a ``period``: its CPU time (``stat`` utime + stime) and system CPU time, its
time runnable but waiting for a CPU (``schedstat``'s second field), its voluntary and
involuntary context switches (``status``) and its scheduling policy. From those:

  - ``totals``: each thread's CPU, system CPU, run-queue wait and switches over the
    window;
  - ``around``: for a moment (a lease loss), the threads that took the most CPU in the
    ``SPAN`` seconds before it, and each agent's loop thread's system CPU, wait for a
    CPU and switches in that span.

A thread is named ``agent/process/thread``: the agent's name from ``pids``, ``main`` or
the child's command name, and the thread's own name (``comm``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
POLICY = {0: "OTHER", 1: "FIFO", 2: "RR", 3: "BATCH", 5: "IDLE"}
SPAN = 1.5  # seconds before a lease loss that ``around`` looks at

# one thread at one sample: CPU seconds, run-queue wait seconds, system CPU seconds,
# voluntary and involuntary context switches
Sample = dict[str, tuple[float, float, float, int, int]]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in _read(task).split()]
    return out


def _threads(agent: str, pid: int) -> tuple[Sample, dict[str, str]]:
    sample: Sample = {}
    policy: dict[str, str] = {}
    for k, p in enumerate(_descendants(pid)):
        proc = "main" if k == 0 else _read(Path(f"/proc/{p}/comm")).strip() + f"[{p}]"
        for task in Path(f"/proc/{p}/task").glob("*"):
            stat = _read(task / "stat")
            if not stat:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            # fields[0] is field 3 (state): utime 14, stime 15, rt_priority 40, policy 41
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            sched = _read(task / "schedstat").split()
            wait = int(sched[1]) / 1e9 if len(sched) > 1 else 0.0
            name = f"{agent}/{proc}/{comm}[{task.name}]"
            status = _read(task / "status")
            switches = [
                int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
            ]
            vol, invol = [*switches, 0, 0][:2]
            sample[name] = (cpu, wait, int(fields[12]) / TICK, vol, invol)
            rt = int(fields[37])
            policy[name] = POLICY.get(int(fields[38]), fields[38]) + (f" {rt}" if rt else "")
    return sample, policy


class ThreadSampler:
    def __init__(self, pids: dict[str, int], period: float = 1.0) -> None:
        self.pids = pids
        self.period = period
        self.samples: list[tuple[float, Sample]] = []
        self.policy: dict[str, str] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _take(self) -> None:
        now = time.monotonic()
        sample: Sample = {}
        for agent, pid in self.pids.items():
            s, policy = _threads(agent, pid)
            sample |= s
            self.policy |= policy
        self.samples.append((now, sample))

    def _run(self) -> None:
        self._take()
        while not self._done.wait(self.period):
            self._take()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(10)
        self._take()

    def totals(self, top: int = 25) -> list[dict[str, object]]:
        """The ``top`` threads by CPU over the window: CPU, system CPU and run-queue wait
        in seconds, voluntary and involuntary switches."""
        (_, first), (_, last) = self.samples[0], self.samples[-1]
        rows = []
        for name, (cpu, wait, system, vol, invol) in last.items():
            c0, w0, s0, v0, i0 = first.get(name, (0.0, 0.0, 0.0, 0, 0))
            rows.append(
                {
                    "thread": name,
                    "policy": self.policy.get(name, "?"),
                    "cpu_s": round(cpu - c0, 2),
                    "system_s": round(system - s0, 2),
                    "wait_s": round(wait - w0, 2),
                    "switches": vol - v0,
                    "preempted": invol - i0,
                }
            )
        rows.sort(key=lambda r: -float(str(r["cpu_s"])))
        return rows[:top]

    def around(self, t: float, span: float = SPAN, top: int = 6) -> dict[str, object]:
        """The busiest threads' CPU and the loops' system CPU, run-queue wait and switches
        in the ``span`` seconds before ``t``."""
        before = [s for s in self.samples if s[0] <= t - span]
        after = [s for s in self.samples if s[0] >= t]
        if not before or not after:
            return {}
        (t0, s0), (t1, s1) = before[-1], after[0]
        zero = (0.0, 0.0, 0.0, 0, 0)
        delta = {
            n: tuple(b - a for a, b in zip(s0.get(n, zero), now, strict=True))
            for n, now in s1.items()
        }
        busiest = sorted(delta.items(), key=lambda kv: -kv[1][0])[:top]
        loops = {
            n.split("/")[0]: d
            for n, d in delta.items()
            if n.split("/")[1] == "main" and n.endswith(f"[{self.pids[n.split('/')[0]]}]")
        }
        return {
            "seconds": round(t1 - t0, 2),
            "busiest_cpu_s": {n: round(d[0], 2) for n, d in busiest},
            # the agents' loop threads (their main thread): system CPU, time runnable
            # without a CPU, voluntary and involuntary switches
            "loop_system_s": {a: round(d[2], 2) for a, d in loops.items()},
            "loop_wait_s": {a: round(d[1], 3) for a, d in loops.items()},
            "loop_switches": {a: (int(d[3]), int(d[4])) for a, d in loops.items()},
        }
