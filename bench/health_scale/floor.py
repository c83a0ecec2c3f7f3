"""The floor under a Python SYN prober: CPU per probe with no scheduling and no parsing.

``sudo .venv/bin/python -m bench.health_scale --floor [--seconds 10] [--tcp 10000] [--http 0]``

In the benchmark's namespaces, two bare loops wake every 5 ms and send the
SYNs due in that slice (``--tcp`` targets, each once a second, packets built
once before the clock starts) from one raw socket, then read every answer
without looking at it; beside them, the engine and HAProxy on the same targets:

- ``sendto``: one ``sendto`` and one ``recv`` per probe (the engine before
  batching);
- ``sendmmsg``: one ``sendmmsg`` and one ``recvmmsg`` per wake-up
  (``agent.health.syn``'s vectors);
- ``engine``: the engine itself (``run.engine``), tcp checks only, every 1 s;
- ``haproxy``: HAProxy alone on the tcp targets, ``check inter 1s``.

With ``--http N``, three more on N HTTP targets (``GET /``, every 2 s) alone:
``http``, a bare loop waking every 5 ms that makes each due probe's syscalls
(socket, SO_LINGER, connect, one edge-triggered ``epoll_ctl``, send, recv,
close: the engine's HTTP probe) with the request built once and no parsing,
then the engine and HAProxy. They all take turns ``--rounds`` times, so a
machine whose load changes meanwhile weighs on each alike; the table shows each
one's median round.

Whatever the engine spends above the ``sendmmsg`` loop is its own Python per
probe (schedule, ports, sequence numbers, checksums, matching answers, state);
the loop itself is what any Python prober pays at least. Each round goes to
``results-floor.json`` beside this file.
"""

from __future__ import annotations

import ctypes
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.health_scale.run import (
    HERE,
    ROOT,
    TCP_NET,
    TGT,
    addresses,
    in_checker,
    run_haproxy,
    topology_down,
    topology_up,
)

MODES = ("sendto", "sendmmsg", "engine", "haproxy")


def packets(n: int) -> list[tuple[bytes, str]]:
    """One SYN per target (fixed port and sequence number), checksummed."""
    from agent.health.syn import PORT_LO, _fold, _words

    out = []
    for i, a in enumerate(addresses(TCP_NET, n)):
        sport, seq = PORT_LO + i % 4000, 12345 + i
        pseudo = socket.inet_aton("10.99.0.1") + socket.inet_aton(a)
        pseudo += struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
        hdr = struct.pack("!HHIIHHHH", sport, 80, seq, 0, 0x5002, 0xFFFF, 0, 0)
        check = ~_fold(_words(pseudo) + _words(hdr)) & 0xFFFF
        out.append((struct.pack("!HHIIHHHH", sport, 80, seq, 0, 0x5002, 0xFFFF, check, 0), a))
    return out


def http_loop(seconds: float, n: int) -> tuple[int, int]:
    """Each of ``n`` targets probed every 2 s with the engine's HTTP syscalls, nothing more."""
    import errno
    import select

    from bench.health_scale.run import HTTP_NET

    req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    linger = struct.pack("ii", 1, 0)
    targets = [(a, 8080) for a in addresses(HTTP_NET, n)]
    ep = select.epoll()
    mask = select.EPOLLOUT | select.EPOLLIN | select.EPOLLET
    pending: dict[int, list[Any]] = {}  # fd -> socket, request sent
    tick = 0.005
    quota = 0.0  # probes due and not started yet (n / 2 a second)
    sent = got = i = 0
    start = time.monotonic()
    next_at = start
    while next_at - start < seconds:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at += tick
        for fd, ev in ep.poll(0, 8192):
            entry = pending.get(fd)
            if entry is None:
                continue
            s = entry[0]
            if not entry[1] and ev & select.EPOLLOUT:
                s.send(req)
                entry[1] = True
            elif entry[1] and ev & select.EPOLLIN:
                s.recv(65536)
                got += 1
                del pending[fd]
                s.close()
        quota += n / 2 * tick
        per_tick = int(quota)
        quota -= per_tick
        for t in targets[i : i + per_tick]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            if s.connect_ex(t) not in (0, errno.EINPROGRESS):
                s.close()
                continue
            ep.register(s.fileno(), mask)
            pending[s.fileno()] = [s, False]
            sent += 1
        i = (i + per_tick) % n
    for entry in pending.values():
        entry[0].close()
    ep.close()
    return sent, got


