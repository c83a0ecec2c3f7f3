"""Configuration files for the speed-layer benchmark: N services x 4 real servers.

The addresses are bench/ipvs_apply's. Three entries in four have the common shape
(name, address, port, scheduler, real servers in flow mappings); one in four
is something else a real file holds: persistence, an IPv6 service, UDP, direct
routing with thresholds, a firewall mark.
"""

from __future__ import annotations

from bench.ipvs_apply.workload import DESTS, rip, vip


def _v6(i: int) -> str:
    return f"2001:db8:{i // 65536:x}:{i % 65536:x}::1"


def _v6_rip(i: int, j: int) -> str:
    return f"2001:db8:1{j}:{i % 65536:x}::{i // 65536 + 1:x}"


def agent_config(n: int, state_dir: str = "/var/lib/lvs-agent") -> str:
    out = [
        "node: {name: bench}",
        f"state_dir: {state_dir}",
        "ipvs:",
        "  drain_timeout: 5m",
        "virtual_servers:",
    ]
    for i in range(n):
        kind = i % 20
        if kind == 1:  # persistence, weights
            out.append(
                f"  - name: vs{i}\n    address: {vip(i)}\n    port: 443\n    scheduler: wlc\n"
                "    persistence: {timeout: 600s, netmask: 255.255.255.0}\n    real_servers:"
            )
            out += [
                f"      - {{address: {rip(i, j)}, port: 8443, weight: {j + 1}}}"
                for j in range(DESTS)
            ]
        elif kind == 2:  # IPv6, quoted addresses
            out.append(
                f'  - name: vs{i}\n    address: "{_v6(i)}"\n    port: 80\n    scheduler: rr\n'
                "    real_servers:"
            )
            out += [f'      - {{address: "{_v6_rip(i, j)}", port: 8080}}' for j in range(DESTS)]
        elif kind == 3:  # UDP
            out.append(
                f"  - name: vs{i}\n    address: {vip(i)}\n    port: 53\n    protocol: udp\n"
                "    scheduler: rr\n    real_servers:"
            )
            out += [f"      - {{address: {rip(i, j)}, port: 53}}" for j in range(DESTS)]
        elif kind == 4:  # direct routing, thresholds, a comment
            out.append(
                f"  - name: vs{i}  # direct routing\n    address: {vip(i)}\n    port: 8000\n"
                "    scheduler: wrr\n    forwarding: dr\n    real_servers:"
            )
            out += [
                f"      - {{address: {rip(i, j)}, weight: 10, upper_threshold: 1000, "
                "lower_threshold: 800}"
                for j in range(DESTS)
            ]
        elif kind == 5:  # firewall mark
            out.append(
                f"  - name: vs{i}\n    fwmark: {i + 1}\n    family: ipv4\n    scheduler: sh\n"
                "    scheduler_flags: [sh-port]\n    real_servers:"
            )
            out += [f"      - {{address: {rip(i, j)}, port: 80}}" for j in range(DESTS)]
        else:  # the common shape (bench/ipvs_apply's)
            out.append(
                f"  - name: vs{i}\n    address: {vip(i)}\n    port: 80\n    scheduler: wlc\n"
                "    real_servers:"
            )
            out += [
                f"      - {{address: {rip(i, j)}, port: 8080, weight: 1}}" for j in range(DESTS)
            ]
    return "\n".join(out) + "\n"
