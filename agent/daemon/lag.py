"""The event-loop lag probe: how late the loop wakes a 10 ms timer.

VRRP adverts (10 ms..40 s), lease renewals (lease/4) and the fence depend on the loop
waking on time; anything that holds it up shows here first. Every wake's lateness
goes to ``lvs_agent_event_loop_lag_seconds``; a wake later than half the tightest
deadline in use (``lag_threshold``: the shortest VRRP advert interval, or the lock's
guard, min(100 ms, lease/4)) is logged, at most once per ``LOG_EVERY`` seconds with
the count and worst lag of the wakes not logged meanwhile.

``lag_threshold`` and ``LagLog`` are pure (a clock is passed in); ``probe`` is the
thin asyncio part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
