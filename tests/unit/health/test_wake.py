"""When the scheduler wakes: on a fake clock, a fake loop and a fake SYN prober.

The loop is woken only when something is due (a start, a timeout, a look at
probes in flight), on multiples of the tick; these tests count the wake-ups
and the sends of whole runs of fake time, no real time involved.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from agent.health.config import Check, CheckKey, Pool, member
from agent.health.scheduler import REAP, TICK, Scheduler, next_wake


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]):
        self._when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self._when


class Loop:
    """call_at and call_soon, run by ``run`` below."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []
        self.soon: list[Callable[[], None]] = []

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> Timer:
        t = Timer(when, partial(callback, *args))
        self.timers.append(t)
        return t

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        self.soon.append(partial(callback, *args))


class Prober:
    """SynProber's surface: targets in ``dead`` never answer, the rest after ``rtt``."""

    def __init__(
        self,
        on_result: Callable[[object, bool, str, float], None],
        rtt: float = 0.001,
        dead: frozenset[str] = frozenset(),
    ):
        self.on_result = on_result
        self.rtt = rtt
        self.dead = dead
        self.pending: dict[int, tuple[object, float, float, float | None]] = {}
        self.queued = 0
        self.sends: list[int] = []  # SYNs per flush (one sendmmsg each)
        self.durations: list[float] = []

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def start(self, key: CheckKey, token: object, now: float) -> None:
        answer = None if key.target.address in self.dead else now + self.rtt
        self.pending[id(token)] = (token, now, now + key.check.timeout, answer)
        self.queued += 1

    def flush(self) -> None:
        if self.queued:
            self.sends.append(self.queued)
        self.queued = 0

    def reap(self, now: float) -> None:
        for k, (token, start, _, answer) in list(self.pending.items()):
            if answer is not None and answer <= now:
                del self.pending[k]
                self.durations.append(now - start)
                self.on_result(token, True, "ok", now - start)

    def expire(self, now: float) -> None:
        for k, (token, start, deadline, _) in list(self.pending.items()):
            if deadline <= now:
                del self.pending[k]
                self.durations.append(now - start)
                self.on_result(token, False, "timeout", now - start)

    def next_deadline(self) -> float | None:
        return min((p[2] for p in self.pending.values()), default=None)

    def close(self) -> None:
        self.pending.clear()


def started(
    targets: int,
    check: Check,
    rtt: float = 0.001,
    dead: frozenset[str] = frozenset(),
    spread: float = 0.05,
) -> tuple[Scheduler, Clock, Loop, Prober, list[tuple[CheckKey, float, float]]]:
    """A scheduler as ``start()`` leaves it, on the fakes; starts: (key, due, start)."""
    addresses = (f"10.0.{i // 250}.{i % 250 + 1}" for i in range(targets))
    pool = Pool("vs", tuple(member(a, 80, 1, (check,)) for a in addresses))
    clock, loop = Clock(), Loop()
    starts: list[tuple[CheckKey, float, float]] = []

    def on_start(key: CheckKey, late: float) -> None:
        starts.append((key, s._entries[key].due, clock.now))

    s = Scheduler([pool], spread=spread, rng=random.Random(7), clock=clock, on_start=on_start)
    s._loop = loop  # type: ignore[assignment]
    prober = Prober(s._tcp_done, rtt, dead)
    s._syn = prober  # type: ignore[assignment]
    for entry in s._entries.values():
        s._first_due(entry, clock.now)
    s._arm()
    return s, clock, loop, prober, starts


def run(s: Scheduler, clock: Clock, loop: Loop, seconds: float) -> list[float]:
    """Fire the timers in order until ``seconds`` from now; the scheduler's wake-ups."""
    end = clock.now + seconds
    wakes: list[float] = []
    for _ in range(1_000_000):
        while loop.soon:
            loop.soon.pop(0)()
        live = [t for t in loop.timers if not t.cancelled]
        if not live:
            break
        t = min(live, key=Timer.when)
        if t.when() > end:
            break
        loop.timers.remove(t)
        clock.now = max(clock.now, t.when())
        if s._timer is t:
            wakes.append(clock.now)
        t.callback()
    return wakes


def on_grid(t: float, tick: float = TICK) -> bool:
    return abs(t / tick - round(t / tick)) < 1e-6