def loop(mode: str, seconds: float, n: int, out: str) -> None:
    from agent.health import syn

    if mode == "http":
        me = psutil.Process()
        cpu0 = me.cpu_times()
        sent, got = http_loop(seconds, n)
        cpu1 = me.cpu_times()
        Path(out).write_text(
            json.dumps(
                {
                    "mode": mode,
                    "sent": sent,
                    "answers": got,
                    "cpu_user_s": cpu1.user - cpu0.user,
                    "cpu_system_s": cpu1.system - cpu0.system,
                    "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
                }
            )
        )
        return

    pkts = packets(n)
    send = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    recv = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    recv.setblocking(False)
    recv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tick = 0.005
    per_tick = max(1, int(n * tick))
    if mode == "sendmmsg":
        # every target's packet and address in its own slot, vectors built once
        data = ctypes.create_string_buffer(20 * n)
        names = ctypes.create_string_buffer(16 * n)
        for i, (p, a) in enumerate(pkts):
            ctypes.memmove(ctypes.addressof(data) + 20 * i, p, 20)
            syn._NAME.pack_into(names, 16 * i, socket.AF_INET, socket.inet_aton(a))
        mmsg = syn._vectors(data, 20, names, 16, n)
        base = ctypes.addressof(mmsg)
        rbuf = ctypes.create_string_buffer(syn.RECV_SIZE * syn.RECV_BATCH)
        rmmsg = syn._vectors(rbuf, syn.RECV_SIZE, None, 0, syn.RECV_BATCH)
        rbase = ctypes.addressof(rmmsg)
    sent = got = 0
    me = psutil.Process()
    cpu0 = me.cpu_times()
    start = time.monotonic()
    next_at, i = start, 0
    while next_at - start < seconds:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at += tick
        if mode == "sendmmsg":
            k = min(per_tick, n - i)
            sent += syn._sendmmsg(send.fileno(), base + 64 * i, k, 0)
            while True:
                r = syn._recvmmsg(recv.fileno(), rbase, syn.RECV_BATCH, syn._MSG_DONTWAIT, None)
                if r <= 0:
                    break
                got += r
                if r < syn.RECV_BATCH:
                    break
        else:
            for p, a in pkts[i : i + per_tick]:
                send.sendto(p, (a, 0))
                sent += 1
            while True:
                try:
                    recv.recv(128)
                except BlockingIOError:
                    break
                got += 1
        i = (i + per_tick) % n
    cpu1 = me.cpu_times()
    Path(out).write_text(
        json.dumps(
            {
                "mode": mode,
                "sent": sent,
                "answers": got,
                "cpu_user_s": cpu1.user - cpu0.user,
                "cpu_system_s": cpu1.system - cpu0.system,
                "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            }
        )
    )


def in_target() -> list[str]:
    return ["ip", "netns", "exec", TGT, sys.executable, "-m", "bench.health_scale"]


def main(seconds: float, n: int, n_http: int, rounds: int) -> None:
    modes = MODES + (("http", "engine-http", "haproxy-http") if n_http else ())
    topology_up()
    targets = subprocess.Popen(
        [*in_target(), "--role", "targets"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="health-floor-"))
    rows: list[dict[str, Any]] = []
    try:
        assert targets.stdout is not None and targets.stdout.readline().strip() == "ready"
        for _ in range(rounds):
            for mode in modes:
                if mode == "engine-http":
                    out = tmp / "engine.json"
                    args = ["--role", "engine", "--out", str(out), "--seconds", str(seconds)]
                    args += ["--tcp", "0", "--http", str(n_http)]
                    subprocess.run(in_checker(args), cwd=ROOT, check=True)
                    e = json.loads(out.read_text())
                    r = {"mode": mode, "sent": e["probes"]} | {
                        k: e[k] for k in ("cpu_s", "cpu_user_s", "cpu_system_s")
                    }
                elif mode == "haproxy-http":
                    h = run_haproxy(seconds, 0, n_http, tmp)
                    r = {"mode": mode, "sent": int(seconds * n_http / 2)} | {
                        k: h[k] for k in ("cpu_s", "cpu_user_s", "cpu_system_s")
                    }
                elif mode == "engine":
                    out = tmp / "engine.json"
                    args = ["--role", "engine", "--out", str(out), "--seconds", str(seconds)]
                    args += ["--tcp", str(n), "--http", "0"]
                    subprocess.run(in_checker(args), cwd=ROOT, check=True)
                    e = json.loads(out.read_text())
                    r = {"mode": mode, "sent": e["probes"]} | {
                        k: e[k] for k in ("cpu_s", "cpu_user_s", "cpu_system_s")
                    }
                elif mode == "haproxy":
                    h = run_haproxy(seconds, n, 0, tmp)
                    r = {"mode": mode, "sent": int(seconds * n)} | {
                        k: h[k] for k in ("cpu_s", "cpu_user_s", "cpu_system_s")
                    }
                else:
                    out = tmp / f"{mode}.json"
                    args = ["--role", f"floor-{mode}", "--out", str(out)]
                    args += ["--seconds", str(seconds), "--tcp", str(n), "--http", str(n_http)]
                    subprocess.run(in_checker(args), cwd=ROOT, check=True)
                    r = json.loads(out.read_text())
                r["us_per_probe"] = 1e6 * r["cpu_s"] / max(1, r["sent"])
                r["user_us_per_probe"] = 1e6 * r["cpu_user_s"] / max(1, r["sent"])
                r["system_us_per_probe"] = 1e6 * r["cpu_system_s"] / max(1, r["sent"])
                print(json.dumps(r), flush=True)
                rows.append(r)
    finally:
        targets.kill()
        targets.wait()
        topology_down()
    (HERE / "results-floor.json").write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d"), "rounds": rows}, indent=1) + "\n"
    )
    print(f"{'loop':>12} {'µs/probe':>9} {'user':>6} {'system':>7}  (median of {rounds})")
    for mode in modes:
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["us_per_probe"])
        m = mine[len(mine) // 2]
        print(
            f"{mode:>12} {m['us_per_probe']:9.1f} {m['user_us_per_probe']:6.1f} "
            f"{m['system_us_per_probe']:7.1f}"
        )
