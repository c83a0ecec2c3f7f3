"""One-shot timers for the VRRP instances, precise to the microsecond (timerfd).

This module owns how an instance's single timer (the latest ``ScheduleTimer``) is
kept on the asyncio loop. asyncio's own ``call_at`` wakes the loop through
``epoll_wait``, whose timeout is in whole milliseconds, rounded up: a deadline
fires up to 1 ms late (0.5 ms on average), which is all of the difference
between us and keepalived in a takeover at 1 s adverts (bench/vrrp_failover). A
``timerfd`` armed with the absolute CLOCK_MONOTONIC deadline makes the loop's
epoll wake at the deadline itself.

The deadline goes to the timerfd as it is: asyncio's loops keep ``loop.time()``
with ``time.monotonic()``, which is CLOCK_MONOTONIC. Converting between the two
clocks by reading both would put the deadline early by however long the thread
waited between the reads (a thread switch, 100 ms and more under emulation). A loop
with a clock of its own gets ``call_at``, as does a system without timerfd.

It decides nothing: it calls back, and the state machine checks what is due and
asks for its next deadline again (an early, late or spurious call is harmless).
ctypes, because ``os.timerfd_create`` arrives only in Python 3.13.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from collections.abc import Callable
from typing import Final

CLOCK_MONOTONIC: Final = 1
TFD_TIMER_ABSTIME: Final = 1
TFD_NONBLOCK: Final = os.O_NONBLOCK
TFD_CLOEXEC: Final = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load_libc() -> ctypes.CDLL | None:
    try:
        # The process's own symbols (libc among them): ctypes.util.find_library would
        # run ``ldconfig -p`` in a child process, on the event loop when VRRP starts
        # (seconds under emulation).
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def _keeps_monotonic_time(loop: asyncio.AbstractEventLoop) -> bool:
    """True when ``loop.time()`` is asyncio's own: ``time.monotonic()``."""
    return (
        type(loop).time is asyncio.BaseEventLoop.time
        and time.get_clock_info("monotonic").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    )


class InstanceTimer:
    """Calls ``callback`` once at the last time given to ``arm`` (loop.time() units)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed = False
        self._fd = -1
        if _LIBC is not None and _keeps_monotonic_time(loop):
            fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                loop.add_reader(fd, self._expired)

    @property
    def precise(self) -> bool:
        """True when backed by a timerfd (else by ``call_at``)."""
        return self._fd >= 0

    def arm(self, at: float) -> None:
        """Fire at ``at`` (replacing any earlier deadline); at once if it has passed."""
        if self._fd < 0:
            self.cancel()
            self._handle = self._loop.call_at(at, self._fire)
            return
        deadline = max(at, 1e-9)  # loop.time() is CLOCK_MONOTONIC (see the docstring)
        seconds = int(deadline)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, int((deadline - seconds) * 1e9)))
        self._settime(spec)
        self._armed = True

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd >= 0 and self._armed:
            self._settime(_Itimerspec())  # all zero: disarm (and forget a pending expiry)
            self._armed = False

    def close(self) -> None:
        self.cancel()
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _settime(self, spec: _Itimerspec) -> None:
        assert _LIBC is not None
        if _LIBC.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _expired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # re-armed or cancelled after epoll reported the old expiry
        self._armed = False
        self._callback()

    def _fire(self) -> None:
        self._handle = None
        self._callback()
