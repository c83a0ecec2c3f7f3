"""Deterministic discrete-event simulator for the lock core, with a split-brain checker.

Owns: seeded virtual time, an adversarial network (loss, duplication, reordering, delay,
stale re-delivery seconds later), per-node clocks with rate error within ρ, crash-restart
(incarnation bump + quarantine), pauses (the node's clock runs, it processes nothing, then
drains its backlog), operator commands (release with or without hold-off, withdraw,
priority changes), and targeted faults that the four Revisited counterexamples need
(pause right after PREPARE, after the ACCEPTs or after acquisition, crash right after a
PROMISE, slow PROMISE/ACCEPTED replies).

The checker runs after every event: at that real instant at most one live node may report
``is_holder(its local now)``.  That is complete, not a sample: ``is_holder`` can only turn
true while a node processes an event, so the first instant two nodes hold is an event.
With ``certify`` it also checks, after every event, the lemma the exclusion rests on
(lease.py, ``Flaw``): every holder has a quorum of acceptors whose live record belongs to
the holder's process (a crashed acceptor keeps, as a ghost, the record it had until that
record would have expired).  That is stronger than "one holder": it fails as soon as a
holder's authority is gone, whether or not a second node gets in during the schedule.

Must never: touch sockets, real clocks or global randomness — one ``random.Random(seed)``
drives everything, so the same seed replays the same trace in any process.
It drives ``LockCore`` with ``Message`` objects (bypassing the wire codec on purpose: the
codec's replay window would hide duplication and reordering from the core, and the core
must be safe without that help).
"""

from __future__ import annotations

import heapq
import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from agent.lock.lease import Flaw, Lease
from agent.lock.messages import Ballot, Kind, Message
from agent.lock.node import MAX_LOCAL_ROUNDS, LockCore
from agent.lock.timing import Timing
from agent.lock.wire import KeyRing, WireCodec, WireError

_SIM_KEYS: Final = KeyRing(primary=1, keys={1: bytes(32)})

LEASE: Final = "vip"
MAX_EVENTS: Final = 60_000

# Event kinds (small ints: heap tuples compare fast).
_DELIVER: Final = 0
_TIMER: Final = 1
_RESUME: Final = 2
_CRASH: Final = 3
_RESTART: Final = 4
_PAUSE: Final = 5
_RELEASE: Final = 6
_WITHDRAW: Final = 7
_CAMPAIGN: Final = 8
_PRIORITY: Final = 9

_REPLIES: Final = (Kind.PROMISE, Kind.ACCEPTED)


@dataclass(frozen=True, slots=True)
class Topology:
    """Members are all acceptors; proposers also campaign (a witness does not)."""

    name: str
    members: tuple[str, ...]
    proposers: tuple[str, ...]


TOPOLOGIES: Final = {
    "3": Topology("3", ("n1", "n2", "n3"), ("n1", "n2", "n3")),
    "5": Topology("5", ("n1", "n2", "n3", "n4", "n5"), ("n1", "n2", "n3", "n4", "n5")),
    "2+w": Topology("2+w", ("d1", "d2", "w1"), ("d1", "d2")),
}


