"""The real agent (``python -m agent run -c FILE``) on a lab node.

Lab, test and benchmark scaffolding: writes a node's configuration, starts the
daemon in the node's namespace, and answers the questions a test asks of a
running agent — what it logged, what its /metrics say (scraped over HTTP from
inside the namespace, where each agent listens on 127.0.0.1), which VRRP state
each instance is in. A node with no ``virtual_servers`` runs without IPVS, so
VRRP-only agents run on any kernel. Only the process started here is signalled.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agent.lab.topology import Host, Lab

REPO = Path(__file__).resolve().parents[2]
METRICS_PORT = 9469
STATE_NAMES = {0: "INIT", 1: "BACKUP", 2: "MASTER", 3: "FAULT"}
_STATE_LINE = re.compile(r"^lvs_agent_vrrp_state\{([^}]*)\} ([0-9.e+-]+)$", re.M)


def agent_config(
    host: Host,
    state_dir: Path,
    instances: list[dict[str, Any]],
    sync_groups: list[dict[str, Any]] | None = None,
    **top: Any,
) -> str:
    """A whole configuration file for ``host``: VRRP-only unless ``top`` adds more."""
    doc: dict[str, Any] = {
        "node": {"name": host.ns},
        "metrics": {"listen": f"127.0.0.1:{METRICS_PORT}"},
        "state_dir": str(state_dir),
        **top,
        "vrrp_instances": instances,
        "vrrp_sync_groups": sync_groups or [],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def metric_values(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of metric ``name`` in an exposition: labels -> value."""
    out: dict[frozenset[tuple[str, str]], float] = {}
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+|NaN)$", re.M)
    for m in pattern.finditer(text):
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        out[labels] = float(m.group(2))
    return out


class LabAgent:
    """One ``lvs-agent run`` on ``host``; ``log`` holds its stdout and stderr."""

    def __init__(self, lab: Lab, host: Host, config: str, workdir: Path, tag: str = "") -> None:
        self.lab = lab
        self.host = host
        label = f"{host.name}{tag}"
        self.config = workdir / f"agent-{label}.yaml"
        self.log = workdir / f"agent-{label}.log"
        self.config.write_text(config)
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = lab.spawn(
            host, [sys.executable, "-m", "agent", "run", "-c", str(self.config)], self.log, env
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def count(self, text: str) -> int:
        return self.text().count(text)

    def wait_for(self, text: str, timeout: float, occurrence: int = 1) -> float | None:
        """Poll the log until ``text`` appeared ``occurrence`` times; when seen, or None.

        Returns early (None) if the agent exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(text) >= occurrence:
                return time.monotonic()
            if not self.running():
                return time.monotonic() if self.count(text) >= occurrence else None
            time.sleep(0.02)
        return None

    def metrics(self, timeout: float = 2.0) -> str | None:
        """The /metrics exposition (None if the agent does not answer)."""
        body = self.lab.get(self.host, "127.0.0.1", METRICS_PORT, "/metrics", timeout=timeout)
        return None if body is None else body + "\n"  # Lab.get strips the last newline

    def states(self) -> dict[str, str]:
        """Instance -> INIT | BACKUP | MASTER | FAULT, from /metrics ({} if unreachable)."""
        text = self.metrics()
        if text is None:
            return {}
        found = {}
        for labels, value in metric_values(text, "lvs_agent_vrrp_state").items():
            found[dict(labels)["instance"]] = STATE_NAMES.get(int(value), "?")
        return found

    def wait_state(self, instance: str, state: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.states().get(instance) == state:
                return True
            if not self.running():
                return False
            time.sleep(0.05)
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing cleaned up (its VIPs stay in the kernel)."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int | None:
        return self.lab.stop(self.proc, signal.SIGTERM, timeout)
