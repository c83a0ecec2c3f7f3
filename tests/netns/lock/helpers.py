"""Small helpers of the quorum netns tests."""

from __future__ import annotations

import subprocess
import sys
import time

from agent.lab.agents import REPO
from agent.lab.quorum import QuorumSite


def holder(site: QuorumSite, timeout: float = 20.0) -> str:
    """The one holder, once it has been alone for a moment (start-up preemption settled)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        held = site.holders()
        now = time.monotonic()
        current = held[0] if len(held) == 1 else None
        if current != last:
            last, since = current, now
        elif current is not None and now - since > 1.5:
            return current
        time.sleep(0.05)
    raise AssertionError(f"no single stable VIP holder within {timeout}s: {site.holders()}")


def cli(site: QuorumSite, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``lvs-agent ARGS -c <name's config>`` inside ``name``'s namespace."""
    agent = site.agents[name]
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            site.ns(name),
            sys.executable,
            "-m",
            "agent",
            *args,
            "-c",
            str(agent.config),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=30,
    )
