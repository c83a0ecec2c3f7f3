"""Connect checks as bare SYNs from one raw socket: the kernel answers the SYN-ACKs with RSTs.

This module owns the raw-socket tcp prober. A connect check asks one thing:
does the target's kernel answer a SYN with a SYN-ACK (pass) or a RST (refused),
or not at all in time (timeout). Asking it with a kernel socket costs socket,
two setsockopt, connect, epoll_ctl and close per probe; here a hand-built
20-byte TCP header is queued, and every SYN queued in one tick of the scheduler
leaves in one ``sendmmsg`` (``flush``); answers come back by ``recvmmsg``, up to
``RECV_BATCH`` per call (both glibc's, through ctypes: Python's socket module
has neither). No socket on this host owns the probe's source port, so the kernel itself
answers the SYN-ACK with a RST, as HAProxy's half-open checks end: the
target's application never sees the probe.

It must never send anything but SYNs, and only from ``PORTS`` (above Linux's
default ephemeral range, so no local connection shares a probe's port);
receive only what a socket filter lets through (TCP segments to ``PORTS``, so a
busy director's traffic is not copied to it); or decide health.

IPv4 only, and only for checks without ``source_address``: the scheduler keeps
those on ``probes.BatchProber``, as it does everything when raw sockets cannot
be opened (no CAP_NET_RAW) or the C library lacks ``sendmmsg``. The TCP
checksum needs the source address the kernel will use for each target; it is
learned once per target from a connected UDP socket and forgotten when a probe
to that target times out (a changed route costs at most one failed probe, below
any ``fall``). ICMP errors are not read: an unreachable target times out
instead of failing at once.
"""

from __future__ import annotations

import ctypes
import random
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from agent.health.config import CheckKey

PORT_LO: Final = 61000
PORT_HI: Final = 65535
PORTS: Final = range(PORT_LO, PORT_HI + 1)
_NPORTS: Final = len(PORTS)
SO_ATTACH_FILTER: Final = 26
_SYN_ACK: Final = 0x12
_RST: Final = 0x04
_HEADER: Final = struct.Struct("!HHIIHHHH")
_REPLY: Final = struct.Struct("!HHIIH")
_NAME: Final = struct.Struct("=H2x4s8x")  # struct sockaddr_in, port 0
_IP: Final = struct.Struct("!B11x4s")  # version/IHL, the source address
_MSG_DONTWAIT: Final = 0x40
BATCH: Final = 1024  # SYNs queued at most before a sendmmsg
RECV_BATCH: Final = 256  # answers read by one recvmmsg
RECV_SIZE: Final = 128  # bytes kept of each answer (IP and TCP headers)

# sendmmsg/recvmmsg are not in Python's socket module; glibc has both. The message
# vectors are built once (``_vectors``): a probe writes its header and address into
# its slot, so a batch of SYNs costs one call and no allocation.
# A C library without them: SynProber refuses to start and kernel sockets run the checks.
_sendmmsg: Any = None
_recvmmsg: Any = None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _sendmmsg, _recvmmsg = _libc.sendmmsg, _libc.recvmmsg
except (OSError, AttributeError):
    pass
else:
    _sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    _sendmmsg.restype = ctypes.c_int
    _recvmmsg.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    _recvmmsg.restype = ctypes.c_int
# struct mmsghdr on 64-bit Linux: msghdr (name, namelen, iov, iovlen, control,
# controllen, flags) then msg_len, 64 bytes; struct iovec: base, len, 16 bytes.
_MMSGHDR: Final = struct.Struct("=QI4xQQQQi4xI4x")
_IOVEC: Final = struct.Struct("=QQ")

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


def _vectors(
    data: ctypes.Array[ctypes.c_char],
    size: int,
    names: ctypes.Array[ctypes.c_char] | None,
    name_size: int,
    n: int,
) -> ctypes.Array[ctypes.c_char]:
    """``n`` struct mmsghdr: message i on ``data[size*i:]``, address ``names[name_size*i:]``."""
    iov = ctypes.create_string_buffer(_IOVEC.size * n)
    mmsg = ctypes.create_string_buffer(_MMSGHDR.size * n)
    base, iov_base = ctypes.addressof(data), ctypes.addressof(iov)
    name_base = ctypes.addressof(names) if names is not None else 0
    for i in range(n):
        _IOVEC.pack_into(iov, _IOVEC.size * i, base + size * i, size)
        name = name_base + name_size * i if names is not None else 0
        _MMSGHDR.pack_into(
            mmsg, _MMSGHDR.size * i, name, name_size, iov_base + _IOVEC.size * i, 1, 0, 0, 0, 0
        )
    mmsg._iov = iov  # type: ignore[attr-defined]  # kept alive with the vector
    return mmsg


