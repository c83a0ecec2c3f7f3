"""Runs the checks on the agent's one asyncio loop and keeps every pool's decision current.

This module owns time and concurrency for health checking: when each check
probes (start-up and interval jitter, ``fast_interval``/``down_interval`` from
the core), how many probes run at once, what happens when the prober falls
behind, and the counters that say so. It feeds probe results to
``agent.health.core`` and keeps the resulting states and pool decisions; it
must never decide health itself, touch IPVS, or block the loop.

Overload never looks like failure. A due check that cannot start (the
``max_in_flight`` cap is reached, or the loop was busy) simply starts late: its
lateness (start time minus due time) goes to the lateness histogram and a
warning is logged at most every ``LATE_LOG_EVERY`` seconds; nothing is counted
against the target. Each probe's timeout runs from its real start, and the next
probe is due one interval after the previous one really started (or was due,
when a pass started it a little early), so a prober that falls behind
stretches its intervals instead of bursting to catch up.
The time the loop itself was seen stalled (its timer woke ``LAG_COUNTED`` or
more late) is given back to the HTTP and other multi-step probes that were
running meanwhile, bounded (``probes.STALL_GRACE``); a probe that still timed
out while the loop stalled ``STALL`` or more is inconclusive: not counted,
probed again at once, at most ``fall`` times in a row. IPv4 connect checks
run as bare SYNs (``syn.SynProber``) when raw sockets can be opened, other
connect checks and plain HTTP on ``probes.BatchProber``, both driven by this
module's timer, which sleeps until something is due (``next_wake``).
``oldest_due`` is how late the most overdue check is right now: a loop that
stops making progress shows it growing (the systemd watchdog can hang off it);
``stats.loop_lag`` is how late the loop woke.

One probe per check identity (``CheckKey``): every (virtual server, real
server) that declares the same check against the same target reads the same
state. A reload keeps the state of every unchanged identity (``reload``, O(n)).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final

from agent.health import core
from agent.health.config import CheckKey, Member, Pool
from agent.health.core import CheckState, MemberHealth, PoolDecision, PoolState, Result
from agent.health.probes import BatchProber, batchable, http_plan, probe
from agent.health.syn import SynProber, usable
from agent.histogram import Histogram

log = logging.getLogger("agent.health")

LATE_LOG_EVERY: Final = 10.0  # seconds between two "falling behind" warnings
LATE_WARN: Final = 0.5  # a probe this late (seconds) is worth a warning
# The scheduler's timer fires only on multiples of TICK (``next_wake``) and only
# when something is due: the next check to start, the first timeout of a probe
# still pending, or a look at the probes in flight. Each pass reaps finished
# probes, expires timed-out ones and starts every check due within the next
# TICK (up to a TICK early, well inside the interval's ``spread``; the next
# probe is then due one interval after the due time, not the early start), so
# work due within one TICK shares one wake-up: at 10,000 checks a second every
# TICK carries 200 probes (one ``sendmmsg``), at 100 a second the loop wakes
# fewer than 50 times a second. A wake-up of the asyncio loop costs about as
# much CPU as a few connect checks, so at low rates the wake-ups are the cost.
# Lateness, connect durations and timeouts are as fine as TICK.
TICK: Final = 0.02
# Probes in flight are looked at (their answers read, HTTP requests sent) in
# the slot at or after REAP from the last pass, or at any earlier wake-up; a
# probe that never answers costs a look every REAP or so until its timeout.
# Sparse checks' durations are as fine as REAP; their timeouts are not affected
# (a probe's answer is read before it is judged timed out).
REAP: Final = 0.04
LAG_COUNTED: Final = 0.02  # a wake-up this late (seconds) counts as the loop stalling
STALL: Final = 0.1  # the loop woke this late (seconds): probes running meanwhile are suspect

LATENESS_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
DURATION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass
class HealthStats:
    """Plain counters the metrics collector exports (``agent.health.metrics``)."""

    probes: Counter[tuple[str, bool]] = field(default_factory=Counter)  # (type, ok)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, reason)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, up|down)
    durations: dict[str, Histogram] = field(default_factory=dict)  # per check type
    lateness: Histogram = field(default_factory=lambda: Histogram(LATENESS_BUCKETS))
    late_probes: int = 0  # probes that started more than LATE_WARN late
    #: timeouts not counted against their target: the loop itself stalled meanwhile
    inconclusive: Counter[str] = field(default_factory=Counter)  # by check type
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LATENESS_BUCKETS))

    def duration(self, check_type: str) -> Histogram:
        h = self.durations.get(check_type)
        if h is None:
            h = self.durations[check_type] = Histogram(DURATION_BUCKETS)
        return h


class _Entry:
    """One check identity's mutable bookkeeping (the state itself is a frozen core value)."""

    __slots__ = (
        "batch",
        "due",
        "gone",
        "inconclusive",
        "key",
        "ok_key",
        "plan",
        "pools",
        "running",
        "started",
        "state",
        "syn",
    )

    def __init__(self, key: CheckKey, state: CheckState):
        self.key = key
        self.batch = batchable(key)
        self.plan = http_plan(key) if self.batch and key.check.type == "http" else None
        self.syn = usable(key)
        self.ok_key = (key.check.type, True)
        self.started = 0.0
        self.inconclusive = 0
        self.state = state
        self.due = 0.0
        self.running = False
        self.gone = False
        self.pools: list[str] = []


