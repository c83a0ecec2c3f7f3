"""``lvs-agent lab``: a whole LVS site in namespaces, driven by the real agent.

Builds the topology of topology.py, writes a configuration for the director,
starts ``lvs-agent run`` in the director's namespace, sends requests from the
client to the VIP, prints who answered and the director's IPVS table, and tears
everything down. When the running kernel has no IPVS it re-runs itself inside a
virtme-ng VM that boots the installed Debian kernel (vm.py).
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from agent.lab import netns
from agent.lab.topology import Lab, ipvs_available


def lab_config(lab: Lab, state_dir: str, scheduler: str = "rr") -> str:
    servers = "\n".join(
        f"      - {{address: {lab.real_server_address(i)}, port: {lab.real_server_port}}}"
        for i in range(1, lab.real_servers + 1)
    )
    return f"""\
node: {{name: {lab.director(1).ns}}}
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


def wait_for_table(lab: Lab, services: int, dests: int, timeout: float = 120.0) -> bool:
    """Poll the director's IPVS table until it holds what the lab configured."""
    from agent.ipvs.kernel import IpvsKernel

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with netns.entered(lab.director(1).ns):
            kernel = IpvsKernel()
        with kernel:
            table = kernel.dump()
        if len(table) >= services and sum(len(s.dests) for s in table.values()) >= dests:
            return True
        time.sleep(0.5)
    return False


def run_lab(forwarding: str, requests: int) -> int:
    from agent.ipvs.kernel import IpvsKernel
    from agent.ipvs.render import render_table
    from agent.ipvs.state import OwnershipStore

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
        with netns.entered(lab.director(1).ns):
            kernel = IpvsKernel()
        with kernel:
            print("\nIPVS table on the director:")
            owned = OwnershipStore(work / "state" / "ipvs-state.json").load().services
            print(render_table(kernel.dump(), owned), end="")
        lab.stop(agent)
        print("\nagent log:")
        print("".join("  " + line for line in (work / "agent.log").read_text().splitlines(True)))
        ok = all(answers) and len(set(answers)) == min(lab.real_servers, requests)
        print(
            "lab: every request answered, by every real server in turn"
            if ok
            else "lab: FAILED — not every request was answered by the expected servers"
        )
        print("lab: tearing down")
    return 0 if ok else 1


def main(forwarding: str = "nat", requests: int = 6, in_vm: bool = False) -> int:
    if os.geteuid() != 0:
        print("lvs-agent lab: needs root (network namespaces, IPVS)", file=sys.stderr)
        return 1
    if ipvs_available():
        return run_lab(forwarding, requests)
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
        f"--in-vm --forwarding {forwarding} --requests {requests}"
    )
    try:
        return run_in_vm(command, rwdirs=[])
    except VMUnavailable as exc:
        print(f"lvs-agent lab: {exc}", file=sys.stderr)
        return 1
