"""Who answers on the VIP: a UDP responder per director and a prober on the client.

``python -m bench.vrrp_failover.probe echo NAME PORT`` (in a director's namespace)
answers every datagram on PORT with NAME, whichever of its addresses it came to.

``python -m bench.vrrp_failover.probe client VIP PORT INTERVAL SECONDS`` (in the
client's namespace) sends a datagram to VIP:PORT every INTERVAL seconds for at most
SECONDS, and prints ``<time.monotonic()> <NAME>`` each time the answering director
changes, and for the first answer after a silence of ``GAP`` (so that answers that
resume from the same director are seen), flushed at once. All namespaces share
CLOCK_MONOTONIC, so the benchmark compares these times with its own.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import time


def echo(name: str, port: int) -> None:
    answer = name.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        while True:
            _, peer = sock.recvfrom(64)
            sock.sendto(answer, peer)


GAP = 0.05  # seconds without an answer after which the next answer is reported again


def client(vip: str, port: int, interval: float, seconds: float) -> None:
    out = sys.stdout
    last = ""
    last_at = 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        start = time.monotonic()
        next_send = start
        while (now := time.monotonic()) < start + seconds:
            if now >= next_send:
                with contextlib.suppress(OSError):  # no neighbour yet: try next tick
                    sock.sendto(b"?", (vip, port))
                next_send = max(next_send + interval, now)
            # Wait for answers until the next send, stamping each as it arrives.
            ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
            while ready:
                try:
                    data = sock.recv(64)
                except OSError:  # EAGAIN, or an ICMP error reported on the socket
                    break
                name = data.decode(errors="replace")
                now = time.monotonic()
                if name != last or now - last_at > GAP:
                    out.write(f"{now:.6f} {name}\n")
                    out.flush()
                    last = name
                last_at = now


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
