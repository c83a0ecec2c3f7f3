"""Who holds an address, when: netlink address events from several namespaces.

Lab, test and benchmark scaffolding. One rtnetlink socket per namespace, bound to
the IPv4 and IPv6 address multicast groups, all read by one thread that stamps
every RTM_NEWADDR / RTM_DELADDR with ``time.monotonic()`` as it arrives. Every
namespace shares the host's CLOCK_MONOTONIC, so events of different nodes (and
the times a test or benchmark recorded itself) are on one clock: this is how a
failover is timed and how "two nodes held the VIP at once" is detected.

The sockets are raw ``AF_NETLINK`` sockets parsed with ``struct`` (no pyroute2):
the watcher must be cheap and must not share an asyncio loop with anything.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from agent.lab import netns

NETLINK_ROUTE: Final = 0
RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV6_IFADDR: Final = 0x100
RTM_NEWADDR: Final = 20
RTM_DELADDR: Final = 21
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
_NLMSG = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


@dataclass(frozen=True, slots=True)
class AddressEvent:
    at: float  # time.monotonic() when the event was read
    node: str
    added: bool  # RTM_NEWADDR (True) or RTM_DELADDR
    address: str
    prefixlen: int
    ifindex: int


def parse(data: bytes) -> list[tuple[bool, str, int, int]]:
    """(added, address, prefixlen, ifindex) for each address message in ``data``."""
    out: list[tuple[bool, str, int, int]] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            break
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            body = offset + _NLMSG.size
            family, prefixlen, _f, _scope, index = _IFADDRMSG.unpack_from(data, body)
            attrs: dict[int, bytes] = {}
            pos = body + _IFADDRMSG.size
            end = offset + length
            while pos + _RTATTR.size <= end:
                alen, atype = _RTATTR.unpack_from(data, pos)
                if alen < _RTATTR.size:
                    break
                attrs[atype] = data[pos + _RTATTR.size : pos + alen]
                pos += (alen + 3) & ~3
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None:
                text = str(
                    IPv4Address(raw)
                    if family == socket.AF_INET and len(raw) == 4
                    else IPv6Address(raw)
                )
                out.append((kind == RTM_NEWADDR, text, prefixlen, index))
        offset += (length + 3) & ~3
    return out


class AddressWatch:
    """Records address events of the namespaces ``{node: namespace}`` until closed."""

    def __init__(self, namespaces: dict[str, str]) -> None:
        self.events: list[AddressEvent] = []
        self._cond = threading.Condition()
        self._socks: dict[int, tuple[str, socket.socket]] = {}
        self._wake_r, self._wake_w = os.pipe()
        try:
            for node, ns in namespaces.items():
                self.add(node, ns)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="addrwatch", daemon=True)
        self._thread.start()

    def add(self, node: str, ns: str) -> None:
        with netns.entered(ns):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._socks[sock.fileno()] = (node, sock)
        if hasattr(self, "_thread"):
            os.write(self._wake_w, b"x")  # pick up the new socket

    def _run(self) -> None:
        while True:
            fds = [self._wake_r, *self._socks]
            try:
                ready, _, _ = select.select(fds, [], [])
            except (OSError, ValueError):
                return
            now = time.monotonic()
            if self._wake_r in ready:
                if os.read(self._wake_r, 64) == b"":
                    return
                if not self._socks:
                    return
            new: list[AddressEvent] = []
            for fd in ready:
                entry = self._socks.get(fd)
                if entry is None:
                    continue
                node, sock = entry
                try:
                    data = sock.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                for added, address, prefixlen, index in parse(data):
                    new.append(AddressEvent(now, node, added, address, prefixlen, index))
            if new:
                with self._cond:
                    self.events.extend(new)
                    self._cond.notify_all()

    def close(self) -> None:
        socks = list(self._socks.values())
        self._socks = {}
        if hasattr(self, "_thread"):
            os.close(self._wake_w)
            self._thread.join(timeout=5)
        else:
            os.close(self._wake_w)
        os.close(self._wake_r)
        for _, sock in socks:
            sock.close()

    def __enter__(self) -> AddressWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- questions

    def snapshot(self) -> list[AddressEvent]:
        with self._cond:
            return list(self.events)

    def wait_for(
        self, match: Callable[[AddressEvent], bool], timeout: float, after: float = 0.0
    ) -> AddressEvent | None:
        """The first event at or after ``after`` that ``match``es, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.at >= after and match(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def wait_added(
        self, address: str, timeout: float, node: str | None = None, after: float = 0.0
    ) -> AddressEvent | None:
        return self.wait_for(
            lambda e: e.added and e.address == address and (node is None or e.node == node),
            timeout,
            after,
        )

    def wait_removed(
        self, address: str, timeout: float, node: str | None = None, after: float = 0.0
    ) -> AddressEvent | None:
        return self.wait_for(
            lambda e: not e.added and e.address == address and (node is None or e.node == node),
            timeout,
            after,
        )


def overlaps(
    events: Iterable[AddressEvent],
    address: str,
    held_at_start: Iterable[str] = (),
    dead: dict[str, float] | None = None,
) -> list[tuple[float, float, frozenset[str]]]:
    """Intervals during which two or more live nodes held ``address``.

    ``held_at_start``: nodes holding it before the first event. ``dead``: node ->
    time it was killed; a dead node's address (left in its kernel) no longer counts.
    """
    dead = dead or {}
    points: list[tuple[float, str, bool]] = [
        (e.at, e.node, e.added) for e in events if e.address == address
    ]
    points += [(t, node, False) for node, t in dead.items()]
    points.sort(key=lambda p: p[0])
    holding = set(held_at_start)
    found: list[tuple[float, float, frozenset[str]]] = []
    since: float | None = None
    who: frozenset[str] = frozenset()
    for at, node, added in points:
        if added and not (node in dead and at >= dead[node]):
            holding.add(node)
        else:
            holding.discard(node)
        if len(holding) > 1:
            if since is None:
                since = at
            who |= holding
        elif since is not None:
            found.append((since, at, who))
            since, who = None, frozenset()
    if since is not None:
        found.append((since, float("inf"), who))
    return found
