"""The daemon's side of the status socket: an asyncio Unix stream server.

One request per connection. A client has ``REQUEST_TIMEOUT`` seconds to send one
line of at most ``MAX_REQUEST`` bytes; at most ``MAX_CLIENTS`` are served at once
(more are answered ``busy``). A bad request gets an error answer and is counted
(``on_bad``); nothing else happens. Answers are encoded by ``encode`` (the daemon
passes its worker thread: a status of thousands of services is megabytes of JSON)
and written with a bounded wait, so a client that never reads costs nothing but its
connection. The socket is made mode 0600 (its directory is 0700), replaces a stale
one left by a crash, and is removed on ``close``. It never raises into the loop:
failures are logged and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from agent.status.protocol import (
    BAD_REQUEST,
    BUSY,
    MAX_REQUEST,
    OTHER_AGENT,
    REPLY_TIMEOUT,
    REQUEST_TIMEOUT,
    BadRequest,
    Request,
    encode,
    error,
    parse_request,
    same_dir,
)

log = logging.getLogger("lvs-agent")

MAX_CLIENTS = 8


class Handler(Protocol):
    """What the daemon answers; each returns the whole answer (``protocol.ok``/``error``)."""

    async def status(self) -> Mapping[str, object]: ...

    async def failover(self, instance: str | None) -> Mapping[str, object]: ...

    async def maint(self, vs: str, rs: str, on: bool) -> Mapping[str, object]: ...


Encoder = Callable[[Mapping[str, object]], Awaitable[bytes]]


async def _encode_here(message: Mapping[str, object]) -> bytes:
    return encode(message)


class StatusServer:
    def __init__(
        self,
        path: Path,
        handler: Handler,
        state_dir: str,
        *,
        on_bad: Callable[[str], None] = lambda why: None,
        encode_off_loop: Encoder = _encode_here,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.path = path
        self._handler = handler
        self._state_dir = state_dir
        self._on_bad = on_bad
        self._encode = encode_off_loop
        self._request_timeout = request_timeout
        self._server: asyncio.AbstractServer | None = None
        self._clients = 0
        self.requests = 0

    async def start(self) -> None:
        """Listen; OSError when the socket cannot be made (the caller degrades)."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # a crashed agent's: the instance lock says none runs
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST
        )
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients += 1
        try:
            if self._clients > MAX_CLIENTS:
                answer: Mapping[str, object] = error("too many clients; try again", BUSY)
            else:
                answer = await self._answer(reader)
            writer.write(await self._encode(answer))
            await asyncio.wait_for(writer.drain(), REPLY_TIMEOUT)
        except (OSError, TimeoutError):
            pass  # the client went away or does not read: nothing to do
        except Exception:
            log.exception("status socket: answering a request failed")
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader) -> Mapping[str, object]:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self._request_timeout)
            request = parse_request(line)
        except TimeoutError:
            return self._bad(f"no request line within {self._request_timeout:g}s")
        except asyncio.LimitOverrunError:
            return self._bad(f"request longer than {MAX_REQUEST} bytes")
        except asyncio.IncompleteReadError:
            return self._bad("request not ended by a newline")
        except BadRequest as exc:
            return self._bad(str(exc))
        self.requests += 1
        if request.state_dir is not None and not same_dir(request.state_dir, self._state_dir):
            return error(f"this agent's state_dir is {self._state_dir}", OTHER_AGENT)
        return await self._dispatch(request)

    def _bad(self, why: str) -> Mapping[str, object]:
        self._on_bad(why)
        return error(why, BAD_REQUEST)

    async def _dispatch(self, request: Request) -> Mapping[str, object]:
        if request.command == "status":
            return await self._handler.status()
        if request.command == "failover":
            return await self._handler.failover(request.instance)
        return await self._handler.maint(request.virtual_server, request.real_server, request.on)
