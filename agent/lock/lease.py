"""One named PaxosLease: the acceptor and the proposer of one lease on one node.

Everything that decides who may hold a lease lives in this file, as handlers that take a
message (or a command) plus ``now`` and return the messages to send.  Deadlines are data
compared in the handlers, never timer callbacks (Revisited: the attempt bound must be
"stored protocol state checked in the response handlers, not timer dispatch order"); the
shell only has to call :meth:`Lease.tick` at or after :meth:`Lease.next_deadline`, and a
late tick can delay a campaign but never extend a hold.

It must never read a clock, sleep, do I/O or draw randomness: ``now`` is the caller's
monotonic time (float seconds, this node's own clock), and retry jitter is a hash of the
node id and ballot so that a schedule replays exactly.

The rules whose violation gives two holders (docs/lock.md; "PaxosLease
Revisited", Trencséni 2026, P1–P5 / A2), and where they are enforced:

* R1 deadline at PREPARE: ``_start_attempt`` sets ``d = now + D_P``            (LateTimer)
  (never after the ACCEPTs leave: ``Flaw.ACCEPTED_DEADLINE`` is that mistake)
* R2 quorum = set of distinct acceptor ids: ``_promised`` / ``_acked`` sets  (ScalarQuorum)
* R3 own lease open only when renewing that exact ballot: ``_is_open``       (StaleOwnerOpen)
* R4 release matches owner *and* ballot: ``_on_release``                   (OwnerOnlyRelease)
* R5 acceptor never overwrites a live lease of another owner: ``_on_accept``   (A2)
* R6 restart quarantine: ``quiet_until`` gates every acceptor handler and every attempt.

And one for liveness only (refusing is always safe): R7, an acceptor refuses, without
promising, a PREPARE from another process while a lease is live (``_on_prepare``), so a
candidate that polls a held lease never outbids the holder's renewals.

``Flaw`` re-introduces each broken rule on purpose, for the mutation tests only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from agent.histogram import Histogram
from agent.lock.messages import (
    Accept,
    Accepted,
    Announce,
    Ballot,
    Kind,
    Message,
    Prepare,
    Promise,
    Reject,
    Release,
)
from agent.lock.timing import Timing

DEFAULT_PRIORITY: Final = 100
MAX_PRIORITY: Final = 255
HANDOVER_SKEW: Final = 0.02  # seconds of priority skew after a holder let go (at most)


class Flaw(Enum):
    """Deliberately wrong variants of the rules above (mutation testing only).

    The first four are bugs found in a shipped PaxosLease (Keyspace/ScalienDB) by
    Revisited.  ``OVERWRITE_LIVE_LEASE`` removes the acceptor-side defence (A2).

    With A2 in place, LATE_DEADLINE and STALE_OWNER_OPEN cannot give two holders, so their
    mutation tests add OVERWRITE_LIVE_LEASE.  Two holders H1, H2 at one instant T each
    have a quorum of ACCEPTEDs for their current ballot, and the quorums share an acceptor
    x, which accepted H1's ballot at a1 and H2's at a2 ≤ T, say a1 < a2.  Every ACCEPT
    leaves its proposer after that proposer took its deadline base: at PREPARE (R1) or,
    with LATE_DEADLINE, at the PROMISE quorum, in the same handler that sends the ACCEPTs.
    So H1's hold ends before a1 + D_A (timing.py), and x kept a record of H1's process
    until then: only a ballot of the same process replaces it (A2), RELEASE erases only
    the exact ballot and only once H1 gave that ballot up (R4), a restart keeps x silent
    until it would have expired (R6).  x therefore refused H2's ACCEPT unless
    a2 ≥ a1 + D_A, i.e. after H1's hold ended, yet H2 holds at T ≥ a2: a contradiction.
    The argument reads no PROMISE, so R3 (STALE_OWNER_OPEN) plays no part in it, and it
    needs only "deadline base no later than the ACCEPT", which LATE_DEADLINE keeps.
    ``agent.lock.sim`` checks that lemma (a quorum of live records of the holder's
    process) after every event when ``certify`` is on.

    ACCEPTED_DEADLINE starts the hold when the ACCEPTED quorum arrives, after the
    acceptors started D_A: the premise above fails, and A2 does not help.
    """

    LATE_DEADLINE = "late-deadline"
    ACCEPTED_DEADLINE = "accepted-deadline"
    STALE_OWNER_OPEN = "stale-owner-open"
    SCALAR_QUORUM = "scalar-quorum"
    OWNER_ONLY_RELEASE = "owner-only-release"
    OVERWRITE_LIVE_LEASE = "overwrite-live-lease"
    NO_QUARANTINE = "no-quarantine"


class Phase(Enum):
    IDLE = "idle"
    PREPARING = "preparing"
    ACCEPTING = "accepting"


# Bounds (seconds) of the round-time histogram: a round must fit in lease - guard.
ROUND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class Counters:
    """Plain-data metrics of one node, shared by its leases; exported by the daemon."""

    messages_in: dict[str, int] = field(default_factory=dict)
    messages_out: dict[str, int] = field(default_factory=dict)
    #: inputs discarded unanswered (bad MAC, replay, quarantine, ...), by reason
    dropped: dict[str, int] = field(default_factory=dict)
    #: protocol refusals and failed attempts (REJECT sent, stale reply, blocked), by reason
    refused: dict[str, int] = field(default_factory=dict)

    #: rounds that gave a hold, by time from PREPARE to the quorum of ACCEPTED
    rounds: Histogram = field(default_factory=lambda: Histogram(ROUND_BUCKETS))

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def count_in(self, kind: Kind) -> None:
        name = kind.name
        self.messages_in[name] = self.messages_in.get(name, 0) + 1

    def count_out(self, msgs: list[Message]) -> None:
        out = self.messages_out
        for m in msgs:
            name = m.kind.name
            out[name] = out.get(name, 0) + 1


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """Something the daemon acts on: ``acquired`` (add VIPs), ``lost``/``released`` (remove).

    ``term`` is the fencing number of the holding period that started or ended.
    """

    lease: str
    kind: str  # "acquired" | "lost" | "released"
    term: Ballot
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """Snapshot for status output and metrics."""

    name: str
    holder: bool
    term: Ballot | None
    hold_until: float | None
    ballot: Ballot | None
    known_holder: tuple[str, Ballot] | None
    campaigning: bool
    priority: int
    phase: str
    acquisitions: int
    losses: int
    releases: int


@dataclass(slots=True)
class _PeerHint:
    priority: int
    eligible: bool
    term: Ballot | None
    heard_at: float


def _jitter(node: str, counter: int) -> float:
    """Deterministic value in [0, 1) that differs between nodes and attempts."""
    return zlib.crc32(f"{node}/{counter}".encode()) / 4294967296.0


class Lease:
    """Acceptor + proposer state of one named lease on one node (see module docstring)."""

    def __init__(
        self,
        name: str,
        node_id: str,
        members: tuple[str, ...],
        timing: Timing,
        incarnation: int,
        quiet_until: float,
        counters: Counters,
        *,
        flaws: frozenset[Flaw] = frozenset(),
        preempt: bool = False,
        poll_interval: float | None = None,
    ) -> None:
        self.name = name
        self.node_id = node_id
        # Sorted tuple: send order must not depend on PYTHONHASHSEED (exact replay).
        self._acceptors = members
        self._peers = tuple(m for m in members if m != node_id)
        self._quorum = len(members) // 2 + 1
        self._timing = timing
        self._incarnation = incarnation
        self._quiet_until = quiet_until
        self._counters = counters
        self._flaws = flaws
        self._late = Flaw.LATE_DEADLINE in flaws
        self._accepted_deadline = Flaw.ACCEPTED_DEADLINE in flaws
        self._scalar = Flaw.SCALAR_QUORUM in flaws
        self.preempt = preempt
        # Liveness only: how long a blocked candidate waits at most before asking again
        # (None: until the reported foreign lease runs out).  Safety never depends on it;
        # the simulator draws it per node to make proposers more aggressive.
        self.poll_interval = poll_interval

        # Acceptor state (volatile by design: PaxosLease needs no disk writes; R6 covers
        # what a restart forgets).
        self._promised: Ballot | None = None
        self._acc_ballot: Ballot | None = None
        self._acc_expires = 0.0

        # Proposer state.
        self._counter = 0
        self._phase = Phase.IDLE
        self._ballot: Ballot | None = None
        self._attempt_start = 0.0
        self._attempt_deadline = 0.0  # d of the attempt in flight
        self._attempt_expires = 0.0  # abandon the attempt at this time
        self._renew_base: Ballot | None = None
        self._open: set[str] = set()
        self._blocked: set[str] = set()
        self._acked: set[str] = set()
        self._open_n = 0  # used only with Flaw.SCALAR_QUORUM
        self._acked_n = 0
        self._wait_hint = 0.0
        self._resend_at = 0.0
        self._resend_gap = 0.0  # doubles after each re-send within a phase

        # Holding state.
        self._active = False
        self._active_ballot: Ballot | None = None
        self._deadline = 0.0  # d: hold ends at d − G
        self._term: Ballot | None = None

        # Campaign state (inputs from VRRP / health / CLI).
        self._wanting = False
        self._priority = DEFAULT_PRIORITY
        self._next_attempt: float | None = None
        self._holdoff_until = 0.0
        self._preempted = False  # the hold-off is for a preempting peer to win
        self._release_heard = -1.0  # when the holder last announced it let go
        self._next_announce: float | None = None
        self._hints: dict[str, _PeerHint] = {}

        self.events: list[LeaseEvent] = []
        self.acquisitions = 0
        self.losses = 0
        self.releases = 0

    # ------------------------------------------------------------------ queries

    def is_holder(self, now: float) -> bool:
        """True iff this node holds the lease at ``now`` (read the clock once, pass it in)."""
        return self._active and now < self._deadline - self._timing.guard

    def accepted_record(self) -> tuple[Ballot, float] | None:
        """The acceptor's lease record and its local expiry, if any (simulator checks)."""
        if self._acc_ballot is None:
            return None
        return self._acc_ballot, self._acc_expires

    def hold_until(self) -> float | None:
        """Local time at which the hold ends (d − G) if active; for VIP lifetimes."""
        return self._deadline - self._timing.guard if self._active else None

    @property
    def term(self) -> Ballot | None:
        return self._term if self._active else None

    @property
    def phase(self) -> Phase:
        return self._phase

    def next_deadline(self) -> float | None:
        """Earliest local time at which :meth:`tick` has something to do."""
        times: list[float] = []
        if self._active:
            times.append(self._deadline - self._timing.guard)
        if self._phase is not Phase.IDLE:
            times.append(min(self._attempt_expires, self._resend_at))
        if self._next_attempt is not None:
            if self._active:
                times.append(self._next_attempt)
            elif self._wanting:
                times.append(max(self._next_attempt, self._quiet_until, self._holdoff_until))
        if self._next_announce is not None:
            times.append(self._next_announce)
        return min(times) if times else None

    def status(self, now: float) -> LeaseStatus:
        holder = self.is_holder(now)
        known: tuple[str, Ballot] | None = None
        if holder and self._term is not None:
            known = (self.node_id, self._term)
        else:
            fresh = now - 3.0 * self._timing.announce_interval
            for node in sorted(self._hints):
                hint = self._hints[node]
                if hint.term is not None and hint.heard_at >= fresh:
                    known = (node, hint.term)
        return LeaseStatus(
            name=self.name,
            holder=holder,
            term=self._term if holder else None,
            hold_until=self.hold_until() if holder else None,
            ballot=self._active_ballot if holder else None,
            known_holder=known,
            campaigning=self._wanting,
            priority=self._priority,
            phase=self._phase.value,
            acquisitions=self.acquisitions,
            losses=self.losses,
            releases=self.releases,
        )

    # ------------------------------------------------------------------ commands

    def campaign(self, now: float, priority: int | None = None) -> list[Message]:
        """Start (or keep) wanting the lease; lower priorities wait longer to start."""
        out: list[Message] = []
        self._observe(now, out)
        if priority is not None:
            self._priority = max(0, min(MAX_PRIORITY, priority))
        if not self._wanting:
            self._wanting = True
            if not self._active and self._phase is Phase.IDLE:
                start = max(now, self._quiet_until, self._holdoff_until)
                self._next_attempt = start + self._campaign_delay(now)
        self._next_announce = now
        self._run_due(now, out)
        return out

    def withdraw(self, now: float) -> list[Message]:
        """Stop wanting the lease (unhealthy, shutting down); release it if held."""
        out: list[Message] = []
        self._observe(now, out)
        self._wanting = False
        self._next_attempt = None
        self._give_up(now, 0.0, "withdrawn", out)
        self._announce(now, out)
        self._next_announce = None
        return out

    def release(self, now: float, holdoff: float | None = None) -> list[Message]:
        """Give the lease up now (SIGTERM, ``lvs-agent failover``, preemption).

        The node keeps campaigning afterwards, but not before ``holdoff`` seconds
        (default: ``Timing.handover_holdoff``) so that another node can take over.
        """
        out: list[Message] = []
        self._observe(now, out)
        if holdoff is None:
            holdoff = self._timing.handover_holdoff
        self._give_up(now, holdoff, "released", out)
        self._run_due(now, out)
        return out

    def set_priority(self, now: float, priority: int) -> list[Message]:
        out: list[Message] = []
        self._observe(now, out)
        self._priority = max(0, min(MAX_PRIORITY, priority))
        if self._wanting:
            self._announce(now, out)
        return out

    def tick(self, now: float) -> list[Message]:
        out: list[Message] = []
        self._observe(now, out)
        self._run_due(now, out)
        return out

    # ------------------------------------------------------------------ input

    def handle(self, msg: Message, now: float) -> list[Message]:
        """Process one authenticated message addressed to this node for this lease."""
        out: list[Message] = []
        self._observe(now, out)
        kind = msg.kind
        if kind is Kind.PREPARE:
            assert isinstance(msg, Prepare)
            self._on_prepare(msg, now, out)
        elif kind is Kind.ACCEPT:
            assert isinstance(msg, Accept)
            self._on_accept(msg, now, out)
        elif kind is Kind.PROMISE:
            assert isinstance(msg, Promise)
            self._on_promise(msg, now, out)
        elif kind is Kind.ACCEPTED:
            assert isinstance(msg, Accepted)
            self._on_accepted(msg, now, out)
        elif kind is Kind.REJECT:
            assert isinstance(msg, Reject)
            self._on_reject(msg, now, out)
        elif kind is Kind.RELEASE:
            assert isinstance(msg, Release)
            self._on_release(msg, now)
        else:
            assert isinstance(msg, Announce)
            self._on_announce(msg, now, out)
        self._run_due(now, out)
        return out

    # ------------------------------------------------------------------ acceptor

    def _acceptor_quiet(self, now: float) -> bool:
        # R6: a restarted acceptor has forgotten promises and leases; answering before the
        # quarantine ends could let a second proposer through (Revisited, crash-restart).
        if now < self._quiet_until:
            self._counters.drop("quarantine")
            return True
        return False

    def _live_lease(self, now: float) -> Ballot | None:
        if self._acc_ballot is not None and now >= self._acc_expires:
            self._acc_ballot = None  # exclusion D_A ran out: forget it
        return self._acc_ballot

    def _on_prepare(self, msg: Prepare, now: float, out: list[Message]) -> None:
        if self._acceptor_quiet(now):
            return
        b = msg.ballot
        live = self._live_lease(now)
        remaining = self._acc_expires - now if live is not None else 0.0
        if (
            live is not None
            and (live.node, live.incarnation) != (b.node, b.incarnation)
            and Flaw.OVERWRITE_LIVE_LEASE not in self._flaws
        ):
            # R7: while another process's lease is live here, its ACCEPT would be refused
            # (R5), so the attempt cannot win: refuse it without promising. A promise
            # would raise this acceptor's ballot above the holder's next renewal, and a
            # candidate polling the lease would then fail one renewal per poll.
            self._counters.refuse("prepare-live-lease")
            out.append(
                Reject(self.name, self.node_id, msg.sender, b, self._promised, live, remaining)
            )
            return
        if self._promised is None or b >= self._promised:
            self._promised = b
            out.append(Promise(self.name, self.node_id, msg.sender, b, live, remaining))
        else:
            self._counters.refuse("prepare-below-promise")
            out.append(
                Reject(self.name, self.node_id, msg.sender, b, self._promised, live, remaining)
            )

    def _on_accept(self, msg: Accept, now: float, out: list[Message]) -> None:
        if self._acceptor_quiet(now):
            return
        b = msg.ballot
        live = self._live_lease(now)
        if self._promised is not None and b < self._promised:
            self._counters.refuse("accept-below-promise")
        elif (
            live is not None
            and (live.node, live.incarnation) != (b.node, b.incarnation)
            and Flaw.OVERWRITE_LIVE_LEASE not in self._flaws
        ):
            # R5 (A2): a delayed ACCEPT of an abandoned attempt must not replace the live
            # lease of another proposer; the holder's authority rests on this record.  A
            # proposer is a process: an earlier incarnation of the same node is foreign
            # too, or its delayed ACCEPT and then its RELEASE of that ballot would erase
            # the lease the restarted process holds (found by the simulator, seed 472242).
            self._counters.refuse("live-foreign-lease")
        else:
            self._promised = b
            self._acc_ballot = b
            self._acc_expires = now + self._timing.acceptor_lease
            out.append(Accepted(self.name, self.node_id, msg.sender, b))
            return
        remaining = self._acc_expires - now if live is not None else 0.0
        out.append(Reject(self.name, self.node_id, msg.sender, b, self._promised, live, remaining))

    def _on_release(self, msg: Release, now: float) -> None:
        if self._acceptor_quiet(now):
            return
        acc = self._acc_ballot
        if acc is None or acc.node != msg.sender:
            return
        # R4: match the exact instance.  A RELEASE delayed past the same owner's
        # re-acquisition must not erase the newer lease (Revisited, OwnerOnlyRelease).
        if acc == msg.ballot or Flaw.OWNER_ONLY_RELEASE in self._flaws:
            self._acc_ballot = None
        else:
            self._counters.refuse("release-stale-ballot")

    # ------------------------------------------------------------------ proposer

    def _start_attempt(self, now: float, out: list[Message]) -> None:
        self._counter += 1
        b = Ballot(self._counter, self._incarnation, self.node_id)
        self._ballot = b
        self._phase = Phase.PREPARING
        self._attempt_start = now
        # R1: the deadline is taken when PREPARE is sent; PROMISEs cannot be older than it.
        self._attempt_deadline = now + self._timing.lease
        self._attempt_expires = now + min(
            self._timing.attempt_timeout, self._timing.lease - self._timing.guard
        )
        # R3: a renewal records *which* instance it renews, at PREPARE time.
        self._renew_base = self._active_ballot if self._active else None
        self._open.clear()
        self._blocked.clear()
        self._acked.clear()
        self._open_n = 0
        self._acked_n = 0
        self._wait_hint = 0.0
        self._next_attempt = None
        self._first_resend(now)
        for a in self._acceptors:
            out.append(Prepare(self.name, self.node_id, a, b))

    def _first_resend(self, now: float) -> None:
        """A phase begins: its first re-send comes ``renew_interval / 5`` from now."""
        self._resend_gap = self._timing.renew_interval / 5.0
        self._resend_at = now + self._resend_gap

    def _resend(self, now: float, out: list[Message]) -> None:
        """Retransmit this attempt's request, same ballot, to acceptors yet to answer.

        UDP loses datagrams; a lost ACCEPTED would otherwise end a renewal that the
        acceptors did install, and R3 then (rightly) refuses to count that instance as
        ours.  Re-sending within the attempt is idempotent at the acceptor (same ballot,
        same owner), quorums stay sets of ids, and the deadline stays the PREPARE time's.

        The gap doubles after each re-send (up to ``renew_interval``): a lost datagram
        is re-sent as soon as before, while peers that are only slow to answer (a
        loaded machine) are not sent a request every ``renew_interval / 5`` that they
        would answer every time, each answer more work for a proposer already waiting.
        """
        self._resend_gap = min(2.0 * self._resend_gap, self._timing.renew_interval)
        self._resend_at = now + self._resend_gap
        b = self._ballot
        assert b is not None
        answered = self._blocked | (self._open if self._phase is Phase.PREPARING else self._acked)
        for a in self._acceptors:
            if a == self.node_id or a in answered:
                continue
            if self._phase is Phase.PREPARING:
                out.append(Prepare(self.name, self.node_id, a, b))
            else:
                out.append(Accept(self.name, self.node_id, a, b))

    def _is_open(self, accepted: Ballot | None) -> bool:
        if accepted is None:
            return True
        if accepted.node != self.node_id:
            return False
        if Flaw.STALE_OWNER_OPEN in self._flaws:
            return True
        # R3: our own lease counts as open only while we hold the lease and are renewing
        # exactly that instance; any other self-owned record may be the leftover of an
        # abandoned attempt that overwrote a competitor (Revisited, StaleOwnerOpen).
        return (
            self._renew_base is not None
            and self._active
            and self._active_ballot == self._renew_base
            and accepted == self._renew_base
        )

    def _current(self, ballot: Ballot, phase: Phase) -> bool:
        if self._phase is phase and ballot == self._ballot:
            return True
        self._counters.refuse("stale-reply")
        return False

    def _on_promise(self, msg: Promise, now: float, out: list[Message]) -> None:
        if msg.accepted is not None and msg.accepted.counter > self._counter:
            self._counter = msg.accepted.counter
        if not self._current(msg.ballot, Phase.PREPARING):
            return
        if self._is_open(msg.accepted):
            # R2: a set of acceptor ids; a duplicated PROMISE adds nothing.
            self._open.add(msg.sender)
            self._open_n += 1
        else:
            self._blocked.add(msg.sender)
            self._wait_hint = max(self._wait_hint, msg.remaining)
        have = self._open_n if self._scalar else len(self._open)
        if have >= self._quorum:
            if self._late:
                # Flaw: the 2012 paper's step 3 — the clock starts at quorum receipt.
                self._attempt_deadline = now + self._timing.lease
                self._attempt_expires = now + self._timing.attempt_timeout
            if now >= self._attempt_deadline - self._timing.guard:
                self._fail_attempt(now, "attempt-expired")
                return
            self._phase = Phase.ACCEPTING
            self._first_resend(now)
            b = msg.ballot
            for a in self._acceptors:
                out.append(Accept(self.name, self.node_id, a, b))
        elif len(self._blocked) > len(self._acceptors) - self._quorum:
            self._fail_attempt(now, "blocked")

    def _on_reject(self, msg: Reject, now: float, out: list[Message]) -> None:
        for b in (msg.promised, msg.accepted):
            if b is not None and b.counter > self._counter:
                self._counter = b.counter
        if self._ballot != msg.ballot or self._phase is Phase.IDLE:
            self._counters.refuse("stale-reply")
            return
        self._blocked.add(msg.sender)
        if msg.accepted is not None:
            self._wait_hint = max(self._wait_hint, msg.remaining)
        if len(self._blocked) > len(self._acceptors) - self._quorum:
            self._fail_attempt(now, "rejected")

    def _on_accepted(self, msg: Accepted, now: float, out: list[Message]) -> None:
        if not self._current(msg.ballot, Phase.ACCEPTING):
            return
        self._acked.add(msg.sender)
        self._acked_n += 1
        have = self._acked_n if self._scalar else len(self._acked)
        if have < self._quorum:
            return
        if now >= self._attempt_deadline - self._timing.guard:
            self._fail_attempt(now, "attempt-expired")
            return
        renewing = self._active
        self._counters.rounds.observe(now - self._attempt_start)
        self._active = True
        self._active_ballot = msg.ballot
        if self._accepted_deadline:
            # Flaw: the hold starts when the quorum has answered ACCEPT, i.e. after the
            # acceptors started their exclusion D_A.
            self._deadline = now + self._timing.lease
        else:
            self._deadline = self._attempt_deadline
        self._phase = Phase.IDLE
        self._next_attempt = self._attempt_start + self._timing.renew_interval
        if not renewing:
            self._term = msg.ballot
            self.acquisitions += 1
            self.events.append(LeaseEvent(self.name, "acquired", msg.ballot, now))
            self._announce(now, out)

    def _fail_attempt(self, now: float, reason: str) -> None:
        self._counters.refuse(reason)
        self._phase = Phase.IDLE
        if self._active:
            # Renewal failed: retry soon with a higher ballot; the hold itself still ends
            # at d − G of the last successful round.
            self._next_attempt = now + self._timing.renew_interval / 4.0
        elif self._wanting and self._release_heard >= self._attempt_start:
            # Blocked by a lease its holder has released meanwhile: retry at once.
            self._next_attempt = max(now, self._holdoff_until) + self._campaign_delay(
                now, handover=True
            )
        elif self._wanting and self._wait_hint == 0.0 and reason == "rejected":
            # Lost a ballot race, no lease in the way (two candidates after a release):
            # retry after the short priority skew, doubled, so the better one wins next.
            self._next_attempt = now + 2.0 * self._campaign_delay(now, handover=True)
        elif self._wanting:
            wait = self._timing.renew_interval * (1.0 + _jitter(self.node_id, self._counter))
            if self._wait_hint > 0.0:
                wait = min(self._wait_hint, self._timing.acceptor_lease)
            if self.poll_interval is not None:
                wait = min(wait, self.poll_interval)
            self._next_attempt = now + wait + self._campaign_delay(now)
        else:
            self._next_attempt = None

    # ------------------------------------------------------------------ campaign hooks

    def _campaign_delay(self, now: float, handover: bool = False) -> float:
        """VRRP-style skew: lower priority waits longer; defer to fresh better peers.

        ``handover``: the holder just announced that it let go.  Every candidate heard
        that at about the same instant, so a short skew still orders them by priority,
        and a better peer that is itself the releaser (now in its hold-off) must not
        add a whole lease to the takeover.
        """
        ri = (
            min(self._timing.renew_interval, HANDOVER_SKEW)
            if handover
            else (self._timing.renew_interval)
        )
        delay = (MAX_PRIORITY - self._priority) / MAX_PRIORITY * ri
        # After a release every candidate starts from the same instant: a small jitter
        # keeps the priority order (one step of priority is ri/255).
        delay += _jitter(self.node_id, self._counter) * ri / (16.0 if handover else 4.0)
        if handover:
            return delay
        fresh = now - 3.0 * self._timing.announce_interval
        for hint in self._hints.values():
            # A better peer that said it holds the lease is not waited for: if we are
            # campaigning, its lease ran out (it crashed or lost its majority).
            if (
                hint.eligible
                and hint.term is None
                and hint.heard_at >= fresh
                and hint.priority > self._priority
            ):
                delay += self._timing.lease
                break
        return delay

    def _on_announce(self, msg: Announce, now: float, out: list[Message]) -> None:
        before = self._hints.get(msg.sender)
        self._hints[msg.sender] = _PeerHint(msg.priority, msg.eligible, msg.term, now)
        if (
            before is not None
            and before.term is not None
            and msg.term is None
            and self._wanting
            and not self._active
        ):
            # The holder says it gave the lease up (release, handover, withdraw): try soon
            # instead of waiting out the exclusion its acceptors reported.  An attempt in
            # flight may still fail on the old lease; it then retries as soon (below).
            self._release_heard = now
            if self._phase is Phase.IDLE:
                soon = max(now, self._holdoff_until) + self._campaign_delay(now, handover=True)
                if self._next_attempt is None or soon < self._next_attempt:
                    self._next_attempt = soon
        if msg.term is not None and self._preempted and not self._active:
            # The node we yielded to holds the lease now: the hold-off did its job, and
            # keeping it would only slow the next handover down.
            self._preempted = False
            self._holdoff_until = min(self._holdoff_until, now)
        if self.preempt and msg.eligible and msg.priority > self._priority and self.is_holder(now):
            # Handover to a healthier, higher-priority node: release and stay out of the
            # race long enough for it to win.  Safety never depends on this hint.
            self._give_up(now, self._timing.handover_holdoff, "preempted", out)
            self._preempted = True

    def _announce(self, now: float, out: list[Message]) -> None:
        term = self._term if self._active else None
        # Eligible only when able to propose now: a node in its restart quarantine or its
        # hold-off must not make a holder with preempt give the lease up to nobody.
        eligible = self._wanting and now >= max(self._quiet_until, self._holdoff_until)
        for p in self._peers:
            out.append(Announce(self.name, self.node_id, p, self._priority, eligible, term))
        if not self._wanting:
            self._next_announce = None
            return
        nxt = now + self._timing.announce_interval
        for becomes_eligible in (self._quiet_until, self._holdoff_until):
            if now < becomes_eligible < nxt:
                nxt = becomes_eligible  # say so as soon as it is true
        self._next_announce = nxt

    # ------------------------------------------------------------------ housekeeping

    def _give_up(self, now: float, holdoff: float, reason: str, out: list[Message]) -> None:
        ballots: list[Ballot] = []
        if self._active and self._active_ballot is not None:
            ballots.append(self._active_ballot)
        # An ACCEPT of ours may already be installed; releasing it is safe because the
        # attempt is abandoned right here and can never make us holder.
        if (
            self._phase is Phase.ACCEPTING
            and self._ballot is not None
            and self._ballot not in ballots
        ):
            ballots.append(self._ballot)
        self._phase = Phase.IDLE
        was_holder = self.is_holder(now)
        if self._active and self._term is not None:
            if was_holder:
                self.releases += 1
                self.events.append(LeaseEvent(self.name, "released", self._term, now, reason))
            else:
                self.losses += 1
                self.events.append(LeaseEvent(self.name, "lost", self._term, now, "expired"))
        self._active = False
        self._active_ballot = None
        self._term = None
        for b in ballots:
            for a in self._acceptors:
                out.append(Release(self.name, self.node_id, a, b))
        self._holdoff_until = now + holdoff
        if self._wanting:
            self._next_attempt = self._holdoff_until + self._campaign_delay(now)
            self._announce(now, out)

    def _observe(self, now: float, out: list[Message]) -> None:
        """Apply everything that happens by the mere passing of time up to ``now``."""
        if self._active and now >= self._deadline - self._timing.guard:
            self._active = False
            self.losses += 1
            assert self._term is not None
            self.events.append(LeaseEvent(self.name, "lost", self._term, now, "expired"))
            self._term = None
            self._active_ballot = None
            if self._phase is Phase.IDLE and self._wanting:
                self._next_attempt = now + self._campaign_delay(now)
        if self._phase is not Phase.IDLE and now >= self._attempt_expires and not self._late:
            self._fail_attempt(now, "attempt-timeout")

    def _run_due(self, now: float, out: list[Message]) -> None:
        if self._phase is not Phase.IDLE and self._late and now >= self._attempt_expires:
            # Flaw.LATE_DEADLINE: the attempt bound is only a timer, checked after input.
            self._fail_attempt(now, "attempt-timeout")
        if self._phase is not Phase.IDLE and now >= self._resend_at:
            self._resend(now, out)
        if self._next_announce is not None and now >= self._next_announce:
            self._announce(now, out)
        if (
            self._phase is Phase.IDLE
            and self._next_attempt is not None
            and now >= self._next_attempt
            and now >= self._quiet_until
            and (self._active or (self._wanting and now >= self._holdoff_until))
        ):
            self._start_attempt(now, out)
