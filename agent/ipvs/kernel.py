"""The IPVS kernel adapter: the agent's privilege boundary for the IPVS table.

Everything that reads or writes the kernel's IPVS table goes through
``IpvsKernel``. Its surface is four calls, each in a blocking and an asyncio
flavour:

    dump()                 -> KernelTable         every service with its dests
    dump_services(keys)    -> KernelTable         a subset (drain polling)
    apply(ops)             -> list[OpError|None]  one entry per op, in order
    get_timeouts()         -> Timeouts
    sync_daemons()         -> dict[state, SyncDaemon]   GET_DAEMON
    control_daemons(stop, start) -> list[error|None]    DEL_DAEMON, NEW_DAEMON

(``dump_async`` and so on for the asyncio flavour), plus ``counters`` (plain
ints for metrics: sendmsg calls, messages sent, receive calls, datagrams,
netlink errors, EBUSY re-issues, interrupted dumps) and ``close()``. Failures
of a whole call raise ``IpvsError``; a kernel without IPVS raises
``IpvsUnavailable`` at construction.

It owns one raw ``AF_NETLINK/NETLINK_GENERIC`` socket, opened in the network
namespace of the thread that constructs it, and drives the sans-I/O pipelines
of ``netlink.py`` over it. It never shells out (no ``ipvsadm``), never retries
an operation the kernel refused (the caller decides), and never touches
services it was not asked about.

Not thread-safe: one call at a time per instance. Async calls on one instance
are serialised with a lock; the socket is only read with MSG_DONTWAIT, so the
event loop is never blocked waiting for the kernel, and a call yields to the
loop whenever it has run for ``async_budget`` seconds. A sendmsg of a window
of operations runs the kernel's work for the whole window inside the syscall,
so the async driver sizes its windows from measured sendmsg time to stay
within the budget (VRRP adverts every 10 ms share the loop).

Receiving uses recvmmsg(2) (through ctypes) where available, which halves the
system calls of a dump; see _Receiver.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import select
import socket
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import asyncio

from agent.gcpause import paused_gc, settle
from agent.ipvs.model import KernelTable, Op, ServiceKey, SyncDaemon, Timeouts
from agent.ipvs.netlink import (
    IPVS_GENL_NAME,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    SOL_NETLINK,
    ApplyPipeline,
    ConfigPipeline,
    Counters,
    DaemonPipeline,
    DumpCache,
    DumpPipeline,
    Encoder,
    FamilyPipeline,
    NetlinkError,
    OpError,
    Pipeline,
    SeqCounter,
)

__all__ = ["Counters", "IpvsError", "IpvsKernel", "IpvsUnavailable", "OpError"]

AF_NETLINK: Final = 16
NETLINK_GENERIC: Final = 16
SO_SNDBUFFORCE: Final = 32
SO_RCVBUFFORCE: Final = 33

# What one queued reply may cost against the receive buffer (skb truesize of a
# capped NLMSG_ERROR with an extack message is well under this).
_REPLY_TRUESIZE: Final = 2048
_RECV_BUFFER: Final = 1 << 17  # > the 32 KiB netlink_dump caps a dump chunk at

# Plain ints: socket.MSG_* are IntFlag members, whose `&` and `|` run in Python.
_MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_MSG_TRUNC: Final = int(socket.MSG_TRUNC)

_WAIT: Final = 0  # the driver must wait until the socket is readable
_YIELD: Final = 1  # a good moment to let other tasks run


class IpvsUnavailable(RuntimeError):
    """The running kernel has no IPVS (module not loaded or not built)."""


class IpvsError(OSError):
    """A request as a whole failed: kernel refusal of a dump, timeout, lost replies."""


class IpvsKernel:
    """One netlink socket to the IPVS table of the calling thread's network namespace.

    ``timeout``: seconds to wait for any reply before giving up (IpvsError).
    ``max_duration``: hard bound on one call.
    ``dump_window``: dump requests in flight together (see DumpPipeline); 1 is
    the fewest system calls on kernels up to at least 6.1.
    ``apply_window``: operations per sendmsg for blocking calls (default: what
    the receive buffer holds if every one of them failed, at most 4096).
    ``async_budget``: longest stretch an async call runs without yielding.
    ``pause_gc``: suspend the cyclic garbage collector while a call runs (an
    async call: between its awaits only). A dump allocates several objects per
    real server, none of them cyclic; left on, the collector re-scans the
    growing heap over and over (decoding a 10,000-service dump took 40 % more
    CPU time). Reference counting still frees everything.
    ``reuse_decoded``: keep the last full dump's immutable objects and reuse
    them for byte-identical replies (idle real servers; see netlink.DumpCache).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_duration: float = 600.0,
        rcvbuf: int = 32 << 20,
        sndbuf: int = 8 << 20,
        dump_window: int = 1,
        apply_window: int | None = None,
        async_budget: float = 0.002,
        max_dump_attempts: int = 5,
        pause_gc: bool = True,
        reuse_decoded: bool = True,
    ) -> None:
        self.timeout = timeout
        self.max_duration = max_duration
        self.dump_window = dump_window
        self.async_budget = async_budget
        self.max_dump_attempts = max_dump_attempts
        self.pause_gc = pause_gc
        self.dump_cache = DumpCache() if reuse_decoded else None
        self.counters = Counters()
        self._seqs = SeqCounter(int(time.time()) & 0xFFFF or 1)
        self._buf = bytearray(_RECV_BUFFER)  # for _drain
        self._dirty = False
        self._alock: asyncio.Lock | None = None
        self._sock = socket.socket(
            AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC
        )
        try:
            self._setup_socket(rcvbuf, sndbuf)
            got_rcv = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            got_snd = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            # netlink_sendmsg refuses a message longer than sk_sndbuf - 32.
            self.max_batch_bytes = max(4096, min(1 << 20, got_snd // 2))
            self.max_window = max(16, min(4096, got_rcv // _REPLY_TRUESIZE))
            self.apply_window = min(apply_window or self.max_window, self.max_window)
            self._async_window = min(64, self.max_window)
            self._receiver = _Receiver(self._sock, slots=32, size=1 << 16)
            self.family = self._resolve_family()
        except BaseException:
            self._sock.close()
            raise
        self._encoder = Encoder(self.family)

    # ---- lifecycle

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> IpvsKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def _setup_socket(self, rcvbuf: int, sndbuf: int) -> None:
        s = self._sock
        for force, plain, size in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF, sndbuf),
        ):
            try:
                s.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:
                s.setsockopt(socket.SOL_SOCKET, plain, size)  # capped by [rw]mem_max
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            # Kernels before 4.3 / 4.12 lack these; plain errors still work there.
            with contextlib.suppress(OSError):
                s.setsockopt(SOL_NETLINK, opt, 1)
        s.bind((0, 0))

    def _resolve_family(self) -> int:
        # CTRL_CMD_GETFAMILY through our own socket: one doit, and no pyroute2
        # import (seconds in the test VM, and the CLI stays fast).
        p = FamilyPipeline(IPVS_GENL_NAME, self._seqs, self.counters)
        self._run(p)
        if p.missing:
            raise IpvsUnavailable(
                "the running kernel has no IPVS (generic netlink family 'IPVS' is not "
                "registered): load it with 'modprobe ip_vs'"
            )
        if p.failure is not None:
            raise IpvsError(
                getattr(p.failure, "errno", None) or errno.EIO,
                f"resolving the IPVS netlink family: {p.failure}",
            )
        assert p.family_id is not None
        return p.family_id

    # ---- blocking API

    def dump(self) -> KernelTable:
        """Every service with its dests, read in one pass (retried on DUMP_INTR)."""
        for _attempt in range(self.max_dump_attempts):
            p = self._dump_pipeline(None)
            self._run(p)
            if not p.interrupted:
                p.update_cache()
                return p.table
        raise IpvsError(
            errno.EINTR, f"IPVS dump interrupted {self.max_dump_attempts} times in a row"
        )

    def dump_services(self, keys: Iterable[ServiceKey]) -> KernelTable:
        """The services among ``keys`` that exist, with their dests."""
        keys = list(keys)
        for _attempt in range(self.max_dump_attempts):
            p = self._dump_pipeline(keys)
            self._run(p)
            if not p.interrupted:
                return p.table
        raise IpvsError(
            errno.EINTR, f"IPVS dump interrupted {self.max_dump_attempts} times in a row"
        )

    def apply(self, ops: Sequence[Op]) -> list[OpError | None]:
        """Run ``ops`` in order; a refused op does not stop the ones after it."""
        p = ApplyPipeline(
            self._encoder,
            ops,
            self._seqs,
            self.counters,
            window=self.apply_window,
            max_bytes=self.max_batch_bytes,
        )
        self._run(p)
        return p.results

    def get_timeouts(self) -> Timeouts:
        p = ConfigPipeline(self._encoder, self._seqs, self.counters)
        self._run(p)
        assert p.timeouts is not None
        return p.timeouts

    def sync_daemons(self) -> dict[int, SyncDaemon]:
        """The connection-sync daemons running in this netns, by state (master 1, backup 2)."""
        p = DaemonPipeline(self._encoder, self._seqs, self.counters)
        self._run(p)
        return p.daemons

    def control_daemons(
        self, stop: Sequence[int] = (), start: Sequence[SyncDaemon] = ()
    ) -> list[NetlinkError | None]:
        """Stop the daemons of the ``stop`` states, then start ``start``, in order; one
        entry per request (stops first): None, or the kernel's refusal."""
        p = self._daemon_requests(stop, start)
        self._run(p)
        return p.errors

    # ---- asyncio API (same pipelines, never blocks the loop on the socket)

    async def sync_daemons_async(self) -> dict[int, SyncDaemon]:
        p = DaemonPipeline(self._encoder, self._seqs, self.counters)
        await self._run_async(p)
        return p.daemons

    async def control_daemons_async(
        self, stop: Sequence[int] = (), start: Sequence[SyncDaemon] = ()
    ) -> list[NetlinkError | None]:
        p = self._daemon_requests(stop, start)
        await self._run_async(p)
        return p.errors

    def _daemon_requests(self, stop: Sequence[int], start: Sequence[SyncDaemon]) -> DaemonPipeline:
        enc = self._encoder
        requests: list[tuple[str, Callable[[int], bytes]]] = []
        for state in stop:
            requests.append(
                (f"stop sync daemon state {state}", functools.partial(enc.del_daemon, state))
            )
        for d in start:
            requests.append(
                (
                    f"start {d.role} sync daemon on {d.interface} (sync id {d.sync_id})",
                    functools.partial(enc.new_daemon, d),
                )
            )
        return DaemonPipeline(enc, self._seqs, self.counters, requests)

    async def dump_async(self) -> KernelTable:
        for _attempt in range(self.max_dump_attempts):
            p = self._dump_pipeline(None)
            await self._run_async(p)
            if not p.interrupted:
                p.update_cache()
                return p.table
        raise IpvsError(
            errno.EINTR, f"IPVS dump interrupted {self.max_dump_attempts} times in a row"
        )

    async def dump_services_async(self, keys: Iterable[ServiceKey]) -> KernelTable:
        keys = list(keys)
        for _attempt in range(self.max_dump_attempts):
            p = self._dump_pipeline(keys)
            await self._run_async(p)
            if not p.interrupted:
                return p.table
        raise IpvsError(
            errno.EINTR, f"IPVS dump interrupted {self.max_dump_attempts} times in a row"
        )

    async def apply_async(self, ops: Sequence[Op]) -> list[OpError | None]:
        p = ApplyPipeline(
            self._encoder,
            ops,
            self._seqs,
            self.counters,
            window=self._async_window,
            max_bytes=self.max_batch_bytes,
        )
        await self._run_async(p)
        return p.results

    async def get_timeouts_async(self) -> Timeouts:
        p = ConfigPipeline(self._encoder, self._seqs, self.counters)
        await self._run_async(p)
        assert p.timeouts is not None
        return p.timeouts

    # ---- the shared I/O loop

    def _dump_pipeline(self, keys: Sequence[ServiceKey] | None) -> DumpPipeline:
        return DumpPipeline(
            self._encoder,
            self._seqs,
            self.counters,
            keys=keys,
            dump_window=self.dump_window,
            get_window=min(256, self.max_window),
            cache=self.dump_cache,
        )

    def _steps(self, p: Pipeline, budget: float | None) -> Generator[int, None, None]:
        """Drive ``p`` to completion; yields _WAIT (need readability) or _YIELD."""
        sock, recv = self._sock, self._receiver.recv
        counters = self.counters
        clock = time.monotonic
        start = last_yield = clock()
        hard_deadline = start + self.max_duration
        while not p.done:
            now = clock()
            if now > hard_deadline:
                raise IpvsError(
                    errno.ETIMEDOUT, f"IPVS request still running after {self.max_duration:.0f} s"
                )
            data = p.next_batch()
            if data:
                t0 = time.perf_counter()
                try:
                    sock.send(data)
                except OSError as exc:
                    p.send_failed(exc)
                    continue
                counters.sendmsg_calls += 1
                if budget is not None and isinstance(p, ApplyPipeline):
                    self._adapt_window(p, time.perf_counter() - t0, budget)
            if not p.expects_reply:
                if not data and not p.done:
                    raise RuntimeError(f"{type(p).__name__} stalled: nothing to send or wait for")
                continue
            try:
                datagrams = recv()
            except BlockingIOError:
                yield _WAIT
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise IpvsError(
                        errno.ENOBUFS,
                        "netlink receive buffer overflowed: some IPVS replies were lost",
                    ) from exc
                raise
            counters.recv_calls += 1
            for data in datagrams:
                # One recvmmsg may return up to 32 dump chunks (each receive
                # advances the dump): keep to the budget chunk by chunk.
                p.feed(data)
                if budget is not None and clock() - last_yield > budget:
                    yield _YIELD
                    last_yield = clock()
        if p.failure is not None and not isinstance(p, FamilyPipeline):
            failure = p.failure
            code = getattr(failure, "errno", None) or errno.EIO
            raise IpvsError(code, str(failure)) from failure

    def _adapt_window(self, p: ApplyPipeline, elapsed: float, budget: float) -> None:
        # The kernel runs the whole window inside sendmsg: keep that within half
        # the budget so the loop stays responsive, whatever the machine's speed.
        if p.last_batch <= 0 or elapsed <= 0:
            return
        target = int(budget / 2 / (elapsed / p.last_batch))
        window = max(8, min(self.max_window, (p.window + target) // 2))
        p.window = self._async_window = window

    def _drain(self) -> None:
        """Discard replies left by an abandoned call (finishing any dump still running)."""
        for _ in range(1_000_000):
            try:
                self._sock.recv_into(self._buf, 0, _MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
        self._dirty = False

    def _run(self, p: Pipeline) -> None:
        if self._dirty:
            self._drain()
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        self._dirty = True
        with paused_gc(self.pause_gc):
            for step in self._steps(p, None):
                if step == _WAIT and not poller.poll(self.timeout * 1000):
                    raise IpvsError(
                        errno.ETIMEDOUT, f"no reply from the kernel within {self.timeout:.0f} s"
                    )
        self._dirty = False

    async def _run_async(self, p: Pipeline) -> None:
        import asyncio  # here: `lvs-agent apply` never loads the event loop machinery

        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if self._dirty:
                self._drain()
            self._dirty = True
            steps = self._steps(p, self.async_budget)
            # The collector stays off for the whole call, its awaits included. Paused
            # only between them, each await let a collection run, and every hundredth
            # one walked the whole partly decoded table: dozens of full passes per
            # 10,000-service dump, each holding the loop (agent.gcpause).
            with paused_gc(self.pause_gc):
                while True:
                    step = next(steps, None)
                    if step is None:
                        break
                    if step == _WAIT:
                        await self._readable()
                    else:
                        await asyncio.sleep(0)
            _freeze_survivors(self.pause_gc)
            self._dirty = False

    async def _readable(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise IpvsError(
                errno.ETIMEDOUT, f"no reply from the kernel within {self.timeout:.0f} s"
            ) from None
        finally:
            loop.remove_reader(fd)


def _freeze_survivors(pause: bool) -> None:
    """After the daemon's calls, whose tables live on: what survived is moved out of
    the collector's way (``agent.gcpause.settle``). Otherwise the first collection after
    a large dump walks every new object at once, on the event loop (hundreds of ms under
    emulation at 10,000 services); reference counting still frees the table when the
    next dump replaces it."""
    if pause:
        settle()


class _Receiver:
    """Reads the datagrams queued on the socket with as few system calls as possible.

    With recvmmsg(2) one call returns everything queued, and, since
    netlink_recvmsg advances a running dump after each message it copies, the
    same call also collects the chunk (or NLMSG_DONE) that this produced: a
    one-chunk dest dump then costs one sendmsg and one receive, not two
    receives. Without recvmmsg (or ctypes), one recv per datagram.
    """

    def __init__(self, sock: socket.socket, slots: int = 32, size: int = _RECV_BUFFER) -> None:
        self._sock = sock
        self._size = size
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._mm: Any = None
        with contextlib.suppress(AttributeError, OSError):
            self._mm = _MmsgVector(sock.fileno(), slots, size)

    def recv(self) -> list[bytes]:
        """Every queued datagram (at least one); BlockingIOError when none is."""
        if self._mm is not None:
            return self._mm.recv()  # type: ignore[no-any-return]
        n = self._sock.recv_into(self._buf, 0, _MSG_DONTWAIT | _MSG_TRUNC)
        if n > self._size:
            raise IpvsError(errno.EMSGSIZE, f"netlink reply of {n} bytes truncated")
        return [bytes(self._view[:n])]


class _MmsgVector:
    """recvmmsg(2) through ctypes over one preallocated buffer."""

    def __init__(self, fd: int, slots: int, size: int) -> None:
        import ctypes

        class IoVec(ctypes.Structure):
            _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))

        class MsgHdr(ctypes.Structure):
            _fields_ = (
                ("msg_name", ctypes.c_void_p),
                ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(IoVec)),
                ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p),
                ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int),
            )

        class MMsgHdr(ctypes.Structure):
            _fields_ = (("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint))

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.recvmmsg
        fn.argtypes = (
            ctypes.c_int,
            ctypes.POINTER(MMsgHdr),
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        )
        fn.restype = ctypes.c_int
        self._ctypes = ctypes
        self._fn = fn
        self._fd = fd
        self._slots = slots
        self._size = size
        self._buf = (ctypes.c_char * (slots * size))()
        base = ctypes.addressof(self._buf)
        self._iov = (IoVec * slots)()
        self._msgs = (MMsgHdr * slots)()
        for i in range(slots):
            self._iov[i].iov_base = base + i * size
            self._iov[i].iov_len = size
            self._msgs[i].msg_hdr.msg_iov = ctypes.pointer(self._iov[i])
            self._msgs[i].msg_hdr.msg_iovlen = 1
        self._base = base

    def recv(self) -> list[bytes]:
        n = self._fn(self._fd, self._msgs, self._slots, _MSG_DONTWAIT, None)
        if n < 0:
            err = self._ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise BlockingIOError(err, "no reply queued")
            raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
        out = []
        string_at = self._ctypes.string_at
        for i in range(n):
            m = self._msgs[i]
            if m.msg_hdr.msg_flags & _MSG_TRUNC:
                raise IpvsError(errno.EMSGSIZE, "netlink reply truncated")
            out.append(string_at(self._base + i * self._size, m.msg_len))
        return out
