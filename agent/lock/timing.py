"""Lease timing: the durations every node of a cluster must agree on, and their fingerprint.

This module owns the derivation of all lock durations from the one configured ``lease``
(D_P) and the clock-rate bound ρ, and the fingerprint that goes into every message so a
node with different durations is refused instead of silently breaking exclusivity
(docs/lock.md, "Timing": *these values must be identical on every member*).

It must never read a clock or the configuration file; it is arithmetic only.

Formulas (all seconds, all measured on each node's own monotonic clock)::

    D_P    = lease                                   proposer lease, from PREPARE send time
    G      = max(min(0.1, D_P / 4), D_P / 10)        guard: VIPs are withdrawn by d − G
    margin = max(0.01, D_P / 20)                     slack for float rounding / ρ misestimate
    D_A    = D_P · (1 + ρ) / (1 − ρ) + margin        acceptor exclusion, from ACCEPT receipt
    Q      = D_A · (1 + ρ) / (1 − ρ)                 restart quarantine (≥ D_A, note rule)
    renew  = D_P / 4                                 renewal period (a new ballot each time)

Why D_A: the proposer's usable interval ends at local ``t_prepare + D_P``; in real time that
is at most ``D_P / (1 − ρ)`` after the PREPARE was sent, while an acceptor's exclusion
(started later, at ACCEPT receipt) lasts at least ``D_A / (1 + ρ)`` real seconds.  With the
formula above the acceptor outlasts the proposer by ``margin / (1 + ρ)``.  The guard G is not
needed for that inequality; it is the time the daemon has to withdraw VIPs.

Why Q ≥ D_A: a restarted acceptor has forgotten promises and accepted leases; staying
silent for Q lets every forgotten exclusion run out before it answers again (Revisited
shows Q ≥ D_P suffices under the PREPARE-time deadline; D_A is the stricter rule kept here,
and the extra (1+ρ)/(1−ρ) covers a reboot, which restarts the monotonic clock).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

DEFAULT_RHO: Final = 1e-3
MIN_GUARD: Final = 0.1
MIN_LEASE: Final = 0.2
MIN_MARGIN: Final = 0.01
FINGERPRINT_SIZE: Final = 8


class TimingError(ValueError):
    """The durations cannot give mutual exclusion (or are nonsense)."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Cluster-wide lock durations, in seconds of a local monotonic clock."""

    lease: float  # D_P
    guard: float  # G
    acceptor_lease: float  # D_A
    quarantine: float  # Q
    renew_interval: float
    rho: float = DEFAULT_RHO

    def __post_init__(self) -> None:
        # Written as the inequalities the safety argument needs, so a bad override is
        # refused at start-up rather than discovered as two VIP owners.
        if not 0.0 <= self.rho < 0.1:
            raise TimingError(f"rho {self.rho} outside [0, 0.1)")
        if not self.lease > 0.0:
            raise TimingError("lease must be positive")
        if not 0.0 < self.guard < self.lease:
            raise TimingError("guard must be in (0, lease)")
        if not 0.0 < self.renew_interval < self.lease - self.guard:
            raise TimingError("renew_interval must be in (0, lease - guard)")
        stretched = self.lease * (1.0 + self.rho) / (1.0 - self.rho)
        if not self.acceptor_lease > stretched:
            raise TimingError(
                f"acceptor_lease {self.acceptor_lease} must exceed lease·(1+ρ)/(1−ρ) = {stretched}"
            )
        if not self.quarantine >= self.acceptor_lease:
            raise TimingError("quarantine must be >= acceptor_lease")

    @classmethod
    def from_lease(cls, lease: float, rho: float = DEFAULT_RHO) -> Timing:
        """Derive every duration from D_P and ρ with the formulas in the module docstring."""
        if not lease > 0.0:
            raise TimingError("lease must be positive")
        if not 0.0 <= rho < 0.1:
            raise TimingError(f"rho {rho} outside [0, 0.1)")
        stretch = (1.0 + rho) / (1.0 - rho)
        # 100 ms to withdraw VIPs, but at most a quarter of a short lease (200 ms: 50 ms,
        # still far more than the ~10 us netlink request that removes a VIP).
        guard = max(min(MIN_GUARD, lease / 4.0), lease / 10.0)
        if lease < MIN_LEASE:
            raise TimingError(f"lease {lease}s is shorter than {MIN_LEASE}s")
        margin = max(MIN_MARGIN, lease / 20.0)
        acceptor_lease = lease * stretch + margin
        return cls(
            lease=lease,
            guard=guard,
            acceptor_lease=acceptor_lease,
            quarantine=acceptor_lease * stretch,
            renew_interval=lease / 4.0,
            rho=rho,
        )

    @property
    def attempt_timeout(self) -> float:
        """How long one PREPARE/ACCEPT round may take before it is abandoned and retried:
        as long as its answers can still give a hold (``lease - guard``). A slow round is
        worth waiting for: cut at ``renew_interval``, a round that needed a little more
        was thrown away and its retry came too late for the hold it was renewing (under
        emulation, a 200 ms lease was lost every second). A lost datagram does not need
        the timeout: the round re-sends after ``renew_interval / 5``, then at doubling gaps."""
        return self.lease - self.guard

    @property
    def announce_interval(self) -> float:
        """Period of the ANNOUNCE hint (priority, eligibility, term) between candidates."""
        return self.lease

    @property
    def handover_holdoff(self) -> float:
        """After a deliberate release, how long this node stays out of the race."""
        return 2.0 * self.acceptor_lease

    def fingerprint(self) -> bytes:
        """8 bytes identifying these durations; carried (and checked) in every message.

        Computed over the exact IEEE-754 doubles, so two nodes agree only if their
        derived values are bit-identical (same formulas, same inputs).
        """
        packed = struct.pack(
            ">6d",
            self.lease,
            self.guard,
            self.acceptor_lease,
            self.quarantine,
            self.renew_interval,
            self.rho,
        )
        return hashlib.sha256(b"lvs-agent/lock/timing/v1" + packed).digest()[:FINGERPRINT_SIZE]
