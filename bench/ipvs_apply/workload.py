"""The benchmark table: N NAT services on port 80, each with 4 real servers on 8080."""

from __future__ import annotations

DESTS = 4


def vip(i: int) -> str:
    return f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def rip(i: int, j: int) -> str:
    return f"172.{16 + j}.{i // 250 % 250}.{i % 250 + 1}"


def ipvsadm_rules(n: int, scheduler: str = "wlc") -> str:
    """The same table as ipvsadm-restore input."""
    out = []
    for i in range(n):
        out.append(f"-A -t {vip(i)}:80 -s {scheduler}")
        for j in range(DESTS):
            out.append(f"-a -t {vip(i)}:80 -r {rip(i, j)}:8080 -m -w 1")
    return "\n".join(out) + "\n"