def test_next_wake_is_the_slot_of_the_first_thing_due() -> None:
    assert next_wake(None, None, None, 0.02) is None
    # a start may run up to a tick early: the slot holding it
    assert next_wake(10.031, None, None, 0.02) == pytest.approx(10.02)
    # a timeout is never judged early, nor a look taken before it is asked for
    assert next_wake(None, 10.031, None, 0.02) == pytest.approx(10.04)
    assert next_wake(None, None, 10.031, 0.02) == pytest.approx(10.04)
    # the earliest wins; things due in one slot share it
    assert next_wake(10.05, 10.031, 10.09, 0.02) == pytest.approx(10.04)
    assert next_wake(10.041, 10.031, None, 0.02) == pytest.approx(10.04)
    assert next_wake(10.07, None, 10.061, 0.02) == pytest.approx(10.06)


def test_sparse_checks_wake_the_loop_less_than_once_per_probe() -> None:
    # 100 targets every 1 s: the loop wakes for starts (a tick's worth at a time),
    # reads the answers at the next wake-up, and never ticks while nothing is due
    s, clock, loop, prober, starts = started(100, Check("tcp", interval=1.0, timeout=1.0))
    wakes = run(s, clock, loop, 10.0)
    probes = sum(s.stats.probes.values())
    assert probes >= 900 and s.stats.probes[("tcp", False)] == 0
    assert len(wakes) < probes / 2
    assert all(on_grid(w) for w in wakes)
    assert len(set(round(w / TICK) for w in wakes)) == len(wakes)  # one per slot at most
    # every answer was read within REAP and a tick of its probe's start
    assert max(prober.durations) <= REAP + TICK + 1e-9
    assert sum(prober.sends) == len(starts)


def test_dense_checks_share_one_wake_up_and_one_send_per_tick() -> None:
    s, clock, loop, prober, _ = started(2000, Check("tcp", interval=1.0, timeout=1.0))
    run(s, clock, loop, 1.0)  # the start-up spread
    sends_before = len(prober.sends)
    wakes = run(s, clock, loop, 2.0)
    slots = round(2.0 / TICK)
    assert len(wakes) <= slots + 1
    assert len(prober.sends) - sends_before == len(wakes)  # one sendmmsg per wake-up
    assert min(prober.sends[sends_before:]) >= 1
    assert s.stats.probes[("tcp", False)] == 0


def test_a_start_is_never_late_and_early_starts_keep_the_interval() -> None:
    s, clock, loop, _, starts = started(50, Check("tcp", interval=1.0, timeout=1.0), spread=0.0)
    run(s, clock, loop, 5.0)
    assert all(due - TICK - 1e-9 <= start <= due + 1e-9 for _, due, start in starts)
    # without spread each check is due exactly one interval after it was last due
    by_check: dict[CheckKey, list[float]] = {}
    for key, due, _ in starts:
        by_check.setdefault(key, []).append(due)
    assert len(by_check) == 50
    for dues in by_check.values():
        gaps = [b - a for a, b in itertools.pairwise(dues)]
        assert all(g == pytest.approx(1.0) for g in gaps)


def test_a_probe_that_never_answers_costs_a_look_every_reap_until_its_timeout() -> None:
    check = Check("tcp", interval=5.0, timeout=1.0, fall=3)
    s, clock, loop, prober, starts = started(1, check, dead=frozenset({"10.0.0.1"}))
    wakes = run(s, clock, loop, 6.5)
    first = starts[0][2]
    during = [w for w in wakes if first < w <= first + 1.0 + TICK]
    assert len(during) <= math.ceil(1.0 / REAP) + 2
    assert s.stats.failures[("tcp", "timeout")] >= 1
    # the timeout ran from the real send: judged at or after it, at most a tick late
    assert all(1.0 <= d <= 1.0 + TICK + 1e-9 for d in prober.durations)


def test_a_stalled_loop_reads_answers_before_judging_timeouts() -> None:
    # the loop is held up for 3 s while probes are in flight: their answers came
    # back long before, and they count as passes, not as timeouts
    s, clock, loop, _, _ = started(100, Check("tcp", interval=1.0, timeout=1.0))
    run(s, clock, loop, 2.0)
    assert s._syn is not None
    for _ in range(100):  # up to a pass that leaves probes in flight
        if s._syn.in_flight:
            break
        run(s, clock, loop, TICK)
    assert s._syn.in_flight
    clock.now += 3.0
    run(s, clock, loop, 2.0)
    assert s.stats.probes[("tcp", False)] == 0
    # and the checks it could not start meanwhile start late, stretched, not failed
    assert s.stats.late_probes > 0