@dataclass(frozen=True, slots=True)
class Faults:
    """One schedule's adversary, drawn from the seed (see ``draw_faults``)."""

    loss: float = 0.0
    dup: float = 0.0
    delay_min: float = 0.0002
    delay_max: float = 0.005
    tail: float = 0.0  # probability of a long delay
    tail_max: float = 0.0
    stale_dup: float = 0.0  # per send batch: copies re-delivered together 0.3–3 s later
    crashes: int = 0
    pauses: int = 0
    commands: int = 0
    pause_after_prepare: float = 0.0
    pause_after_acquire: float = 0.0
    crash_after_promise: float = 0.0
    pause_after_accept: float = 0.0  # per ACCEPT batch: pause accept_pause_min..max s
    accept_pause_min: float = 0.05
    accept_pause_max: float = 0.9
    accept_pauses: int = 1  # at most this many per schedule (the rival must not stall too)
    slow_reply: float = 0.0  # per PROMISE/ACCEPTED: delay slow_reply_min..slow_reply_max s
    slow_reply_min: float = 0.2
    slow_reply_max: float = 1.0
    partitions: int = 0  # a node cut off (both directions) for 0.2–2 s
    group_crashes: int = 0  # several nodes crash together (e.g. a fleet-wide deploy)
    release_holdoff: float | str | None = "mixed"  # hold-off of RELEASE commands
    pause_min: float = 0.3  # targeted pauses last pause_min..3 s
    downtime_max: float = 2.0  # crashed nodes restart after 0..downtime_max s
    poll: float | None = None  # proposers' poll_interval (liveness knob, adversarial)
    horizon: float = 6.0

    @property
    def healthy(self) -> bool:
        return (
            self.loss == 0.0
            and self.dup == 0.0
            and self.tail == 0.0
            and self.stale_dup == 0.0
            and self.crashes == 0
            and self.pauses == 0
            and self.partitions == 0
            and self.group_crashes == 0
            and self.commands == 0
            and self.pause_after_prepare == 0.0
            and self.pause_after_acquire == 0.0
            and self.crash_after_promise == 0.0
            and self.pause_after_accept == 0.0
            and self.slow_reply == 0.0
            and self.poll is None
        )


STYLES: Final = ("calm", "chaos", "release-storm", "pause-crash", "stale-accept")
STYLE_WEIGHTS: Final = (0.10, 0.30, 0.15, 0.25, 0.20)
#: Targeted styles outside the default mixture (which stays as benchmarked): a proposer
#: that stops between its ACCEPTs and their ACCEPTEDs, and replies that arrive late.
EXTRA_STYLES: Final = ("pause-accept", "slow-reply")
ALL_STYLES: Final = STYLES + EXTRA_STYLES


