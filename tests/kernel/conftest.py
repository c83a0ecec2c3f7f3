"""Kernel tier: real IPVS, run inside the VM (``scripts/test`` boots it).

Outside the VM the tier is skipped with the reason; with LVS_AGENT_KERNEL_TIER=1
(set by the test command inside the VM) a missing IPVS fails the run instead.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from agent.lab import netns

KERNEL_TIER = os.environ.get("LVS_AGENT_KERNEL_TIER") == "1"


def why_no_ipvs() -> str | None:
    if os.geteuid() != 0:
        return "the kernel tier needs root"
    with contextlib.suppress(FileNotFoundError):
        subprocess.run(["modprobe", "ip_vs"], capture_output=True, check=False, timeout=60)
    if not os.path.exists("/proc/net/ip_vs"):
        return "the running kernel has no IPVS (modprobe ip_vs did not provide it)"
    return None


@pytest.fixture(scope="session", autouse=True)
def ipvs_kernel() -> None:
    why = why_no_ipvs()
    if why is None:
        return
    if KERNEL_TIER:
        pytest.fail(f"kernel tier: {why}")
    pytest.skip(f"kernel tier: {why}; it runs inside the VM (see README)")


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh network namespace: its own, empty IPVS table."""
    name = f"kt-{uuid.uuid4().hex[:8]}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def ipvsadm(ns: str, *args: str) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "ipvsadm", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, f"ipvsadm {' '.join(args)}: {proc.stderr}"
    return proc.stdout
