"""The status socket's wire format: one JSON object per line, each way.

Requests: ``{"command": "status"}``, ``{"command": "failover", "instance": NAME|null}``,
``{"command": "maint", "virtual_server": NAME, "real_server": "addr:port", "on": bool}``;
each may carry ``"state_dir"``: the agent answers only if it is its own (two agents
on one host each have their own socket, and a client looking in /run/lvs-agent must
not talk to the wrong one). Answers: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": TEXT, "code": CODE}``.

Pure: parsing and encoding only, no sockets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "agent.sock"
RUNTIME_DIR = "/run/lvs-agent"  # the unit's RuntimeDirectory=lvs-agent
MAX_REQUEST = 4096  # bytes, newline included
REQUEST_TIMEOUT = 2.0  # seconds a client has to send its request line
REPLY_TIMEOUT = 10.0  # seconds the server waits for a client to read its answer
COMMANDS = ("status", "failover", "maint")

# Error codes a client acts on.
BAD_REQUEST = "bad_request"
OTHER_AGENT = "other_agent"  # state_dir differs: not the agent the client wants
REFUSED = "refused"  # a valid request the agent cannot do (unknown instance, server...)
BUSY = "busy"


class BadRequest(ValueError):
    """A request line that is not a valid request; the message says why."""


@dataclass(frozen=True, slots=True)
class Request:
    command: str
    state_dir: str | None = None
    instance: str | None = None
    virtual_server: str = ""
    real_server: str = ""
    on: bool = False


def _text(data: Mapping[str, object], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise BadRequest(f"{key!r} must be a non-empty string")
    return value


def parse_request(line: bytes) -> Request:
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("a request is a JSON object")
    command = data.get("command")
    if command not in COMMANDS:
        raise BadRequest(f"'command' must be one of {', '.join(COMMANDS)}")
    state_dir = _text(data, "state_dir", optional=True)
    if command == "status":
        return Request("status", state_dir)
    if command == "failover":
        return Request("failover", state_dir, instance=_text(data, "instance", optional=True))
    on = data.get("on")
    if not isinstance(on, bool):
        raise BadRequest("'on' must be true or false")
    return Request(
        "maint",
        state_dir,
        virtual_server=_text(data, "virtual_server") or "",
        real_server=_text(data, "real_server") or "",
        on=on,
    )


def encode(message: Mapping[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def ok(result: object) -> dict[str, object]:
    return {"ok": True, "result": result}


def error(text: str, code: str = BAD_REQUEST) -> dict[str, object]:
    return {"ok": False, "error": text, "code": code}


def same_dir(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def server_path(state_dir: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon listens: systemd's runtime directory when the unit has one
    (``$RUNTIME_DIRECTORY``, its first entry), else ``state_dir``."""
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime or state_dir) / SOCKET_NAME


def client_paths(state_dir: str) -> list[Path]:
    """Where a client looks, in order; the answer's state_dir check picks the agent."""
    paths = [Path(state_dir) / SOCKET_NAME, Path(RUNTIME_DIR) / SOCKET_NAME]
    return list(dict.fromkeys(paths))
