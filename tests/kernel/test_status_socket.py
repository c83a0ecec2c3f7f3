"""``lvs-agent status`` and ``maint`` against a running agent on real IPVS: the
kernel's weights and connection counts beside the configured ones, a maintenance flag
shown, applied (weight 0) and kept across a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.kernel.conftest import ipvsadm
from tests.kernel.test_daemon_reconcile import start_daemon, wait_for

REPO = Path(__file__).parents[2]
CONFIG = """\
state_dir: {state}
metrics: {{listen: "127.0.0.1:9469"}}
virtual_servers:
  - name: web
    address: 192.0.2.80
    port: 80
    protocol: tcp
    scheduler: wrr
    real_servers:
      - {{address: 10.0.0.1, port: 80, weight: 3}}
      - {{address: 10.0.0.2, port: 80, weight: 2}}
"""


def lvs(ns: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "agent", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "LVS_AGENT_CACHE_DIR": ""},
    )


def reals(ns: str, config: Path) -> dict[str, dict[str, Any]]:
    out = lvs(ns, config, "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["running"] is True
    (web,) = status["virtual_servers"]
    assert web["name"] == "web" and web["service"] == "TCP  192.0.2.80:80"
    return {f"{r['address']}:{r['port']}": r for r in web["real_servers"]}


def kernel_weight(ns: str, real: str = "10.0.0.2:80") -> int | None:
    for line in ipvsadm(ns, "-L", "-n").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[:2] == ["->", real]:
            return int(fields[3])
    return None


def stop(agent: subprocess.Popen[bytes], log: Path) -> None:
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=120) == 0, log.read_text()[-3000:]


def test_status_and_maintenance_across_a_restart(ns: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    log = tmp_path / "agent.log"
    agent = start_daemon(ns, config, log)
    try:
        wait_for("the service", lambda: "10.0.0.2:80" in ipvsadm(ns, "-L", "-n"), 120, agent)
        wait_for(
            "the status socket",
            lambda: '"running": true' in lvs(ns, config, "status", "--json").stdout,
            60,
            agent,
        )
        before = reals(ns, config)
        assert before["10.0.0.1:80"]["kernel_weight"] == 3
        assert before["10.0.0.2:80"]["kernel_weight"] == 2
        assert before["10.0.0.2:80"]["configured_weight"] == 2
        assert before["10.0.0.2:80"]["active"] == 0 and before["10.0.0.2:80"]["maint"] is False
        text = lvs(ns, config, "status").stdout
        assert "TCP  192.0.2.80:80 wrr" in text and "  -> 10.0.0.1:80" in text

        on = lvs(ns, config, "maint", "web", "10.0.0.2:80", "on")
        assert on.returncode == 0, on.stderr
        assert "web 10.0.0.2:80 now in maintenance" in on.stdout
        assert reals(ns, config)["10.0.0.2:80"]["maint"] is True
        wait_for("weight 0 in the kernel", lambda: kernel_weight(ns) == 0, 30, agent)
        refused = lvs(ns, config, "maint", "web", "10.0.0.9:80", "on")
        assert refused.returncode == 1 and "has no real server 10.0.0.9:80" in refused.stderr
    finally:
        stop(agent, log)

    agent = start_daemon(ns, config, tmp_path / "agent-2.log")
    try:
        wait_for(
            "the status socket",
            lambda: '"running": true' in lvs(ns, config, "status", "--json").stdout,
            60,
            agent,
        )
        assert (
            "maintenance: 1 real server(s) in maintenance" in (tmp_path / "agent-2.log").read_text()
        )
        assert reals(ns, config)["10.0.0.2:80"]["maint"] is True
        assert kernel_weight(ns) == 0  # still out after the restart
        off = lvs(ns, config, "maint", "web", "10.0.0.2:80", "off")
        assert off.returncode == 0 and "now out of maintenance" in off.stdout, off.stderr
        assert reals(ns, config)["10.0.0.2:80"]["maint"] is False
        wait_for("the configured weight back", lambda: kernel_weight(ns) == 2, 30, agent)
    finally:
        stop(agent, tmp_path / "agent-2.log")
