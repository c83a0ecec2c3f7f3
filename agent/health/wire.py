"""Bytes in, bytes out: the HTTP/1.1 response reader and the DNS message codec of the probes.

This module owns the protocol parsing the probes need, sans I/O (h11's way): a
``ResponseReader`` is fed what the socket returned and says when it has read
enough; ``dns_query``/``dns_reply`` build and read one DNS message. It must
never touch a socket or a clock. Every read is bounded: a server that sends
endless headers or an endless body costs at most ``HEADER_LIMIT`` +
``body_limit`` bytes, after which the reader stops (a body check is made on the
first ``body_limit`` bytes).
"""

from __future__ import annotations

import struct
from typing import Final

HEADER_LIMIT: Final = 16384
BODY_LIMIT: Final = 65536


class ProtocolError(ValueError):
    """The peer sent something that is not the protocol (reason ``garbage``)."""


class ResponseReader:
    """One HTTP/1.x response, read incrementally.

    ``feed`` returns True once the reader needs nothing more: the status line
    when the body is not wanted, else the whole body (by Content-Length, chunked, or
    up to the end of the stream) or its first ``body_limit`` bytes.
    """

    def __init__(self, *, want_body: bool, body_limit: int = BODY_LIMIT, head: bool = False):
        self.want_body = want_body
        self.body_limit = body_limit
        self.head = head
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.truncated = False
        self.done = False
        self._buf = bytearray()
        self._in_body = False
        self._length: int | None = None  # Content-Length left to read
        self._chunk_state = "size"  # size | data | crlf
        self._chunk_left = 0
        self._until_close = False

    def feed(self, data: bytes) -> bool:
        if self.done:
            return True
        self._buf += data
        if not self._in_body and not self.want_body:
            # a status check needs the status line alone
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > HEADER_LIMIT:
                    raise ProtocolError("status line too long")
                if len(self._buf) >= 5 and not self._buf.startswith(b"HTTP/"):
                    raise ProtocolError("not HTTP")
                return False
            self._parse_status(bytes(self._buf[:end]))
            self.done = True
            return True
        if not self._in_body:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > HEADER_LIMIT:
                    raise ProtocolError("headers too long")
                if len(self._buf) >= 5 and not self._buf.startswith(b"HTTP/"):
                    raise ProtocolError("not HTTP")
                return False
            self._parse_head(bytes(self._buf[:end]))
            del self._buf[: end + 4]
            self._in_body = True
            if (
                not self.want_body
                or self.head
                or self.status in (204, 304)
                or (100 <= self.status < 200)
            ):
                self.done = True
                return True
        self._read_body()
        return self.done

    def eof(self) -> None:
        """The peer closed: complete for a body read to the end, else an error."""
        if self.done:
            return
        if not self._in_body:
            raise ProtocolError("closed before the headers ended")
        if self._until_close:
            self.done = True
            return
        raise ProtocolError("closed in the body")

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._parse_status(lines[0])
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ProtocolError("bad header line")
            self.headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        te = self.headers.get("transfer-encoding", "").lower()
        if te:
            # RFC 9112 6.3: chunked last means chunked; anything else runs to the close
            self._until_close = te.split(",")[-1].strip() != "chunked"
        elif "content-length" in self.headers:
            cl = self.headers["content-length"]
            if not cl.isdigit():
                raise ProtocolError("bad content-length")
            self._length = int(cl)
        else:
            self._until_close = True

    def _parse_status(self, line: bytes) -> None:
        self.status = status_code(line)
        parts = line.split(b" ", 2)
        self.reason = parts[2].decode("latin-1") if len(parts) > 2 else ""

    def _take(self, n: int) -> None:
        """Move up to ``n`` buffered bytes into the body, within the limit."""
        room = self.body_limit - len(self.body)
        chunk = self._buf[: min(n, room)]
        self.body += chunk
        del self._buf[:n]
        if len(self.body) >= self.body_limit:
            self.truncated = True
            self.done = True

    def _read_body(self) -> None:
        if self._length is not None:
            n = min(self._length, len(self._buf))
            self._length -= n
            self._take(n)
            if self._length == 0:
                self.done = True
            return
        if self._until_close:
            self._take(len(self._buf))
            return
        while not self.done:  # chunked: size line, data, CRLF, ...
            if self._chunk_state == "size":
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise ProtocolError("bad chunk size")
                    return
                size = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise ProtocolError("bad chunk size") from None
                del self._buf[: end + 2]
                if self._chunk_left == 0:
                    self.done = True  # the trailers are not needed
                    return
                self._chunk_state = "data"
            elif self._chunk_state == "data":
                n = min(self._chunk_left, len(self._buf))
                self._chunk_left -= n
                self._take(n)
                if self._chunk_left:
                    return
                self._chunk_state = "crlf"
            else:
                if len(self._buf) < 2:
                    return
                if self._buf[:2] != b"\r\n":
                    raise ProtocolError("bad chunk end")
                del self._buf[:2]
                self._chunk_state = "size"


def status_code(line: bytes) -> int:
    """The status code of an HTTP/1.x status line (without its CRLF)."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError("bad status line")
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise ProtocolError("bad status code")
    return status


def request(method: str, path: str, host: str) -> bytes:
    """An HTTP/1.1 request that asks the server to close after answering."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lvs-agent-health\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def status_matches(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= status <= hi for lo, hi in ranges)


def dns_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursion-desired query for ``name`` (dotted, root ``.``) of type ``qtype``."""
    out = bytearray(struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0))
    for label in name.strip(".").split(".") if name.strip(".") else []:
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out.append(len(raw))
        out += raw
    out += b"\x00" + struct.pack("!HH", qtype, 1)
    return bytes(out)


def dns_reply(data: bytes, qid: int) -> tuple[int, int]:
    """``(rcode, answer count)`` of the reply to query ``qid``; ProtocolError if it is not one."""
    if len(data) < 12:
        raise ProtocolError("short DNS reply")
    rid, flags, _qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if rid != qid & 0xFFFF or not flags & 0x8000:
        raise ProtocolError("not our DNS reply")
    return flags & 0x000F, an