def draw_faults(rng: random.Random, style: str | None = None) -> Faults:
    """One adversary from a mixture of styles (or the given style).

    ``calm`` and ``chaos`` are undirected.  The other three concentrate the ingredients of
    the Revisited counterexamples: releases followed by an immediate re-campaign and stale
    RELEASE batches (OwnerOnlyRelease); pauses right after PREPARE and crashes right after a
    PROMISE (LateTimer); stale ACCEPT batches, partitions and crashes (StaleOwnerOpen).
    ``pause-accept`` and ``slow-reply`` (not in the mixture) let the ACCEPTEDs of a round
    reach the proposer long after the acceptors started D_A, and the new holder is then
    paused (or cut off) so that it cannot renew while the others campaign.
    """
    pick = rng.choice
    if style is None:
        style = rng.choices(STYLES, STYLE_WEIGHTS)[0]
    horizon = rng.uniform(4.0, 8.0)
    if style == "calm":
        return Faults(horizon=rng.uniform(3.0, 6.0))
    if style == "release-storm":
        return Faults(
            loss=pick((0.0, 0.02, 0.1)),
            dup=pick((0.0, 0.2, 0.5)),
            delay_max=pick((0.001, 0.005, 0.03)),
            stale_dup=pick((0.1, 0.3, 0.5)),
            crashes=pick((0, 0, 1)),
            commands=pick((4, 8, 16)),
            release_holdoff=pick((0.0, 0.0, 0.2, None)),
            pause_after_acquire=pick((0.2, 0.5, 0.8)),
            poll=pick((None, 0.05, 0.1, 0.3)),
            horizon=horizon,
        )
    if style == "pause-crash":
        return Faults(
            loss=pick((0.0, 0.1)),
            delay_max=pick((0.001, 0.005, 0.03)),
            commands=pick((0, 4)),
            release_holdoff=0.0,
            pause_after_prepare=pick((0.3, 0.6)),
            pause_min=1.0,
            crash_after_promise=pick((0.2, 0.5)),
            downtime_max=pick((0.05, 0.3)),
            poll=pick((None, 0.05)),
            horizon=horizon,
        )
    if style == "pause-accept":
        return Faults(
            loss=pick((0.0, 0.05)),
            delay_max=pick((0.001, 0.005)),
            pause_after_accept=pick((0.3, 0.6)),
            # Up to the attempt timeout (renew_interval): later ACCEPTEDs are stale.
            accept_pause_min=pick((0.1, 0.15)),
            accept_pause_max=0.25,
            accept_pauses=pick((1, 2, 4)),
            pause_after_acquire=pick((0.5, 0.8)),
            pause_min=pick((0.3, 1.0)),
            partitions=pick((0, 2)),
            crashes=pick((0, 1)),
            commands=pick((0, 2)),
            downtime_max=0.3,
            poll=pick((0.01, 0.02)),
            horizon=horizon + 4.0,
        )
    if style == "slow-reply":
        return Faults(
            loss=pick((0.0, 0.05)),
            delay_max=pick((0.001, 0.005)),
            slow_reply=pick((0.2, 0.5)),
            slow_reply_max=pick((0.8, 1.2)),
            pause_after_prepare=pick((0.0, 0.3)),
            pause_after_acquire=pick((0.0, 0.3)),
            partitions=pick((0, 2)),
            crashes=pick((0, 1)),
            downtime_max=0.3,
            poll=pick((0.05, 0.1)),
            horizon=horizon,
        )
    if style == "stale-accept":
        return Faults(
            delay_max=pick((0.001, 0.005, 0.03)),
            stale_dup=pick((0.3, 0.6)),
            crashes=pick((0, 2)),
            group_crashes=pick((1, 2)),
            partitions=pick((0, 2)),
            commands=pick((0, 4)),
            release_holdoff=0.0,
            downtime_max=0.1,
            poll=pick((None, 0.05)),
            horizon=horizon,
        )
    return Faults(
        loss=pick((0.0, 0.0, 0.02, 0.1, 0.3)),
        dup=pick((0.0, 0.05, 0.2, 0.5)),
        delay_max=pick((0.001, 0.005, 0.03, 0.2)),
        tail=pick((0.0, 0.01, 0.05, 0.15)),
        tail_max=pick((0.5, 1.5, 3.0)),
        stale_dup=pick((0.0, 0.0, 0.02, 0.1)),
        crashes=pick((0, 0, 1, 2, 3)),
        group_crashes=pick((0, 0, 0, 1)),
        pauses=pick((0, 0, 1, 2, 3)),
        partitions=pick((0, 0, 1, 2)),
        commands=pick((0, 0, 1, 3, 6)),
        pause_after_prepare=pick((0.0, 0.0, 0.0, 0.05, 0.2)),
        pause_after_acquire=pick((0.0, 0.0, 0.1, 0.3)),
        crash_after_promise=pick((0.0, 0.0, 0.0, 0.02, 0.1)),
        poll=pick((None, None, 0.1, 0.3)),
        horizon=horizon,
    )


@dataclass(frozen=True, slots=True)
class Violation:
    """Two nodes hold at real time ``at`` (their local clocks given too)."""

    at: float
    holders: tuple[tuple[str, float], ...]
    event: int


@dataclass(slots=True)
class ScheduleResult:
    seed: int
    topology: str
    events: int
    violation: Violation | None
    acquisitions: int
    held: float  # real seconds with a holder, within [measure_from, horizon]
    measured: float  # length of that window
    trace: list[str] | None = None
    wire_drops: dict[str, int] = field(default_factory=dict)
    uncertified: Violation | None = None  # first holder without a certificate (certify)

    @property
    def digest(self) -> int:
        return zlib.crc32("\n".join(self.trace or ()).encode())


