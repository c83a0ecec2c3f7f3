"""The daemon's one policy for Python's cyclic garbage collector: pause, then settle.

Building the desired table, planning against it, decoding a dump and loading a cached
table each allocate tens of thousands of objects per thousand services that live on;
every gen-2 collection triggered meanwhile walks all of them again. Paused, these steps
took 28-53 % less CPU time at 10,000 services × 4 on the host CPU (bench/speed_layers;
nothing measurable at 1,000). None of them creates reference cycles worth collecting
mid-way.

**Pause** (``paused_gc``): the collector is off for one bounded stretch of work and on
again after it. The collector is process-wide: while it is off, everything else on the
loop runs without it too (it only postpones cyclic garbage). From another thread a
pause is taken only when asked (``any_thread``: one job of the daemon's worker thread,
``agent.daemon.offload``). On the loop a pause spans awaits in one place, a
netlink dump or apply (``agent.ipvs.kernel``; seconds at 10,000 services under
emulation): a dump decoded in steps between awaits, paused only
within each step, let a collection run at every await, and with the settled set
frozen out of the count (below) every hundredth of them was a full pass over the
partly decoded table, each holding the loop for hundreds of ms under emulation.
Nested pauses are no-ops: the first one taken re-enables the collector.

**Settle** (``settle``, and at the end of every pause, before the collector is on
again): what survived such work (a configuration, a table, a dump) is moved to the
permanent generation (``gc.freeze``), so that later collections, which run on the
loop, do not walk it again (hundreds of ms under emulation at 10,000 services).
Reference counting still frees frozen objects, so replaced tables go; only cyclic
garbage caught in a freeze would stay. To bound that, when the frozen set has grown to
more than ``FREEZE_FACTOR`` times its size at the first settle (or after the last one
that collected), plus ``FREEZE_SLACK`` objects, it is unfrozen and collected once (one
full pass, seconds under emulation at 10,000 services), then frozen again. The bound is
far above the steady state (the start-up's configuration and table, about 0.2 million
tracked objects at 10,000 services x 4, plus two dumps and a plan while a reconcile
replaces them), so only garbage that piles up reaches it.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Iterator

FREEZE_FACTOR = 4  # the frozen set may grow to this many times its base ...
FREEZE_SLACK = 1_000_000  # ... plus this many objects, before one full collection
CHECK_EVERY = 60.0  # seconds between two counts of the frozen set
_base: int | None = None  # its size after the last settle that collected (None: none yet)
_checked = 0.0  # when it was last counted (monotonic)


@contextlib.contextmanager
def paused_gc(pause: bool = True, *, any_thread: bool = False) -> Iterator[None]:
    if not pause or not gc.isenabled() or not (any_thread or _on_main_thread()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        # Settled before the collector is on again: the first allocation after it
        # would otherwise start a young collection over everything the pause allocated
        # (a whole dump: 100-600 ms on the loop under emulation, measured).
        _freeze()
        gc.enable()


def settle() -> None:
    """Move what is alive now out of the collector's way, within the bound above."""
    if not gc.isenabled():
        return  # inside someone's pause (or the collector is off): they settle after it
    _freeze()


def _freeze() -> None:
    global _base, _checked
    now = time.monotonic()
    if _base is not None and now - _checked < CHECK_EVERY:
        gc.freeze()
        return
    # Counting the frozen set walks it (milliseconds per 100,000 objects, holding the
    # interpreter lock): done at most once per CHECK_EVERY.
    _checked = now
    frozen = gc.get_freeze_count()
    if _base is None:
        _base = frozen  # the first settle: the start-up's own objects are the base
    elif frozen > FREEZE_FACTOR * _base + FREEZE_SLACK:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _base = gc.get_freeze_count()
        return
    gc.freeze()


def _on_main_thread() -> bool:
    # Without the threading module loaded no other thread was started through it
    # (asyncio's executors and concurrent.futures use it): nothing to import.
    threading = sys.modules.get("threading")
    return threading is None or threading.current_thread() is threading.main_thread()
