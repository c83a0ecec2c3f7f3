"""Kernel tier: real IPVS, run inside the VM (``scripts/test`` boots it).

Outside the VM the tier is skipped with the reason; with LVS_AGENT_KERNEL_TIER=1
(set by the test command inside the VM), or wherever every test must run
(tests/check_skips.py), a missing IPVS fails the run instead.

``ipvsadm`` is the referee: what the agent reads back with its own decoder
(``IpvsKernel.dump()``) is checked against ``ipvsadm -S -n`` and its listings
(``assert_ipvsadm_agrees``). Which schedulers a kernel has varies by build and
version, so ``available_schedulers`` probes them once per session and tests
program only those (``require_schedulers``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from agent.config.model import SCHEDULERS
from agent.ipvs.model import (
    AF_INET6,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    IP_VS_SVC_F_SCHED1,
    IP_VS_SVC_F_SCHED2,
    IP_VS_SVC_F_SCHED3,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TUN_FLAG_CSUM,
    TUN_FLAG_REMCSUM,
    Forwarding,
    KernelTable,
    ServiceKey,
    Timeouts,
    TunnelType,
)
from agent.lab import netns
from tests.check_skips import strict

KERNEL_TIER = os.environ.get("LVS_AGENT_KERNEL_TIER") == "1"


def why_no_ipvs() -> str | None:
    if os.geteuid() != 0:
        return "the kernel tier needs root"
    with contextlib.suppress(FileNotFoundError):
        subprocess.run(["modprobe", "ip_vs"], capture_output=True, check=False, timeout=60)
    if not os.path.exists("/proc/net/ip_vs"):
        return "the running kernel has no IPVS (modprobe ip_vs did not provide it)"
    return None


@pytest.fixture(scope="session", autouse=True)
def ipvs_kernel() -> None:
    why = why_no_ipvs()
    if why is None:
        return
    if KERNEL_TIER or strict():
        pytest.fail(f"kernel tier: {why}")
    pytest.skip(f"kernel tier: {why}; it runs inside the VM (see README)")


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh network namespace: its own, empty IPVS table."""
    name = f"kt-{uuid.uuid4().hex[:8]}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def ipvsadm(ns: str, *args: str) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "ipvsadm", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, f"ipvsadm {' '.join(args)}: {proc.stderr}"
    return proc.stdout


# --- schedulers --------------------------------------------------------------------

# Every IPVS scheduler the configuration accepts (net/netfilter/ipvs/ip_vs_<name>.c):
# SCHEDULERS of agent.config.model. A kernel build may lack any of them (Debian's 6.1
# has no twos; a later one may have it).


