"""Misbehaving real servers for the health netns tests, run inside the target namespace.

``python -m tests.netns.health.targets MODES_FILE`` serves, on each port the
JSON file ``MODES_FILE`` names (``{"tcp": {"8001": "ok"}, "udp": {...}}``), the
behaviour given, and re-reads the file every 50 ms so a test flips a server
from broken to healthy by rewriting it. TLS modes read ``CERT_DIR`` (the modes
file's directory): ``good.pem``, ``expired.pem``, ``wrongname.pem`` and their
keys. It prints ``ready`` once the first set of listeners is up.

TCP modes: ``ok`` (HTTP 200 ``hello healthy``), ``closed`` (no listener:
refused), ``hang`` (accept, never answer), ``rst`` (accept then reset),
``slow`` (answer after 3 s), ``503``, ``wrongbody``, ``redirect``,
``endless`` (a 200 whose chunked body never ends), ``garbage``, ``tls-ok``,
``tls-expired``, ``tls-wrongname`` (HTTPS with that certificate),
``tls-garbage`` (bytes that are no TLS), ``agent:ANSWER`` (the agent-check
line). UDP modes: ``echo``, ``closed`` (ICMP port unreachable), ``dns-ok``,
``dns-servfail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import struct
import sys
from pathlib import Path

HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello healthy"


def response(mode: str) -> bytes | None:
    if mode in ("ok", "tls-ok", "tls-expired", "tls-wrongname", "slow"):
        return HTTP_OK
    if mode == "503":
        return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
    if mode == "wrongbody":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nmaintenance!"
    if mode == "redirect":
        return b"HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n"
    if mode == "garbage":
        return os.urandom(64) + b"\r\n\r\n"
    return None


class Targets:
    def __init__(self, modes_file: Path):
        self.file = modes_file
        self.certs = modes_file.parent
        self.tcp: dict[int, str] = {}
        self.udp: dict[int, str] = {}
        self.servers: dict[int, asyncio.Server] = {}
        self.datagrams: dict[int, asyncio.DatagramTransport] = {}
        self.mtime = 0.0
        self.contexts: dict[str, ssl.SSLContext] = {}

    def context(self, name: str) -> ssl.SSLContext:
        ctx = self.contexts.get(name)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.certs / f"{name}.pem", self.certs / f"{name}.key")
            self.contexts[name] = ctx
        return ctx

    async def apply(self) -> None:
        try:
            mtime = self.file.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self.mtime:
            return
        self.mtime = mtime
        modes = json.loads(self.file.read_text())
        self.tcp = {int(p): m for p, m in modes.get("tcp", {}).items()}
        self.udp = {int(p): m for p, m in modes.get("udp", {}).items()}
        for port, mode in self.tcp.items():
            if mode == "closed" and port in self.servers:
                self.servers.pop(port).close()
            elif mode != "closed" and port not in self.servers:
                self.servers[port] = await asyncio.start_server(
                    lambda r, w, p=port: self.serve(p, r, w),
                    "0.0.0.0",
                    port,
                    backlog=1024,
                    reuse_address=True,
                )
        for port, mode in self.udp.items():
            if mode == "closed" and port in self.datagrams:
                self.datagrams.pop(port).close()
            elif mode != "closed" and port not in self.datagrams:
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda p=port: Datagram(self, p), local_addr=("0.0.0.0", port)
                )
                self.datagrams[port] = transport

    async def serve(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        mode = self.tcp.get(port, "closed")
        sock = writer.get_extra_info("socket")
        try:
            if mode == "hang":
                await asyncio.sleep(3600)
            elif mode == "rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            elif mode.startswith("agent:"):
                writer.write(mode[6:].encode() + b"\n")
                await writer.drain()
            elif mode == "tls-garbage":
                writer.write(b"this is not TLS at all\r\n" * 4)
                await writer.drain()
            elif mode.startswith("tls-"):
                name = {"tls-ok": "good", "tls-expired": "expired", "tls-wrongname": "wrongname"}[
                    mode
                ]
                await writer.start_tls(self.context(name))
                await self.http(mode, reader, writer)
            else:
                await self.http(mode, reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def http(
        self, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
        if mode == "slow":
            await asyncio.sleep(3.0)
        if mode == "endless":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
            for _ in range(100_000):  # bounded: ~100 MB, far beyond any probe's limit
                writer.write(chunk)
                await writer.drain()
            return
        data = response(mode)
        if data is not None:
            writer.write(data)
            await writer.drain()

    async def run(self) -> None:
        await self.apply()
        print("ready", flush=True)
        while True:
            await asyncio.sleep(0.05)
            await self.apply()


class Datagram(asyncio.DatagramProtocol):
    def __init__(self, targets: Targets, port: int):
        self.targets = targets
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        mode = self.targets.udp.get(self.port, "closed")
        assert self.transport is not None
        if mode == "echo":
            self.transport.sendto(b"pong " + data, addr)
        elif mode.startswith("dns-") and len(data) >= 12:
            rcode = 0 if mode == "dns-ok" else 2
            qid = data[:2]
            flags = struct.pack("!H", 0x8180 | rcode)
            self.transport.sendto(
                qid + flags + data[4:6] + b"\x00\x00\x00\x00\x00\x00" + data[12:], addr
            )


if __name__ == "__main__":
    asyncio.run(Targets(Path(sys.argv[1])).run())
