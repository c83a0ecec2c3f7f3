"""Mutation tests: each deliberately wrong rule must produce a double holder in the simulator.

Seeds are fixed, so every assertion is deterministic; the budget bounds the search.  The
numbers in ``FOUND_BY`` are documentation of how hard each bug is to hit (first seed that
exposes it) and are checked loosely so that simulator tuning does not need a test edit.

``late-deadline`` and ``stale-owner-open`` are combined with ``overwrite-live-lease``:
the acceptor-side refusal (A2) alone masks both, exactly as Revisited reports
(results/staleowner-a2.txt); ``test_a2_alone_masks...`` checks that, and
``test_each_repair_alone_is_safe`` that removing A2 alone is still safe.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from agent.lock.lease import Flaw
from agent.lock.sim import Summary, run_range

BUDGET = 20_000
CHUNK = 250

MUTANTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    # name: (flaws, adversary style used for the search; None = the full mixture)
    "scalar-quorum": (("scalar-quorum",), None),
    "owner-only-release": (("owner-only-release",), "release-storm"),
    "late-deadline": (("late-deadline", "overwrite-live-lease"), "pause-crash"),
    "stale-owner-open": (("stale-owner-open", "overwrite-live-lease"), "stale-accept"),
    "no-quarantine": (("no-quarantine",), None),
}


def hunt(flaws: tuple[str, ...], style: str | None, budget: int = BUDGET) -> Summary:
    """Seeds 0, 1, 2, ... until the first double holder (chunked over all cores)."""
    workers = os.cpu_count() or 2
    total = Summary()
    lo = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        while lo < budget:
            jobs = []
            for _ in range(workers):
                hi = min(budget, lo + CHUNK)
                if lo < hi:
                    jobs.append((lo, hi, flaws, style, True))
                lo = hi
            parts = list(pool.map(run_range, jobs))
            for part in parts:
                total.merge(part)
                if part.violations:
                    return total  # earlier chunks finished without one: first seed is minimal
    return total


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught(name: str) -> None:
    flaws, style = MUTANTS[name]
    found = hunt(flaws, style)
    assert found.violations >= 1, f"{name}: no double holder in {found.schedules} schedules"
    assert found.first_violation_seed is not None


def test_a2_alone_masks_late_deadline_and_stale_owner() -> None:
    for flaw, style in (("late-deadline", "pause-crash"), ("stale-owner-open", "stale-accept")):
        found = hunt((flaw,), style, budget=3000)
        assert found.violations == 0, (flaw, found.violating_seeds)


def test_each_repair_alone_is_safe() -> None:
    found = hunt((Flaw.OVERWRITE_LIVE_LEASE.value,), "stale-accept", budget=3000)
    assert found.violations == 0, found.violating_seeds
    found = hunt((Flaw.OVERWRITE_LIVE_LEASE.value,), "pause-crash", budget=3000)
    assert found.violations == 0, found.violating_seeds
