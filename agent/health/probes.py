"""The probes: one check against its target, once, with a result, a reason and a duration.

This module owns the sockets and processes of the checks: ``probe(key)`` for
every type (tcp with send/expect, http/https, udp, dns, exec, agent) as a
coroutine on the running loop, and ``BatchProber``, the batched prober the
scheduler uses for connect-only tcp and plain HTTP checks at scale. It must never decide
health (rise/fall, weights: ``agent.health.core``) nor schedule (``scheduler``).

Every socket is closed on every path, cancellation included; every read is
bounded in bytes (``agent.health.wire``) and in time: a probe's ``timeout``
runs from when the probe really starts, so a probe that waited for the loop is
not charged for it. Reasons are short and stable (they become metric labels):
``refused``, ``timeout``, ``reset``, ``unreachable``, ``status 503``, ``body``,
``expect``, ``garbage``, ``tls: ...``, ``icmp unreachable``, ``rcode SERVFAIL``,
``exit 2``.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import ipaddress
import random
import re
import select
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from agent.health.config import DNS_RCODES, DNS_TYPES, Check, CheckKey
from agent.health.core import Result, agent_result, exec_result
from agent.health.wire import (
    ProtocolError,
    ResponseReader,
    dns_query,
    dns_reply,
    request,
    status_code,
    status_matches,
)
from agent.vrrp.command import REAP_TIMEOUT, run_status

READ_LIMIT: Final = 4096  # bytes read for a tcp/udp expect or an agent answer
_LINGER_RST: Final = struct.pack("ii", 1, 0)  # close() sends RST: no TIME_WAIT per probe
_EPOLL_CONNECT: Final = select.EPOLLOUT | select.EPOLLONESHOT
_EPOLL_HTTP: Final = select.EPOLLOUT | select.EPOLLIN | select.EPOLLET  # connect, then answer
_EPOLL_FAILED: Final = select.EPOLLERR | select.EPOLLHUP
_EPOLL_ANSWER: Final = select.EPOLLIN | _EPOLL_FAILED


def reason_of(e: BaseException) -> str:
    """The short reason for an exception raised by a probe."""
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"tls: {e.verify_message or 'certificate'}"
    if isinstance(e, ssl.SSLError):
        return f"tls: {(e.reason or str(e)).lower().replace('_', ' ')}"
    if isinstance(e, ProtocolError):
        return "garbage"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(e, OSError) and e.errno is not None:
        return errno_reason(e.errno)
    return type(e).__name__


def errno_reason(code: int) -> str:
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if code == errno.ETIMEDOUT:
        return "timeout"
    return errno.errorcode.get(code, str(code)).lower()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _open(key: CheckKey, kind: socket.SocketKind) -> socket.socket:
    t = key.target
    sock = socket.socket(_family(t.address), kind)
    try:
        sock.setblocking(False)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        if t.source_address:
            sock.bind((t.source_address, 0))
    except BaseException:
        sock.close()
        raise
    return sock


STALL_GRACE: Final = 3.0  # a probe's deadline moves by the loop's stalls up to this x timeout


async def probe(key: CheckKey, stalled: Callable[[], float] | None = None) -> Result:
    """Run ``key``'s check once against its target: never raises but on cancellation.

    ``stalled`` (the scheduler's) returns a growing count of seconds the loop
    itself was late. The time the agent was not listening is not the target's:
    the probe's deadline moves by the stalls that happen while it runs (up to
    ``STALL_GRACE`` x its timeout), so a probe whose answer arrived while the
    loop was busy is not failed for it.
    """
    check = key.check
    start = time.monotonic()
    # exec: run_status enforces the timeout itself and then kills the tree; the
    # outer bound leaves it the time to reap
    limit = check.timeout + (REAP_TIMEOUT + 1.0 if check.type == "exec" else 0.0)
    try:
        if stalled is None or check.type == "exec":
            async with asyncio.timeout(limit):
                result = await _PROBES[check.type](key)
        else:
            result = await _with_grace(_PROBES[check.type](key), start, limit, stalled)
    except (TimeoutError, OSError, ssl.SSLError, ProtocolError, ValueError) as e:
        result = Result(False, reason_of(e))
    return Result(result.ok, result.reason, time.monotonic() - start, result.weight)


async def _with_grace(
    coro: Coroutine[object, object, Result],
    start: float,
    limit: float,
    stalled: Callable[[], float],
) -> Result:
    loop = asyncio.get_running_loop()
    grace_left = limit * STALL_GRACE
    seen = stalled()
    handle: asyncio.TimerHandle | None = None
    async with asyncio.timeout(None) as cm:

        def on_deadline(deadline: float) -> None:
            nonlocal grace_left, seen, handle
            now_stalled = stalled()
            extra = min(now_stalled - seen, grace_left)
            seen = now_stalled
            if extra > 0:
                grace_left -= extra
                handle = loop.call_at(deadline + extra, on_deadline, deadline + extra)
            else:
                # fires on the next pass: an answer read in this pass wins
                cm.reschedule(loop.time())

        handle = loop.call_at(start + limit, on_deadline, start + limit)
        try:
            return await coro
        finally:
            handle.cancel()
    raise AssertionError("unreachable")  # pragma: no cover - the timeout raises


def _expect(check: Check, data: bytes) -> Result:
    if check.expect is None:
        return Result(True, "ok")
    if _regex(check.expect).search(data):
        return Result(True, "ok")
    return Result(False, "expect")


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode("utf-8"))


async def _tcp(key: CheckKey) -> Result:
    loop = asyncio.get_running_loop()
    sock = _open(key, socket.SOCK_STREAM)
    try:
        await loop.sock_connect(sock, (key.target.address, key.target.port))
        check = key.check
        if check.send:
            await loop.sock_sendall(sock, check.send)
        if check.expect is None:
            return Result(True, "ok")
        data = b""
        pattern = _regex(check.expect)
        while len(data) < READ_LIMIT:
            chunk = await loop.sock_recv(sock, READ_LIMIT - len(data))
            if not chunk:
                break
            data += chunk
            if pattern.search(data):
                return Result(True, "ok")
        return Result(False, "expect")
    finally:
        sock.close()


@lru_cache(maxsize=64)
def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    ctx = (
        ssl.create_default_context(cafile=ca_file)
        if verify
        else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _host_header(key: CheckKey) -> str:
    check, t = key.check, key.target
    if check.host:
        return check.host
    host = f"[{t.address}]" if ":" in t.address else t.address
    default = 443 if check.type == "https" else 80
    return host if t.port == default else f"{host}:{t.port}"


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def _http(key: CheckKey) -> Result:
    check, t = key.check, key.target
    if check.type == "http":
        return await _http_plain(key)
    ctx = _tls_context(check.tls_verify, check.tls_ca_file)
    server_name: str | None = check.tls_server_name or check.host or t.address
    if not check.tls_verify and _is_ip(server_name or ""):
        server_name = None  # no SNI for an address (RFC 6066 3)
    sock = _open(key, socket.SOCK_STREAM)
    writer: asyncio.StreamWriter | None = None
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (t.address, t.port))
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=ctx,
            server_hostname=server_name,
            ssl_handshake_timeout=check.timeout,
        )
        writer.write(request(check.method, check.path, _host_header(key)))
        response = _response(check)
        while True:
            data = await reader.read(65536)
            if not data:
                response.eof()
                break
            if response.feed(data):
                break
        return _judge(check, response)
    finally:
        if writer is not None:
            writer.transport.abort()  # no TLS close_notify wait, no lingering socket
        sock.close()


async def _http_plain(key: CheckKey) -> Result:
    """HTTP without TLS on the bare socket: no transport, stream or protocol objects."""
    check, t = key.check, key.target
    loop = asyncio.get_running_loop()
    sock = _open(key, socket.SOCK_STREAM)
    try:
        await loop.sock_connect(sock, (t.address, t.port))
        await loop.sock_sendall(sock, request(check.method, check.path, _host_header(key)))
        response = _response(check)
        while True:
            data = await loop.sock_recv(sock, 65536)
            if not data:
                response.eof()
                break
            if response.feed(data):
                break
        return _judge(check, response)
    finally:
        sock.close()


def _response(check: Check) -> ResponseReader:
    return ResponseReader(want_body=check.expect_body is not None, head=check.method == "HEAD")


def _judge(check: Check, response: ResponseReader) -> Result:
    if not status_matches(response.status, check.expect_status):
        return Result(False, f"status {response.status}")
    if check.expect_body is not None and not _regex(check.expect_body).search(bytes(response.body)):
        return Result(False, "body")
    return Result(True, f"status {response.status}")


async def _udp_exchange(
    key: CheckKey, payload: bytes, accept: Callable[[bytes], Result | None]
) -> Result:
    """Send ``payload``; the first reply ``accept`` does not ignore (None) decides."""
    loop = asyncio.get_running_loop()
    sock = _open(key, socket.SOCK_DGRAM)
    try:
        # Connected: the kernel reports an ICMP port unreachable as ECONNREFUSED.
        sock.connect((key.target.address, key.target.port))
        await loop.sock_sendall(sock, payload)
        while True:
            try:
                data = await loop.sock_recv(sock, READ_LIMIT)
            except ConnectionRefusedError:
                return Result(False, "icmp unreachable")
            verdict = accept(data)
            if verdict is not None:
                return verdict
    finally:
        sock.close()


async def _udp(key: CheckKey) -> Result:
    check = key.check
    if check.expect is None:
        # keepalived's UDP_CHECK without require_reply: silence is health, an ICMP
        # error is not. Wait a bounded share of the timeout for either.
        try:
            async with asyncio.timeout(check.timeout * 0.9):
                return await _udp_exchange(key, check.send, lambda _d: Result(True, "reply"))
        except TimeoutError:
            return Result(True, "no reply")
    return await _udp_exchange(key, check.send, lambda d: _expect(check, d))


async def _dns(key: CheckKey) -> Result:
    check = key.check
    qid = random.getrandbits(16)
    want = DNS_RCODES[check.expect_rcode]
    names = {v: k for k, v in DNS_RCODES.items()}

    def accept(data: bytes) -> Result | None:
        try:
            rcode, _answers = dns_reply(data, qid)
        except ProtocolError:
            return None  # not the reply to this query: keep waiting
        if rcode != want:
            return Result(False, f"rcode {names.get(rcode, rcode)}")
        return Result(True, f"rcode {names.get(rcode, rcode)}")

    query = dns_query(qid, check.query_name, DNS_TYPES[check.query_type])
    return await _udp_exchange(key, query, accept)


async def _agent(key: CheckKey) -> Result:
    loop = asyncio.get_running_loop()
    sock = _open(key, socket.SOCK_STREAM)
    try:
        await loop.sock_connect(sock, (key.target.address, key.target.port))
        if key.check.send:
            await loop.sock_sendall(sock, key.check.send)
        data = b""
        while b"\n" not in data and len(data) < READ_LIMIT:
            chunk = await loop.sock_recv(sock, READ_LIMIT - len(data))
            if not chunk:
                break
            data += chunk
        if not data:
            return Result(False, "agent: no answer")
        return agent_result(data.split(b"\n", 1)[0])
    finally:
        sock.close()


def exec_env(key: CheckKey) -> dict[str, str]:
    """What an exec check's command is told about its target (added to the agent's
    environment), so one script serves many real servers.

    Only the target: one probe serves every virtual server that declares the same
    check against it, so nothing names a virtual server. An exec check takes no
    ``connect_address``/``connect_port``, so the address checked is the real
    server's; both pairs are given, as for the other types' targets.
    """
    address, port = key.target.address, str(key.target.port)
    return {
        "LVS_RS_ADDRESS": address,
        "LVS_RS_PORT": port,
        "LVS_CHECK_ADDRESS": address,
        "LVS_CHECK_PORT": port,
    }


async def _exec(key: CheckKey) -> Result:
    # The timeout is run_status's own (it kills the tree); the probe's outer one is
    # a backstop that only fires if reaping the tree itself hangs.
    status, reason = await run_status(list(key.check.command), key.check.timeout, exec_env(key))
    if status is None:
        return Result(False, reason if reason == "timeout" else f"exec: {reason}")
    if status < 0:
        return Result(False, f"signal {-status}")
    return exec_result(status, dynamic=key.check.dynamic_weight)


_PROBES = {
    "tcp": _tcp,
    "http": _http,
    "https": _http,
    "udp": _udp,
    "dns": _dns,
    "exec": _exec,
    "agent": _agent,
}


def batchable(key: CheckKey) -> bool:
    """True for checks ``BatchProber`` runs: connect-only tcp, and http without TLS."""
    check = key.check
    if check.type == "tcp":
        return not check.send and check.expect is None
    return check.type == "http"


@dataclass(frozen=True, slots=True)
class HttpPlan:
    """What a plain-HTTP check's probes share, made once per check: no work per probe.

    ``passing`` holds every status ``expect_status`` accepts, so judging a
    status is one set lookup; ``status_only``: the status line decides alone
    (no body check), read straight from the first bytes when they hold it.
    """

    check: Check
    request: bytes
    status_only: bool
    passing: frozenset[int]


@lru_cache(maxsize=65536)
def http_plan(key: CheckKey) -> HttpPlan:
    check = key.check
    passing = frozenset(
        code
        for lo, hi in check.expect_status
        for code in range(max(lo, 100), min(hi, 999) + 1)  # a status line holds 100-999
    )
    return HttpPlan(
        check,
        request(check.method, check.path, _host_header(key)),
        check.expect_body is None,
        passing,
    )


class BatchProber:
    """Connect-only tcp and plain-HTTP probes, batched on one private epoll instance.

    One asyncio transport, task or future per probe costs most of a core at
    10,000 targets a second. Here a tcp probe is socket, connect, one
    ``epoll_ctl`` and close, an HTTP probe adds one send and its reads (it is
    registered once, edge-triggered, for both its connect and its answer); the
    prober is passive: its owner calls ``reap`` and
    ``expire`` from its own timer, every few milliseconds while probes are
    pending, so one wake-up of the asyncio loop serves every probe that made
    progress meanwhile (no asyncio callback per probe). A connect's outcome is
    read from the event mask (``SO_ERROR`` only on failure).

    As HAProxy does, a tcp probe's socket has TCP_QUICKACK off, so the kernel
    holds back the handshake's last ACK and the close (SO_LINGER 0) answers
    the SYN-ACK with a RST: the target's application never sees the probe, and
    the director keeps no TIME_WAIT. A SYN-ACK proves the port listens, which
    is all a connect check asks. An HTTP probe's socket has it off too: the
    handshake's last ACK rides on the request (one packet less for both
    ends), and it closes with a RST too.

    Timeouts sit in one FIFO per timeout value. Call ``reap`` before
    ``expire``: an answer that arrived while the loop was busy then counts. A
    probe past its deadline while the loop itself stalled (``expire``'s
    ``stalled``, a growing count of seconds) gets that time back, up to
    ``STALL_GRACE`` x its timeout. ``on_result(token, ok, reason, duration)``
    reports each probe exactly once; durations are as fine as the owner's
    reaping period.
    """

    def __init__(self, on_result: Callable[[object, bool, str, float], None]):
        self._on_result = on_result
        self._ep = select.epoll()
        # fd -> socket, start, token, HttpPlan (None: tcp), stall count at start,
        # grace left; HTTP adds the request bytes not sent yet (b"": all sent) and
        # the response reader (None until the status line needs more than one read)
        self._pending: dict[int, list[Any]] = {}
        self._fifos: dict[float, deque[tuple[float, int, _socket.socket]]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def start(
        self,
        key: CheckKey,
        token: object,
        now: float,
        stalled: float = 0.0,
        plan: HttpPlan | None = None,
    ) -> None:
        """Start one probe at ``now``; ``on_result`` is called once for ``token``.

        ``plan``: the HTTP check's ``http_plan(key)``, if its caller keeps it.
        """
        t = key.target
        if plan is None and key.check.type == "http":
            plan = http_plan(key)
        try:
            sock = _socket.socket(_family(t.address), _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK)
        except OSError as e:
            self._on_result(token, False, reason_of(e), 0.0)
            return
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_RST)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_QUICKACK, 0)
            if t.source_address:
                sock.bind((t.source_address, 0))
            err = sock.connect_ex((t.address, t.port))
        except OSError as e:
            sock.close()
            self._on_result(token, False, reason_of(e), 0.0)
            return
        if err != errno.EINPROGRESS and err != 0:
            sock.close()
            self._on_result(token, False, errno_reason(err), time.monotonic() - now)
            return
        fd = sock.fileno()
        timeout = key.check.timeout
        if plan is None:
            self._ep.register(fd, _EPOLL_CONNECT)
            self._pending[fd] = [sock, now, token, None, stalled, timeout * STALL_GRACE]
        else:
            self._ep.register(fd, _EPOLL_HTTP)
            self._pending[fd] = [
                sock,
                now,
                token,
                plan,
                stalled,
                timeout * STALL_GRACE,
                plan.request,
                None,
            ]
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        fifo.append((now + timeout, fd, sock))

    def reap(self, now: float) -> None:
        """Move every probe that can make progress; report those that finished."""
        pending = self._pending
        report = self._on_result
        while pending:
            events = self._ep.poll(0, 8192)
            for fd, mask in events:
                entry = pending.get(fd)
                if entry is None:
                    continue
                sock = entry[0]
                if entry[3] is None:  # tcp: connected or failed
                    if mask & _EPOLL_FAILED:
                        err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                        self._finish(fd, False, errno_reason(err) if err else "reset", now)
                    else:
                        del pending[fd]
                        sock.close()
                        report(entry[2], True, "ok", now - entry[1])
                    continue
                if entry[6]:  # HTTP, the request not sent yet: the connect's outcome
                    if mask & _EPOLL_FAILED:
                        err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                        self._finish(fd, False, errno_reason(err) if err else "reset", now)
                        continue
                    if not mask & select.EPOLLOUT or not self._send(fd, sock, entry, now):
                        continue
                    # edge-triggered: what the server sent before the request was read
                    # is not announced again
                if mask & _EPOLL_ANSWER:
                    self._read(fd, sock, entry, now)
            if len(events) < 8192:
                break

    def _send(self, fd: int, sock: _socket.socket, entry: list[Any], now: float) -> bool:
        """Send what is left of the request; True once all of it is sent."""
        try:
            sent = sock.send(entry[6])
        except OSError as e:
            self._finish(fd, False, reason_of(e), now)
            return False
        # a request is far below any socket buffer; a short send waits for EPOLLOUT
        entry[6] = entry[6][sent:]
        return not entry[6]

    def _read(self, fd: int, sock: _socket.socket, entry: list[Any], now: float) -> None:
        """Read until the answer is judged or the socket has nothing more (edge-triggered)."""
        plan: HttpPlan = entry[3]
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                self._finish(fd, False, reason_of(e), now)
                return
            response: ResponseReader | None = entry[7]
            try:
                if response is None:
                    if plan.status_only:
                        end = data.find(b"\r\n")
                        if end >= 0:  # the common case: the status line in one read
                            status = status_code(data[:end])
                            ok = status in plan.passing
                            self._finish(fd, ok, f"status {status}", now)
                            return
                    response = entry[7] = _response(plan.check)
                if not data:
                    response.eof()
                elif not response.feed(data):
                    continue
            except ProtocolError as e:
                self._finish(fd, False, reason_of(e), now)
                return
            result = _judge(plan.check, response)
            self._finish(fd, result.ok, result.reason, now)
            return

    def _finish(self, fd: int, ok: bool, reason: str, now: float) -> None:
        entry = self._pending.pop(fd)
        entry[0].close()
        self._on_result(entry[2], ok, reason, now - entry[1])

    def expire(self, now: float, stalled: float = 0.0) -> None:
        """Report as timed out every probe past its deadline (``reap`` first)."""
        pending = self._pending
        for fifo in self._fifos.values():
            later: list[tuple[float, int, _socket.socket]] = []
            while fifo and fifo[0][0] <= now:
                deadline, fd, sock = fifo.popleft()
                entry = pending.get(fd)
                if entry is None or entry[0] is not sock:
                    continue  # finished already (its fd may have been reused since)
                # the loop stalled while an HTTP probe ran: that time is given back (a
                # connect's SYN-ACK needs no help from the loop, reaping saw it already)
                extra = min(stalled - entry[4], entry[5]) if entry[3] is not None else 0.0
                if extra > 0:
                    entry[4] = stalled
                    entry[5] -= extra
                    later.append((deadline + extra, fd, sock))
                    continue
                del pending[fd]
                sock.close()
                self._on_result(entry[2], False, "timeout", now - entry[1])
            fifo.extend(later)  # judged when they reach the head: never early

    def next_deadline(self) -> float | None:
        """The first deadline of a probe still pending (finished ones are dropped here)."""
        pending = self._pending
        first = None
        for fifo in self._fifos.values():
            while fifo:
                deadline, fd, sock = fifo[0]
                entry = pending.get(fd)
                if entry is not None and entry[0] is sock:
                    if first is None or deadline < first:
                        first = deadline
                    break
                fifo.popleft()
        return first

    def close(self) -> None:
        """Stop: every pending probe is closed without a result."""
        for entry in self._pending.values():
            entry[0].close()
        self._pending.clear()
        self._fifos.clear()
        self._ep.close()
