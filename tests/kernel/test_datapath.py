"""Real traffic through the VIP, and the daemon's lifecycle, on the real kernel.

Client, director and HTTP real servers each live in their own namespace
(agent.lab.topology, the same code as `lvs-agent lab`). What the tests read back
with the agent's decoder is checked against ipvsadm in the director's namespace
(``checked_dump``) wherever the table holds still.
"""

from __future__ import annotations

import itertools
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.cli import main
from agent.ipvs.kernel import IpvsKernel
from agent.ipvs.model import Dest, DestKey, KernelTable, Service, ServiceKey
from agent.lab import netns
from agent.lab.demo import lab_config
from agent.lab.topology import Lab
from tests.kernel.conftest import assert_ipvsadm_agrees, ipvsadm, require_schedulers

# The lab's configuration schedules with rr; the reload test switches to wlc.
SCHEDULERS = ("rr", "wlc")


@pytest.fixture
def nat_lab(tmp_path: Path, available_schedulers: frozenset[str]) -> Iterator[Lab]:
    require_schedulers(available_schedulers, SCHEDULERS)
    with Lab(forwarding="nat") as lab:
        lab.start_http_servers(tmp_path)
        yield lab


@pytest.fixture
def dr_lab(tmp_path: Path, available_schedulers: frozenset[str]) -> Iterator[Lab]:
    require_schedulers(available_schedulers, SCHEDULERS)
    with Lab(forwarding="dr") as lab:
        lab.start_http_servers(tmp_path)
        yield lab


def dump(lab: Lab) -> KernelTable:
    with netns.entered(lab.director(1).ns):
        kernel = IpvsKernel()
    with kernel:
        return kernel.dump()


def checked_dump(lab: Lab) -> KernelTable:
    """``dump``, and ipvsadm reads the same table (call it only while nothing changes it)."""
    table = dump(lab)
    assert_ipvsadm_agrees(lab.director(1).ns, table)
    return table


View = dict[ServiceKey, tuple[Service, dict[DestKey, Dest]]]


def view(table: KernelTable) -> View:
    """Everything configurable of a table, real servers included; no counters."""
    return {
        k: (ks.service, {dk: kd.dest for dk, kd in ks.dests.items()}) for k, ks in table.items()
    }


def ipvsadm_stats(lab: Lab) -> dict[str, tuple[int, int]]:
    """(incoming, outgoing packets) by service and real server, from ipvsadm --stats."""
    out = ipvsadm(lab.director(1).ns, "-L", "-n", "--stats", "--exact")
    rows: dict[str, tuple[int, int]] = {}
    for line in out.splitlines()[3:]:
        # TCP 192.0.2.100:80 Conns InPkts OutPkts InBytes OutBytes, "->" for real servers
        tok = line.split()
        rows[tok[1]] = (int(tok[3]), int(tok[4]))
    return rows


def ipvsadm_conns(lab: Lab) -> dict[str, tuple[int, int, int]]:
    """(weight, active, inactive connections) by real server, from ipvsadm -L -n."""
    rows: dict[str, tuple[int, int, int]] = {}
    for line in ipvsadm(lab.director(1).ns, "-L", "-n").splitlines():
        tok = line.split()
        if len(tok) == 6 and tok[0] == "->" and tok[3].isdigit():
            rows[tok[1]] = (int(tok[3]), int(tok[4]), int(tok[5]))
    return rows


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.25)


