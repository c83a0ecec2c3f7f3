"""Random faults against real agents, with the dual-holder checker and availability.

3 directors, and 2 directors + a witness; kill -9 and restart, SIGSTOP/SIGCONT, full and
one-way partitions of the lock traffic (nftables). ``LOCK_NEMESIS_SECONDS`` sets each
run's length (default 60 for 3 directors, 45 for the witness site: the lock tier stays
under four minutes on a 2-CPU runner); ``LOCK_NEMESIS_SEED`` replays a schedule.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from agent.lab.addrwatch import AddressWatch
from agent.lab.quorum import QuorumSite, run_nemesis
from agent.lab.topology import Lab

from .helpers import holder


@pytest.mark.parametrize(
    ("witness", "default_seconds"), [(None, 60.0), (3, 45.0)], ids=["3-directors", "witness"]
)
def test_nemesis_never_two_holders(
    lab: Lab,
    watch: AddressWatch,
    tmp_path: Path,
    sites: list[QuorumSite],
    witness: int | None,
    default_seconds: float,
) -> None:
    seconds = float(os.environ.get("LOCK_NEMESIS_SECONDS", default_seconds))
    seed = int(os.environ.get("LOCK_NEMESIS_SEED", random.randrange(1 << 30)))
    site = QuorumSite(lab, watch, tmp_path, witness=witness, priorities={1: 150, 2: 100, 3: 50})
    sites.append(site)
    site.start()
    holder(site)
    start = time.monotonic()
    schedule: list[str] = []
    faults = run_nemesis(site, seconds, seed, log=schedule)
    # Everyone back: a holder again within a few leases.
    site.wait_holder(15)
    end = time.monotonic()
    report = site.check(start, end)
    print(f"\nnemesis seed {seed}: {report.summary()}")
    for line in report.residual:
        print(f"  residual overlap {(line[1] - line[0]) * 1000:.0f} ms {sorted(line[2])}")
    assert faults >= 10
    assert report.double == [], (seed, report.double, schedule)
    assert report.availability > 0.5, report.summary()