@dataclass(slots=True)
class Summary:
    schedules: int = 0
    events: int = 0
    violations: int = 0
    first_violation_seed: int | None = None
    violating_seeds: list[int] = field(default_factory=list)
    acquisitions: int = 0
    #: schedules in which the exclusion certificate failed (``certify`` runs only)
    uncertified: int = 0
    uncertified_seeds: list[int] = field(default_factory=list)

    def add(self, r: ScheduleResult) -> None:
        self.schedules += 1
        self.events += r.events
        self.acquisitions += r.acquisitions
        if r.violation is not None:
            self.violations += 1
            if self.first_violation_seed is None:
                self.first_violation_seed = r.seed
            if len(self.violating_seeds) < 20:
                self.violating_seeds.append(r.seed)
        if r.uncertified is not None:
            self.uncertified += 1
            if len(self.uncertified_seeds) < 20:
                self.uncertified_seeds.append(r.seed)

    def merge(self, other: Summary) -> None:
        self.schedules += other.schedules
        self.events += other.events
        self.violations += other.violations
        self.acquisitions += other.acquisitions
        if self.first_violation_seed is None:
            self.first_violation_seed = other.first_violation_seed
        self.violating_seeds = (self.violating_seeds + other.violating_seeds)[:20]
        self.uncertified += other.uncertified
        self.uncertified_seeds = (self.uncertified_seeds + other.uncertified_seeds)[:20]


class _Node:
    __slots__ = (
        "alive",
        "backlog",
        "core",
        "ghost",
        "idx",
        "incarnation",
        "lease",
        "name",
        "offset",
        "paused_until",
        "priority",
        "proposer",
        "rate",
        "timer_at",
        "timer_gen",
        "wanting",
    )

    def __init__(self, idx: int, name: str, rate: float, offset: float, proposer: bool) -> None:
        self.idx = idx
        self.name = name
        self.rate = rate
        self.offset = offset
        self.proposer = proposer
        self.alive = True
        self.paused_until = -1.0
        self.backlog: list[object] = []
        self.incarnation = 1
        self.core: LockCore | None = None
        self.lease: Lease | None = None
        self.timer_gen = 0
        self.timer_at = -1.0
        self.priority = 100
        self.wanting = proposer
        # certify: (ballot, real expiry) of the record this acceptor lost in its last crash
        self.ghost: tuple[Ballot, float] | None = None


