"""Health checking on the real IPVS table: ``lvs-agent run`` with checks, ipvsadm the referee.

Client, director and HTTP real servers each live in their own namespace
(``agent.lab.topology``, NAT). The real servers are stopped and started under the
running agent (and one put in maintenance with ``lvs-agent maint``); what the kernel
carries is read with ``ipvsadm -L -n`` and what
clients get through the VIP with real connections. Every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.lab import netns
from agent.lab.topology import Lab
from tests.kernel.conftest import require_schedulers
from tests.kernel.test_datapath import ipvsadm_conns

WEIGHT = 5
SLOW_START = 6  # seconds: a weight of 5 ramps 1, 2, 3, 4, 5, one step a second or more


@pytest.fixture
def lab(available_schedulers: frozenset[str]) -> Iterator[Lab]:
    require_schedulers(available_schedulers, ("rr",))
    with Lab(forwarding="nat", real_servers=3) as lab:
        yield lab


def httpd(lab: Lab, i: int, log_dir: Path) -> subprocess.Popen[bytes]:
    """The lab's HTTP server in real server ``i``, once it answers."""
    host = lab.real_server(i)
    port = lab.real_server_port
    proc = lab.spawn(
        host,
        [sys.executable, "-m", "agent.lab.httpd", "--name", host.name, "--port", str(port)],
        log=log_dir / f"httpd-{host.name}.log",
    )
    wait(
        f"the HTTP server in {host.name}",
        lambda: lab.get(host, lab.real_server_address(i), port, timeout=1.0) is not None,
        60,
    )
    return proc


def wait(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    agent: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if agent is not None and agent.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"the agent exited ({agent.returncode}) before {what}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{tail}")
        time.sleep(0.2)


def config(lab: Lab, tmp_path: Path, policy: str) -> Path:
    servers = "\n".join(
        f"      - {{address: {lab.real_server_address(i)}, port: {lab.real_server_port}, "
        f"weight: {WEIGHT}}}"
        for i in (1, 2)
    )
    path = tmp_path / "director.yaml"
    path.write_text(
        f"""\
node: {{name: {lab.director(1).ns}}}
metrics: {{listen: "127.0.0.1:9469"}}
reconcile_interval: 2s
state_dir: {tmp_path / "state"}
ipvs:
  drain_timeout: 5s
virtual_servers:
  - name: hc-web
    address: {lab.vip}
    port: 80
    protocol: tcp
    scheduler: rr
    forwarding: nat
    health_checks:
      - {{type: http, path: /, interval: 500ms, timeout: 1s, rise: 2, fall: 2}}
{policy}
    real_servers:
{servers}
"""
    )
    return path


def weights(lab: Lab) -> dict[str, int]:
    return {rs: w for rs, (w, _, _) in ipvsadm_conns(lab).items()}


def rs(lab: Lab, i: int) -> str:
    return f"{lab.real_server_address(i)}:{lab.real_server_port}"


def answers(lab: Lab, count: int) -> set[str | None]:
    return set(lab.ask_vip(count, timeout=3.0))


def start_agent(lab: Lab, path: Path, log: Path) -> subprocess.Popen[bytes]:
    agent = lab.spawn(
        lab.director(1), [sys.executable, "-m", "agent", "run", "-c", str(path)], log=log
    )
    wait(
        "the agent to program both real servers",
        lambda: weights(lab) == {rs(lab, 1): WEIGHT, rs(lab, 2): WEIGHT},
        120,
        agent,
        log,
    )
    return agent


