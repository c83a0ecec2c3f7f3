"""Connect checks as bare SYNs from one raw socket: the kernel answers the SYN-ACKs with RSTs.

This module owns the raw-socket tcp prober. A connect check asks one thing:
does the target's kernel answer a SYN with a SYN-ACK (pass) or a RST (refused),
or not at all in time (timeout). Asking it with a kernel socket costs socket,
two setsockopt, connect, epoll_ctl and close per probe; here it costs one
``sendto`` of a hand-built 20-byte TCP header and one ``recv`` of the answer.
No socket on this host owns the probe's source port, so the kernel itself
answers the SYN-ACK with a RST, as HAProxy's half-open checks end: the
target's application never sees the probe.

It must never send anything but SYNs, and only from ``PORTS`` (above Linux's
default ephemeral range, so no local connection shares a probe's port);
receive only what a socket filter lets through (TCP segments to ``PORTS``, so a
busy director's traffic is not copied to it); or decide health.

IPv4 only, and only for checks without ``source_address``: the scheduler keeps
those on ``probes.BatchProber``, as it does everything when raw sockets cannot
be opened (no CAP_NET_RAW). The TCP checksum needs the source address the
kernel will use for each target; it is learned once per target from a
connected UDP socket and forgotten when a probe to that target times out (a
changed route costs at most one failed probe, below any ``fall``). ICMP errors
are not read: an unreachable target times out instead of failing at once.
"""

from __future__ import annotations

import ctypes
import random
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Final

from agent.health.config import CheckKey

PORT_LO: Final = 61000
PORT_HI: Final = 65535
PORTS: Final = range(PORT_LO, PORT_HI + 1)
SO_ATTACH_FILTER: Final = 26
_SYN_ACK: Final = 0x12
_RST: Final = 0x04
_HEADER: Final = struct.Struct("!HHIIHHHH")
_REPLY: Final = struct.Struct("!HHIIH")

# Classic BPF over an IPv4 packet (raw sockets see it from the IP header): keep TCP
# segments whose destination port is in PORTS, drop the rest in the kernel.
_FILTER: Final = (
    (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): the IP header's length
    (0x48, 0, 0, 2),  # ldh [x+2]: the TCP destination port
    (0x35, 0, 2, PORT_LO),  # jge PORT_LO, else drop
    (0x25, 1, 0, PORT_HI),  # jgt PORT_HI: drop
    (0x06, 0, 0, 0xFFFF),  # accept
    (0x06, 0, 0, 0),  # drop
)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _words(data: bytes) -> int:
    return sum(w for (w,) in struct.iter_unpack("!H", data))


def usable(key: CheckKey) -> bool:
    """True for the checks this prober can run: IPv4 connect checks, no source address."""
    c, t = key.check, key.target
    return (
        c.type == "tcp"
        and not c.send
        and c.expect is None
        and t.source_address is None
        and ":" not in t.address
    )


