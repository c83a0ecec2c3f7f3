"""Health policies on the real IPVS table: ``on_failure: remove``, quorum with hysteresis,
the sorry server and the quorum commands, a reload under running checks, and checks on a
VRRP backup. ``lvs-agent run`` in director namespaces (``agent.lab.topology``, NAT),
HTTP real servers stopped and started under it, ipvsadm the referee, the agent's own
metrics and ``status --json`` for what it believes. Every wait is bounded and polls.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab import netns
from agent.lab.demo import vrrp_config
from agent.lab.topology import Lab
from tests.kernel.conftest import ipvsadm, require_schedulers
from tests.kernel.test_health import httpd, wait
from tests.kernel.test_status_socket import lvs

WEIGHT = 5
CHECK = "{type: http, path: /, interval: 500ms, timeout: 1s, rise: 2, fall: 2}"


@pytest.fixture
def schedulers(available_schedulers: frozenset[str]) -> None:
    require_schedulers(available_schedulers, ("rr",))


def rs(lab: Lab, i: int) -> str:
    return f"{lab.real_server_address(i)}:{lab.real_server_port}"


def weights(lab: Lab, director: int = 1) -> dict[str, int]:
    """Weight by real server in a director's kernel (ipvsadm -L -n)."""
    rows: dict[str, int] = {}
    for line in ipvsadm(lab.director(director).ns, "-L", "-n").splitlines():
        tok = line.split()
        if len(tok) == 6 and tok[0] == "->" and tok[3].isdigit():
            rows[tok[1]] = int(tok[3])
    return rows


def config(lab: Lab, tmp_path: Path, servers: tuple[int, ...], policy: str = "", d: int = 1) -> str:
    listed = "\n".join(
        f"      - {{address: {lab.real_server_address(i)}, port: {lab.real_server_port}, "
        f"weight: {WEIGHT}}}"
        for i in servers
    )
    return f"""\
node: {{name: {lab.director(d).ns}}}
metrics: {{listen: "127.0.0.1:9469"}}
reconcile_interval: 2s
state_dir: {tmp_path / f"state-d{d}"}
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
      - {CHECK}
{policy}
    real_servers:
{listed}
"""


def start(
    lab: Lab, path: Path, log: Path, want: dict[str, int], d: int = 1
) -> subprocess.Popen[bytes]:
    agent = lab.spawn(
        lab.director(d), [sys.executable, "-m", "agent", "run", "-c", str(path)], log=log
    )
    wait(f"d{d}'s agent to program {want}", lambda: weights(lab, d) == want, 120, agent, log)
    return agent


def scrape(lab: Lab, d: int = 1) -> str:
    import http.client

    with netns.entered(lab.director(d).ns):
        conn = http.client.HTTPConnection("127.0.0.1", 9469, timeout=30)
        conn.connect()
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples with these labels (0 when none: a counter never moved)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(w in (m.group(1) or "") for w in want):
            total += float(m.group(2))
    return total


