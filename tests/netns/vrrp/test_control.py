"""The status socket with real agents (VRRP-only, on the lab's front LAN):
``lvs-agent status [--json]`` from the running agent, ``failover INSTANCE`` moving one
instance and only that one, ``maint`` refused for an unknown server, bad requests
answered and counted, the kernel-only fallback without an agent, and systemd's
``WATCHDOG=1``/``STATUS=`` on a fake NOTIFY_SOCKET, withheld while the loop is wedged
(a test-side SIGUSR2 handler that sleeps in the agent's main thread)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.lab.agents import REPO, agent_config

from ..support import metric, wait_until
from .helpers import Site, address, instance

MDI = 0.8  # Master_Down_Interval at 200 ms adverts, with Skew_Time


def lvs(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``lvs-agent ARGS -c CONFIG`` from the host: the socket is a path, not per namespace."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def status(config: Path) -> dict[str, Any]:
    out = lvs(config, "status", "--json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def states(config: Path) -> dict[str, str]:
    return {i["name"]: i["state"] for i in status(config)["vrrp"]}


def test_status_failover_one_instance_and_maint(site: Site) -> None:
    web, api = "192.0.2.131/32", "192.0.2.132/32"
    t0 = time.monotonic()
    high = site.agent(1, [instance(31, web, 200, name="web"), instance(32, api, 200, name="api")])
    low = site.agent(2, [instance(31, web, 100, name="web"), instance(32, api, 100, name="api")])
    for vip in (web, api):
        assert site.watch.wait_added(address(vip), 15, node="d1", after=t0), high.text()
    wait_until("d2 backup", lambda: low.states() == {"web": "BACKUP", "api": "BACKUP"}, 10)

    st = status(high.config)
    assert st["running"] is True and st["agent"]["config"] == str(high.config)
    assert {i["name"]: i["state"] for i in st["vrrp"]} == {"web": "MASTER", "api": "MASTER"}
    assert st["vrrp"][0]["master"]["address"] == "self"
    assert st["virtual_servers"] == [] and st["kernel"]["available"] is False
    seen = {i["name"]: i["master"] for i in status(low.config)["vrrp"]}
    assert seen["web"]["address"] == "192.0.2.2" and seen["web"]["priority"] == 200
    text = lvs(high.config, "status")
    assert text.returncode == 0, text.stderr
    assert "VRRP instance" in text.stdout and "MASTER" in text.stdout

    # failover web: d2 takes web, api stays on d1 (d1 outranks d2 but does not preempt).
    t1 = time.monotonic()
    out = lvs(high.config, "failover", "web")
    assert out.returncode == 0, out.stderr
    assert "web: handed over" in out.stdout
    assert site.watch.wait_added(address(web), 10, node="d2", after=t1), low.text()
    time.sleep(4 * MDI)
    assert site.holders(web) == ["d2"]
    assert site.holders(api) == ["d1"]
    after = {i["name"]: i for i in status(high.config)["vrrp"]}
    assert after["web"]["state"] == "BACKUP" and after["web"]["handed_over_for"] > 0
    assert after["api"]["state"] == "MASTER"
    assert states(low.config) == {"web": "MASTER", "api": "BACKUP"}
    assert "failover: web: handed over" in high.text()

    bad = lvs(high.config, "failover", "nope")
    assert bad.returncode == 1 and "no VRRP instance 'nope'" in bad.stderr
    maint = lvs(high.config, "maint", "www", "10.0.0.1:80", "on")
    assert maint.returncode == 1 and "no virtual server 'www'" in maint.stderr
    state_dir = Path(st["agent"]["state_dir"])
    assert not (state_dir / "maintenance.json").exists()

    # A bad request on the socket: an error answer, a log line and a count.
    sock_path = state_dir / "agent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(b"reboot please\n")
        answer = json.loads(s.makefile().readline())
    assert answer["ok"] is False and answer["code"] == "bad_request"
    metrics = high.metrics()
    assert metrics is not None
    assert metric(metrics, "lvs_agent_errors_total", kind="status_request") == 1

    # Without the agent: the kernel-only view, and it says so — on this kernel, which has
    # no IPVS, in the one sentence that also says what to do about the kernel.
    high.stop()
    gone = lvs(high.config, "status")
    (line,) = gone.stderr.strip().splitlines()
    assert "no running agent answered" in line and "modprobe ip_vs" in line, line


def test_watchdog_pings_only_while_the_loop_runs(site: Site, tmp_path: Path) -> None:
    vip = "192.0.2.133/32"
    host = site.lab.director(3)
    site.vips.add(vip)
    config = tmp_path / "agent-watchdog.yaml"
    config.write_text(
        agent_config(host, tmp_path / "state-watchdog", [instance(33, vip, 200, name="web")])
    )
    notify = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify))
    receiver.settimeout(0.2)
    # Test-side hook only: SIGUSR2 makes the agent's main thread (its event loop) sleep.
    wrapper = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR2, lambda *a: time.sleep(3))\n"
        "from agent.cli import run\n"
        "run()\n"
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        NOTIFY_SOCKET=str(notify),
        WATCHDOG_USEC="600000",
    )
    log = tmp_path / "agent-watchdog.log"
    proc = site.lab.spawn(host, [sys.executable, "-c", wrapper, "run", "-c", str(config)], log, env)
    got: list[tuple[float, str]] = []

    def receive(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = receiver.recv(4096)
            except TimeoutError:
                continue
            got.append((time.monotonic(), data.decode()))

    try:
        receive(6.0)
        messages = [m for _, m in got]
        assert any(m.startswith("READY=1") for m in messages), (messages, log.read_text())
        assert "STATUS=VRRP web MASTER; 0 services; 0 real servers" in messages, messages
        pings = [t for t, m in got if m == "WATCHDOG=1"]
        assert len(pings) >= 8, messages
        # STATUS= is sent when it changes, not every second.
        assert sum(m.startswith("STATUS=VRRP web MASTER") for m in messages) == 1
        wedged = time.monotonic()
        os.kill(proc.pid, signal.SIGUSR2)
        receive(5.0)
        pings = [t for t, m in got if m == "WATCHDOG=1" and t > wedged]
        assert pings, "pings resume once the loop runs again"
        gaps = [b - a for a, b in zip([wedged, *pings], pings, strict=False)]
        assert max(gaps) >= 2.5, gaps  # nothing while the loop slept 3 s
        assert "pinging every 0.3s" in log.read_text()
    finally:
        receiver.close()
        site.lab.stop(proc, signal.SIGTERM, 20)
