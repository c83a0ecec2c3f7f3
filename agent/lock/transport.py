"""asyncio UDP shell around a ``LockNode``: the only part of the lock that touches sockets.

Owns: the datagram socket, the single timer (``loop.call_at``) that realises the core's
``next_deadline()``, the clock read, loading the key file and bumping the incarnation
at start.  Everything it does per input is: read the clock once, feed the core, send what
comes back, hand lease events to the daemon's callback, re-arm the timer.

Must never: decide anything about leases, start threads, sleep, or trust the source
address of a datagram (identity comes from the authenticated message).

Clock: ``now`` is CLOCK_BOOTTIME where available — it keeps counting across a system
suspend, whereas CLOCK_MONOTONIC (asyncio's ``loop.time()``) stops, and a node that
slept through its lease must not wake up believing it still holds it.  Timers are still
scheduled on ``loop.time()``; both clocks run at the same rate while the system is up,
so a deadline is converted as a delay, and a timer that fires late (suspend, GC pause)
is harmless because every handler re-reads ``now``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

from agent.daemon.supervise import report_failure
from agent.lock.config import Endpoint, LockConfig
from agent.lock.incarnation import bump_incarnation
from agent.lock.lease import LeaseEvent
from agent.lock.node import Datagram, LockCore, LockNode, LockStatus
from agent.lock.wire import KeyFileError, KeyRing, WireCodec

log = logging.getLogger(__name__)

TIMER_RETRY = 0.05  # seconds before a failed timer tick is tried again

Clock = Callable[[], float]


def boottime() -> float:
    """Monotonic seconds that include time spent in suspend (Linux CLOCK_BOOTTIME)."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None:
        return time.monotonic()
    return time.clock_gettime(clock_id)


def load_keyring(path: Path) -> KeyRing:
    """Read the shared key file; refuse it unless it is a regular file that group and
    others cannot access (like ssh). ``check-config`` calls this too: one set of rules."""
    where = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KeyFileError(exc.strerror or str(exc), path=where) from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError("not a regular file", path=where)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError("must not be accessible by group or others (chmod 600)", path=where)
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise KeyFileError(exc.strerror or str(exc), path=where) from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise KeyFileError("not ASCII text", line, where) from None
    try:
        return KeyRing.parse(text)
    except KeyFileError as exc:
        raise KeyFileError(exc.reason, exc.line, where) from None


class LockTransport(asyncio.DatagramProtocol):
    """Drives one ``LockNode`` from a UDP socket and one timer."""

    def __init__(
        self,
        node: LockNode,
        peers: Mapping[str, Endpoint],
        *,
        clock: Clock = boottime,
        on_event: Callable[[LeaseEvent], None] | None = None,
    ) -> None:
        self.node = node
        self._addr = {name: (ep.host, ep.port) for name, ep in peers.items()}
        self._clock = clock
        self._on_event = on_event
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self.send_errors = 0
        #: called after every input was handled (the VRRP service refreshes VIP lifetimes
        #: when a renewal moved ``hold_until``)
        self.after_input: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, listen: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(listen.host, listen.port))
        self._rearm()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._transport is not None
        addr = self._transport.get_extra_info("sockname")
        return (str(addr[0]), int(addr[1]))

    # ------------------------------------------------------------------ inputs

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        now = self._clock()
        self._deliver(self.node.receive(data, now))

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a down peer etc.: expected, and the protocol retries.
        self.send_errors += 1

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        now = self._clock()
        try:
            self._deliver(self.node.tick(now))
        except Exception:
            # The timer is the lock's heartbeat: a failed tick must not leave it unarmed.
            log.exception("lock: timer failed; trying again in %gs", TIMER_RETRY)
            report_failure("lock timer")
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(TIMER_RETRY, self._on_timer)

    # ------------------------------------------------------------------ commands

    def campaign(self, lease: str, priority: int | None = None) -> None:
        now = self._clock()
        self._deliver(self.node.campaign(lease, now, priority))

    def withdraw(self, lease: str) -> None:
        now = self._clock()
        self._deliver(self.node.withdraw(lease, now))

    def release(self, lease: str, holdoff: float | None = None) -> None:
        now = self._clock()
        self._deliver(self.node.release(lease, now, holdoff))

    def set_priority(self, lease: str, priority: int) -> None:
        now = self._clock()
        self._deliver(self.node.set_priority(lease, now, priority))

    def is_holder(self, lease: str) -> bool:
        return self.node.is_holder(lease, self._clock())

    def hold_left(self, lease: str) -> float | None:
        """Seconds of the current hold left (None: not holding), on the lock's clock."""
        now = self._clock()
        if not self.node.is_holder(lease, now):
            return None
        until = self.node.core.lease(lease).hold_until()
        return None if until is None else until - now

    def hold_until(self, lease: str) -> float | None:
        """End of the current hold (None: not holding), on the lock's clock (boottime)."""
        if not self.node.is_holder(lease, self._clock()):
            return None
        return self.node.core.lease(lease).hold_until()

    def status(self) -> LockStatus:
        return self.node.status(self._clock())

    # ------------------------------------------------------------------ plumbing

    def _deliver(self, out: list[Datagram]) -> None:
        # Events first: a node that gives a lease up (release, preemption, withdraw) has
        # removed its VIPs before the RELEASE that lets another node take them leaves.
        for event in self.node.drain_events():
            log.info("lock %s %s term=%s %s", event.lease, event.kind, event.term, event.reason)
            if self._on_event is not None:
                self._on_event(event)
        tr = self._transport
        if tr is not None:
            for peer, data in out:
                addr = self._addr.get(peer)
                if addr is not None:
                    tr.sendto(data, addr)
        if self.after_input is not None:
            self.after_input()
        self._rearm()

    def _rearm(self) -> None:
        due = self.node.next_deadline()
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is None:
            return
        loop = asyncio.get_running_loop()
        # From the lock's clock (CLOCK_BOOTTIME) to the loop's, both read now: the ``now``
        # the input was handled at is older by the handling (events, VIPs, sends), and
        # converting with it would put every renewal late by that much. The lock's clock
        # first: a thread switch between the two reads then makes the wake late, never
        # early (an early one would only find nothing due and arm again).
        left = max(0.0, due - self._clock())
        self._timer = loop.call_at(loop.time() + left, self._on_timer)


def build_node(config: LockConfig, incarnation: int, keys: KeyRing, now: float) -> LockNode:
    """Pure wiring: a ``LockNode`` for ``config`` started at ``now``."""
    timing = config.timing()
    core = LockCore(
        config.node_id,
        config.peers.keys(),
        timing,
        incarnation,
        now,
        config.leases,
        preempt=config.preempt,
    )
    codec = WireCodec(
        config.cluster, config.node_id, incarnation, timing.fingerprint(), keys, config.peers
    )
    return LockNode(core, codec)


async def start_lock(
    config: LockConfig,
    *,
    on_event: Callable[[LeaseEvent], None] | None = None,
    clock: Clock = boottime,
) -> LockTransport:
    """Load the key, bump the incarnation, bind the socket; the node starts quarantined."""
    keys = load_keyring(config.key_file)
    incarnation = bump_incarnation(config.state_dir)
    node = build_node(config, incarnation, keys, clock())
    transport = LockTransport(node, config.peers, clock=clock, on_event=on_event)
    await transport.start(config.listen)
    return transport
