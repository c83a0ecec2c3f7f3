"""Run many simulated lock schedules in parallel and report schedules, events, violations.

    .venv/bin/python bench/lock_sim/run.py                     # 1,000,000 schedules
    .venv/bin/python bench/lock_sim/run.py -n 50000 --flaw owner-only-release \
        --style release-storm                                   # mutant hit rate
    .venv/bin/python bench/lock_sim/run.py -n 20000 --style pause-accept --certify
                                                                # + quorum-of-records check

Each schedule is a pure function of its seed (agent/lock/sim.py), so a reported seed
replays exactly with ``run_schedule(seed, trace=True)`` (same ``--flaw``/``--style``).
``--certify`` also checks, after every event, that each holder has a quorum of live
acceptor records of its own process (the lemma behind A2; agent/lock/lease.py ``Flaw``).
Exit status 1 if any violation (or, with ``--certify``, any uncertified holder) was found.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.lock.lease import Flaw
from agent.lock.sim import ALL_STYLES, Summary, run_range


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--schedules", type=int, default=1_000_000)
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("-j", "--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--chunk", type=int, default=2000)
    p.add_argument("--flaw", action="append", default=[], choices=[f.value for f in Flaw])
    p.add_argument("--style", choices=ALL_STYLES, default=None, help="default: the full mixture")
    p.add_argument("--certify", action="store_true", help="check the quorum-of-records lemma")
    args = p.parse_args(argv)

    end = args.start + args.schedules
    jobs = [
        (lo, min(end, lo + args.chunk), tuple(args.flaw), args.style, False, args.certify)
        for lo in range(args.start, end, args.chunk)
    ]
    total = Summary()
    t0 = time.monotonic()
    last = t0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for part in pool.map(run_range, jobs):
            total.merge(part)
            now = time.monotonic()
            if now - last >= 30.0:
                last = now
                rate = total.schedules / (now - t0)
                print(f"  ... {total.schedules} schedules, {rate:.0f}/s", file=sys.stderr)
    elapsed = time.monotonic() - t0
    print(f"flaws:       {','.join(args.flaw) or 'none'}")
    print(f"style:       {args.style or 'mixture'}")
    print(f"schedules:   {total.schedules}")
    print(f"events:      {total.events}")
    print(f"violations:  {total.violations}")
    print(f"acquisitions:{total.acquisitions}")
    print(
        f"elapsed:     {elapsed:.1f} s ({total.schedules / elapsed:.0f} schedules/s, "
        f"{total.events / elapsed:.0f} events/s, {args.workers} workers)"
    )
    if args.certify:
        print(f"uncertified: {total.uncertified}")
    if total.violations:
        print(f"first seeds: {total.violating_seeds}")
    if total.uncertified:
        print(f"uncertified seeds: {total.uncertified_seeds}")
    return 1 if total.violations or total.uncertified else 0


if __name__ == "__main__":
    raise SystemExit(main())