class SynProber:
    """Connect checks as SYNs on two raw sockets; driven by its owner's tick like BatchProber.

    ``SynProber(on_result)`` raises OSError (PermissionError without
    CAP_NET_RAW) when raw sockets cannot be opened: the caller falls back.
    """

    def __init__(self, on_result: Callable[[object, bool, str, float], None]):
        self._on_result = on_result
        self._send = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        try:
            self._recv = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        except OSError:
            self._send.close()
            raise
        try:
            for s in (self._send, self._recv):
                s.setblocking(False)
            self._recv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            code = b"".join(struct.pack("HBBI", *op) for op in _FILTER)
            self._code = ctypes.create_string_buffer(code, len(code))  # kept alive
            prog = struct.pack("HL", len(_FILTER), ctypes.addressof(self._code))
            self._recv.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        except OSError:
            self.close()
            raise
        # (target address bytes, target port, our port) -> seq, start, token, address
        self._pending: dict[tuple[bytes, int, int], tuple[int, float, object, str]] = {}
        self._fifos: dict[float, deque[tuple[float, tuple[bytes, int, int], int]]] = {}
        self._partial: dict[tuple[str, int], tuple[int, bytes]] = {}
        self._port = random.randrange(len(PORTS))
        self._out = bytearray(20)
        self._rng = random.Random()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _prepare(self, address: str, port: int) -> tuple[int, bytes]:
        """The checksum's constant part for a target, and its address bytes."""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.connect((address, port))
            source = u.getsockname()[0]
        finally:
            u.close()
        dst = socket.inet_aton(address)
        pseudo = socket.inet_aton(source) + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
        # the header's fixed words: destination port, offset 5 + SYN, window
        return _words(pseudo) + port + 0x5002 + 0xFFFF, dst

    def start(self, key: CheckKey, token: object, now: float) -> None:
        t = key.target
        target = (t.address, t.port)
        prepared = self._partial.get(target)
        try:
            if prepared is None:
                prepared = self._partial[target] = self._prepare(t.address, t.port)
            partial, dst = prepared
            n = len(PORTS)
            for _ in range(n):
                self._port = (self._port + 1) % n
                ident = (dst, t.port, PORT_LO + self._port)
                if ident not in self._pending:
                    break
            else:
                raise OSError("no free probe port")
            sport = ident[2]
            seq = self._rng.getrandbits(32)
            check = ~_fold(partial + sport + (seq >> 16) + (seq & 0xFFFF)) & 0xFFFF
            _HEADER.pack_into(self._out, 0, sport, t.port, seq, 0, 0x5002, 0xFFFF, check, 0)
            self._send.sendto(self._out, (t.address, 0))
        except OSError as e:
            from agent.health.probes import reason_of

            self._on_result(token, False, reason_of(e), 0.0)
            return
        self._pending[ident] = (seq, now, token, t.address)
        timeout = key.check.timeout
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        fifo.append((now + timeout, ident, seq))

    def reap(self, now: float) -> None:
        """Report every probe answered (SYN-ACK: pass; RST: refused)."""
        pending = self._pending
        recv = self._recv.recv
        while pending:
            try:
                pkt = recv(128)
            except BlockingIOError:
                return
            except OSError:
                return
            ihl = (pkt[0] & 0x0F) * 4
            if len(pkt) < ihl + 14:
                continue
            sport, dport, _seq, ack, flags = _REPLY.unpack_from(pkt, ihl)
            ident = (pkt[12:16], sport, dport)
            entry = pending.get(ident)
            if entry is None or ack != (entry[0] + 1) & 0xFFFFFFFF:
                continue  # not an answer to a probe in flight
            if flags & _SYN_ACK == _SYN_ACK:
                del pending[ident]
                self._on_result(entry[2], True, "ok", now - entry[1])
            elif flags & _RST:
                del pending[ident]
                self._on_result(entry[2], False, "refused", now - entry[1])

    def expire(self, now: float) -> None:
        """Report as timed out every probe past its deadline (``reap`` first)."""
        pending = self._pending
        for fifo in self._fifos.values():
            while fifo and fifo[0][0] <= now:
                _, ident, seq = fifo.popleft()
                entry = pending.get(ident)
                if entry is None or entry[0] != seq:
                    continue  # answered already
                del pending[ident]
                # the source address may have changed with a route: learn it again
                self._partial.pop((entry[3], ident[1]), None)
                self._on_result(entry[2], False, "timeout", now - entry[1])

    def next_deadline(self) -> float | None:
        firsts = [f[0][0] for f in self._fifos.values() if f]
        return min(firsts) if firsts else None

    def close(self) -> None:
        """Stop: every pending probe is dropped without a result."""
        for attr in ("_pending", "_fifos"):
            getattr(self, attr, {}).clear()  # also after a failed __init__
        for s in (self._send, getattr(self, "_recv", None)):
            if s is not None:
                s.close()
