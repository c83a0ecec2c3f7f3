"""`lvs-agent run` puts back what someone changed behind its back, at its interval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kernel.conftest import ipvsadm
from tests.kernel.test_reconcile import DATA, write_config


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, agent: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.poll() is None, f"the agent exited ({agent.returncode}) before {what}"
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_daemon(ns: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`lvs-agent run` in ``ns``, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "agent", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
            env={**os.environ, "LVS_AGENT_CACHE_DIR": ""},
        )


def daemon_config(tmp_path: Path, interval: str) -> Path:
    """every-option.yaml with this reconcile interval."""
    text = (DATA / "every-option.yaml").read_text()
    return write_config(
        tmp_path, text.replace("reconcile_interval: 30s", f"reconcile_interval: {interval}")
    )


@pytest.mark.usefixtures("every_option_schedulers")
def test_daemon_restores_the_table_after_an_operator_meddles(ns: str, tmp_path: Path) -> None:
    config = daemon_config(tmp_path, "1s")
    reference = (DATA / "every-option.ipvsadm").read_text()
    agent = start_daemon(ns, config, tmp_path / "agent.log")
    try:
        wait_for("the table", lambda: ipvsadm(ns, "-S", "-n") == reference, 120, agent)
        # A hand-made service, and changes to what the agent owns.
        ipvsadm(ns, "-A", "-t", "203.0.113.5:22", "-s", "rr")
        ipvsadm(ns, "-e", "-t", "192.0.2.100:80", "-r", "10.0.1.21:8080", "-m", "-w", "3")
        ipvsadm(ns, "-d", "-t", "192.0.2.62:80", "-r", "10.0.7.3:8080")
        ipvsadm(ns, "-D", "-u", "192.0.2.53:53")
        ipvsadm(ns, "-E", "-t", "[2001:db8::100]:443", "-s", "rr")
        ipvsadm(ns, "-a", "-t", "192.0.2.63:80", "-r", "10.9.9.9:80", "-m")
        foreign = "-A -t 203.0.113.5:22 -s rr\n"
        wait_for(
            "the next reconcile to put it back",
            lambda: ipvsadm(ns, "-S", "-n").replace(foreign, "") == reference,
            60,
            agent,
        )
        assert foreign in ipvsadm(ns, "-S", "-n")
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=60)
        assert rc == 0, (tmp_path / "agent.log").read_text()[-3000:]
    assert ipvsadm(ns, "-S", "-n").replace(foreign, "") == reference  # left in place


@pytest.mark.usefixtures("every_option_schedulers")
def test_reload_applies_what_the_file_changed_before_the_full_pass(ns: str, tmp_path: Path) -> None:
    config = daemon_config(tmp_path, "1h")
    reference = (DATA / "every-option.ipvsadm").read_text()
    log_path = tmp_path / "agent.log"
    agent = start_daemon(ns, config, log_path)
    try:
        wait_for("the table", lambda: ipvsadm(ns, "-S", "-n") == reference, 120, agent)
        # Drift in a service the new file does not change, then one weight changed.
        ipvsadm(ns, "-e", "-t", "192.0.2.64:80", "-r", "10.0.7.6:80", "-m", "-w", "9")
        config.write_text(
            config.read_text().replace("port: 8080, weight: 50,", "port: 8080, weight: 75,")
        )
        agent.send_signal(signal.SIGHUP)
        wait_for(
            "both",
            lambda: (
                ipvsadm(ns, "-S", "-n")
                == reference.replace("10.0.1.22:8080 -m -w 50", "10.0.1.22:8080 -m -w 75")
            ),
            60,
            agent,
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=60)
    lines = log_path.read_text().splitlines()
    assert rc == 0, "\n".join(lines[-40:])
    assert any("virtual servers, 1 changed)" in line for line in lines), lines[-40:]
    edit = next(i for i, s in enumerate(lines) if "10.0.1.22:8080 weight 50 -> 75" in s)
    drift = next(i for i, s in enumerate(lines) if "10.0.7.6:80 weight 9 -> 1" in s)
    assert edit < drift, "\n".join(lines[-40:])


def split_part(lo: int, hi: int, weights: dict[int, int] | None = None) -> str:
    """An included file: services lo..hi-1, two NAT real servers each."""
    weights = weights or {}
    out = ["virtual_servers:"]
    for i in range(lo, hi):
        out.append(
            f"  - name: s{i}\n    address: 10.77.{i // 250}.{i % 250 + 1}\n    port: 80\n"
            "    real_servers:"
        )
        for j in range(2):
            w = weights.get(i, 1) if j == 1 else 1
            out.append(f"      - {{address: 172.30.{j}.{i % 250 + 1}, port: 8080, weight: {w}}}")
    return "\n".join(out) + "\n"


def test_reload_of_a_split_configuration_applies_the_changed_file(ns: str, tmp_path: Path) -> None:
    """include: four files of 150 services (over the size the worker process reads);
    one weight changed in one file and a fifth file added: SIGHUP applies both."""
    conf = tmp_path / "conf.d"
    conf.mkdir()
    for k in range(4):
        (conf / f"{k}.yaml").write_text(split_part(k * 150, k * 150 + 150))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"state_dir: {tmp_path}/state\nreconcile_interval: 1h\ninclude: [conf.d/*.yaml]\n"
    )
    log_path = tmp_path / "agent.log"

    def weight_of(table: str, rip: str) -> int | None:
        for line in table.splitlines():
            if "-t 10.77.1.56:80" in line and f"-r {rip}:8080" in line:
                return int(line.split("-w ")[1])
        return None

    agent = start_daemon(ns, config, log_path)
    try:
        wait_for("the table", lambda: ipvsadm(ns, "-S", "-n").count("-A -t") == 600, 300, agent)
        assert weight_of(ipvsadm(ns, "-S", "-n"), "172.30.1.56") == 1  # service 305
        (conf / "2.yaml").write_text(split_part(300, 450, {305: 7}))
        (conf / "4.yaml").write_text(split_part(600, 601))
        agent.send_signal(signal.SIGHUP)
        wait_for(
            "the new weight and the new service",
            lambda: (
                weight_of(table := ipvsadm(ns, "-S", "-n"), "172.30.1.56") == 7
                and table.count("-A -t") == 601
            ),
            120,
            agent,
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=60)
    lines = log_path.read_text().splitlines()
    assert rc == 0, "\n".join(lines[-40:])
    assert any("(601 virtual servers, 2 changed)" in line for line in lines), lines[-40:]
