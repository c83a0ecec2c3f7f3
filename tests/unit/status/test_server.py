"""The status socket end to end in one process: the asyncio server, the blocking client."""

import asyncio
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

from agent.status import AgentUnavailable, StatusServer, ask
from agent.status.protocol import REFUSED, error, ok


class FakeHandler:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def status(self) -> Mapping[str, object]:
        self.calls.append(("status",))
        return ok({"vrrp": [{"name": "web", "state": "MASTER"}]})

    async def failover(self, instance: str | None) -> Mapping[str, object]:
        self.calls.append(("failover", instance))
        if instance == "nope":
            return error("no VRRP instance 'nope'", REFUSED)
        return ok({"handed_over": [instance or "all"]})

    async def maint(self, vs: str, rs: str, on: bool) -> Mapping[str, object]:
        self.calls.append(("maint", vs, rs, on))
        return ok({"changed": True, "text": "x"})


def raw(path: Path, data: bytes, shutdown: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def run_with_server(tmp_path: Path, body, **kw):  # type: ignore[no-untyped-def]
    handler = FakeHandler()
    bad: list[str] = []
    path = tmp_path / "agent.sock"

    async def main():  # type: ignore[no-untyped-def]
        server = StatusServer(path, handler, str(tmp_path), on_bad=bad.append, **kw)
        await server.start()
        try:
            return await asyncio.to_thread(body, path)
        finally:
            server.close()

    return asyncio.run(main()), handler, bad


def test_requests_answered_and_socket_private(tmp_path: Path) -> None:
    def body(path: Path):  # type: ignore[no-untyped-def]
        mode = stat.S_IMODE(os.stat(path).st_mode)
        answers = [
            ask(str(tmp_path), {"command": "status"}, paths=[path]),
            ask(str(tmp_path), {"command": "failover", "instance": "web"}, paths=[path]),
            ask(str(tmp_path), {"command": "failover", "instance": "nope"}, paths=[path]),
            ask(
                str(tmp_path),
                {"command": "maint", "virtual_server": "w", "real_server": "a:1", "on": False},
                paths=[path],
            ),
        ]
        return mode, answers

    (mode, answers), handler, bad = run_with_server(tmp_path, body)
    assert mode == 0o600
    assert answers[0] == {"ok": True, "result": {"vrrp": [{"name": "web", "state": "MASTER"}]}}
    assert answers[1]["ok"] is True
    assert answers[2] == {"ok": False, "error": "no VRRP instance 'nope'", "code": "refused"}
    assert handler.calls == [
        ("status",),
        ("failover", "web"),
        ("failover", "nope"),
        ("maint", "w", "a:1", False),
    ]
    assert bad == []
    assert not (tmp_path / "agent.sock").exists()  # removed on close


def test_bad_requests_answered_with_an_error_and_counted(tmp_path: Path) -> None:
    def body(path: Path):  # type: ignore[no-untyped-def]
        return [
            raw(path, b"hello\n"),
            raw(path, b'{"command": "status"'),  # no newline, then EOF
            raw(path, b'{"command": "' + b"x" * 10000 + b'"}\n'),
            raw(path, b"", shutdown=False),  # says nothing: the request timeout ends it
        ]

    answers, handler, bad = run_with_server(tmp_path, body, request_timeout=0.2)
    assert all(b'"ok":false' in a and b'"code":"bad_request"' in a for a in answers), answers
    assert len(bad) == 4
    assert any("longer than 4096" in why for why in bad)
    assert any("no request line" in why for why in bad)
    assert handler.calls == []


def test_other_agents_socket_skipped_and_missing_socket_reported(tmp_path: Path) -> None:
    def body(path: Path):  # type: ignore[no-untyped-def]
        missing = tmp_path / "none.sock"
        try:
            ask("/elsewhere", {"command": "status"}, paths=[path, missing])
        except AgentUnavailable as exc:
            return str(exc)
        return None

    text, handler, _ = run_with_server(tmp_path, body)
    assert text is not None
    assert "this agent's state_dir is" in text and "none.sock: no socket" in text
    assert handler.calls == []


def test_stale_socket_replaced(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "agent.sock"))
    stale.close()  # the file stays, nobody listens

    def body(path: Path):  # type: ignore[no-untyped-def]
        return ask(str(tmp_path), {"command": "status"}, paths=[path])["ok"]

    answer, _, _ = run_with_server(tmp_path, body)
    assert answer is True
