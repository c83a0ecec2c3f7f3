"""How the interpreter's switch interval shares the lock between the event loop and the
daemon's worker thread (``agent.daemon.offload.SWITCH_INTERVAL``).

While the worker thread runs Python (decoding a dump, planning), every system call the
loop makes (a send, a receive, epoll) gives the interpreter lock away, and taking it back
waits until the worker has held it for the switch interval. The loop here does what a
protocol loop does: a datagram round trip with a partner process, then a 1 ms timer,
for ``--seconds``; the worker builds small dicts and tuples without pause. Printed for
each interval: the loop's round trips per second, their median and p99, and the
worker's units of work per second; and the loop alone, without the worker.

    .venv/bin/python bench/reload_safety/switch_interval.py [--seconds 3] [--rounds 3]

Rounds are interleaved (every interval once per round) so that a change of the
machine's load falls on all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import threading
import time

INTERVALS = (0.005, 0.001, 0.0002, 0.0001, 0.00005)  # 5 ms: CPython's default


def worker(stop: threading.Event, done: list[int]) -> None:
    while not stop.is_set():
        d = {}
        for i in range(1000):
            d[(i, "x")] = (i, i * 2, str(i))
        done[0] += 1


async def loop_side(seconds: float) -> list[float]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.fork()
    if pid == 0:  # the partner: echoes each datagram, in its own process
        a.close()
        while (m := b.recv(64)) != b"q":
            b.send(m)
        os._exit(0)
    b.close()
    a.setblocking(False)
    loop = asyncio.get_running_loop()
    took: list[float] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            start = time.perf_counter()
            await loop.sock_sendall(a, b"ping")
            await loop.sock_recv(a, 64)
            took.append(time.perf_counter() - start)
            await asyncio.sleep(0.001)
    finally:
        a.send(b"q")
        os.waitpid(pid, 0)
        a.close()
    return took


def one(interval: float | None, seconds: float) -> tuple[float, float, float, float]:
    before = sys.getswitchinterval()
    stop, done = threading.Event(), [0]
    thread = None
    if interval is not None:
        sys.setswitchinterval(interval)
        thread = threading.Thread(target=worker, args=(stop, done))
        thread.start()
    try:
        took = asyncio.run(loop_side(seconds))
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        sys.setswitchinterval(before)
    took.sort()
    return (
        len(took) / seconds,
        statistics.median(took) * 1e3,
        took[int(len(took) * 0.99)] * 1e3,
        done[0] / seconds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[float | None, list[tuple[float, float, float, float]]] = {}
    for _ in range(args.rounds):
        for interval in (*INTERVALS, None):
            runs.setdefault(interval, []).append(one(interval, args.seconds))
    print(f"{args.rounds} rounds of {args.seconds:g}s, medians (nproc {os.cpu_count()})")
    alone = statistics.median(r[0] for r in runs[None])
    for interval, rs in runs.items():
        trips = statistics.median(r[0] for r in rs)
        name = "loop alone" if interval is None else f"switch interval {interval * 1e3:g} ms"
        print(
            f"{name:>26}: {trips:6.0f} round trips/s ({trips / alone:.2f}x alone), "
            f"median {statistics.median(r[1] for r in rs):.2f} ms, "
            f"p99 {statistics.median(r[2] for r in rs):.2f} ms; "
            f"worker {statistics.median(r[3] for r in rs):.0f} units/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
