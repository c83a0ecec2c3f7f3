"""The machine's own floor for a Python event loop: a bare asyncio loop that does
nothing but wake a 10 ms timer (the daemon's lag probe, alone), and records how late
each wake is. Run beside the agents in the same boot, it separates what the machine
does to any Python loop (emulation, the CPUs' other work) from what the agent's own
work does to its loop.

    python bench/reload_safety/bare_probe.py OUT.json [SCHED_RR_PRIORITY]

Runs until SIGTERM or SIGINT, then writes the bucket counts (the daemon's
LAG_BUCKETS, cumulative like a Prometheus histogram), the worst wake, and each wake
later than 25 ms with its time (monotonic) to OUT.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

PERIOD = 0.01
LATE = 0.025
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


async def probe(out: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts = [0] * (len(BUCKETS) + 1)
    worst = 0.0
    wakes = 0
    late: list[tuple[float, float]] = []  # (monotonic time, lag) of wakes over LATE
    deadline = time.monotonic() + PERIOD
    while not stop.is_set():
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        lag = max(0.0, time.monotonic() - deadline)
        wakes += 1
        worst = max(worst, lag)
        if lag > LATE and len(late) < 5000:
            late.append((round(deadline + lag, 3), round(lag, 4)))
        for k, le in enumerate(BUCKETS):
            if lag <= le:
                counts[k] += 1
                break
        else:
            counts[-1] += 1
        deadline = time.monotonic() + PERIOD
    cumulative, running = {}, 0
    for le, n in zip([*BUCKETS, float("inf")], counts, strict=True):
        running += n
        cumulative[str(le)] = running
    out.write_text(
        json.dumps({"wakes": wakes, "max_s": round(worst, 4), "le": cumulative, "late": late})
    )


if __name__ == "__main__":
    if len(sys.argv) > 2:
        # The priority is taken once the interpreter has started: a start at SCHED_RR
        # (seconds of imports under emulation) would take the CPU from the agents.
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(int(sys.argv[2])))
    asyncio.run(probe(Path(sys.argv[1])))