@pytest.fixture(scope="session")
def available_schedulers(ipvs_kernel: None) -> frozenset[str]:
    """The schedulers this kernel loads: ``ipvsadm -A ... -s NAME`` for each, once per
    session, in a scratch namespace (a missing one fails with ENOENT)."""
    name = f"kt-sched-{uuid.uuid4().hex[:8]}"
    netns.add(name)
    found: set[str] = set()
    try:
        for port, sched in enumerate(SCHEDULERS, 1):
            proc = subprocess.run(
                netns.exec_argv(name, ["ipvsadm", "-A", "-t", f"192.0.2.1:{port}", "-s", sched]),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if proc.returncode == 0:
                found.add(sched)
            elif "not found" not in proc.stderr:
                pytest.fail(f"probing scheduler {sched}: ipvsadm says {proc.stderr.strip()!r}")
    finally:
        netns.delete(name)
    print(
        f"schedulers in this kernel: {' '.join(sorted(found))}; "
        f"missing: {' '.join(sorted(set(SCHEDULERS) - found)) or 'none'}"
    )
    return frozenset(found)


def require_schedulers(available: frozenset[str], names: Iterable[str]) -> None:
    """Fail, naming the modules, unless the kernel has every scheduler a test programs."""
    missing = sorted(set(names) - available)
    if missing:
        modules = ", ".join(f"ip_vs_{m}" for m in missing)
        pytest.fail(f"this kernel lacks the scheduler(s) the test programs: {modules}")


EVERY_OPTION = Path(__file__).parent / "data" / "every-option.ipvsadm"


@pytest.fixture
def every_option_schedulers(available_schedulers: frozenset[str]) -> None:
    """The kernel has each scheduler that data/every-option.yaml programs."""
    require_schedulers(available_schedulers, re.findall(r" -s (\S+)", EVERY_OPTION.read_text()))


# --- ipvsadm as the referee ----------------------------------------------------------

Rules = dict[str, dict[str, str]]


def ipvsadm_rules(text: str) -> tuple[Rules, dict[tuple[str, str], dict[str, str]]]:
    """Parse ``ipvsadm -S -n``: services by id, dests by (service id, address:port)."""
    services: Rules = {}
    dests: dict[tuple[str, str], dict[str, str]] = {}
    for line in text.splitlines():
        tok = line.split()
        if not tok:
            continue
        opts: dict[str, str] = {}
        i = 1
        while i < len(tok):
            if i + 1 < len(tok) and not tok[i + 1].startswith("-"):
                opts[tok[i]] = tok[i + 1]
                i += 2
            else:
                opts[tok[i]] = ""
                i += 1
        sid = next(f"{o} {opts[o]}" for o in ("-t", "-u", "--sctp-service", "-f") if o in opts)
        if "-6" in opts:
            sid += " -6"
        if tok[0] == "-A":
            services[sid] = opts
        else:
            dests[(sid, opts["-r"])] = opts
    return services, dests


def ipvsadm_id(key: ServiceKey) -> str:
    """How ``ipvsadm -S -n`` names a service: "-t 192.0.2.1:80", "-f 7 -6"."""
    if key.fwmark:
        return f"-f {key.fwmark}" + (" -6" if key.af == AF_INET6 else "")
    opt = {IPPROTO_TCP: "-t", IPPROTO_UDP: "-u", IPPROTO_SCTP: "--sctp-service"}[key.protocol]
    host = f"[{key.address}]" if key.af == AF_INET6 else key.address
    return f"{opt} {host}:{key.port}"


# ipvsadm names scheduler flags after the scheduler where it has names for them.
_FLAG_NAMES = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
_FLAG_BITS = (IP_VS_SVC_F_SCHED1, IP_VS_SVC_F_SCHED2, IP_VS_SVC_F_SCHED3)
_FWD_OPT = {Forwarding.NAT: "-m", Forwarding.TUNNEL: "-i", Forwarding.DR: "-g"}
_TUN_NAMES = {TunnelType.IPIP: "ipip", TunnelType.GUE: "gue", TunnelType.GRE: "gre"}
_CSUM_OPT = {0: "--tun-nocsum", TUN_FLAG_CSUM: "--tun-csum", TUN_FLAG_REMCSUM: "--tun-remcsum"}


def _flag_names(scheduler: str, flags: int) -> set[str]:
    own = _FLAG_NAMES.get(scheduler, ())
    return {
        own[n] if n < len(own) else f"flag-{n + 1}"
        for n, bit in enumerate(_FLAG_BITS)
        if flags & bit
    }


def _host_port(af: int, address: str, port: int) -> str:
    return f"[{address}]:{port}" if af == AF_INET6 else f"{address}:{port}"


def assert_ipvsadm_agrees(ns: str, table: KernelTable) -> None:
    """``table`` (a dump of ``ns``'s IPVS table) is what ipvsadm reads there: every
    service with its scheduler, flags, persistence, netmask and engine, every real
    server with its forwarding, weight, tunnel and thresholds, and nothing else."""
    services, dests = ipvsadm_rules(ipvsadm(ns, "-S", "-n"))
    assert set(services) == {ipvsadm_id(k) for k in table}
    for key, ks in table.items():
        s = ks.service
        sid = ipvsadm_id(key)
        o = services[sid]
        assert o["-s"] == s.scheduler, sid
        assert ("-o" in o) == bool(s.flags & IP_VS_SVC_F_ONEPACKET), sid
        assert set(filter(None, o.get("-b", "").split(","))) == _flag_names(s.scheduler, s.flags), (
            sid
        )
        assert o.get("--pe", "") == s.pe_name, sid
        assert ("-p" in o) == bool(s.flags & IP_VS_SVC_F_PERSISTENT), sid
        if "-p" in o:
            assert int(o["-p"]) == s.timeout, sid
            v6 = key.af == AF_INET6
            full = "128" if v6 else "255.255.255.255"
            mask = o.get("-M", full)
            assert (int(mask) if v6 else int(ipaddress.IPv4Address(mask))) == s.netmask, sid
        assert {r for (i, r) in dests if i == sid} == {
            _host_port(dk.af, dk.address, dk.port) for dk in ks.dests
        }, sid
        for dk, kd in ks.dests.items():
            d = kd.dest
            where = f"{sid} -r {_host_port(dk.af, dk.address, dk.port)}"
            r = dests[(sid, _host_port(dk.af, dk.address, dk.port))]
            assert _FWD_OPT[Forwarding(d.fwd)] in r, where
            assert int(r["-w"]) == d.weight, where
            if d.fwd == Forwarding.TUNNEL and "--tun-type" in r:  # kernels >= 5.2
                assert r["--tun-type"] == _TUN_NAMES[TunnelType(d.tun_type)], where
                if d.tun_type == TunnelType.GUE:
                    assert int(r["--tun-port"]) == d.tun_port, where
                csum = {opt for opt in _CSUM_OPT.values() if opt in r}
                if d.tun_type == TunnelType.IPIP:
                    assert csum == set(), where
                else:
                    assert csum == {_CSUM_OPT[d.tun_flags]}, where
    assert len(dests) == sum(len(ks.dests) for ks in table.values())
    # ipvsadm -S leaves thresholds out; its listing shows them.
    assert ipvsadm_thresholds(ns) == Counter(
        (_host_port(dk.af, dk.address, dk.port), kd.dest.u_threshold, kd.dest.l_threshold)
        for ks in table.values()
        for dk, kd in ks.dests.items()
    )


def ipvsadm_thresholds(ns: str) -> Counter[tuple[str, int, int]]:
    """(real server, upper, lower threshold) of every line of ``ipvsadm -Ln --thresholds``."""
    found: Counter[tuple[str, int, int]] = Counter()
    for line in ipvsadm(ns, "-L", "-n", "--thresholds").splitlines():
        tok = line.split()
        if len(tok) >= 4 and tok[0] == "->" and tok[2].isdigit():
            found[(tok[1], int(tok[2]), int(tok[3]))] += 1
    return found


def ipvsadm_timeouts(ns: str) -> Timeouts:
    """The connection timeouts ``ipvsadm -L -n --timeout`` shows."""
    out = ipvsadm(ns, "-L", "-n", "--timeout")
    assert out.startswith("Timeout (tcp tcpfin udp): "), out
    tcp, tcp_fin, udp = (int(t) for t in out.split(":", 1)[1].split())
    return Timeouts(tcp, tcp_fin, udp)
