"""The lock protocol's vocabulary: ballots and the seven message types.

This module owns the value types exchanged between the lease state machine, the wire
codec, the transport and the simulator.  Messages are immutable and carry only protocol
fields (lease name, sender, receiver, ballot, ...); the envelope that protects them on the
wire (cluster, incarnation, sequence number, timing fingerprint, MAC) is ``wire.py``'s.

It must never know about bytes, sockets, clocks or keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple


class Ballot(NamedTuple):
    """A proposal number, totally ordered and never reused cluster-wide.

    ``incarnation`` grows at every process start (persisted by the shell), so a restarted
    proposer cannot repeat a ballot it used before the crash even though ``counter`` starts
    again from zero (Revisited, "Proposer restart cannot reuse a ballot").  ``node`` breaks
    ties between proposers and names the lease owner: a lease instance is (owner, ballot)
    and the owner is always ``ballot.node``.
    """

    counter: int
    incarnation: int
    node: str

    def __str__(self) -> str:
        return f"{self.counter}.{self.incarnation}.{self.node}"


class Kind(IntEnum):
    """Message type codes (also the wire codes; never renumber)."""

    PREPARE = 1
    PROMISE = 2
    REJECT = 3
    ACCEPT = 4
    ACCEPTED = 5
    RELEASE = 6
    ANNOUNCE = 7


@dataclass(frozen=True, slots=True)
class Prepare:
    """Proposer → acceptor: promise not to accept anything below ``ballot``."""

    lease: str
    sender: str
    receiver: str
    ballot: Ballot
    kind: Kind = Kind.PREPARE


@dataclass(frozen=True, slots=True)
class Promise:
    """Acceptor → proposer: promised ``ballot``; reports its live lease, if any.

    ``accepted`` is the ballot of the live lease (its owner is ``accepted.node``) and
    ``remaining`` the acceptor's remaining exclusion in its own seconds (a liveness hint
    for retry timing only; never used for safety).
    """

    lease: str
    sender: str
    receiver: str
    ballot: Ballot
    accepted: Ballot | None
    remaining: float
    kind: Kind = Kind.PROMISE


@dataclass(frozen=True, slots=True)
class Reject:
    """Acceptor → proposer: refused PREPARE/ACCEPT ``ballot``.

    ``promised`` is the acceptor's current promise (so the proposer can pick a higher
    counter); ``accepted``/``remaining`` describe a live foreign lease when that was the
    reason (the acceptor never overwrites one).
    """

    lease: str
    sender: str
    receiver: str
    ballot: Ballot
    promised: Ballot | None
    accepted: Ballot | None
    remaining: float
    kind: Kind = Kind.REJECT


@dataclass(frozen=True, slots=True)
class Accept:
    """Proposer → acceptor: accept the lease instance (``ballot.node``, ``ballot``).

    The duration is not carried: every node derives it from the same ``Timing`` and the
    timing fingerprint in the envelope refuses any node that does not.
    """

    lease: str
    sender: str
    receiver: str
    ballot: Ballot
    kind: Kind = Kind.ACCEPT


@dataclass(frozen=True, slots=True)
class Accepted:
    """Acceptor → proposer: accepted ``ballot`` and started its exclusion timer D_A."""

    lease: str
    sender: str
    receiver: str
    ballot: Ballot
    kind: Kind = Kind.ACCEPTED


@dataclass(frozen=True, slots=True)
class Release:
    """Owner → acceptor: forget the lease instance (``sender``, ``ballot``) if it is yours."""

    lease: str
    sender: str
    receiver: str
    ballot: Ballot
    kind: Kind = Kind.RELEASE


@dataclass(frozen=True, slots=True)
class Announce:
    """Candidate → peers: a hint for priority-aware campaigning.  Never used for safety.

    ``priority`` 0–255 (VRRP-like, higher wins), ``eligible`` false while the node does not
    want the lease (unhealthy, withdrawn), ``term`` the sender's current term if it holds.
    """

    lease: str
    sender: str
    receiver: str
    priority: int
    eligible: bool
    term: Ballot | None
    kind: Kind = Kind.ANNOUNCE


Message = Prepare | Promise | Reject | Accept | Accepted | Release | Announce
