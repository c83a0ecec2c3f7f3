"""``lvs-agent lab``: a whole LVS site in namespaces, driven by the real agent.

Builds the topology of topology.py, writes a configuration for each director,
starts ``lvs-agent run`` in each director's namespace, sends requests from the
client to the VIP, prints who answered and the IPVS table, and tears everything
down. When the running kernel has no IPVS it re-runs itself inside a virtme-ng VM
that boots the installed Debian kernel (vm.py).

With one director the VIP is a static address of it. With two or more, every
director programs the same IPVS services and VRRP decides who holds the VIP (and,
in NAT, the real servers' gateway, in one sync group): the lab sends a steady
stream of requests, kills the master's agent with SIGKILL in the middle, and
prints each answer with the director the client's traffic went to, so the
failover is visible.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.lab import netns
from agent.lab.topology import Lab, ipvs_available

ADVERT_INTERVAL = "1s"  # slow enough for a loaded, emulated VM; failover ~3.6 s
STREAM_INTERVAL = 0.25  # seconds between the client's requests during the failover
SETTLE = 4.0  # seconds one master must hold the VIP before the stream starts (> 3.6 s MDI)


def lab_config(lab: Lab, state_dir: str, scheduler: str = "rr", director: int = 1) -> str:
    servers = "\n".join(
        f"      - {{address: {lab.real_server_address(i)}, port: {lab.real_server_port}}}"
        for i in range(1, lab.real_servers + 1)
    )
    return f"""\
node: {{name: {lab.director(director).ns}}}
metrics: {{listen: "127.0.0.1:9469"}}
reconcile_interval: 10s
state_dir: {state_dir}
ipvs:
  drain_timeout: 30s
virtual_servers:
  - name: lab-web
    address: {lab.vip}
    port: 80
    protocol: tcp
    scheduler: {scheduler}
    forwarding: {lab.forwarding}
    real_servers:
{servers}
"""


def vrrp_config(lab: Lab, director: int, priority: int) -> str:
    """The VRRP sections of director ``director``'s configuration (see Lab.vrrp_instances)."""
    import yaml

    instances, groups = lab.vrrp_instances(
        director, priority=priority, advert_interval=ADVERT_INTERVAL
    )
    return yaml.safe_dump(
        {"vrrp_instances": instances, "vrrp_sync_groups": groups}, sort_keys=False
    )


def wait_for_table(
    lab: Lab, services: int, dests: int, timeout: float = 120.0, director: int = 1
) -> bool:
    """Poll a director's IPVS table until it holds what the lab configured."""
    from agent.ipvs.kernel import IpvsKernel

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with netns.entered(lab.director(director).ns):
            kernel = IpvsKernel()
        with kernel:
            table = kernel.dump()
        if len(table) >= services and sum(len(s.dests) for s in table.values()) >= dests:
            return True
        time.sleep(0.5)
    return False


def _print_log(title: str, path: Path) -> None:
    print(f"\n{title}:")
    print("".join("  " + line for line in path.read_text().splitlines(True)))


def _print_table(lab: Lab, director: int, state_file: Path) -> None:
    from agent.ipvs.kernel import IpvsKernel
    from agent.ipvs.render import render_table
    from agent.ipvs.state import OwnershipStore

    with netns.entered(lab.director(director).ns):
        kernel = IpvsKernel()
    with kernel:
        print(f"\nIPVS table on {lab.director(director).name}:")
        owned = OwnershipStore(state_file).load().services
        print(render_table(kernel.dump(), owned), end="")


def run_lab(forwarding: str, requests: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="lvs-agent-lab-"))
    with Lab(forwarding=forwarding) as lab:
        rs = ", ".join(
            f"{lab.real_server_address(i)}:{lab.real_server_port}"
            for i in range(1, lab.real_servers + 1)
        )
        print(
            f"lab: {forwarding.upper()} — client {lab.client.addresses['eth0']} -> VIP "
            f"{lab.vip}:80 -> director {lab.director(1).addresses['eth0']} -> real servers {rs}"
        )
        print(f"lab: namespaces {', '.join(h.ns for h in lab.hosts.values())}")
        lab.start_http_servers(work)
        config = work / "director.yaml"
        config.write_text(lab_config(lab, str(work / "state")))
        print(f"lab: starting `lvs-agent run -c {config}` in {lab.director(1).ns}")
        agent = lab.spawn(
            lab.director(1),
            [sys.executable, "-m", "agent", "run", "-c", str(config)],
            log=work / "agent.log",
        )
        if not wait_for_table(lab, 1, lab.real_servers):
            print("lab: the agent did not program the IPVS table; its log:", file=sys.stderr)
            print((work / "agent.log").read_text(), file=sys.stderr)
            return 1
        answers = lab.ask_vip(requests)
        for n, answer in enumerate(answers, 1):
            print(
                f"request {n}: GET http://{lab.vip}/ from the client -> "
                f"{'answered by ' + answer if answer else 'NO ANSWER'}"
            )
        _print_table(lab, 1, work / "state" / "ipvs-state.json")
        lab.stop(agent)
        _print_log("agent log", work / "agent.log")
        ok = all(answers) and len(set(answers)) == min(lab.real_servers, requests)
        print(
            "lab: every request answered, by every real server in turn"
            if ok
            else "lab: FAILED — not every request was answered by the expected servers"
        )
        print("lab: tearing down")
    return 0 if ok else 1


