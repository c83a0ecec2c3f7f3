"""systemd's watchdog and status line: WATCHDOG=1 only while the agent makes progress.

``watchdog_period`` reads the environment as ``sd_watchdog_enabled`` does
(``WATCHDOG_USEC`` set and positive, ``WATCHDOG_PID`` unset or this process) and
gives half the interval. ``Gate`` decides, from counters the loop's own work moves,
whether this ping may be sent: the loop-lag probe must have woken since the last
ping (its 10 ms timer ran: the loop is not wedged) and the health checker must say
it makes progress. ``status_line`` is the one-line ``STATUS=``; it is sent only when
it changes. Pure: no sockets, no clocks (``notify_loop`` in the daemon sends).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def watchdog_period(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None: no watchdog."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 2e6


@dataclass
class Gate:
    """Lets a ping through only when the loop ticked since the last one and the health
    checker is making progress; ``held`` counts the pings withheld."""

    _ticks: int | None = None
    held: int = 0
    why: str = ""

    def ping(self, loop_ticks: int, health_progressing: bool) -> bool:
        stalled = self._ticks is not None and loop_ticks == self._ticks
        self._ticks = loop_ticks
        if stalled:
            self.why = "the event loop made no progress"
        elif not health_progressing:
            self.why = "the health checker made no progress"
        else:
            self.why = ""
            return True
        self.held += 1
        return False


def status_line(
    vrrp: Sequence[tuple[str, str]],
    services: int,
    healthy: int | None,
    real_servers: int,
    maint: int,
) -> str:
    """``VRRP VI_1 MASTER, VI_2 BACKUP; 3 services; 5/6 real servers healthy``."""
    parts = []
    if vrrp:
        parts.append("VRRP " + ", ".join(f"{name} {state}" for name, state in vrrp))
    parts.append(f"{services} service{'' if services == 1 else 's'}")
    if healthy is None:
        parts.append(f"{real_servers} real server{'' if real_servers == 1 else 's'}")
    else:
        parts.append(f"{healthy}/{real_servers} real servers healthy")
    if maint:
        parts.append(f"{maint} in maintenance")
    return "; ".join(parts)