class Simulation:
    """One schedule.  Use :func:`run_schedule`; this class is its state."""

    def __init__(
        self,
        seed: int,
        topology: Topology,
        faults: Faults,
        timing: Timing,
        flaws: frozenset[Flaw],
        *,
        trace: bool = False,
        wire: bool = False,
        certify: bool = False,
    ) -> None:
        self.seed = seed
        self.certify = certify
        self.uncertified: Violation | None = None
        self.quorum = len(topology.members) // 2 + 1
        # Wire mode: every remote message is encoded by the sender's WireCodec and decoded
        # (authenticated, replay-checked) by the receiver's — slower, but it proves the
        # codec carries everything the core really emits.
        self.wire = wire
        self.codecs: dict[str, WireCodec] = {}
        self.wire_drops: dict[str, int] = {}
        self.rng = random.Random(seed ^ 0x5EED)
        self.topology = topology
        self.faults = faults
        self.timing = timing
        self.flaws = flaws
        self.heap: list[tuple[float, int, int, int, object]] = []
        self.seq = 0
        self.events = 0
        self.violation: Violation | None = None
        self.trace: list[str] | None = [] if trace else None
        self.acquisitions = 0
        self.accept_pauses = 0
        self.cut: list[tuple[str, float, float]] = []
        self.index = {name: i for i, name in enumerate(topology.members)}
        rho = timing.rho
        rng = self.rng
        self.nodes: list[_Node] = []
        for i, name in enumerate(topology.members):
            r = rng.random()
            rate = 1.0 - rho if r < 0.3 else 1.0 + rho if r < 0.6 else rng.uniform(1 - rho, 1 + rho)
            node = _Node(i, name, rate, rng.uniform(0.0, 1000.0), name in topology.proposers)
            node.priority = rng.choice((100, 100, 50, 150, 200))
            self.nodes.append(node)
        # Liveness bookkeeping: per node the current/last hold interval in real time.
        self.intervals: list[tuple[float, float]] = []
        self.open_hold: list[tuple[float, float] | None] = [None] * len(self.nodes)

    # ------------------------------------------------------------------ plumbing

    def push(self, t: float, kind: int, idx: int, payload: object = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, idx, payload))

    def local(self, node: _Node, t: float) -> float:
        return node.offset + node.rate * t

    def arm(self, node: _Node, t: float) -> None:
        core = node.core
        assert core is not None
        nd = core.next_deadline()
        if nd is None:
            node.timer_gen += 1
            node.timer_at = -1.0
            return
        # +100 ns so that local(real) >= nd despite float rounding (no spinning ticks).
        real = (nd - node.offset) / node.rate + 1e-7
        if real <= t:
            real = t + 1e-7
        if real == node.timer_at:
            return
        node.timer_gen += 1
        node.timer_at = real
        self.push(real, _TIMER, node.idx, node.timer_gen)

    def boot(self, node: _Node, t: float) -> None:
        core = LockCore(
            node.name,
            self.topology.members,
            self.timing,
            node.incarnation,
            self.local(node, t),
            (LEASE,),
            flaws=self.flaws,
            preempt=True,
            poll_interval=self.faults.poll,
        )
        node.core = core
        node.lease = core.lease(LEASE)
        if self.wire:
            self.codecs[node.name] = WireCodec(
                "sim",
                node.name,
                node.incarnation,
                self.timing.fingerprint(),
                _SIM_KEYS,
                self.topology.members,
            )
        node.alive = True
        node.backlog = []
        node.paused_until = -1.0
        if node.proposer and node.wanting:
            self.send(node, core.campaign(LEASE, self.local(node, t), node.priority), t)
        self.arm(node, t)

    # ------------------------------------------------------------------ network

    def send(self, node: _Node, msgs: list[Message], t: float) -> None:
        f = self.faults
        rng = self.rng
        core = node.core
        assert core is not None
        pending = msgs
        # A stalled queue that flushes later: the whole batch re-arrives together.
        stale = rng.uniform(0.3, 3.0) if f.stale_dup and rng.random() < f.stale_dup else 0.0
        for _ in range(MAX_LOCAL_ROUNDS):
            local: list[Message] = []
            for m in pending:
                if m.receiver == node.name:
                    local.append(m)
                    continue
                dst = self.index[m.receiver]
                item: object = self.codecs[node.name].encode(m) if self.wire else m
                if stale:
                    self.push(t + stale + rng.uniform(0.0, 0.005), _DELIVER, dst, item)
                if f.loss and rng.random() < f.loss:
                    continue
                if self.cut and self._cut_off(m.sender, m.receiver, t):
                    continue
                if f.slow_reply and m.kind in _REPLIES and rng.random() < f.slow_reply:
                    delay = rng.uniform(f.slow_reply_min, f.slow_reply_max)
                    self.push(t + delay, _DELIVER, dst, item)
                    continue
                self.push(t + self._delay(), _DELIVER, dst, item)
                if f.dup and rng.random() < f.dup:
                    self.push(t + self._delay(), _DELIVER, dst, item)
            if not local:
                break
            pending = []
            lnow = self.local(node, t)
            for m in local:
                pending += core.handle(m, lnow)
        for m in msgs:
            if m.kind is Kind.PREPARE:
                if f.pause_after_prepare and rng.random() < f.pause_after_prepare:
                    self.push(t, _PAUSE, node.idx, rng.uniform(f.pause_min, 3.0))
                break
            if m.kind is Kind.PROMISE:
                if f.crash_after_promise and rng.random() < f.crash_after_promise:
                    self.push(t, _CRASH, node.idx, rng.uniform(0.0, f.downtime_max))
                break
        if (
            f.pause_after_accept
            and self.accept_pauses < f.accept_pauses
            and any(m.kind is Kind.ACCEPT for m in msgs)
            and rng.random() < f.pause_after_accept
        ):
            # The ACCEPTs are out, the ACCEPTEDs will wait in the backlog.
            self.accept_pauses += 1
            self.push(t, _PAUSE, node.idx, rng.uniform(f.accept_pause_min, f.accept_pause_max))

    def _cut_off(self, a: str, b: str, t: float) -> bool:
        return any(lo <= t < hi and x in (a, b) for x, lo, hi in self.cut)

    def _delay(self) -> float:
        f = self.faults
        rng = self.rng
        if f.tail and rng.random() < f.tail:
            return rng.uniform(f.delay_max, f.tail_max)
        return rng.uniform(f.delay_min, f.delay_max)

    # ------------------------------------------------------------------ checking

    def after(self, node: _Node, t: float) -> None:
        """Run after every input processed by ``node`` at real time ``t``."""
        lease = node.lease
        assert lease is not None
        lnow = node.offset + node.rate * t
        holder = lease.is_holder(lnow)
        if lease.events:
            for ev in lease.events:
                if ev.kind == "acquired":
                    self.acquisitions += 1
                    f = self.faults
                    if f.pause_after_acquire and self.rng.random() < f.pause_after_acquire:
                        self.push(t, _PAUSE, node.idx, self.rng.uniform(f.pause_min, 3.0))
            if self.trace is not None:
                self.trace.extend(f"{t:.9f} {node.name} {e.kind} {e.term}" for e in lease.events)
            lease.events.clear()
        # Liveness intervals (exact: holding changes only at this node's events or expiry).
        cur = self.open_hold[node.idx]
        if holder:
            hu = lease.hold_until()
            assert hu is not None
            end = (hu - node.offset) / node.rate
            if cur is not None and cur[1] >= t:
                self.open_hold[node.idx] = (cur[0], end)
            else:
                if cur is not None:
                    self.intervals.append(cur)
                self.open_hold[node.idx] = (t, end)
            # Safety: nobody else may hold at this instant.
            if self.violation is None:
                for other in self.nodes:
                    if other is node or not other.alive or other.lease is None:
                        continue
                    olocal = other.offset + other.rate * t
                    if other.lease.is_holder(olocal):
                        self.violation = Violation(
                            t, ((node.name, lnow), (other.name, olocal)), self.events
                        )
                        break
        elif cur is not None and cur[1] > t:
            self.open_hold[node.idx] = (cur[0], t)
        if self.certify and self.uncertified is None:
            self._certify(t)

    def _record(self, node: _Node, t: float) -> Ballot | None:
        """The lease record acceptor ``node`` answers for at real time ``t`` (or its ghost)."""
        if node.alive and node.lease is not None:
            rec = node.lease.accepted_record()
            if rec is not None and node.offset + node.rate * t < rec[1]:
                return rec[0]
        if node.ghost is not None and t < node.ghost[1]:
            return node.ghost[0]
        return None

    def _certify(self, t: float) -> None:
        records: list[Ballot | None] | None = None
        for node in self.nodes:
            lease = node.lease
            if not node.alive or lease is None:
                continue
            if not lease.is_holder(node.offset + node.rate * t):
                continue
            if records is None:
                records = [self._record(x, t) for x in self.nodes]
            mine = sum(
                1
                for r in records
                if r is not None and r.node == node.name and r.incarnation == node.incarnation
            )
            if mine < self.quorum:
                self.uncertified = Violation(
                    t, ((node.name, node.offset + node.rate * t),), self.events
                )
                return

    # ------------------------------------------------------------------ driver

    def schedule_faults(self) -> None:
        f = self.faults
        rng = self.rng
        n = len(self.nodes)
        h = f.horizon
        for _ in range(f.crashes):
            down = rng.uniform(0.0, f.downtime_max)
            self.push(rng.uniform(0.0, h), _CRASH, rng.randrange(n), down)
        for _ in range(f.group_crashes):
            at = rng.uniform(0.0, h)
            for idx in rng.sample(range(n), rng.randint(2, n)):
                down = rng.uniform(0.0, f.downtime_max)
                self.push(at + rng.uniform(0.0, 0.05), _CRASH, idx, down)
        for _ in range(f.partitions):
            a = rng.uniform(0.0, h)
            self.cut.append((self.nodes[rng.randrange(n)].name, a, a + rng.uniform(0.2, 2.0)))
        for _ in range(f.pauses):
            self.push(rng.uniform(0.0, h), _PAUSE, rng.randrange(n), rng.uniform(0.05, 3.0))
        proposers = [nd.idx for nd in self.nodes if nd.proposer]
        for _ in range(f.commands):
            kind = rng.choice((_RELEASE, _RELEASE, _RELEASE, _WITHDRAW, _PRIORITY))
            idx = rng.choice(proposers)
            if kind == _RELEASE:
                payload: object = (
                    rng.choice((0.0, 0.0, 0.2, None))
                    if f.release_holdoff == "mixed"
                    else f.release_holdoff
                )
            elif kind == _PRIORITY:
                payload = rng.choice((50, 100, 150, 200))
            else:
                payload = rng.uniform(0.1, 2.0)  # withdrawn for this long
            self.push(rng.uniform(0.0, h), kind, idx, payload)

    def run(self) -> None:
        for node in self.nodes:
            self.boot(node, 0.0)
        self.schedule_faults()
        heap = self.heap
        horizon = self.faults.horizon
        trace = self.trace
        nodes = self.nodes
        while heap and self.events < MAX_EVENTS:
            t, _, kind, idx, payload = heapq.heappop(heap)
            if t > horizon:
                break
            node = nodes[idx]
            if kind == _TIMER:
                if payload != node.timer_gen:
                    continue
                node.timer_at = -1.0
                if not node.alive or t < node.paused_until:
                    continue  # re-armed at RESUME / RESTART
            elif kind == _DELIVER:
                if not node.alive:
                    continue
                if t < node.paused_until:
                    node.backlog.append(payload)
                    continue
            self.events += 1
            if trace is not None:
                trace.append(f"{t:.9f} {kind} {node.name} {payload!r}")
            self.dispatch(node, kind, payload, t)
            if self.violation is not None:
                break
        for i, cur in enumerate(self.open_hold):
            if cur is not None:
                self.intervals.append(cur)
                self.open_hold[i] = None

    def dispatch(self, node: _Node, kind: int, payload: object, t: float) -> None:
        core = node.core
        if kind == _RESTART:
            node.incarnation += 1
            self.boot(node, t)
            self.after(node, t)
            return
        if not node.alive or core is None:
            return
        lnow = node.offset + node.rate * t
        if kind == _DELIVER:
            msg = self._decode(node, payload)
            if msg is not None:
                self.send(node, core.handle(msg, lnow), t)
        elif kind == _TIMER:
            self.send(node, core.tick(lnow), t)
        elif kind == _CRASH:
            acc = node.lease.accepted_record() if node.lease is not None else None
            if self.certify and acc is not None and lnow < acc[1]:
                # The record dies with the process; R6 must make up for it (ghost).
                node.ghost = (acc[0], (acc[1] - node.offset) / node.rate)
            node.alive = False
            node.core = None
            node.lease = None
            node.backlog = []
            node.timer_gen += 1
            cur = self.open_hold[node.idx]
            if cur is not None and cur[1] > t:
                self.open_hold[node.idx] = (cur[0], t)
            assert isinstance(payload, float)
            self.push(t + payload, _RESTART, node.idx)
            return
        elif kind == _PAUSE:
            if t < node.paused_until:
                return
            assert isinstance(payload, float)
            node.paused_until = t + payload
            self.push(node.paused_until, _RESUME, node.idx)
            return
        elif kind == _RESUME:
            if t < node.paused_until:
                return
            backlog = node.backlog
            node.backlog = []
            # Like asyncio after SIGCONT: queued datagrams are handled before due timers.
            for item in backlog:
                if node.core is not core:
                    break
                m = self._decode(node, item)
                if m is None:
                    continue
                self.send(node, core.handle(m, lnow), t)
                self.after(node, t)
                if self.violation is not None:
                    return
            if node.core is not core:
                return
            self.send(node, core.tick(lnow), t)
        elif not node.proposer or t < node.paused_until:
            return
        elif kind == _RELEASE:
            assert payload is None or isinstance(payload, float)
            self.send(node, core.release(LEASE, lnow, payload), t)
        elif kind == _WITHDRAW:
            assert isinstance(payload, float)
            node.wanting = False
            self.send(node, core.withdraw(LEASE, lnow), t)
            self.push(t + payload, _CAMPAIGN, node.idx)
        elif kind == _CAMPAIGN:
            node.wanting = True
            self.send(node, core.campaign(LEASE, lnow, node.priority), t)
        elif kind == _PRIORITY:
            assert isinstance(payload, int)
            node.priority = payload
            self.send(node, core.set_priority(LEASE, lnow, payload), t)
        if node.core is core:
            self.after(node, t)
            self.arm(node, t)

    def _decode(self, node: _Node, payload: object) -> Message | None:
        if not isinstance(payload, bytes):
            return payload  # type: ignore[return-value]
        try:
            return self.codecs[node.name].decode(payload)
        except WireError as exc:
            self.wire_drops[exc.reason] = self.wire_drops.get(exc.reason, 0) + 1
            return None

    def held_time(self, start: float, end: float) -> float:
        """Length of the union of hold intervals within [start, end]."""
        spans = sorted((max(a, start), min(b, end)) for a, b in self.intervals)
        total = 0.0
        cur_a = cur_b = start
        for a, b in spans:
            if b <= a:
                continue
            if a > cur_b:
                total += cur_b - cur_a
                cur_a, cur_b = a, b
            elif b > cur_b:
                cur_b = b
        return total + (cur_b - cur_a)


