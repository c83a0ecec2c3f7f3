"""Track and notify commands: exit status, and nothing left running after a timeout.

The tree killed here is a real one, started by the test: a shell script that starts
a child in its own session (``setsid``), one in its group, and one whose parent exits
at once (orphaned, still in the script's session). Every PID it records must be gone
once ``run_command`` returns; the test kills whatever it started if not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.vrrp.command import kill_tree, run_command

TREE = """\
setsid sleep 300 &
echo "$!" >> "$1"
sleep 300 &
echo "$!" >> "$1"
sh -c 'sleep 300 & echo "$!" >> "$1"' sh "$1"
echo "$$" >> "$1"
echo ready >> "$1"
wait
"""


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


def _recorded(pidfile: Path) -> tuple[list[int], bool]:
    try:
        lines = pidfile.read_text().split()
    except FileNotFoundError:
        return [], False
    return [int(x) for x in lines if x.isdigit()], "ready" in lines


def _wait_gone(pids: list[int], bound: float = 10.0) -> list[int]:
    """Those of ``pids`` still running after at most ``bound`` seconds of polling."""
    deadline = time.monotonic() + bound
    while True:
        left = [p for p in pids if _running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    script = tmp_path / "tree.sh"
    script.write_text(TREE)
    pidfile = tmp_path / "pids"
    try:
        yield ["/bin/sh", str(script), str(pidfile)], pidfile
    finally:  # only what this test started, by PID
        for pid in _recorded(pidfile)[0]:
            if _running(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_exit_status_decides() -> None:
    assert asyncio.run(run_command(["/bin/sh", "-c", "exit 0"], 10.0))
    assert not asyncio.run(run_command(["/bin/sh", "-c", "exit 3"], 10.0))
    assert not asyncio.run(run_command(["/nonexistent/lvs-agent-check"], 10.0))


def test_timeout_kills_the_whole_tree(tree: tuple[list[str], Path]) -> None:
    argv, pidfile = tree
    assert not asyncio.run(run_command(argv, 3.0))
    pids, ready = _recorded(pidfile)
    assert ready and len(pids) == 4, pidfile.read_text()
    assert _wait_gone(pids) == []


def test_cancelled_command_takes_its_tree_with_it(tree: tuple[list[str], Path]) -> None:
    argv, pidfile = tree

    async def scenario() -> list[int]:
        task = asyncio.create_task(run_command(argv, 600.0))
        deadline = time.monotonic() + 30.0
        while not _recorded(pidfile)[1] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        pids, ready = _recorded(pidfile)
        assert ready, "the script did not start its tree"
        assert all(_running(p) for p in pids)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    pids = asyncio.run(scenario())
    assert len(pids) == 4
    assert _wait_gone(pids) == []


def test_kill_tree_of_a_finished_command_is_harmless() -> None:
    proc = asyncio.run(_spawn_and_reap())
    assert kill_tree(proc) in ([], [proc])


async def _spawn_and_reap() -> int:
    proc = await asyncio.create_subprocess_exec("/bin/true", start_new_session=True)
    await proc.wait()
    return proc.pid
