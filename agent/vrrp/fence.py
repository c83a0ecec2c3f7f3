"""The VIP fence: a child process that deletes a lease holder's VIPs when its hold ends.

``election: quorum`` VIPs carry a kernel valid lifetime, but lifetimes are whole
seconds and expire on a rounded second: a killed or frozen holder's VIP outlived its
hold by 300-1000 ms at ``lease: 200ms``. This child closes that gap:

- the agent (``Fence``, the parent side) starts it with ``sys.executable -m
  agent.vrrp.fence`` in its own session, and writes lines to its stdin:
  ``arm <ifindex> <vip/prefix> <deadline>`` (again with a later deadline on each
  renewal) and ``disarm <ifindex> <vip/prefix>`` when it removes the VIP itself.
  ``deadline`` is the lease's hold end on the lock's clock (CLOCK_BOOTTIME);
- at a deadline the child deletes that VIP (one hand-built RTM_DELADDR, ``vips``);
  pending input is read first, so a renewal that arrived in time always wins;
- on EOF (the agent died, e.g. kill -9) or SIGTERM it deletes every armed VIP at
  once and exits. It never deletes an address it was not armed for, and has
  nothing armed after the agent removed its VIPs itself and closed the pipe.

A frozen agent (SIGSTOP) keeps the pipe open: its VIPs go at the hold end. A frozen
VM freezes the child too; the kernel lifetime stays as that backstop.

``FenceTable`` is the pure core (the deadline table, tested alone); ``run`` the loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from ipaddress import ip_interface
from typing import Final

from agent.vrrp.packet import VipInterface

log = logging.getLogger(__name__)

Key = tuple[int, str]  # (ifindex, "vip/prefix")
MAX_LINE: Final = 256  # a longer line is a protocol error: dropped
CLOSE_WAIT: Final = 2.0  # seconds the parent waits for the child after closing the pipe


def boottime() -> float:
    """The lock's clock (agent.lock.transport.boottime), without importing asyncio."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    return time.monotonic() if clock_id is None else time.clock_gettime(clock_id)


@dataclass(slots=True)
class FenceTable:
    """Armed VIPs and their deadlines; every method is given ``now`` or needs none."""

    armed: dict[Key, float] = field(default_factory=dict)

    def arm(self, key: Key, deadline: float) -> None:
        """Arm, or re-arm with a new deadline (the latest message wins)."""
        self.armed[key] = deadline

    def disarm(self, key: Key) -> None:
        self.armed.pop(key, None)

    def next_deadline(self) -> float | None:
        return min(self.armed.values(), default=None)

    def expire(self, now: float) -> list[Key]:
        """Remove and return the keys whose deadline is ``now`` or earlier."""
        due = sorted(k for k, d in self.armed.items() if d <= now)
        for key in due:
            del self.armed[key]
        return due

    def drain(self) -> list[Key]:
        """Remove and return everything armed (EOF, SIGTERM)."""
        keys = sorted(self.armed)
        self.armed.clear()
        return keys

    def apply(self, line: str) -> bool:
        """One protocol line; False if it is malformed (then nothing changes)."""
        parts = line.split()
        try:
            if len(parts) == 4 and parts[0] == "arm":
                key = (int(parts[1]), str(ip_interface(parts[2])))
                deadline = float(parts[3])
                if deadline != deadline:  # NaN
                    return False
                self.arm(key, deadline)
                return True
            if len(parts) == 3 and parts[0] == "disarm":
                self.disarm((int(parts[1]), str(ip_interface(parts[2]))))
                return True
        except ValueError:
            return False
        return False


def key_for(index: int, vip: VipInterface) -> Key:
    return index, str(vip)


# ---------------------------------------------------------------- the child


class _Terminate(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminate


def _delete(rtnl: object, keys: list[Key], why: str) -> None:
    from agent.vrrp.vips import RTM_DELADDR, Rtnetlink

    assert isinstance(rtnl, Rtnetlink)
    for index, text in keys:
        try:
            code = rtnl.address(RTM_DELADDR, index, ip_interface(text))
        except OSError as e:
            log.error("fence: delete %s (ifindex %d): %s", text, index, e)
            continue
        if code == 0:
            log.warning("fence: deleted %s (ifindex %d): %s", text, index, why)
        elif code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
            log.error("fence: delete %s (ifindex %d): %s", text, index, os.strerror(code))


def run(fd: int = 0) -> int:
    """The child's loop: read ``fd`` until EOF, delete VIPs at their deadlines."""
    from agent.vrrp.vips import Rtnetlink

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides; SIGTERM ends us
    signal.signal(signal.SIGTERM, _on_sigterm)
    table = FenceTable()
    rtnl = Rtnetlink()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buffer = b""
    why = "the agent is gone"
    try:
        while True:  # one pass per input or deadline; ends on EOF or SIGTERM
            deadline = table.next_deadline()
            timeout = None if deadline is None else max(0, (deadline - boottime()) * 1000)
            ready = poller.poll(None if timeout is None else int(timeout) + 1)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_LINE:
                    buffer = b""
                for raw in lines:
                    if not table.apply(raw.decode("ascii", "replace")):
                        log.error("fence: bad message %r", raw[:MAX_LINE])
                continue  # read everything pending before any deadline acts
            _delete(rtnl, table.expire(boottime()), "its lease hold ended")
    except _Terminate:
        why = "SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _delete(rtnl, table.drain(), why)
        rtnl.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(sys.stdin.fileno())


# ---------------------------------------------------------------- the parent side


class Fence:
    """The agent's handle on its fence child: arm, disarm, close. Never raises."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self.errors = 0

    def start(self) -> None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent.vrrp.fence"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the agent's group is not for us
                close_fds=True,
            )
        except OSError as e:
            log.error("no VIP fence process (%s): VIPs rely on their kernel lifetime", e)
            return
        assert proc.stdin is not None
        self._proc = proc
        self._fd = proc.stdin.fileno()
        os.set_blocking(self._fd, False)  # a stuck child must not stall the event loop

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def arm(self, index: int, vip: VipInterface, deadline: float) -> None:
        self._send(f"arm {index} {vip} {deadline:.6f}\n")

    def disarm(self, index: int, vip: VipInterface) -> None:
        self._send(f"disarm {index} {vip}\n")

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, line.encode("ascii"))  # < PIPE_BUF: all or nothing
        except OSError as e:
            self.errors += 1
            log.error("VIP fence: %s (VIPs rely on their kernel lifetime)", e)
            if e.errno != errno.EAGAIN:
                self._fd = None

    def close(self) -> None:
        """Close the pipe (nothing is armed by then) and reap the child, by PID."""
        proc, self._proc, self._fd = self._proc, None, None
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            log.error("VIP fence %d did not exit; killing it", proc.pid)
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=CLOSE_WAIT)


if __name__ == "__main__":
    sys.exit(main())