def test_failure_drains_sorry_server_answers_and_recovery_ramps(lab: Lab, tmp_path: Path) -> None:
    sorry = rs(lab, 3)
    path = config(
        lab,
        tmp_path,
        f"    slow_start: {SLOW_START}s\n"
        f"    sorry_server: {{address: {lab.real_server_address(3)}, "
        f"port: {lab.real_server_port}}}",
    )
    log = tmp_path / "agent.log"
    servers = {i: httpd(lab, i, tmp_path) for i in (1, 2, 3)}
    agent = start_agent(lab, path, log)
    assert answers(lab, 4) == {"r1", "r2"}

    # r2 dies: weight 0 in the kernel within fall x interval + timeout (and the loop's
    # slowness under emulation), and clients reach only r1.
    lab.stop(servers[2])
    wait("r2 at weight 0", lambda: weights(lab).get(rs(lab, 2)) == 0, 30, agent, log)
    assert weights(lab) == {rs(lab, 1): WEIGHT, rs(lab, 2): 0}
    assert answers(lab, 4) == {"r1"}
    # the periodic reconcile (every 2 s) programs the health-adjusted table: no fight
    time.sleep(5)
    assert weights(lab) == {rs(lab, 1): WEIGHT, rs(lab, 2): 0}

    # r1 dies too: quorum (1) is lost, the sorry server is added and answers alone.
    lab.stop(servers[1])
    wait("the sorry server", lambda: weights(lab).get(sorry) == 1, 30, agent, log)
    assert weights(lab) == {rs(lab, 1): 0, rs(lab, 2): 0, sorry: 1}
    assert answers(lab, 3) == {"r3"}

    # r2 comes back: quorum is back, the sorry server leaves, r2 ramps up over
    # slow_start one weight step at a time.
    servers[2] = httpd(lab, 2, tmp_path)
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        w = weights(lab).get(rs(lab, 2), 0)
        if not seen or seen[-1] != w:
            seen.append(w)
        if w == WEIGHT:
            break
        time.sleep(0.1)
    assert seen[-1] == WEIGHT, seen
    assert seen == sorted(seen), seen  # never down again on the way up
    ramp = [w for w in seen if 0 < w < WEIGHT]
    assert len(ramp) >= 2, seen  # the kernel saw intermediate weights, not a jump
    wait("the sorry server to go", lambda: weights(lab).get(sorry, 0) == 0, 30, agent, log)
    assert answers(lab, 3) == {"r2"}
    text = log.read_text()
    assert "quorum down" in text and "quorum up" in text, text[-3000:]
    lab.stop(agent)
    assert agent.returncode == 0, log.read_text()[-3000:]


def test_the_floor_holds_when_the_directors_own_link_is_cut_and_maintenance_drains(
    lab: Lab, tmp_path: Path
) -> None:
    path = config(lab, tmp_path, "    min_healthy: 50%")
    log = tmp_path / "agent.log"
    for i in (1, 2):
        httpd(lab, i, tmp_path)
    agent = start_agent(lab, path, log)
    director = lab.director(1).ns
    netns.ip("link", "set", "eth1", "down", netns=director)
    try:
        # every check fails; the floor (1 of 2) keeps one real server with its weight
        wait("a real server drained", lambda: 0 in weights(lab).values(), 30, agent, log)
        time.sleep(3)  # more than fall x interval again: the floor still holds
        assert sorted(weights(lab).values()) == [0, WEIGHT]
        wait("the log line", lambda: "floor held" in log.read_text(), 10, agent, log)
    finally:
        netns.ip("link", "set", "eth1", "up", netns=director)
    wait(
        "both real servers back",
        lambda: weights(lab) == {rs(lab, 1): WEIGHT, rs(lab, 2): WEIGHT},
        30,
        agent,
        log,
    )
    wait("the floor released", lambda: "floor released" in log.read_text(), 10, agent, log)
    assert answers(lab, 4) == {"r1", "r2"}

    # an operator takes r1 out without editing the file, and puts it back
    def maint(state: str) -> None:
        cmd = [sys.executable, "-m", "agent", "maint", "-c", str(path), "hc-web", rs(lab, 1)]
        out = subprocess.run(
            netns.exec_argv(director, [*cmd, state]), capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr

    maint("on")
    wait("r1 in maintenance", lambda: weights(lab).get(rs(lab, 1)) == 0, 30, agent, log)
    assert weights(lab) == {rs(lab, 1): 0, rs(lab, 2): WEIGHT}
    assert answers(lab, 4) == {"r2"}
    maint("off")
    wait("r1 back", lambda: weights(lab).get(rs(lab, 1)) == WEIGHT, 30, agent, log)
    lab.stop(agent)
    assert agent.returncode == 0, log.read_text()[-3000:]
