"""Supervision of the daemon's long-running tasks: one failure never stops the others.

A long-running task (a tracker loop, the lock-status writer, the metrics listener,
the loop-lag probe) that raises is logged with its traceback, counted, and started
again after a backoff that doubles from ``FIRST_BACKOFF`` up to ``MAX_BACKOFF`` and
starts over once a run has lasted ``STABLE`` seconds. A task that returns is done.
Cancelling the supervising task cancels the task and ends the supervision.

The counter is a process-wide hook (``set_failure_hook``): the daemon points it at
``lvs_agent_errors_total{kind="task"}``; components (VRRP, the lock) need not know
about metrics. ``Backoff`` is the pure part, tested with an injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("lvs-agent")

FIRST_BACKOFF = 0.5  # seconds before the first restart
MAX_BACKOFF = 30.0
STABLE = 60.0  # a run this long resets the backoff

_hook: Callable[[str], None] | None = None


def set_failure_hook(hook: Callable[[str], None] | None) -> None:
    """``hook(task name)`` is called once per unexpected failure (the daemon counts it)."""
    global _hook
    _hook = hook


def report_failure(name: str) -> None:
    """Count one unexpected failure of ``name`` (callbacks that are not tasks use this)."""
    if _hook is not None:
        try:
            _hook(name)
        except Exception:  # a broken counter must not hide the failure it counts
            log.exception("counting a failure of %s failed", name)


@dataclass
class Backoff:
    """How long to wait before the next restart, given when the failed run started."""

    first: float = FIRST_BACKOFF
    maximum: float = MAX_BACKOFF
    stable: float = STABLE
    current: float = 0.0

    def after_failure(self, started: float, now: float) -> float:
        if self.current == 0.0 or now - started >= self.stable:
            self.current = self.first
        else:
            self.current = min(self.maximum, self.current * 2)
        return self.current


async def supervise(
    name: str,
    run: Callable[[], Awaitable[object]],
    *,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Run ``run()`` until it returns; restart it (with backoff) whenever it raises."""
    backoff = backoff or Backoff()
    while True:
        started = clock()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s failed; restarting it", name)
            report_failure(name)
        delay = backoff.after_failure(started, clock())
        log.info("task %s: restarting in %gs", name, delay)
        await sleep(delay)


def watch(task: asyncio.Task[object], name: str) -> None:
    """A one-shot task (a notify command): its unexpected failure is logged and counted."""

    def done(t: asyncio.Task[object]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            log.error("task %s failed", name, exc_info=exc)
            report_failure(name)

    task.add_done_callback(done)