def _via(lab: Lab) -> str:
    """The director the client's traffic to the VIP goes to (its ARP entry), or '?'."""
    mac = lab.neighbour_mac(lab.client, lab.vip)
    for d in lab.director_list():
        if d.macs["eth0"] == mac:
            return d.name
    return "?"


def _master(lab: Lab, alive: dict[str, bool]) -> str:
    """Directors whose (running) agent says it is VRRP master of the VIP instance."""
    from agent.lab.agents import STATE_NAMES, metric_values

    masters = []
    for d in lab.director_list():
        if not alive[d.name]:
            continue
        text = lab.get(d, "127.0.0.1", 9469, "/metrics", timeout=1.0) or ""
        for labels, value in metric_values(text, "lvs_agent_vrrp_state").items():
            if dict(labels).get("instance") == "vip" and STATE_NAMES.get(int(value)) == "MASTER":
                masters.append(d.name)
    return ",".join(masters) or "none"


def _settle(
    lab: Lab, agents: dict[str, subprocess.Popen[bytes]], work: Path, alive: dict[str, bool]
) -> str | None:
    """Wait until every agent runs VRRP and one director has held the VIP (and the
    gateway) for a while as the only master; its name, or None after a timeout."""
    deadline = time.monotonic() + 180
    since: float | None = None
    last = ""
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in agents.values()):
            return None
        started = all(
            "instance(s) started" in (work / f"agent-{name}.log").read_text() for name in agents
        )
        holders = lab.holders()
        settled = (
            started
            and len(holders) == 1
            and (not lab.floating_gateway or lab.holders(lab.gateway) == holders)
            and _master(lab, alive) == holders[0]
        )
        if not settled or holders[0] != last:
            since = time.monotonic() if settled else None
            last = holders[0] if settled else ""
        elif since is not None and time.monotonic() - since > SETTLE:
            return last
        time.sleep(0.2)
    return None


