"""Pause Python's cyclic garbage collector around allocation bursts.

Building the desired table, planning against it, decoding a dump and loading
a cached table each allocate tens of thousands of objects per thousand
services that live on; every gen-2 collection triggered meanwhile walks all of
them again. Paused, these steps took 28-53 % less CPU time at 10,000 services
× 4 on the host CPU (bench/speed_layers; nothing measurable at 1,000). Reading
the configuration file gained nothing, so it is not paused. None of these
steps creates reference cycles worth collecting mid-way; the collector runs
normally afterwards.

The collector is process-wide, so a pause must never span an ``await`` (the
event loop would run everything else with the collector off): callers pause
synchronous stretches only, and from any thread but the main one (the
daemon's worker thread, while the loop runs) ``paused_gc`` does nothing.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc(pause: bool = True) -> Iterator[None]:
    if not pause or not gc.isenabled() or not _on_main_thread():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _on_main_thread() -> bool:
    # Without the threading module loaded no other thread was started through it
    # (asyncio's executors and concurrent.futures use it): nothing to import.
    threading = sys.modules.get("threading")
    return threading is None or threading.current_thread() is threading.main_thread()