def run_schedule(
    seed: int,
    *,
    flaws: Iterable[Flaw] = (),
    topology: Topology | None = None,
    faults: Faults | None = None,
    timing: Timing | None = None,
    trace: bool = False,
    style: str | None = None,
    wire: bool = False,
    certify: bool = False,
) -> ScheduleResult:
    """Run one seeded schedule.  Topology and faults are drawn from the seed unless given."""
    draw = random.Random(seed)
    if topology is None:
        topology = TOPOLOGIES[draw.choice(("3", "3", "5", "2+w", "2+w"))]
    if faults is None:
        faults = draw_faults(draw, style)
    if timing is None:
        timing = Timing.from_lease(1.0)
    sim = Simulation(
        seed, topology, faults, timing, frozenset(flaws), trace=trace, wire=wire, certify=certify
    )
    sim.run()
    start = timing.quarantine + 2.0 * timing.lease
    end = faults.horizon
    measured = max(0.0, end - start)
    held = sim.held_time(start, end) if measured > 0.0 else 0.0
    return ScheduleResult(
        seed=seed,
        topology=topology.name,
        events=sim.events,
        violation=sim.violation,
        acquisitions=sim.acquisitions,
        held=held,
        measured=measured,
        trace=sim.trace,
        wire_drops=sim.wire_drops,
        uncertified=sim.uncertified,
    )


