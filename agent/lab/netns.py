"""Network namespaces for the lab and the tests.

Lab and test scaffolding only: the agent itself never creates namespaces. The
topology is built with iproute2's ``ip`` because it is what an operator reading
the lab would type; the agent's own data plane (IPVS, VIPs) goes through netlink.

``entered(name)`` switches the *calling thread* into a namespace (Linux keeps the
network namespace per thread), so a test can open netlink sockets that talk to
that namespace's IPVS table and then switch back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterator, Sequence

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace ``name``."""
    with (
        open("/proc/thread-self/ns/net", "rb") as home,
        open(f"{NETNS_RUN_DIR}/{name}", "rb") as target,
    ):
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS`` (inside ``netns`` when given) and return its stdout."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def sysctl(netns: str, key: str, value: str) -> None:
    """Write a sysctl inside ``netns`` (per-namespace keys only)."""
    path = "/proc/sys/" + key.replace(".", "/")
    with entered(netns), open(path, "w") as f:
        f.write(value)


def exists(name: str) -> bool:
    return os.path.exists(f"{NETNS_RUN_DIR}/{name}")


def add(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete(name: str) -> None:
    if exists(name):
        ip("netns", "del", name, check=False)