class SynProber:
    """Connect checks as SYNs on two raw sockets; driven by its owner's tick like BatchProber.

    ``SynProber(on_result)`` raises OSError (PermissionError without
    CAP_NET_RAW) when raw sockets cannot be opened: the caller falls back.
    """

    def __init__(self, on_result: Callable[[object, bool, str, float], None]):
        if struct.calcsize("P") != 8 or _sendmmsg is None or _recvmmsg is None:
            raise OSError("raw SYN probes need sendmmsg, recvmmsg and a 64-bit struct mmsghdr")
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
        self._send_fd = self._send.fileno()
        self._recv_fd = self._recv.fileno()
        self._out = ctypes.create_string_buffer(20 * BATCH)
        self._names = ctypes.create_string_buffer(16 * BATCH)
        self._mmsg = _vectors(self._out, 20, self._names, 16, BATCH)
        self._mmsg_addr = ctypes.addressof(self._mmsg)
        self._idents: list[tuple[bytes, int, int]] = [(b"", 0, 0)] * BATCH
        self._queued = 0
        self._in = ctypes.create_string_buffer(RECV_SIZE * RECV_BATCH)
        self._in_mmsg = _vectors(self._in, RECV_SIZE, None, 0, RECV_BATCH)
        self._in_mmsg_addr = ctypes.addressof(self._in_mmsg)
        self._lens = struct.Struct("=" + "56xI4x" * RECV_BATCH)
        # (target address bytes, target port, our port) -> seq, start, token, address
        self._pending: dict[tuple[bytes, int, int], tuple[int, float, object, str]] = {}
        self._fifos: dict[float, deque[tuple[float, tuple[bytes, int, int], int]]] = {}
        self._partial: dict[tuple[str, int], tuple[int, bytes]] = {}
        self._port = random.randrange(len(PORTS))
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
        """Queue a probe's SYN; it leaves with the others at the next ``flush`` (or ``reap``)."""
        t = key.target
        target = (t.address, t.port)
        prepared = self._partial.get(target)
        try:
            if prepared is None:
                prepared = self._partial[target] = self._prepare(t.address, t.port)
            partial, dst = prepared
            port = self._port = (self._port + 1) % _NPORTS
            ident = (dst, t.port, PORT_LO + port)
            if ident in self._pending:  # rare: this target is still pending on that port
                ident = self._free_port(dst, t.port)
        except OSError as e:
            from agent.health.probes import reason_of

            self._on_result(token, False, reason_of(e), 0.0)
            return
        sport = ident[2]
        seq = self._rng.getrandbits(32)
        check = partial + sport + (seq >> 16) + (seq & 0xFFFF)
        check = (check & 0xFFFF) + (check >> 16)  # twice folds any sum below 2**32
        check = ~((check & 0xFFFF) + (check >> 16)) & 0xFFFF
        i = self._queued
        _HEADER.pack_into(self._out, 20 * i, sport, t.port, seq, 0, 0x5002, 0xFFFF, check, 0)
        _NAME.pack_into(self._names, 16 * i, socket.AF_INET, dst)
        self._idents[i] = ident
        self._queued = i + 1
        self._pending[ident] = (seq, now, token, t.address)
        timeout = key.check.timeout
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        fifo.append((now + timeout, ident, seq))
        if self._queued == BATCH:
            self.flush()

    def _free_port(self, dst: bytes, port: int) -> tuple[bytes, int, int]:
        for _ in range(_NPORTS):
            self._port = (self._port + 1) % _NPORTS
            ident = (dst, port, PORT_LO + self._port)
            if ident not in self._pending:
                return ident
        raise OSError("no free probe port")

    def flush(self) -> None:
        """Send every queued SYN: one ``sendmmsg`` per ``BATCH``; a SYN not sent fails its probe."""
        count, done = self._queued, 0
        self._queued = 0
        while done < count:
            sent = _sendmmsg(self._send_fd, self._mmsg_addr + 64 * done, count - done, 0)
            if sent > 0:
                done += sent
                continue
            # the first message not sent failed with errno: report it, go on with the rest
            from agent.health.probes import errno_reason

            code = ctypes.get_errno() if sent < 0 else 0
            entry = self._pending.pop(self._idents[done], None)
            if entry is not None:
                self._on_result(entry[2], False, errno_reason(code) if code else "send", 0.0)
            done += 1

    def reap(self, now: float) -> None:
        """Report every probe answered (SYN-ACK: pass; RST: refused)."""
        if self._queued:
            self.flush()
        pending = self._pending
        buf, lens, ip = self._in, self._lens, _IP.unpack_from
        reply = _REPLY.unpack_from
        while pending:
            got = _recvmmsg(self._recv_fd, self._in_mmsg_addr, RECV_BATCH, _MSG_DONTWAIT, None)
            if got <= 0:
                return  # nothing more (EAGAIN) or an error: the rest waits for the next tick
            sizes = lens.unpack_from(self._in_mmsg)
            for i in range(got):
                o = RECV_SIZE * i
                vihl, src = ip(buf, o)
                ihl = (vihl & 0x0F) * 4
                if sizes[i] < ihl + 14:
                    continue
                sport, dport, _seq, ack, flags = reply(buf, o + ihl)
                ident = (src, sport, dport)
                entry = pending.get(ident)
                if entry is None or ack != (entry[0] + 1) & 0xFFFFFFFF:
                    continue  # not an answer to a probe in flight
                if flags & _SYN_ACK == _SYN_ACK:
                    del pending[ident]
                    self._on_result(entry[2], True, "ok", now - entry[1])
                elif flags & _RST:
                    del pending[ident]
                    self._on_result(entry[2], False, "refused", now - entry[1])
            if got < RECV_BATCH:
                return

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
        """The first deadline of a probe still pending (answered ones are dropped here)."""
        pending = self._pending
        first = None
        for fifo in self._fifos.values():
            while fifo:
                deadline, ident, seq = fifo[0]
                entry = pending.get(ident)
                if entry is not None and entry[0] == seq:
                    if first is None or deadline < first:
                        first = deadline
                    break
                fifo.popleft()
        return first

    def close(self) -> None:
        """Stop: every pending probe is dropped without a result (queued SYNs are not sent)."""
        self._queued = 0
        for attr in ("_pending", "_fifos"):
            getattr(self, attr, {}).clear()  # also after a failed __init__
        for s in (self._send, getattr(self, "_recv", None)):
            if s is not None:
                s.close()
