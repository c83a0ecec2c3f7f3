"""One agent per state directory: two would fight over the same IPVS table.

Its own module so that ``lvs-agent apply`` takes the lock without importing the
daemon (asyncio, logging and the rest).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class InstanceLock:
    """One agent per state directory: two would fight over the same IPVS table."""

    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / "lvs-agent.lock"
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """None when acquired, else a sentence naming the holder or the problem."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            return f"cannot use state directory {self.path.parent}: {exc.strerror or exc}"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            return (
                f"another lvs-agent (pid {holder}) manages the IPVS table of state "
                f"directory {self.path.parent}; reload it with SIGHUP instead"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """PID of the running agent of this state directory (None: none runs)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 32).decode(errors="replace").strip()
                return int(text) if text.isdigit() else None
            return None  # nobody holds the lock: the PID in the file is stale
        finally:
            os.close(fd)
