"""keepalived with its own file and lvs-agent with the import of its peer's file elect as
one cluster, and each takes over when the other stops.

tests/data/keepalived/vrrp_pair.conf (priority 150, unicast source 10.93.1.2) runs in
keepalived on one director; the import of vrrp_pair_b.conf (its peer, priority 100)
runs in ``lvs-agent run`` on the other. Both directors share two LANs (veth-front,
veth-back), as the files say. The sync group's VIPs are held by exactly one side at a
time: keepalived first; the agent when keepalived stops; keepalived again when the
agent stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab import netns
from tests.check_skips import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "keepalived"
VIPS = {"veth-front": ["10.93.0.100", "10.93.0.101"], "veth-back": ["10.93.1.1"]}
ADDRESSES = {"veth-front": "10.93.0.{}/24", "veth-back": "10.93.1.{}/24"}
TAKEOVER = 30.0  # 3 x 2 s adverts + skew, a sync group, emulation-free but 2 shared cores


def held(ns: str) -> set[str]:
    out = netns.ip("-o", "-4", "addr", "show", netns=ns)
    found = {a for addrs in VIPS.values() for a in addrs if f" {a}/" in out}
    return found


def wait_held(ns: str, timeout: float) -> bool:
    want = {a for addrs in VIPS.values() for a in addrs}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if held(ns) == want:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    for tool in ("keepalived",):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            skip_or_fail(f"{tool} is not installed")
    tag = uuid.uuid4().hex[:6]
    ka, ag = f"h15-vka-{tag}", f"h15-vag-{tag}"
    netns.add(ka)
    netns.add(ag)
    try:
        for name in (ka, ag):
            netns.ip("link", "set", "lo", "up", netns=name)
        for dev in VIPS:
            netns.ip("link", "add", dev, "type", "veth", "peer", "name", "h15peer", netns=ka)
            netns.ip("link", "set", "h15peer", "netns", ag, netns=ka)
            netns.ip("link", "set", "h15peer", "name", dev, netns=ag)
            for name, host in ((ka, 2), (ag, 3)):
                netns.ip("addr", "add", ADDRESSES[dev].format(host), "dev", dev, netns=name)
                netns.ip("link", "set", dev, "up", netns=name)
        yield ka, ag
    finally:
        netns.delete(ka)
        netns.delete(ag)


def _start_keepalived(ns: str, work: Path, round_: int) -> subprocess.Popen[bytes]:
    log = (work / f"keepalived-{round_}.log").open("wb")
    return subprocess.Popen(
        netns.exec_argv(
            ns,
            [
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                str(DATA / "vrrp_pair.conf"),
                "-p",
                str(work / f"ka-{round_}.pid"),
                "-r",
                str(work / f"ka-vrrp-{round_}.pid"),
            ],
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_keepalived_and_the_imported_peer_elect_and_take_over(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    ka, ag = pair
    config = tmp_path / "agent.yaml"
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "import-keepalived",
            str(DATA / "vrrp_pair_b.conf"),
            "-o",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert imported.returncode == 2, imported.stderr  # script_user, unicast_src_ip left out
    with config.open("a") as f:
        f.write(f"state_dir: {tmp_path / 'state'}\n")
    agent_log = (tmp_path / "agent.log").open("wb")
    keepalived = _start_keepalived(ka, tmp_path, 1)
    agent: subprocess.Popen[bytes] | None = None
    try:
        assert wait_held(ka, TAKEOVER), (tmp_path / "keepalived-1.log").read_text()
        agent = subprocess.Popen(
            netns.exec_argv(ag, [sys.executable, "-m", "agent", "run", "-c", str(config)]),
            stdout=agent_log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        time.sleep(8)  # several adverts: the agent stays backup under a better master
        assert held(ag) == set(), (tmp_path / "agent.log").read_text()
        assert wait_held(ka, 1)

        _stop(keepalived)  # priority 0: the agent takes over
        assert wait_held(ag, TAKEOVER), (tmp_path / "agent.log").read_text()
        assert held(ka) == set()

        keepalived = _start_keepalived(ka, tmp_path, 2)
        time.sleep(8)  # nopreempt (front) and the sync group keep the agent master
        assert wait_held(ag, 1), (tmp_path / "keepalived-2.log").read_text()
        assert held(ka) == set()

        _stop(agent)  # the agent leaves: keepalived takes over
        assert agent.returncode == 0, (tmp_path / "agent.log").read_text()
        assert wait_held(ka, TAKEOVER), (tmp_path / "keepalived-2.log").read_text()
        assert held(ag) == set()
    finally:
        _stop(keepalived)
        if agent is not None:
            _stop(agent)
