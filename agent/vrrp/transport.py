"""The VRRP socket: one raw IP protocol 112 socket per (interface, address family).

This module owns the kernel side of sending and receiving adverts: socket
options, multicast membership, source address selection and reading the hop
limit. It does not decide anything: it hands every received datagram to a
callback and sends the bytes it is given. It never raises out of the event loop
callback: receive errors and malformed IPv4 headers are counted in
``SocketCounters`` and dropped.

Choices, and why:

- ``SO_BINDTODEVICE``: adverts are link-local by nature; a VRID is per interface
  (RFC 5798 7.1 "VRID is configured on the receiving interface").
- TTL / hop limit 255 on send (RFC 5798 5.1.1.3, 5.1.2.3) for multicast and
  unicast; traffic class / TOS 0xc0 (network control) as keepalived sends.
- ``IP_MULTICAST_LOOP`` off: our own adverts must not come back to us.
- The source address is set per packet (``IP_PKTINFO`` / ``IPV6_PKTINFO``) rather
  than by ``bind()``, because a raw socket bound to an address only receives
  packets *addressed* to it, and adverts go to 224.0.0.18 / ff02::12.
- IPv6: no ``IPV6_CHECKSUM``; the codec computes and verifies the checksum in user
  space, so a bad checksum is counted instead of silently dropped by the kernel.
  The destination (needed for that checksum) and the hop limit come from
  ``IPV6_PKTINFO`` / ``IPV6_HOPLIMIT`` ancillary data. IPv4 raw sockets deliver the
  IP header, which carries both.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from agent.vrrp.packet import (
    IPPROTO_VRRP,
    MCAST_GROUP_V4,
    MCAST_GROUP_V6,
    VRRP_TTL,
    IPAddress,
    VrrpDecodeError,
    unwrap_ipv4,
)

IP_PKTINFO: Final = 8  # linux/in.h; not exported by Python's socket module
TOS_NETWORK_CONTROL: Final = 0xC0
RECV_BURST: Final = 64  # datagrams per readiness callback: a flooded link can't starve the loop
RECV_SIZE: Final = 4200  # the largest advert: IPv4 header 60 + 8 + 255 * 16 bytes


@dataclass(frozen=True, slots=True)
class Received:
    """One datagram for protocol 112 on our interface, its IP header fields extracted."""

    family: int
    source: IPAddress
    destination: IPAddress
    hop_limit: int | None
    payload: bytes  # the VRRP message


@dataclass(slots=True)
class SocketCounters:
    received: int = 0
    sent: int = 0
    send_errors: int = 0
    receive_errors: int = 0
    invalid: Counter[str] = field(default_factory=Counter)  # IP header problems, unknown VRID


class VrrpSocket:
    """Raw VRRP socket on ``ifname`` for ``family``. Open with ``open()``; then
    ``attach()`` to an event loop, ``send()`` adverts, ``close()``."""

    def __init__(self, ifname: str, family: int, *, multicast: bool = True) -> None:
        self.ifname = ifname
        self.family = family
        self.multicast = multicast
        self.counters = SocketCounters()
        self._sock: socket.socket | None = None
        self._ifindex = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def ifindex(self) -> int:
        return self._ifindex

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        self._ifindex = socket.if_nametoindex(self.ifname)
        sock = socket.socket(self.family, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            if self.family == socket.AF_INET:
                self._setup_v4(sock)
            else:
                self._setup_v6(sock)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _setup_v4(self, sock: socket.socket) -> None:
        mreqn = struct.pack("4s4si", MCAST_GROUP_V4.packed, bytes(4), self._ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_NETWORK_CONTROL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        if self.multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)

    def _setup_v6(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS_NETWORK_CONTROL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self._ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        if self.multicast:
            mreq = struct.pack("16si", MCAST_GROUP_V6.packed, self._ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def close(self) -> None:
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._loop = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- sending

    def send(self, payload: bytes, src: IPAddress, dst: IPAddress) -> bool:
        """Send one VRRP message from ``src`` to ``dst``; False (counted) on failure."""
        if self._sock is None:
            self.counters.send_errors += 1
            return False
        try:
            if self.family == socket.AF_INET:
                info = struct.pack("i4s4s", self._ifindex, src.packed, bytes(4))
                self._sock.sendmsg(
                    [payload], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (str(dst), 0)
                )
            else:
                info = struct.pack("16si", src.packed, self._ifindex)
                self._sock.sendmsg(
                    [payload],
                    [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                    0,
                    (str(dst), 0, 0, self._ifindex),
                )
        except OSError:
            self.counters.send_errors += 1
            return False
        self.counters.sent += 1
        return True

    # -- receiving

    def attach(
        self, loop: asyncio.AbstractEventLoop, on_received: Callable[[Received], None]
    ) -> None:
        """Call ``on_received`` for every valid-looking datagram, from the loop's reader."""
        if self._sock is None:
            raise RuntimeError("socket not open")
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._drain, on_received)

    def _drain(self, on_received: Callable[[Received], None]) -> None:
        for received in self.receive(RECV_BURST):
            on_received(received)

    def receive(self, limit: int = RECV_BURST) -> list[Received]:
        """Read up to ``limit`` pending datagrams without blocking."""
        out: list[Received] = []
        sock = self._sock
        if sock is None:
            return out
        ancsize = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)
        for _ in range(limit):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(RECV_SIZE, ancsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.counters.receive_errors += 1
                if e.errno in (errno.EBADF, errno.ENOTSOCK):
                    break
                continue
            self.counters.received += 1
            try:
                if self.family == socket.AF_INET:
                    ip = unwrap_ipv4(data)
                    out.append(Received(self.family, ip.src, ip.dst, ip.ttl, ip.payload))
                else:
                    out.append(self._v6(data, ancdata, addr))
            except VrrpDecodeError as e:
                self.counters.invalid[e.reason.value] += 1
        return out

    def _v6(self, data: bytes, ancdata: list[tuple[int, int, bytes]], addr: object) -> Received:
        hop_limit: int | None = None
        destination: IPAddress = MCAST_GROUP_V6
        for level, kind, value in ancdata:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                hop_limit = struct.unpack("i", value[:4])[0]
            elif kind == socket.IPV6_PKTINFO and len(value) >= 16:
                destination = IPv6Address(value[:16])
        host = str(addr[0]) if isinstance(addr, tuple) else "::"
        source = ip_address(host.split("%", 1)[0])
        if isinstance(source, IPv4Address):  # cannot happen on an AF_INET6 raw socket
            source = IPv6Address("::")
        return Received(self.family, source, destination, hop_limit, data)


RTMGRP_LINK: Final = 0x1  # rtnetlink multicast group of link changes


class LinkMonitor:
    """Calls back when the kernel reports any link change (RTM_NEWLINK / RTM_DELLINK).

    The messages are not parsed: the callback re-reads the links it cares about. This
    turns a link failure into a FAULT at once instead of at the next poll, as
    keepalived does with its netlink reflector. Counters and errors: none; a monitor
    that cannot open just leaves the service to its periodic poll.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        try:
            sock.bind((0, RTMGRP_LINK))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop = loop
        loop.add_reader(sock.fileno(), self._drain, on_change)

    def _drain(self, on_change: Callable[[], None]) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(RECV_BURST):
            try:
                sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # ENOBUFS (overrun) included: the re-read below catches up
        on_change()

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._sock = None
        self._loop = None
