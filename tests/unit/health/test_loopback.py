"""Probes against loopback listeners: the batched prober's state machines and the UDP rules."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from agent.health.config import Check, check_key
from agent.health.core import Result
from agent.health.probes import BatchProber, probe

HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhealthy"


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve(answer: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def batch(checks: dict[str, tuple[Check, int]]) -> dict[str, tuple[bool, str]]:
    """Run each check once on a BatchProber, reaping every few ms until all reported."""
    results: dict[str, tuple[bool, str]] = {}
    prober = BatchProber(
        lambda token, ok, reason, _d: results.__setitem__(str(token), (ok, reason))
    )
    try:
        now = time.monotonic()
        for name, (check, port) in checks.items():
            prober.start(check_key(check, "127.0.0.1", port), name, now)
        for _ in range(1000):
            if len(results) == len(checks):
                break
            await asyncio.sleep(0.005)
            now = time.monotonic()
            prober.reap(now)
            prober.expire(now)
    finally:
        prober.close()
    return results


def test_batched_tcp_and_http_outcomes() -> None:
    async def run() -> dict[str, tuple[bool, str]]:
        ok_server, ok_port = await serve(HTTP_OK)
        bad_server, bad_port = await serve(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        junk_server, junk_port = await serve(os.urandom(32) + b"\r\n\r\n")
        closed = free_port()
        try:
            return await batch(
                {
                    "tcp ok": (Check("tcp"), ok_port),
                    "tcp refused": (Check("tcp"), closed),
                    "http ok": (Check("http", expect_body="heal"), ok_port),
                    "http body": (Check("http", expect_body="nope"), ok_port),
                    "http 503": (Check("http"), bad_port),
                    "http garbage": (Check("http"), junk_port),
                    "http refused": (Check("http"), closed),
                }
            )
        finally:
            for s in (ok_server, bad_server, junk_server):
                s.close()

    before = len(os.listdir("/proc/self/fd"))
    results = asyncio.run(run())
    assert results == {
        "tcp ok": (True, "ok"),
        "tcp refused": (False, "refused"),
        "http ok": (True, "status 200"),
        "http body": (False, "body"),
        "http 503": (False, "status 503"),
        "http garbage": (False, "garbage"),
        "http refused": (False, "refused"),
    }
    assert len(os.listdir("/proc/self/fd")) <= before


async def serve_raw(
    pieces: list[bytes], *, eager: bool = False, pause: float = 0.05, hold: float = 0.2
) -> tuple[asyncio.Server, int]:
    """A server that writes ``pieces`` with pauses between them, before reading the
    request when ``eager``, and closes ``hold`` seconds after."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not eager:
                await reader.readuntil(b"\r\n\r\n")
            for i, piece in enumerate(pieces):
                if i:
                    await asyncio.sleep(pause)
                writer.write(piece)
                await writer.drain()
            await asyncio.sleep(hold)  # the prober judges before the close
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_batched_http_answers_in_pieces_or_before_the_request() -> None:
    """The edge-triggered HTTP probe reads an answer that came before its request was
    sent (it is not announced again) and a status line split across reads."""

    async def run() -> dict[str, tuple[bool, str]]:
        # open past the probe's timeout: nothing after the answer announces it again
        eager, eager_port = await serve_raw([HTTP_OK], eager=True, hold=1.0)
        split, split_port = await serve_raw([b"HTTP/1.1 20", b"4 No Content\r\n\r\n"])
        body, body_port = await serve_raw(
            [b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhea", b"lthy"]
        )
        try:
            return await batch(
                {
                    "eager": (Check("http", timeout=0.5), eager_port),
                    "split": (Check("http", expect_status=((204, 204),)), split_port),
                    "split 2xx only 200": (Check("http", expect_status=((200, 200),)), split_port),
                    "body in pieces": (Check("http", expect_body="healthy"), body_port),
                }
            )
        finally:
            for s in (eager, split, body):
                s.close()

    assert asyncio.run(run()) == {
        "eager": (True, "status 200"),
        "split": (True, "status 204"),
        "split 2xx only 200": (False, "status 204"),
        "body in pieces": (True, "status 200"),
    }


def test_udp_silence_is_health_and_an_icmp_error_is_not() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    closed = free_port(socket.SOCK_DGRAM)
    check = Check("udp", send=b"ping", timeout=0.2)

    async def run() -> tuple[Result, Result, Result]:
        return (
            await probe(check_key(check, "127.0.0.1", silent.getsockname()[1])),
            await probe(check_key(check, "127.0.0.1", closed)),
            await probe(
                check_key(
                    Check("udp", send=b"ping", expect="pong", timeout=0.2),
                    "127.0.0.1",
                    silent.getsockname()[1],
                )
            ),
        )

    try:
        quiet, refused, expected = asyncio.run(run())
    finally:
        silent.close()
    assert (quiet.ok, quiet.reason) == (True, "no reply")
    assert (refused.ok, refused.reason) == (False, "icmp unreachable")
    assert (expected.ok, expected.reason) == (False, "timeout")


def test_the_loop_wakes_once_a_tick_while_probes_finish_and_start() -> None:
    """Probes a tick finishes do not arm the timer for checks that same tick starts:
    with checks due in every tick, the scheduler still wakes once per TICK, no more."""
    from agent.health.config import Pool, member
    from agent.health.scheduler import TICK, Scheduler

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    port = server.getsockname()[1]
    check = Check("tcp", interval=0.05, timeout=0.5)
    pools = [Pool(f"p{i}", (member(f"127.0.0.{i + 1}", port, 1, (check,)),)) for i in range(100)]
    server.close()
    server = socket.socket()
    server.bind(("0.0.0.0", port))  # every 127.0.0.x answers
    server.listen(1024)

    async def run() -> tuple[int, float, int]:
        s = Scheduler(pools, syn_probes=False)
        s.start()
        start = time.monotonic()
        await asyncio.sleep(0.5)
        s.stop()
        return s.stats.loop_lag.n, time.monotonic() - start, sum(s.stats.probes.values())

    try:
        ticks, wall, probes = asyncio.run(run())
    finally:
        server.close()
    assert probes >= 200  # probes finished and started tick after tick
    assert ticks <= wall / TICK + 2  # a slow loop wakes less often, never more


def test_a_live_scheduler_probes_a_shared_check_once_and_keeps_it_over_a_reload() -> None:
    from agent.health.config import Pool, member
    from agent.health.scheduler import Scheduler

    closed = free_port()
    check = Check("tcp", interval=0.02, timeout=0.2, rise=1, fall=1)
    pools = [Pool(name, (member("127.0.0.1", closed, 5, (check,)),)) for name in ("a", "b")]

    async def run() -> tuple[int, int, bool, bool]:
        s = Scheduler(pools)
        s.start()
        try:
            for _ in range(200):
                await asyncio.sleep(0.02)
                if s.weight("a", ("127.0.0.1", closed)) == 0:
                    break
            (key,) = s.states()
            state = s.states()[key]
            s.reload([*pools, Pool("c", (member("127.0.0.1", closed, 9, (check,)),))])
            kept = s.states()[key] is state
            return (
                s.checks,
                s.stats.probes[("tcp", False)],
                kept,
                s.weight("c", ("127.0.0.1", closed)) == 0,
            )
        finally:
            s.stop()

    checks, failures, kept, new_pool_sees_it = asyncio.run(run())
    assert checks == 1  # one identity for both virtual servers
    assert failures >= 1
    assert kept and new_pool_sees_it  # the new pool reads the carried-over down state


def test_syn_probes_on_loopback_or_the_fallback_without_raw_sockets() -> None:
    from agent.health.syn import SynProber, usable

    results: dict[str, tuple[bool, str]] = {}
    try:
        prober = SynProber(lambda t, ok, reason, _d: results.__setitem__(str(t), (ok, reason)))
    except PermissionError:  # no CAP_NET_RAW: the scheduler keeps kernel sockets
        from agent.health.config import Pool, member
        from agent.health.scheduler import Scheduler

        async def fallback() -> bool:
            s = Scheduler([Pool("a", (member("127.0.0.1", free_port(), 1, (Check("tcp"),)),))])
            s.start()
            try:
                return s._syn is None
            finally:
                s.stop()

        assert asyncio.run(fallback())
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    closed = free_port()
    check = Check("tcp", timeout=2.0)
    keys = {
        "open": check_key(check, "127.0.0.1", listener.getsockname()[1]),
        "closed": check_key(check, "127.0.0.1", closed),
    }
    assert all(usable(k) for k in keys.values())
    assert not usable(check_key(Check("tcp", source_address="127.0.0.1"), "127.0.0.1", 80))
    assert not usable(check_key(check, "::1", 80))
    try:
        now = time.monotonic()
        for name, key in keys.items():
            prober.start(key, name, now)
        for _ in range(400):
            if len(results) == 2:
                break
            time.sleep(0.005)
            prober.reap(time.monotonic())
        prober.expire(time.monotonic())
    finally:
        prober.close()
        listener.close()
    assert results == {"open": (True, "ok"), "closed": (False, "refused")}


def test_syn_probes_to_one_target_at_once_take_different_ports() -> None:
    from agent.health.syn import PORT_LO, SynProber

    results: dict[str, tuple[bool, str]] = {}
    try:
        prober = SynProber(lambda t, ok, reason, _d: results.__setitem__(str(t), (ok, reason)))
    except PermissionError:  # no CAP_NET_RAW: covered by the fallback test above
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        now = time.monotonic()
        prober._port = 41  # the next probe takes PORT_LO + 42 ...
        prober.start(check_key(Check("tcp", timeout=2.0), "127.0.0.1", port), "a", now)
        prober._port = 41  # ... and so would this one, to the same target: it moves on
        prober.start(check_key(Check("tcp", timeout=3.0), "127.0.0.1", port), "b", now)
        assert sorted(i[2] for i in prober._pending) == [PORT_LO + 42, PORT_LO + 43]
        for _ in range(400):
            if len(results) == 2:
                break
            time.sleep(0.005)
            prober.reap(time.monotonic())
    finally:
        prober.close()
        listener.close()
    assert results == {"a": (True, "ok"), "b": (True, "ok")}


def test_a_syn_the_kernel_refuses_fails_its_probe_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import errno

    from agent.health import syn

    results: dict[str, tuple[bool, str]] = {}
    try:
        prober = syn.SynProber(lambda t, ok, reason, _d: results.__setitem__(str(t), (ok, reason)))
    except PermissionError:  # no CAP_NET_RAW: covered by the fallback test above
        return
    answers = iter([1, -1, 1])  # the first SYN leaves, the second is refused, then the third

    def sendmmsg(_fd: int, _vec: int, _n: int, _flags: int) -> int:
        ctypes.set_errno(errno.EPERM)  # what an nftables output drop answers
        return next(answers)

    monkeypatch.setattr(syn, "_sendmmsg", sendmmsg)
    try:
        now = time.monotonic()
        for name in ("a", "b", "c"):
            prober.start(check_key(Check("tcp"), "127.0.0.1", free_port()), name, now)
        prober.flush()
        assert results == {"b": (False, "eperm")}
        assert prober.in_flight == 2
    finally:
        prober.close()