def run_failover_lab(forwarding: str, directors: int, requests: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="lvs-agent-lab-"))
    with Lab(forwarding=forwarding, directors=directors, vip_on_director=False) as lab:
        names = ", ".join(f"{d.name} {d.addresses['eth0']}" for d in lab.director_list())
        rs = ", ".join(
            f"{lab.real_server_address(i)}:{lab.real_server_port}"
            for i in range(1, lab.real_servers + 1)
        )
        floating = f" and the real servers' gateway {lab.gateway}" if lab.floating_gateway else ""
        print(
            f"lab: {forwarding.upper()} with {directors} directors ({names}); VRRP "
            f"(v3, {ADVERT_INTERVAL} adverts) moves the VIP {lab.vip}{floating}; "
            f"real servers {rs}"
        )
        print(f"lab: namespaces {', '.join(h.ns for h in lab.hosts.values())}")
        lab.start_http_servers(work)
        agents = {}
        for i in range(1, directors + 1):
            d = lab.director(i)
            priority = 100 + 50 * (directors - i)  # d1 highest
            config = work / f"{d.name}.yaml"
            config.write_text(
                lab_config(lab, str(work / f"state-{d.name}"), director=i)
                + vrrp_config(lab, i, priority)
            )
            print(f"lab: starting `lvs-agent run -c {config}` in {d.ns} (priority {priority})")
            agents[d.name] = lab.spawn(
                d,
                [sys.executable, "-m", "agent", "run", "-c", str(config)],
                log=work / f"agent-{d.name}.log",
            )
        for i in range(1, directors + 1):
            if not wait_for_table(lab, 1, lab.real_servers, director=i):
                print(f"lab: d{i}'s agent did not program IPVS; its log:", file=sys.stderr)
                print((work / f"agent-d{i}.log").read_text(), file=sys.stderr)
                return 1
        alive = {name: True for name in agents}
        master = _settle(lab, agents, work, alive)
        if master is None:
            print("lab: the directors did not settle on one VRRP master; logs:", file=sys.stderr)
            for name in agents:
                print((work / f"agent-{name}.log").read_text(), file=sys.stderr)
            return 1
        print(f"lab: every director programmed IPVS; {master} is VRRP master and holds the VIP")
        kill_at = max(2, requests // 4)
        print(
            f"lab: the client sends a request every {STREAM_INTERVAL:g}s; "
            f"after request {kill_at} the master's agent ({master}) gets SIGKILL\n"
        )
        start = time.monotonic()
        answers: list[tuple[float, str | None, str]] = []
        killed_at = 0.0
        for n in range(1, requests + 1):
            sent = time.monotonic()
            answer = lab.get(lab.client, lab.vip, 80, timeout=1.0)
            via = _via(lab)
            answers.append((sent - start, answer, via))
            print(
                f"request {n:2} t={sent - start:5.2f}s -> "
                f"{'answered by ' + answer if answer else 'NO ANSWER':16} "
                f"via {via}  (VRRP master: {_master(lab, alive)})",
                flush=True,
            )
            if n == kill_at:
                master = _master(lab, alive)  # still the same, unless something changed
                agents[master].send_signal(signal.SIGKILL)
                agents[master].wait(timeout=10)
                alive[master] = False
                killed_at = time.monotonic() - start
                print(
                    f"--- t={killed_at:5.2f}s: SIGKILL to {master}'s agent. Its VIP stays in "
                    f"{master}'s kernel (as with keepalived) and serves until the backup's "
                    "gratuitous ARPs move the client"
                    + (" and the real servers" if lab.floating_gateway else "")
                    + " ---",
                    flush=True,
                )
            time.sleep(max(0.0, sent + STREAM_INTERVAL - time.monotonic()))
        after = [a for a in answers if a[0] > killed_at]
        moved = next((t for t, _, via in after if via != master), None)
        failed = [t for t, answer, _ in answers if answer is None]
        tail = [a for a in after if moved is not None and a[0] >= moved + 2]
        ok = moved is not None and bool(tail) and all(a[1] and a[2] != master for a in tail)
        for i in range(1, directors + 1):
            _print_table(lab, i, work / f"state-d{i}" / "ipvs-state.json")
        for name, proc in agents.items():
            if alive[name]:
                lab.stop(proc)
        for name in agents:
            _print_log(f"agent log of {name}", work / f"agent-{name}.log")
        if moved is not None:
            print(
                f"lab: the client's traffic moved to the backup {moved - killed_at:.2f}s after "
                f"the kill; {len(failed)} of {len(answers)} requests unanswered"
            )
        print(
            "lab: failover done — the client kept getting answers through the backup"
            if ok
            else "lab: FAILED — the backup did not take over the VIP"
        )
        print("lab: tearing down")
    return 0 if ok else 1


def main(
    forwarding: str = "nat",
    requests: int | None = None,
    in_vm: bool = False,
    directors: int = 2,
    election: str = "vrrp",
    plot: str | None = None,
) -> int:
    """The plain failover demo, or with ``election="quorum"`` the split-brain story (cap.py)."""
    if os.geteuid() != 0:
        print("lvs-agent lab: needs root (network namespaces, IPVS)", file=sys.stderr)
        return 1
    if plot is not None and election != "quorum":
        print("lvs-agent lab: --plot goes with --election quorum", file=sys.stderr)
        return 1
    if plot is not None:
        plot = os.path.abspath(plot)
    count = requests if requests is not None else (6 if directors == 1 else 40)
    if ipvs_available():
        if election == "quorum":
            from agent.lab.cap import run_cap_lab

            return run_cap_lab(plot)
        if directors == 1:
            return run_lab(forwarding, count)
        return run_failover_lab(forwarding, directors, count)
    if in_vm:
        print("lvs-agent lab: no IPVS even inside the VM", file=sys.stderr)
        return 1
    from agent.lab.vm import VMUnavailable, run_in_vm

    print(
        "lab: this kernel has no IPVS; running the lab inside a VM with the installed "
        "Debian kernel (software emulation: allow a few minutes)"
    )
    command = (
        f"cd {shlex.quote(os.getcwd())} && {shlex.quote(sys.executable)} -m agent lab "
        f"--in-vm --forwarding {forwarding} --requests {count} --directors {directors} "
        f"--election {election}" + (f" --plot {shlex.quote(plot)}" if plot else "")
    )
    try:
        return run_in_vm(command, rwdirs=[os.path.dirname(plot)] if plot else [])
    except VMUnavailable as exc:
        print(f"lvs-agent lab: {exc}", file=sys.stderr)
        return 1
