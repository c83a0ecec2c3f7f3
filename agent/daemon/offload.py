"""CPU work of the daemon that must not run on its event loop.

``Offload`` runs a function on one worker thread (one at a time, in order) while the
loop keeps serving VRRP adverts, lease renewals and the fence. It is meant for
Python-level work (planning, the ownership file, applying a reload's delta): the
thread gives the interpreter lock back every ``SWITCH_INTERVAL``, so the loop's wakes
are late by about that much, not by the whole job. Long single C calls (a regex over a
whole file, one big ``str.split``) would hold the lock throughout: the configuration is
parsed in a worker process instead (``agent.daemon.worker``).

Large allocations and the cyclic garbage collector: a 10,000-service table is half a
million objects that live on, and every full collection walks all of them while holding
the interpreter lock (hundreds of ms under emulation). ``quiet_gc`` pauses the collector
during such work and then moves what survived to the permanent generation
(``gc.freeze``): the tables hold no reference cycles, reference counting still frees
them when they are replaced, and later collections only walk what is new.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

SWITCH_INTERVAL = 0.001  # seconds a thread may keep the interpreter lock when the loop waits


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Collector paused during the block; what survives it is frozen (see module doc)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class Offload:
    """One worker thread for the daemon's CPU work; started on first use."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lvs-agent-work")
        return await asyncio.get_running_loop().run_in_executor(self._pool, _quietly, fn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _quietly(fn: Callable[[], T]) -> T:
    with quiet_gc():
        return fn()


async def inline(fn: Callable[[], T]) -> T:
    """The same interface, on the loop itself (small work, tests)."""
    return fn()
