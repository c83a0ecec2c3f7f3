"""The event-loop lag probe: how late the loop wakes a 10 ms timer.

VRRP adverts (10 ms..40 s), lease renewals (lease/4) and the fence depend on the loop
waking on time; anything that holds it up shows here first. Every wake's lateness
goes to ``lvs_agent_event_loop_lag_seconds``; a wake later than half the tightest
deadline in use (``lag_threshold``: the shortest VRRP advert interval, or the lock's
guard, min(100 ms, lease/4)) is logged, at most once per ``LOG_EVERY`` seconds with
the count and worst lag of the wakes not logged meanwhile.

``lag_threshold`` and ``LagLog`` are pure (a clock is passed in); ``probe`` is the
thin asyncio part. ``StallWatch`` (a thread) says where a late loop was held up, and
times every garbage collection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

    from agent.config import Config

log = logging.getLogger("lvs-agent")

PERIOD = 0.01  # seconds between wakes
LOG_EVERY = 10.0  # seconds between two log lines about late wakes
DEFAULT_THRESHOLD = 0.5  # without VRRP or a lock: half of the 1 s advert default

# 1 ms .. 5 s: a healthy loop stays in the first buckets; a VRRP takeover needs ~3 adverts.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def lag_threshold(config: Config) -> float:
    """Half the shortest deadline the loop serves: VRRP advert interval or lease guard."""
    deadlines = [i.advert_interval for i in config.vrrp.vrrp_instances]
    if config.lock is not None and any(i.election == "quorum" for i in config.vrrp.vrrp_instances):
        deadlines.append(config.lock.timing().guard)
    return min(deadlines) / 2 if deadlines else DEFAULT_THRESHOLD


@dataclass
class LagLog:
    """Decides which late wakes are logged: the first, then one line per ``every``."""

    threshold: float
    every: float = LOG_EVERY
    _last: float | None = None
    _missed: int = 0
    _worst: float = 0.0

    def late(self, lag: float, now: float) -> str | None:
        """The line to log for a wake ``lag`` seconds late at ``now``, or None."""
        if lag <= self.threshold:
            return None
        if self._last is not None and now - self._last < self.every:
            self._missed += 1
            self._worst = max(self._worst, lag)
            return None
        line = (
            f"event loop woke {lag * 1000:.0f} ms late (more than {self.threshold * 1000:.0f} ms:"
            " half the shortest VRRP advert interval or lease guard)"
        )
        if self._missed:
            worst = self._worst * 1000
            line += f"; {self._missed} more since the last report, worst {worst:.0f} ms"
        self._last, self._missed, self._worst = now, 0, 0.0
        return line


async def probe(
    observe: Callable[[float], None],
    threshold: Callable[[], float],
    *,
    period: float = PERIOD,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wake every ``period`` seconds for ever; report each wake's lateness."""
    logger = LagLog(threshold())
    while True:
        due = clock() + period
        await asyncio.sleep(period)
        now = clock()
        lag = max(0.0, now - due)
        observe(lag)
        logger.threshold = threshold()
        line = logger.late(lag, now)
        if line is not None:
            log.warning("%s", line)


# ------------------------------------------------------------ where a late loop was


def where(frame: FrameType | None, depth: int = 4) -> str:
    """The innermost ``depth`` frames of a stack, innermost first: ``file:line fn``."""
    parts: list[str] = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        if code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back  # an import's own machinery: what imports is the news
            continue
        file = "/".join(code.co_filename.split("/")[-2:])
        parts.append(f"{file}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return " < ".join(parts) or "?"


class StallWatch:
    """Says where the loop was when it stalled, and how long collections took.

    The probe above only learns that a wake was late once the loop runs again. This
    watch is a thread that wakes every ``period`` and compares the probe's last wake
    with the clock: when the loop has not woken for more than the threshold, it logs
    the main thread's stack (the frames that hold the loop up). When the watch itself
    woke late by more than the threshold, something held the interpreter lock (one
    long C call, a collection, freeing a large table): it logs where the main thread
    is right after, which names the statement that just ran. Both at most once per
    ``LOG_EVERY``.

    Collections: every garbage collection's duration goes to ``observe_gc`` (generation,
    seconds); one longer than the threshold is logged with its generation and the
    thread that ran it. The collector's callback only records (a deque append, no lock):
    a collection can start inside any allocation, including one made while a metric's
    or a handler's lock is held, so observing and logging are left to the watch thread
    (``drain``).
    """

    def __init__(
        self,
        threshold: Callable[[], float],
        observe_gc: Callable[[int, float], None],
        *,
        period: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.observe_gc = observe_gc
        self.period = period
        self.clock = clock
        self.beat_at = clock()
        self._gc_start = 0.0
        self._gc_done: collections.deque[tuple[int, float, str]] = collections.deque(maxlen=1024)
        self._last_log = -LOG_EVERY
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread().ident

    def beat(self, now: float) -> None:
        """The loop woke (called by the probe's observer)."""
        self.beat_at = now

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._thread = threading.Thread(target=self._run, name="lvs-agent-stallwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        self._stop.set()
        self.drain()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
            return
        took = now - self._gc_start
        self._gc_done.append(
            (int(info.get("generation", 0)), took, threading.current_thread().name)
        )

    def drain(self) -> None:
        """Observe and log the collections recorded since the last call."""
        threshold = self.threshold()
        while self._gc_done:
            generation, took, thread = self._gc_done.popleft()
            self.observe_gc(generation, took)
            if took > threshold:
                log.warning(
                    "garbage collection of generation %d took %.0f ms (on thread %s)",
                    generation,
                    took * 1000,
                    thread,
                )

    def _run(self) -> None:
        last = self.clock()
        while not self._stop.wait(self.period):
            self.drain()
            now = self.clock()
            threshold = self.threshold()
            own = now - last - self.period
            last = now
            silent = now - self.beat_at
            if (own <= threshold and silent <= threshold) or now - self._last_log < LOG_EVERY:
                continue
            self._last_log = now
            frame = sys._current_frames().get(self._main or 0)
            if own > threshold:
                log.warning(
                    "the interpreter lock was held %.0f ms; then the loop was at: %s",
                    own * 1000,
                    where(frame),
                )
            else:
                log.warning(
                    "the loop has not woken for %.0f ms; it is at: %s", silent * 1000, where(frame)
                )