def next_wake(
    due: float | None,
    deadline: float | None,
    look: float | None,
    tick: float = TICK,
) -> float | None:
    """When the scheduler's timer should fire next: a multiple of ``tick``, or None.

    ``due``: when the first check is due to start (a pass starts the checks due
    within one ``tick`` after it, so the wake-up is the slot holding ``due``);
    ``deadline``: the first timeout of a probe still in flight, never judged
    early (the slot at or after it); ``look``: when the probes in flight must be
    looked at (the slot at or after it). Whatever falls in one slot shares one
    wake-up, so the loop never wakes more often than once per ``tick``.
    """
    at = math.inf
    if due is not None:
        at = math.floor(due / tick) * tick
    for t in (deadline, look):
        if t is not None:
            slot = math.ceil(t / tick) * tick
            if slot < at:
                at = slot
    return None if at == math.inf else at


def _wanted(pools: Sequence[Pool]) -> list[tuple[CheckKey, bool]]:
    """Each identity once, with its initial state: down if any pool declaring it starts down."""
    initial: dict[CheckKey, bool] = {}
    for pool in pools:
        up = pool.policy.initial == "up"
        for m in pool.members:
            for key in m.checks:
                initial[key] = initial.get(key, True) and up
    return list(initial.items())


class Scheduler:
    """The health checks of a set of pools, probing on the running loop.

    ``start()`` (on the loop) begins probing; ``reload(pools)`` swaps the pools
    keeping unchanged checks' states; ``stop()`` ends it. The daemon reads
    ``decision(name)`` (weights, held servers, quorum) and ``member(name, key)``;
    ``on_change`` is called with the names of pools whose decision changed.
    """

    def __init__(
        self,
        pools: Sequence[Pool],
        *,
        max_in_flight: int = 4096,
        spread: float = 0.05,
        syn_probes: bool = True,
        tick: float = TICK,
        reap: float = REAP,
        on_change: Callable[[set[str]], None] | None = None,
        on_start: Callable[[CheckKey, float], None] | None = None,
        on_quorum: Callable[[Pool, PoolState, PoolDecision], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_in_flight = max_in_flight
        self.spread = spread
        self.tick = tick  # the timer's granularity (``next_wake``)
        self.reap = reap  # probes in flight are looked at no later than this after a pass
        self.on_change = on_change
        self.on_start = on_start  # (key, lateness) per probe started: benchmarks, tests
        # (pool, previous state, decision) for a pool's first decision and every
        # decision that flips its quorum: the quorum_up/quorum_down commands
        self.on_quorum = on_quorum
        self.stats = HealthStats()
        self._clock = clock  # the loop's clock: tests give a fake one with a fake loop
        self._rng = rng or random.Random()
        self._pools: dict[str, Pool] = {}
        self._entries: dict[CheckKey, _Entry] = {}
        self._decisions: dict[str, PoolDecision] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._in_flight = 0
        self._tasks: set[asyncio.Task[Result]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tcp: BatchProber | None = None
        self._syn: SynProber | None = None
        self.syn_probes = syn_probes
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # when the timer fires; inf: none armed, -inf: ticking
        self._ticking = False
        self._ramp_timer: asyncio.TimerHandle | None = None
        self._dirty: set[str] = set()
        self._stalled_at = -math.inf  # when the loop last woke STALL late or more
        self._stalled_total = 0.0  # seconds the loop woke late, summed (beyond a tick)
        self._flush_pending = False
        self._last_late_log = -LATE_LOG_EVERY
        self._late_since_log = 0
        self._max_late_since_log = 0.0
        self._maint: dict[str, frozenset[tuple[str, int]]] = {}
        self._install(pools, {})

    # -- the surface the daemon and check-health use --------------------------------

    def decision(self, pool: str) -> PoolDecision | None:
        return self._decisions.get(pool)

    def pool(self, name: str) -> Pool | None:
        return self._pools.get(name)

    def decisions(self) -> Mapping[str, PoolDecision]:
        return self._decisions

    def member(self, pool: str, key: tuple[str, int]) -> MemberHealth | None:
        p = self._pools.get(pool)
        if p is None:
            return None
        for m in p.members:
            if m.key == key:
                return core.member_health(m, self.states())
        return None

    def weight(self, pool: str, key: tuple[str, int]) -> int | None:
        """The weight the kernel should carry for this real server (None: out)."""
        d = self._decisions.get(pool)
        return None if d is None else d.weights.get(key)

    def states(self) -> Mapping[CheckKey, CheckState]:
        return _StateView(self._entries)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def checks(self) -> int:
        return len(self._entries)

    def oldest_due(self, now: float | None = None) -> float:
        """How late (seconds) the most overdue unstarted check is; 0 when none is."""
        now = self._clock() if now is None else now
        while self._heap and self._heap[0][2].gone:
            heapq.heappop(self._heap)
        return max(0.0, now - self._heap[0][0]) if self._heap else 0.0

    def set_maintenance(self, keys: Iterable[tuple[str, tuple[str, int]]]) -> None:
        """The real servers an operator took out, as (pool, key): down and never held
        by the floor, out of the quorum's healthy weight."""
        by: dict[str, set[tuple[str, int]]] = {}
        for name, key in keys:
            by.setdefault(name, set()).add(key)
        new = {name: frozenset(s) for name, s in by.items()}
        changed = {n for n in set(new) | set(self._maint) if new.get(n) != self._maint.get(n)}
        self._maint = new
        self._changed(changed & set(self._pools), self._clock())

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tcp = BatchProber(self._tcp_done)
        if self.syn_probes:
            try:
                self._syn = SynProber(self._tcp_done)
            except OSError as e:  # no CAP_NET_RAW: every tcp check on kernel sockets
                log.info("tcp checks use kernel sockets (raw sockets: %s)", e)
        now = self._clock()
        for entry in self._entries.values():
            self._first_due(entry, now)
        self._arm()

    def reload(self, pools: Sequence[Pool]) -> None:
        """Swap the pools; unchanged check identities keep state and schedule."""
        old = self._entries
        self._install(pools, old)
        now = self._clock()
        for key, entry in old.items():
            if key not in self._entries:
                entry.gone = True
        if self._loop is not None:
            for entry in self._entries.values():
                if entry.due == 0.0 and not entry.running:
                    self._first_due(entry, now)
            self._arm()

    def stop(self) -> None:
        for entry in self._entries.values():
            entry.gone = True
        for task in list(self._tasks):
            task.cancel()
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        if self._syn is not None:
            self._syn.close()
            self._syn = None
        for timer in (self._timer, self._ramp_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._ramp_timer = None
        self._timer_at = math.inf
        self._heap.clear()

    # -- internals -----------------------------------------------------------------

    def _install(self, pools: Sequence[Pool], old: Mapping[CheckKey, _Entry]) -> None:
        states = core.carry_over({k: e.state for k, e in old.items()}, _wanted(pools))
        entries: dict[CheckKey, _Entry] = {}
        for key, state in states.items():
            entry = old.get(key)
            if entry is None:
                entry = _Entry(key, state)
            entry.pools = []
            entries[key] = entry
        self._pools = {p.name: p for p in pools}
        for pool in pools:
            for m in pool.members:
                for key in m.checks:
                    names = entries[key].pools
                    if not names or names[-1] != pool.name:
                        names.append(pool.name)
        self._entries = entries
        prev = self._decisions
        self._decisions = {}
        now = self._clock()
        for pool in pools:
            old_d = prev.get(pool.name)
            self._decide(pool, old_d.state if old_d else PoolState(), now)

    def _first_due(self, entry: _Entry, now: float) -> None:
        # start-up jitter: spread the first probes over one interval
        self._push(entry, now + self._rng.uniform(0.0, entry.key.check.interval))

    def _push(self, entry: _Entry, due: float) -> None:
        entry.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, entry))

    def _arm(self, now: float | None = None) -> None:
        if self._ticking:
            return  # the tick arms the timer when it ends
        heap = self._heap
        while heap and (heap[0][2].gone or heap[0][2].due != heap[0][0]):
            heapq.heappop(heap)
        if self._loop is None:
            return
        if now is None:
            now = self._clock()
        deadline = look = None
        for prober in (self._tcp, self._syn):
            if prober is not None and prober.in_flight:
                look = now + self.reap
                first = prober.next_deadline()
                if first is not None and (deadline is None or first < deadline):
                    deadline = first
        at = next_wake(heap[0][0] if heap else None, deadline, look, self.tick)
        if at is None:
            return
        if at < now:
            at = now  # overdue: at once (the loop's lag is measured from here)
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._clock()
        lag = now - self._timer_at
        # The probes this pass finishes schedule their next checks; arming the timer
        # for each would wake the loop again at once for checks this same pass then
        # starts. While it runs nothing arms the timer; it is armed once, at the end.
        self._timer_at = -math.inf
        self._ticking = True
        try:
            capped = self._pass(now, lag)
        finally:
            self._ticking = False
            self._timer_at = math.inf
        if capped:
            # at the cap: wake when a probe may have finished, a tick from now
            if self._loop is not None:
                self._timer_at = now + self.tick
                self._timer = self._loop.call_at(self._timer_at, self._tick)
            return
        self._arm(now)

    def _pass(self, now: float, lag: float) -> bool:
        """One tick's work: reap, expire, start what is due; True if held at the cap."""
        self.stats.loop_lag.observe(lag)
        if lag > LAG_COUNTED:
            self._stalled_total += max(0.0, lag - self.tick)
        if lag >= STALL:
            self._stalled_at = now
        syn = self._syn
        if syn is not None and syn.in_flight:
            syn.reap(now)
            syn.expire(now)
        tcp = self._tcp
        if tcp is not None and tcp.in_flight:
            tcp.reap(now)
            tcp.expire(now, self._stalled_total)
        heap = self._heap
        limit = now + self.tick
        while heap and heap[0][0] <= limit and self._in_flight < self.max_in_flight:
            due, _, entry = heapq.heappop(heap)
            if entry.gone or entry.running or entry.due != due:
                continue
            self._launch(entry, now, now - due)
        if syn is not None:
            syn.flush()  # this tick's SYNs leave together
        return bool(heap) and self._in_flight >= self.max_in_flight and heap[0][0] <= limit

    def _launch(self, entry: _Entry, now: float, late: float) -> None:
        late = max(0.0, late)
        self.stats.lateness.observe(late)
        if late > LATE_WARN:
            self._late(late, now)
        if self.on_start is not None:
            self.on_start(entry.key, late)
        entry.running = True
        self._in_flight += 1
        if entry.syn and self._syn is not None:
            entry.started = now
            self._syn.start(entry.key, entry, now)
            return
        if entry.batch and self._tcp is not None:
            entry.started = now
            self._tcp.start(entry.key, entry, now, self._stalled_total, entry.plan)
            return
        task = asyncio.ensure_future(probe(entry.key, self._stalled))
        self._tasks.add(task)
        task.add_done_callback(partial(self._task_done, entry=entry, started=now))

    def _task_done(self, task: asyncio.Task[Result], entry: _Entry, started: float) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            self._in_flight -= 1
            entry.running = False
            return
        exc = task.exception()
        result = task.result() if exc is None else Result(False, type(exc).__name__)
        self._done(entry, started, result)

    def _stalled(self) -> float:
        return self._stalled_total

    @property
    def stalled_seconds(self) -> float:
        """Seconds the loop woke late (20 ms or more), summed since start."""
        return self._stalled_total

    def _tcp_done(self, token: object, ok: bool, reason: str, duration: float) -> None:
        entry: _Entry = token  # type: ignore[assignment]
        state = entry.state
        if ok and state.up and not state.streak and state.weight is None and not entry.gone:
            # The common case, kept short: a settled-up check passed again, for which
            # core.observe returns the state unchanged and next_interval the interval.
            self._in_flight -= 1
            entry.running = False
            entry.inconclusive = 0
            stats = self.stats
            check = entry.key.check
            stats.probes[entry.ok_key] += 1
            stats.duration(check.type).observe(duration)
            started = entry.started
            now = started + duration
            # from the due time when started early (a pass starts up to a TICK ahead)
            base = entry.due if entry.due > started else started
            due = base + check.interval * (1.0 + self.spread * (2.0 * self._rng.random() - 1.0))
            self._push(entry, due if due > now else now)
            if entry.due < self._timer_at:
                self._arm(now)
            return
        self._done(entry, entry.started, Result(ok, reason, duration))

    def _done(self, entry: _Entry, started: float, result: Result) -> None:
        self._in_flight -= 1
        entry.running = False
        check = entry.key.check
        stats = self.stats
        ok = result.ok
        if not ok and result.reason == "timeout" and self._stalled_at >= started:
            # The loop itself stalled while this probe ran: its timeout may be ours,
            # not the target's. Probe again at once; after ``fall`` such results in a
            # row timeouts count again (a checker that is always stalled must still
            # see a dead server), until a probe runs without a stall.
            if entry.inconclusive < check.fall and not entry.gone:
                entry.inconclusive += 1
                stats.inconclusive[check.type] += 1
                self._push(entry, self._clock())
                self._arm()
                return
        else:
            entry.inconclusive = 0
        stats.probes[(check.type, ok)] += 1
        stats.duration(check.type).observe(result.duration)
        if not ok:
            stats.failures[(check.type, result.reason)] += 1
        if entry.gone:
            return
        now = self._clock()
        before = entry.state
        after = core.observe(before, check, result, now)
        if after is not before:
            entry.state = after
            if after.up != before.up:
                stats.transitions[(check.type, "up" if after.up else "down")] += 1
                log.info(
                    "%s check of %s:%d: %s (%s)",
                    check.type,
                    entry.key.target.address,
                    entry.key.target.port,
                    "up" if after.up else "down",
                    result.reason,
                )
            if after.up != before.up or after.weight != before.weight:
                self._changed(entry.pools, now)
        interval = core.next_interval(after, check)
        if self.spread:
            interval *= 1.0 + self.spread * (2.0 * self._rng.random() - 1.0)
        # from the real start: a late probe pushes the next one back (stretch, no
        # burst); from the due time when it started early (up to a TICK ahead)
        due = (entry.due if entry.due > started else started) + interval
        self._push(entry, due if due > now else now)
        if entry.due < self._timer_at:
            self._arm(now)

    def _changed(self, names: Iterable[str], now: float) -> None:
        """Mark pools for a new decision, made once for every change of this loop pass.

        A decision is O(real servers of the pool): made per transition, a pool of
        10,000 whose checks all fail at once (the director's own link cut) would
        cost 10,000 x 10,000. Coalesced, it costs one decision per pass.
        """
        self._dirty.update(names)
        if self._loop is None:
            self._flush()
        elif not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        now = self._clock()
        names, self._dirty = self._dirty, set()
        changed: set[str] = set()
        for name in names:
            pool = self._pools.get(name)
            if pool is None:
                continue
            old = self._decisions.get(name)
            new = self._decide(pool, old.state if old else PoolState(), now)
            if old is None or new.weights != old.weights or new.sorry != old.sorry:
                changed.add(name)
        if changed and self.on_change is not None:
            self.on_change(changed)

    def _decide(self, pool: Pool, prev: PoolState, now: float) -> PoolDecision:
        states = self._entries
        health = {m.key: core.member_health(m, _StateView(states)) for m in pool.members}
        for key in self._maint.get(pool.name, ()):
            h = health.get(key)
            if h is not None:
                health[key] = replace(h, up=False, maint=True, reason="maint")
        d = core.decide(pool, health, prev, now)
        self._decisions[pool.name] = d
        if self.on_quorum is not None and d.quorum_up != prev.quorum_up:
            self.on_quorum(pool, prev, d)
        for event in d.events:
            # a lost quorum matters when something acts on it (a sorry server); the floor always
            level = (
                logging.INFO
                if event.startswith("quorum") and not pool.policy.sorry_server
                else logging.WARNING
            )
            log.log(
                level,
                "virtual server %s: %s (healthy weight %d, floor %d, held %d)",
                pool.name,
                event.replace("_", " "),
                d.healthy_weight,
                d.floor,
                len(d.held),
            )
        if d.next_change is not None:
            self._ramp_at(d.next_change)
        return d

    def _ramp_at(self, at: float) -> None:
        if self._loop is None:
            return
        if self._ramp_timer is not None and self._ramp_timer.when() <= at:
            return
        if self._ramp_timer is not None:
            self._ramp_timer.cancel()
        self._ramp_timer = self._loop.call_at(at, self._ramp)

    def _ramp(self) -> None:
        self._ramp_timer = None
        now = self._clock()
        ramping = [n for n, d in self._decisions.items() if d.next_change is not None]
        self._changed(ramping, now)

    def _late(self, late: float, now: float) -> None:
        self.stats.late_probes += 1
        self._late_since_log += 1
        self._max_late_since_log = max(self._max_late_since_log, late)
        if now - self._last_late_log >= LATE_LOG_EVERY:
            log.warning(
                "health checks falling behind: %d probes started late (up to %.2fs) since "
                "the last report; intervals stretched, no check counted as failed for it "
                "(%d in flight, cap %d)",
                self._late_since_log,
                self._max_late_since_log,
                self._in_flight,
                self.max_in_flight,
            )
            self._last_late_log = now
            self._late_since_log = 0
            self._max_late_since_log = 0.0


class _StateView(Mapping[CheckKey, CheckState]):
    """The entries' states, read-only, without copying."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[CheckKey, _Entry]):
        self._entries = entries

    def __getitem__(self, key: CheckKey) -> CheckState:
        return self._entries[key].state

    def __iter__(self) -> Iterator[CheckKey]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class OnceResult:
    """One line of ``check-health``: a (virtual server, real server, check) and its result."""

    pool: str
    member: Member
    key: CheckKey
    result: Result


async def check_once(pools: Sequence[Pool], max_in_flight: int = 256) -> list[OnceResult]:
    """Run every check of ``pools`` once, concurrently (each identity probed once)."""
    sem = asyncio.Semaphore(max_in_flight)

    async def one(key: CheckKey) -> Result:
        async with sem:
            return await probe(key)

    keys = [k for k, _ in _wanted(pools)]
    results = dict(zip(keys, await asyncio.gather(*(one(k) for k in keys)), strict=True))
    return [
        OnceResult(pool.name, m, key, results[key])
        for pool in pools
        for m in pool.members
        for key in m.checks
    ]