def start_agent(lab: Lab, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`lvs-agent run` in the director, once it has programmed both real servers."""
    agent = lab.spawn(
        lab.director(1), [sys.executable, "-m", "agent", "run", "-c", str(config)], log=log
    )
    wait_until(
        "the agent to program the table",
        lambda: sum(len(s.dests) for s in dump(lab).values()) == 2,
        120,
    )
    return agent


def apply(lab: Lab, config: Path) -> int:
    with netns.entered(lab.director(1).ns):
        return main(["apply", "-c", str(config)])


@pytest.mark.parametrize("forwarding", ["nat", "dr"])
def test_rr_through_the_vip_reaches_both_real_servers(
    forwarding: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    lab: Lab = request.getfixturevalue(f"{forwarding}_lab")
    config = tmp_path / "director.yaml"
    config.write_text(lab_config(lab, str(tmp_path / "state")))
    assert apply(lab, config) == 0
    answers = lab.ask_vip(6)
    assert None not in answers, answers
    # rr alternates: each real server answers every other request.
    assert set(answers) == {"r1", "r2"}, answers
    assert all(a != b for a, b in itertools.pairwise(answers)), answers
    if forwarding == "dr":
        # The replies came straight from the real servers: the director saw only
        # the client's half of each connection.
        # (IPVS folds its per-CPU counters into the dump every 2 s.)
        wait_until("the statistics", lambda: next(iter(dump(lab).values())).stats.inpkts > 0, 10)
        assert next(iter(checked_dump(lab).values())).stats.outpkts == 0
        inpkts, outpkts = ipvsadm_stats(lab)[f"{lab.vip}:80"]
        assert inpkts > 0 and outpkts == 0


def slow_request(lab: Lab, seconds: float, result: dict[str, object]) -> None:
    """GET /slow on one connection, then close it with a RST (no TIME_WAIT in IPVS)."""
    try:
        with netns.entered(lab.client.ns):
            s = socket.create_connection((lab.vip, 80), timeout=seconds + 30)
        with s:
            s.sendall(f"GET /slow?seconds={seconds} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
            data = b""
            # Read to the end of the one-line body that follows the headers.
            for _ in range(1000):
                _head, sep, body = data.partition(b"\r\n\r\n")
                if sep and body.endswith(b"\n"):
                    break
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            result["body"] = data.partition(b"\r\n\r\n")[2].decode().strip()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as exc:
        result["error"] = exc
    result["closed_at"] = time.monotonic()


def test_drain_keeps_an_open_connection_until_it_closes(nat_lab: Lab, tmp_path: Path) -> None:
    lab = nat_lab
    config = tmp_path / "director.yaml"
    config.write_text(
        lab_config(lab, str(tmp_path / "state")).replace("drain_timeout: 30s", "drain_timeout: 10m")
    )
    log = tmp_path / "agent.log"
    agent = start_agent(lab, config, log)

    result: dict[str, object] = {}
    worker = threading.Thread(target=slow_request, args=(lab, 12, result), daemon=True)
    worker.start()

    def busy_server() -> str | None:
        for svc in dump(lab).values():
            for key, d in svc.dests.items():
                if d.active_conns:
                    return key.address
        return None

    wait_until("the slow connection to be scheduled", lambda: busy_server() is not None, 10)
    busy = busy_server()
    assert busy is not None
    busy_rs = f"{busy}:{lab.real_server_port}"
    assert ipvsadm_conns(lab)[busy_rs][1] >= 1  # ipvsadm sees the open connection too
    busy_name = "r1" if busy.endswith(".21") else "r2"
    # Remove the busy real server from the configuration and reload.
    text = config.read_text()
    config.write_text("\n".join(line for line in text.splitlines() if busy not in line) + "\n")
    agent.send_signal(signal.SIGHUP)

    def weight_of_busy() -> int | None:
        for svc in dump(lab).values():
            for key, d in svc.dests.items():
                if key.address == busy:
                    return d.dest.weight
        return None

    wait_until("the busy server to drain (weight 0)", lambda: weight_of_busy() == 0, 30)
    checked_dump(lab)  # the drained server, weight 0, as ipvsadm reads it too
    assert ipvsadm_conns(lab)[busy_rs][0] == 0
    # New connections go to the other server only, while the old one keeps working.
    answers = lab.ask_vip(4)
    assert all(a is not None and a != busy_name for a in answers), answers
    worker.join(timeout=60)
    assert "error" not in result, result
    assert result.get("body") == busy_name, result
    # Closed (RST): IPVS forgets the connection within its CLOSE timeout (10 s),
    # and the drain poll deletes the server long before drain_timeout (10 m).
    wait_until("the drained server to be deleted", lambda: weight_of_busy() is None, 40)
    assert busy_rs not in ipvsadm_conns(lab)
    assert len(next(iter(checked_dump(lab).values())).dests) == 1
    assert lab.stop(agent) == 0
    assert "delete real server" in log.read_text()


def scrape(lab: Lab, path: str = "/metrics") -> str:
    import http.client

    with netns.entered(lab.director(1).ns):
        conn = http.client.HTTPConnection("127.0.0.1", 9469, timeout=30)
        conn.connect()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def test_daemon_reload_metrics_and_clean_stop(nat_lab: Lab, tmp_path: Path) -> None:
    lab = nat_lab
    config = tmp_path / "director.yaml"
    good = lab_config(lab, str(tmp_path / "state"))
    config.write_text(good)
    log = tmp_path / "agent.log"
    agent = start_agent(lab, config, log)
    assert None not in lab.ask_vip(4)
    wait_until("metrics", lambda: "lvs_agent_ipvs_backend_connections" in scrape(lab), 30)
    exposition = scrape(lab)
    for name in (
        "lvs_agent_reconcile_duration_seconds_bucket",
        "lvs_agent_reconcile_last_success_timestamp_seconds",
        'lvs_agent_ipvs_operations_total{kind="add_real_server"} 2.0',
        "lvs_agent_ipvs_backend_connections_total{",
        "lvs_agent_ipvs_backend_connections_active{",
        "lvs_agent_ipvs_backend_connections_inactive{",
        "lvs_agent_ipvs_backend_weight{",
        "lvs_agent_ipvs_service_incoming_packets_total{",
    ):
        assert name in exposition, name
    assert (
        '{local_address="192.0.2.100",local_mark="",local_port="80",proto="TCP",'
        'remote_address="10.0.1.21",remote_port="8080"}'
    ) in exposition
    lint = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        text=True,
        capture_output=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr

    # An invalid configuration on SIGHUP is reported and the running one kept: the
    # whole table (services, real servers, weights, forwarding), as ipvsadm reads it.
    ns = lab.director(1).ns
    before = view(checked_dump(lab))
    saved = ipvsadm(ns, "-S", "-n")
    assert sum(len(dests) for _svc, dests in before.values()) == 2
    config.write_text(good.replace("scheduler: rr", "scheduler: fastest"))
    agent.send_signal(signal.SIGHUP)
    wait_until("the reload to be refused", lambda: 'result="invalid"' in scrape(lab), 30)
    assert agent.poll() is None
    assert view(checked_dump(lab)) == before
    assert ipvsadm(ns, "-S", "-n") == saved
    assert "scheduler: must be one of" in log.read_text()

    # A valid one is applied: the scheduler changes, nothing else.
    config.write_text(good.replace("scheduler: rr", "scheduler: wlc"))
    agent.send_signal(signal.SIGHUP)
    wait_until(
        "the new scheduler",
        lambda: all(s.service.scheduler == "wlc" for s in dump(lab).values()),
        30,
    )
    after = {k: (replace(svc, scheduler="wlc"), dests) for k, (svc, dests) in before.items()}
    assert view(checked_dump(lab)) == after
    assert ipvsadm(ns, "-S", "-n") == saved.replace(" -s rr", " -s wlc")

    # SIGTERM: a clean exit that leaves the table and the traffic in place.
    assert lab.stop(agent) == 0
    assert view(checked_dump(lab)) == after
    assert None not in lab.ask_vip(2)
