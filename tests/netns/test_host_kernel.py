"""The agent and the lab on this machine's kernel, which may have no IPVS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.lab import netns
from agent.lab.topology import Lab

ROOT = Path(__file__).resolve().parents[2]


def lvs_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


# Allowed to skip (tests/skips-allowed.txt): on a kernel with IPVS there is no error to check.
@pytest.mark.skipif(Path("/proc/net/ip_vs").exists(), reason="this kernel has IPVS")
@pytest.mark.parametrize("command", ["plan", "apply", "status"])
def test_without_ipvs_one_clear_sentence(command: str) -> None:
    proc = lvs_agent(command, "-c", str(ROOT / "config.example.yaml"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "IPVS" in lines[0] and "modprobe ip_vs" in lines[0], lines[0]


def test_lab_topology_builds_and_leaves_nothing_behind() -> None:
    with Lab(forwarding="nat") as lab:
        names = [h.ns for h in lab.hosts.values()]
        assert all(netns.exists(n) for n in names)
        lab.start_http_servers()
        # The director reaches each real server on the back LAN.
        for i in (1, 2):
            answer = lab.get(lab.director(1), lab.real_server_address(i), lab.real_server_port)
            assert answer == f"r{i}"
        pids = [p.pid for p in lab.processes]
    assert not any(netns.exists(n) for n in names)
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


def test_dr_lab_real_servers_hold_the_vip_quietly() -> None:
    with Lab(forwarding="dr") as lab:
        r1 = lab.real_server(1)
        assert lab.vip in netns.ip("-o", "addr", "show", "dev", "lo", netns=r1.ns)
        with netns.entered(r1.ns):
            ignore = Path("/proc/sys/net/ipv4/conf/all/arp_ignore").read_text().strip()
            announce = Path("/proc/sys/net/ipv4/conf/all/arp_announce").read_text().strip()
        assert (ignore, announce) == ("1", "2")
