"""Pause Python's cyclic garbage collector around allocation bursts.

Reading a 10,000-service configuration, planning against a 50,000-object
table and decoding its dump each allocate hundreds of thousands of objects
that live on; every gen-2 collection triggered meanwhile walks all of them
again (~40% of the parse on hardware, more under emulation). None of these
steps creates reference cycles worth collecting mid-way, so the collector is
paused for their duration and runs normally afterwards.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc(pause: bool = True) -> Iterator[None]:
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