def run_many(
    seeds: Iterable[int],
    *,
    flaws: Iterable[Flaw] = (),
    stop_at_first: bool = False,
    topology: Topology | None = None,
    style: str | None = None,
    certify: bool = False,
) -> Summary:
    """Run many schedules; optionally stop at the first double holder (mutation hunting)."""
    flawset = frozenset(flaws)
    summary = Summary()
    for seed in seeds:
        r = run_schedule(seed, flaws=flawset, topology=topology, style=style, certify=certify)
        summary.add(r)
        if stop_at_first and r.violation is not None:
            break
    return summary


Job = (
    tuple[int, int, tuple[str, ...], str | None, bool]
    | tuple[int, int, tuple[str, ...], str | None, bool, bool]
)


def run_range(job: Job) -> Summary:
    """Picklable worker for process pools.

    ``job`` is ``(lo, hi, flaw values, style, stop_at_first[, certify])``.
    """
    lo, hi, flaw_values, style, stop = job[:5]
    certify = bool(job[5]) if len(job) > 5 else False
    flaws = frozenset(Flaw(v) for v in flaw_values)
    return run_many(range(lo, hi), flaws=flaws, style=style, stop_at_first=stop, certify=certify)


def liveness(seeds: Iterable[int], topology: Topology, lease: float = 1.0) -> float:
    """Share of time a holder exists on a healthy network (after start-up quarantine)."""
    held = measured = 0.0
    for seed in seeds:
        r = run_schedule(
            seed,
            topology=topology,
            faults=Faults(horizon=20.0 * lease),
            timing=Timing.from_lease(lease),
        )
        held += r.held
        measured += r.measured
    return held / measured if measured else 0.0
