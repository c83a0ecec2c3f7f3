"""Ask the running agent over its status socket (blocking: the command line's side).

``ask`` tries the agent's socket in ``state_dir``, then in /run/lvs-agent, and takes
the first agent that answers for that ``state_dir``; ``AgentUnavailable`` says why
none did. Every read and the whole answer are bounded.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from agent.status.protocol import OTHER_AGENT, client_paths, encode

TIMEOUT = 15.0  # seconds for a whole answer (a status of 10,000 services is megabytes)
MAX_ANSWER = 256 * 1024 * 1024


class AgentUnavailable(Exception):
    """No running agent answered; the message says what was tried."""


def _exchange(path: Path, request: dict[str, object], timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(encode(request))
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete answer in time")
            s.settimeout(left)
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if chunk.endswith(b"\n") or size > MAX_ANSWER:
                break
    answer = json.loads(b"".join(chunks))
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    return answer


def ask(
    state_dir: str,
    request: dict[str, object],
    *,
    timeout: float = TIMEOUT,
    paths: list[Path] | None = None,
) -> dict[str, object]:
    """The agent's answer (``{"ok": ...}``) to ``request``, sent to the agent of
    ``state_dir``. Raises AgentUnavailable when no such agent answers."""
    request = {**request, "state_dir": state_dir}
    tried: list[str] = []
    for path in paths if paths is not None else client_paths(state_dir):
        try:
            answer = _exchange(path, request, timeout)
        except FileNotFoundError:
            tried.append(f"{path}: no socket")
            continue
        except (OSError, ValueError) as exc:
            tried.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if answer.get("code") == OTHER_AGENT:
            tried.append(f"{path}: {answer.get('error')}")
            continue
        return answer
    raise AgentUnavailable("; ".join(tried) or "no socket to try")
