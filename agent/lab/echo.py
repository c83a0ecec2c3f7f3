"""A TCP echo server for lab real servers: long-lived connections that carry data.

Lab, test and benchmark scaffolding (``python -m agent.lab.echo --port N``): every
byte a client sends comes back on the same connection, for as long as the client
keeps it open, so a test can tell whether an established connection still moves
data both ways after a director failover. One thread, ``selectors``, bounded
buffers; it never initiates anything.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import signal
import socket
import sys


def serve(port: int, max_clients: int = 4096) -> None:
    sel = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1024)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytes] = {}
    print(f"echo: listening on port {port}", flush=True)
    while True:
        for key, events in sel.select(timeout=1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                if len(pending) >= max_clients:
                    conn.close()
                    continue
                conn.setblocking(False)
                pending[conn] = b""
                sel.register(conn, selectors.EVENT_READ)
                continue
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    sel.unregister(sock)
                    pending.pop(sock, None)
                    sock.close()
                    continue
                if data:
                    pending[sock] += data
            out = pending.get(sock)
            if out:
                try:
                    sent = sock.send(out)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sel.unregister(sock)
                    pending.pop(sock, None)
                    sock.close()
                    continue
                pending[sock] = out[sent:]
                sel.modify(
                    sock,
                    selectors.EVENT_READ | (selectors.EVENT_WRITE if pending[sock] else 0),
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.lab.echo")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
