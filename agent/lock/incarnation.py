"""The persisted incarnation counter: one small file, bumped at every process start.

Owns the only disk write of the lock (once per start, never on the hot path).  The
incarnation makes ballots unique across restarts (Ballot = (counter, incarnation, node)),
and it keys the wire replay window.

Rule: ``new = max(stored + 1, floor(wall-clock seconds))``.  ``stored + 1`` is the
guarantee while the state directory survives; the wall-clock floor keeps the number
growing when it does not (reinstalled host), so peers do not drop us as a stale
incarnation.  Wall time is used here as an identity, never to measure time.

Must never be called more than once per process start, nor from the protocol core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

FILENAME: Final = "lock-incarnation"
MAX_INCARNATION: Final = 2**63 - 1


class IncarnationError(RuntimeError):
    """The stored incarnation is unreadable; refusing to guess a smaller one."""


def read_incarnation(state_dir: Path) -> int:
    """Current stored value (0 if never started)."""
    path = state_dir / FILENAME
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise IncarnationError(f"{path}: {exc}") from None
    try:
        value = int(text.strip())
    except ValueError:
        raise IncarnationError(f"{path}: not an integer") from None
    if not 0 <= value <= MAX_INCARNATION:
        raise IncarnationError(f"{path}: out of range")
    return value


def bump_incarnation(state_dir: Path, wall_clock: Callable[[], float] = time.time) -> int:
    """Compute, durably store and return this process's incarnation."""
    state_dir.mkdir(parents=True, exist_ok=True)
    new = max(read_incarnation(state_dir) + 1, int(wall_clock()))
    if new > MAX_INCARNATION:
        raise IncarnationError("incarnation overflow")
    path = state_dir / FILENAME
    tmp = state_dir / f".{FILENAME}.{os.getpid()}.tmp"
    # write-fsync-rename-fsync(dir): after a crash we see the old or the new value, never
    # a torn one, and never an old one once this function returned.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{new}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return new
