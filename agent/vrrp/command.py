"""Track scripts and notify commands: run one, bounded by its timeout, and leave nothing behind.

This module owns how the agent runs an external command: without a shell, with
stdin/stdout/stderr on /dev/null, in its own session (so its own process group,
and no signal meant for the agent's group reaches it). A command that outlives
its timeout, or whose caller stops waiting (cancellation at shutdown), is killed
with its whole process tree, not just the process the agent started: a track
script stuck in ``curl`` or a notify command that started a helper must not
leave them running, one more every ``interval``.

``kill_tree`` finds the tree with psutil (imported only then: the CLI and a
command that finishes in time never pay for it) and runs on a worker thread: it
reads /proc, which the asyncio loop must not wait for. It first stops what it
finds (SIGSTOP: a stopped process cannot fork), looks again for children of
what it stopped, then kills everything with SIGKILL: the process group, every
descendant found through parent links (also those that moved to another group or
session with ``setsid``), and every process still in the command's session
whose parent has gone. psutil checks each process's start time before signalling
it, so a PID reused in the meantime by an unrelated process is left alone. A
descendant that both left the session and lost its parent (a daemon that
double-forked) is out of reach by design: it asked to outlive its starter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import psutil

log = logging.getLogger("agent.vrrp")

FREEZE_ROUNDS: Final = 5  # looks for children forked while the tree was being stopped
REAP_TIMEOUT: Final = 5.0  # seconds to wait for the killed command itself to be reaped


async def run_command(argv: list[str], timeout: float) -> bool:
    """Run ``argv`` (no shell); True on exit status 0 within ``timeout``.

    On timeout or cancellation the command's whole process tree is killed
    (``kill_tree``) before this returns or re-raises.
    """
    status, reason = await run_status(argv, timeout)
    if reason == "timeout":
        log.warning("%s: still running after %gs; killed its process tree", argv[0], timeout)
    elif status is None:
        log.warning("cannot run %s: %s", argv[0] if argv else "?", reason)
    return status == 0


async def run_status(
    argv: list[str], timeout: float, env: Mapping[str, str] | None = None
) -> tuple[int | None, str]:
    """Run ``argv`` (no shell): ``(exit status, "")``, or ``(None, reason)``.

    ``env`` adds variables to the agent's own environment for this command.

    The reason is ``timeout`` (the whole tree was killed) or why the command
    could not start. A command killed by a signal has a negative status. On
    cancellation the tree is killed before the cancellation propagates.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
    except (OSError, ValueError) as e:
        return None, e.strerror or str(e) if isinstance(e, OSError) else str(e)
    try:
        return await asyncio.wait_for(proc.wait(), timeout), ""
    except TimeoutError:
        return None, "timeout"
    finally:
        if proc.returncode is None:  # timed out or cancelled
            with contextlib.suppress(Exception):
                await asyncio.to_thread(kill_tree, proc.pid)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), REAP_TIMEOUT)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL the command ``pid`` started in its own session, and all it started.

    Blocking (reads /proc): call it on a worker thread. Returns the PIDs found and
    signalled, the group's other members aside (killed with one ``killpg``).
    """
    try:
        import psutil
    except ImportError:  # degrade: the process group alone
        _signal_group(pid, signal.SIGSTOP)
        _signal_group(pid, signal.SIGKILL)
        return [pid]
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        found[pid] = psutil.Process(pid)
    _signal_group(pid, signal.SIGSTOP)
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            proc.suspend()
    for _ in range(FREEZE_ROUNDS):
        new = _descendants(found, session=pid)
        if not new:
            break
        for proc in new.values():
            with contextlib.suppress(psutil.Error):
                proc.suspend()
        found.update(new)
    _signal_group(pid, signal.SIGKILL)
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()  # checks the start time: a reused PID is not ours
    return sorted(found)


def _descendants(known: dict[int, psutil.Process], session: int) -> dict[int, psutil.Process]:
    """Processes not in ``known`` whose parent chain reaches it, or still in ``session``."""
    import psutil

    children: dict[int, list[psutil.Process]] = {}
    in_session: list[psutil.Process] = []
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info["ppid"]
        if ppid is not None:
            children.setdefault(ppid, []).append(proc)
        if proc.pid not in known and _session_of(proc.pid) == session:
            in_session.append(proc)
    out: dict[int, psutil.Process] = {p.pid: p for p in in_session}
    stack: list[int] = [*known, *out]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child.pid not in known and child.pid not in out:
                out[child.pid] = child
                stack.append(child.pid)
    return out


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