def healthy(lab: Lab, i: int) -> bool:
    text = scrape(lab)
    return (
        metric(
            text,
            "lvs_agent_health_real_server_up",
            remote_address=lab.real_server_address(i),
            remote_port=str(lab.real_server_port),
        )
        == 1.0
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def four(schedulers: None) -> Iterator[Lab]:
    with Lab(forwarding="nat", real_servers=4) as lab:
        yield lab


def test_remove_quorum_hysteresis_sorry_server_and_quorum_commands(
    four: Lab, tmp_path: Path
) -> None:
    lab = four
    up_marker, down_marker = tmp_path / "quorum-up", tmp_path / "quorum-down"

    def command(marker: Path) -> str:
        text = f'echo "$LVS_VIRTUAL_SERVER $LVS_QUORUM_STATE $LVS_HEALTHY_WEIGHT" >> {marker}'
        return f"\n      - /bin/sh\n      - -c\n      - '{text}'"

    # three servers of weight 5: the quorum (10 +- 5) is lost below 5, regained at 15
    policy = (
        "    on_failure: remove\n"
        "    quorum: 10\n"
        "    hysteresis: 5\n"
        f"    sorry_server: {{address: {lab.real_server_address(4)}, "
        f"port: {lab.real_server_port}}}\n"
        f"    quorum_up:{command(up_marker)}\n"
        f"    quorum_down:{command(down_marker)}"
    )
    path = tmp_path / "director.yaml"
    path.write_text(config(lab, tmp_path, (1, 2, 3), policy))
    log = tmp_path / "agent.log"
    servers = {i: httpd(lab, i, tmp_path) for i in (1, 2, 3, 4)}
    every = {rs(lab, i): WEIGHT for i in (1, 2, 3)}
    agent = start(lab, path, log, every)
    sorry = rs(lab, 4)

    def gone(i: int) -> None:
        lab.stop(servers[i])
        wait(f"r{i} out of the table", lambda: rs(lab, i) not in weights(lab), 30, agent, log)

    # on_failure: remove: a failed real server leaves the kernel, and comes back with
    # its configured weight once it recovers (the quorum never moved: 10 >= 5)
    gone(3)
    assert weights(lab) == {rs(lab, 1): WEIGHT, rs(lab, 2): WEIGHT}
    servers[3] = httpd(lab, 3, tmp_path)
    wait("r3 back", lambda: weights(lab) == every, 30, agent, log)

    # one by one: 10, then 5 (= quorum - hysteresis: still met), then 0 (lost)
    gone(3)
    gone(2)
    assert weights(lab) == {rs(lab, 1): WEIGHT}
    assert sorry not in weights(lab) and lines(down_marker) == []
    lab.stop(servers[1])
    wait("the sorry server alone", lambda: weights(lab) == {sorry: 1}, 30, agent, log)
    assert set(lab.ask_vip(3, timeout=3.0)) == {"r4"}
    wait("quorum_down", lambda: lines(down_marker) == ["hc-web down 0"], 30, agent, log)

    # back one by one: 5 and 10 stay below quorum + hysteresis (15): the sorry server
    # stays and the recovered servers stay out; 15 regains the quorum
    for i in (1, 2):
        servers[i] = httpd(lab, i, tmp_path)
        wait(f"r{i} healthy", lambda i=i: healthy(lab, i), 30, agent, log)
        assert weights(lab) == {sorry: 1}, f"r{i} back: {weights(lab)}"
    servers[3] = httpd(lab, 3, tmp_path)
    wait("the quorum back, the sorry server gone", lambda: weights(lab) == every, 30, agent, log)
    wait("quorum_up", lambda: lines(up_marker) == ["hc-web up 15"], 30, agent, log)
    assert lines(down_marker) == ["hc-web down 0"]  # each ran once
    text = scrape(lab)
    assert metric(text, "lvs_agent_errors_total", kind="quorum_command") == 0.0
    lab.stop(agent)
    assert agent.returncode == 0, log.read_text()[-3000:]


@pytest.fixture
def three(schedulers: None) -> Iterator[Lab]:
    with Lab(forwarding="nat", real_servers=3) as lab:
        yield lab


def test_a_reload_keeps_a_down_server_down_and_a_new_one_starts_per_initial(
    three: Lab, tmp_path: Path
) -> None:
    lab = three
    path = tmp_path / "director.yaml"
    path.write_text(config(lab, tmp_path, (1, 2)))
    log = tmp_path / "agent.log"
    servers = {i: httpd(lab, i, tmp_path) for i in (1, 2, 3)}
    agent = start(lab, path, log, {rs(lab, 1): WEIGHT, rs(lab, 2): WEIGHT})
    lab.stop(servers[2])
    wait("r2 at weight 0", lambda: weights(lab).get(rs(lab, 2)) == 0, 30, agent, log)
    before = scrape(lab)
    down = metric(before, "lvs_agent_health_transitions_total", state="down")
    up = metric(before, "lvs_agent_health_transitions_total", state="up")
    failures = metric(before, "lvs_agent_health_probe_failures_total")
    assert down == 1.0

    # r3 joins by a reload while r2's check keeps failing; initial: up (the default)
    path.write_text(config(lab, tmp_path, (1, 2, 3)))
    agent.send_signal(signal.SIGHUP)
    seen2: list[int | None] = []
    seen3: list[int] = []

    def look() -> bool:
        w = weights(lab)
        seen2.append(w.get(rs(lab, 2)))
        if rs(lab, 3) in w:
            seen3.append(w[rs(lab, 3)])
        return len(seen3) >= 10  # r3 there for ten looks (two seconds and more)

    wait("r3 added by the reload", look, 60, agent, log)
    assert set(seen2) == {0}, seen2  # no flap to up: the check kept its state
    assert set(seen3) == {WEIGHT}, seen3  # a new real server starts up
    after = scrape(lab)
    assert metric(after, "lvs_agent_health_transitions_total", state="down") == down
    assert metric(after, "lvs_agent_health_transitions_total", state="up") == up
    assert metric(after, "lvs_agent_health_probe_failures_total") > failures  # continued
    assert "reloaded" in log.read_text()

    servers[2] = httpd(lab, 2, tmp_path)
    every = {rs(lab, i): WEIGHT for i in (1, 2, 3)}
    wait("r2 back after the reload", lambda: weights(lab) == every, 30, agent, log)
    lab.stop(agent)
    assert agent.returncode == 0, log.read_text()[-3000:]


@pytest.fixture
def pair(schedulers: None) -> Iterator[Lab]:
    with Lab(forwarding="nat", directors=2, real_servers=2, vip_on_director=False) as lab:
        yield lab


def test_checks_run_on_the_backup_director(pair: Lab, tmp_path: Path) -> None:
    lab = pair
    servers = {i: httpd(lab, i, tmp_path) for i in (1, 2)}
    both = {rs(lab, 1): WEIGHT, rs(lab, 2): WEIGHT}
    agents: dict[int, subprocess.Popen[bytes]] = {}
    paths: dict[int, Path] = {}
    for d, priority in ((1, 150), (2, 100)):
        paths[d] = tmp_path / f"d{d}.yaml"
        paths[d].write_text(config(lab, tmp_path, (1, 2), d=d) + vrrp_config(lab, d, priority))
        agents[d] = lab.spawn(
            lab.director(d),
            [sys.executable, "-m", "agent", "run", "-c", str(paths[d])],
            log=tmp_path / f"agent-d{d}.log",
        )
    for d in (1, 2):
        log = tmp_path / f"agent-d{d}.log"
        wait(f"d{d}'s table", lambda d=d: weights(lab, d) == both, 120, agents[d], log)
    log2 = tmp_path / "agent-d2.log"
    wait(
        "d1 master alone", lambda: lab.holders() == ["d1"], 60, agents[1], tmp_path / "agent-d1.log"
    )

    lab.stop(servers[2])
    wait(
        "r2 at weight 0 on the backup",
        lambda: weights(lab, 2).get(rs(lab, 2)) == 0,
        30,
        agents[2],
        log2,
    )
    assert weights(lab, 2) == {rs(lab, 1): WEIGHT, rs(lab, 2): 0}
    assert lab.holders() == ["d1"]  # d2 is still the backup
    reals: dict[str, dict[str, object]] = {}

    def status() -> bool:  # the kernel's weights there come from the last full reconcile
        out = lvs(lab.director(2).ns, paths[2], "status", "--json")
        assert out.returncode == 0, out.stderr
        (web,) = json.loads(out.stdout)["virtual_servers"]
        reals.update({f"{r['address']}:{r['port']}": r for r in web["real_servers"]})
        return reals[rs(lab, 2)]["kernel_weight"] == 0

    wait("the backup's status", status, 60, agents[2], log2)
    assert reals[rs(lab, 2)]["health"] == "down", reals
    assert reals[rs(lab, 2)]["health_weight"] == 0 and reals[rs(lab, 2)]["kernel_weight"] == 0
    assert reals[rs(lab, 1)]["health"] == "up" and reals[rs(lab, 1)]["kernel_weight"] == WEIGHT
    for d in (1, 2):
        lab.stop(agents[d])
        assert agents[d].returncode == 0, (tmp_path / f"agent-d{d}.log").read_text()[-3000:]
