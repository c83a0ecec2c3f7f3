"""CPU work of the daemon that must not run on its event loop.

``Offload`` runs a function on one worker thread (one at a time, in order) while the
loop keeps serving VRRP adverts, lease renewals and the fence. It is meant for
Python-level work (planning, the ownership file, applying a reload's delta): the
thread gives the interpreter lock back every ``SWITCH_INTERVAL``, so the loop's wakes
are late by about that much, not by the whole job. The loop pays that wait again after
every system call it makes while the thread works (a send, a receive, epoll: each gives
the lock away). On the host CPU a shorter interval pays (bench/reload_safety/
switch_interval.py: a loop doing a datagram round trip and a 1 ms timer makes 0.09x the
round trips it makes alone at 5 ms, 0.31x at 1 ms and 0.73x at 0.1 ms), but in the lab
VM 0.1 ms showed no gain in bench/reload_safety, so the interval stays at 1 ms
(bench/RESULTS.md). Long single C calls (a regex over a whole file, one big
``str.split``) would hold the lock throughout: the configuration is parsed in a worker
process instead (``agent.daemon.worker``).

Large allocations and the cyclic garbage collector: a 10,000-service table is half a
million objects that live on, and every full collection walks all of them while holding
the interpreter lock (hundreds of ms under emulation). Each job runs with the collector
paused and what survived it is settled, by the daemon's one policy (``agent.gcpause``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agent.gcpause import paused_gc, settle

T = TypeVar("T")

SWITCH_INTERVAL = 0.001  # seconds a thread may keep the interpreter lock when the loop waits


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
    try:
        with paused_gc(any_thread=True):
            return fn()
    finally:
        settle()


def dismantle(box: list[dict[Any, Any]]) -> None:
    """Free a large table entry by entry, on the worker thread (``offload(lambda:
    dismantle(box))``). Dropping its last reference at once frees it in one cascade of
    C-level deallocations (about 9 ms for a 10,000-service dump on hardware, ten or
    more times that under emulation) that holds the interpreter lock, and so the loop,
    from start to end; here the lock changes hands between entries. ``box`` holds the
    only reference the caller had; a table somebody else still holds is left to them.
    """
    table = box.pop()
    if sys.getrefcount(table) > 2:  # this name and getrefcount's argument
        return
    while table:
        table.popitem()


async def inline(fn: Callable[[], T]) -> T:
    """The same interface, on the loop itself (small work, tests)."""
    return fn()
