"""Mutation tests: each deliberately wrong rule must produce a double holder in the simulator.

Seeds are fixed, so every assertion is deterministic; the budget bounds the search
(``LOCK_SIM_WORKERS`` sets the pool size; the first seed found does not depend on it).

``late-deadline`` and ``stale-owner-open`` are combined with ``overwrite-live-lease``:
with the acceptor-side refusal (A2) on, neither can give two holders in this
implementation.  The argument is in ``agent.lock.lease.Flaw``: exclusion rests on each
holder's quorum of live acceptor records, which reads no PROMISE (so R3 plays no part)
and needs the deadline base no later than the ACCEPT (which the PROMISE-quorum deadline
of ``late-deadline`` keeps).  Revisited's TLC run agrees for StaleOwnerOpen
(paxoslease-revisited-2026: results/staleowner-a2.txt), and its LateTimer trace needs the overwrite
(test_lease.py ``test_late_timer_needs_both_flaws``).  ``test_a2_alone_masks...``
checks that lemma after every event (``certify``) under the targeted styles.
``accepted-deadline`` is the late deadline that A2 cannot mask (the hold starts at the
ACCEPTED quorum) and is caught alone.  ``test_each_repair_alone_is_safe`` checks that
removing A2 alone is still safe.
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
    "accepted-deadline": (("accepted-deadline",), "pause-accept"),
    "stale-owner-open": (("stale-owner-open", "overwrite-live-lease"), "stale-accept"),
    "no-quarantine": (("no-quarantine",), None),
}


def hunt(
    flaws: tuple[str, ...], style: str | None, budget: int = BUDGET, certify: bool = False
) -> Summary:
    """Seeds 0, 1, 2, ... until the first double holder (chunked over all cores)."""
    workers = int(os.environ.get("LOCK_SIM_WORKERS", 0)) or os.cpu_count() or 2
    total = Summary()
    lo = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        while lo < budget:
            jobs = []
            for _ in range(workers):
                hi = min(budget, lo + CHUNK)
                if lo < hi:
                    jobs.append((lo, hi, flaws, style, True, certify))
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


@pytest.mark.parametrize(
    ("flaw", "style", "budget"),
    [
        ("late-deadline", "pause-crash", 3000),
        ("late-deadline", "pause-accept", 500),
        ("late-deadline", "slow-reply", 1000),
        ("stale-owner-open", "stale-accept", 3000),
        ("stale-owner-open", "pause-accept", 500),
    ],
)
def test_a2_alone_masks_late_deadline_and_stale_owner(flaw: str, style: str, budget: int) -> None:
    # Not only no second holder: every holder keeps its quorum of live records throughout.
    found = hunt((flaw,), style, budget=budget, certify=True)
    assert found.schedules == budget
    assert found.violations == 0, (flaw, found.violating_seeds)
    assert found.uncertified == 0, (flaw, found.uncertified_seeds)


def test_certificate_check_sees_a_lost_quorum() -> None:
    # The check is not vacuous: the deadline taken at the ACCEPTED quorum outlives the
    # acceptors' records long before a second node happens to get in.
    found = hunt(("accepted-deadline",), "pause-accept", budget=250, certify=True)
    assert found.uncertified > found.violations


def test_each_repair_alone_is_safe() -> None:
    found = hunt((Flaw.OVERWRITE_LIVE_LEASE.value,), "stale-accept", budget=3000)
    assert found.violations == 0, found.violating_seeds
    found = hunt((Flaw.OVERWRITE_LIVE_LEASE.value,), "pause-crash", budget=3000)
    assert found.violations == 0, found.violating_seeds
