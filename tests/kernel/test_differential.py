"""Differential test: ``lvs-agent apply`` against an independent ipvsadm rendering.

Each seed draws a random configuration: every key of every virtual-server,
real-server and ``ipvs`` section present or absent, optional values at their
default and not, address and firewall-mark services, IPv4 and IPv6, NAT, DR and
tunnels (ipip, gue with port and checksum options, gre), schedulers and their
flags, persistence (timeout, netmask, the SIP engine), one-packet scheduling,
thresholds, weights, connection timeouts and sysctls.

A small oracle written here, from ipvsadm(8) and the documented meaning of each
key (README, config.example.yaml), renders the same draw as ``ipvsadm-restore``
input. It must never import ``agent.config`` or ``agent.ipvs``: it is the second
opinion. The oracle's table is restored into one fresh network namespace,
``lvs-agent apply -c FILE`` (the real command, in a subprocess) programs
another, and ``ipvsadm -S -n``, ``ipvsadm -L -n --thresholds``,
``ipvsadm -L --timeout`` and the ``net.ipv4.vs`` sysctls of the two must match.

Seeds: 1-20 by default; ``LVS_AGENT_DIFF_SEEDS`` takes a count (``200``:
seeds 1..200), a range (``1-200``) or a list (``3,17,40``). A failure prints the
seed, the YAML, the restore input and the difference.
"""

from __future__ import annotations

import difflib
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.lab import netns
from tests.kernel.conftest import ipvsadm

# Every scheduler ipvsadm(8) documents; the ones the running kernel lacks are
# dropped by probing (Debian's 6.1 kernel has no twos).
ALL_SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "mh",
    "sed",
    "nq",
    "fo",
    "ovf",
    "twos",
)
# net.ipv4.vs.* keys ipvs.sysctls accepts, with the values a draw may take.
SYSCTLS = {
    "expire_nodest_conn": (0, 1),
    "expire_quiescent_template": (0, 1),
    "conntrack": (0, 1),
    "conn_reuse_mode": (0, 1, 2, 3),
    "sloppy_tcp": (0, 1),
    "sloppy_sctp": (0, 1),
    "schedule_icmp": (0, 1),
    "ignore_tunneled": (0, 1),
    "snat_reroute": (0, 1),
    "pmtu_disc": (0, 1),
}
# (text, seconds): durations as a configuration writes them.
DURATIONS = (
    ("1s", 1),
    ("30s", 30),
    ("90s", 90),
    ("5m", 300),
    ("10m", 600),
    ("1h", 3600),
    ("1h30m", 5400),
    ("2d", 172800),
    ("31d", 2678400),
)
CHECKSUMS = {"ipip": ("nocsum",), "gue": ("nocsum", "csum", "remcsum"), "gre": ("nocsum", "csum")}
FIXED_SEEDS = "1-20"  # 2.5 to 3.5 minutes in the VM


def _seeds() -> list[int]:
    text = os.environ.get("LVS_AGENT_DIFF_SEEDS", FIXED_SEEDS).strip()
    if "-" in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    if "," in text or " " in text:
        return [int(s) for s in text.replace(",", " ").split()]
    return list(range(1, int(text) + 1))


# --- the draw ----------------------------------------------------------------------


@dataclass
class Tun:
    """Tunnel keys as written (None: the key is absent)."""

    type: str | None = None
    port: int | None = None
    checksum: str | None = None

    def any(self) -> bool:
        return (self.type, self.port, self.checksum) != (None, None, None)


@dataclass
class Rs:
    address: str
    port: int | None = None
    weight: int | None = None
    upper: int | None = None
    lower: int | None = None
    forwarding: str | None = None
    tun: Tun = field(default_factory=Tun)
    flow: bool = False  # written as a flow mapping


@dataclass
class Vs:
    name: str
    family: str  # the family the draw means
    address: str | None = None
    port: int | None = None
    protocol: str | None = None  # the key, None: absent
    fwmark: int | None = None
    family_key: bool = False  # fwmark only: write 'family:'
    scheduler: str | None = None
    flags: list[str] | None = None
    forwarding: str | None = None
    tun: Tun = field(default_factory=Tun)
    one_packet: bool | None = None
    # persistence: None absent; else {"timeout": (text, s)|None, "netmask": str|int|None,
    # "engine": str|None}
    persistence: dict[str, object] | None = None
    real_servers: list[Rs] | None = None


@dataclass
class Draw:
    state_dir: str
    node: str | None = None
    metrics: str | None = None
    reconcile: str | None = None
    ipvs: dict[str, object] | None = None  # None: no ipvs section
    services: list[Vs] = field(default_factory=list)


def _maybe(rng: random.Random, p: float = 0.5) -> bool:
    return rng.random() < p


def _draw_tun(rng: random.Random, inherited: str | None) -> Tun:
    """Tunnel keys; ``inherited``: the tunnel type the keys override (None: none)."""
    tun = Tun()
    if _maybe(rng, 0.6):
        tun.type = rng.choice(("ipip", "gue", "gre"))
    kind = tun.type or inherited or "ipip"
    if kind == "gue" and (inherited != "gue" or _maybe(rng)):
        tun.port = rng.choice((6080, 6081, 5555))
    if _maybe(rng):
        tun.checksum = rng.choice(CHECKSUMS[kind])
    return tun


def _v6(net: int, host: int) -> str:
    return f"2001:db8:{net:x}::{host:x}"


def _draw_vs(rng: random.Random, index: int, schedulers: list[str], before: list[Vs]) -> Vs:
    family = rng.choice(("ipv4", "ipv4", "ipv6"))
    vs = Vs(name=f"vs{index}", family=family)
    taken = {(v.address, v.port, v.protocol or "tcp") for v in before if v.address}
    shared = [v for v in before if v.address]
    if shared and _maybe(rng, 0.3):
        # Another service on a VIP already in use: another port or protocol.
        other = rng.choice(shared)
        for _ in range(20):
            port = rng.choice((80, 443, 53, 5060, 2905, 8080))
            protocol = rng.choice((None, "tcp", "udp", "sctp"))
            if (other.address, port, protocol or "tcp") not in taken:
                family = vs.family = other.family
                vs.address, vs.port, vs.protocol = other.address, port, protocol
                break
    if vs.address is not None:
        pass
    elif _maybe(rng, 0.3):
        # Unique: 1..12, or 16 * n + index.
        vs.fwmark = index + 1 if _maybe(rng, 0.7) else rng.randrange(1, 2**28) * 16 + index
    else:
        vs.address = f"192.0.2.{index + 1}" if family == "ipv4" else f"2001:db8::{index + 1:x}"
        vs.port = rng.choice((80, 443, 53, 5060, 2905, 8080))
        if _maybe(rng, 0.7):
            vs.protocol = rng.choice(("tcp", "udp", "sctp"))
    protocol = vs.protocol or ("tcp" if vs.fwmark is None else None)

    if _maybe(rng, 0.8):
        vs.scheduler = rng.choice(schedulers)
    scheduler = vs.scheduler or "wlc"
    if _maybe(rng, 0.4):
        vs.flags = []
        bits = {
            1: ["flag-1"] + ([f"{scheduler}-fallback"] if scheduler in ("sh", "mh") else []),
            2: ["flag-2"] + ([f"{scheduler}-port"] if scheduler in ("sh", "mh") else []),
            3: ["flag-3"],
        }
        for names in bits.values():
            if _maybe(rng, 0.4):
                vs.flags.append(rng.choice(names))
        rng.shuffle(vs.flags)

    if _maybe(rng, 0.6):
        vs.forwarding = rng.choice(("nat", "dr", "tunnel"))
    forwarding = vs.forwarding or "nat"
    if _maybe(rng, 0.7 if forwarding == "tunnel" else 0.2):
        vs.tun = _draw_tun(rng, None)

    if _maybe(rng, 0.3):
        if protocol in ("udp", None):
            vs.one_packet = _maybe(rng)
        else:
            vs.one_packet = False

    if _maybe(rng, 0.5):
        p: dict[str, object] = {"timeout": None, "netmask": None, "engine": None}
        if _maybe(rng, 0.7):
            p["timeout"] = rng.choice(DURATIONS)
        if _maybe(rng, 0.5):
            if family == "ipv6":
                p["netmask"] = rng.choice((48, 64, 96, 128))
            elif _maybe(rng):
                p["netmask"] = rng.choice(("255.255.255.0", "255.255.0.0", "255.255.255.255"))
            else:
                p["netmask"] = rng.choice((16, 24, 32))
        if protocol == "udp" and vs.fwmark is None and _maybe(rng, 0.4):
            p["engine"] = "sip"
        vs.persistence = p

    if _maybe(rng, 0.9):
        vs.real_servers = [
            _draw_rs(rng, vs, index, host, forwarding) for host in range(1, rng.randint(0, 4) + 1)
        ]
    rs_list = vs.real_servers or []
    # Tunnel keys need forwarding: tunnel on the virtual server or a real server.
    tunnels = any((rs.forwarding or forwarding) == "tunnel" for rs in rs_list)
    if vs.tun.any() and forwarding != "tunnel" and not tunnels:
        vs.tun = Tun()
    if vs.fwmark is not None:
        direct = {
            _family(rs.address) for rs in rs_list if (rs.forwarding or forwarding) != "tunnel"
        }
        # Without 'family:' a fwmark service takes its (non-tunnel) real servers'.
        vs.family_key = (not direct and family == "ipv6") or _maybe(rng, 0.5)
    return vs


def _family(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


def _draw_rs(rng: random.Random, vs: Vs, index: int, host: int, vs_forwarding: str) -> Rs:
    forwarding = vs_forwarding
    rs_forwarding = None
    if _maybe(rng, 0.4):
        rs_forwarding = rng.choice(("nat", "dr", "tunnel"))
        forwarding = rs_forwarding
    family = vs.family
    if forwarding == "tunnel" and _maybe(rng, 0.2):
        family = "ipv6" if family == "ipv4" else "ipv4"
    # Real servers of their own, or shared with other services.
    net = 99 if _maybe(rng, 0.3) else index
    address = f"10.{net}.0.{host}" if family == "ipv4" else _v6(net + 1, host)
    rs = Rs(address=address, forwarding=rs_forwarding, flow=_maybe(rng))
    if vs.fwmark is not None:
        if _maybe(rng, 0.4):
            rs.port = rng.choice((0, 80, 8080, 443))
    elif forwarding == "nat":
        if _maybe(rng, 0.5):
            rs.port = rng.choice((vs.port, 8080, 8443, 5353))
    elif _maybe(rng, 0.3):
        rs.port = vs.port  # DR and tunnels keep the service's port
    if _maybe(rng, 0.6):
        rs.weight = rng.choice((0, 1, 2, 100, 65535))
    if _maybe(rng, 0.3):
        rs.upper = rng.choice((0, 10, 1000, 65535))
        if rs.upper and _maybe(rng, 0.5):
            rs.lower = rng.randint(0, rs.upper)
    elif _maybe(rng, 0.1):
        rs.lower = 0
    if forwarding == "tunnel" and _maybe(rng, 0.4):
        inherited = (vs.tun.type or "ipip") if vs.tun.any() else None
        rs.tun = _draw_tun(rng, inherited)
        # A GUE real server needs a port, its own or its virtual server's.
        if (rs.tun.type or inherited) == "gue" and rs.tun.port is None and vs.tun.port is None:
            rs.tun.port = 6090
    return rs


def _draw(rng: random.Random, state_dir: Path, schedulers: list[str]) -> Draw:
    draw = Draw(state_dir=str(state_dir))
    if _maybe(rng, 0.3):
        draw.node = rng.choice(("director1", "lb-a.example"))
    if _maybe(rng, 0.3):
        draw.metrics = rng.choice(("127.0.0.1:9469", "127.0.0.1:19469", "[::1]:9469"))
    if _maybe(rng, 0.3):
        draw.reconcile = rng.choice(("30s", "5s", "2m"))
    if _maybe(rng, 0.7):
        ipvs: dict[str, object] = {}
        if _maybe(rng, 0.6):
            timeouts = {}
            for key in ("tcp", "tcp_fin", "udp"):
                if _maybe(rng):
                    timeouts[key] = rng.choice(DURATIONS[:8])
            ipvs["timeouts"] = timeouts
        if _maybe(rng, 0.4):
            ipvs["drain_timeout"] = rng.choice(("0s", "30s", "5m", "1h"))
        if _maybe(rng, 0.6):
            sysctls = {}
            for key, values in SYSCTLS.items():
                if _maybe(rng, 0.3):
                    value = rng.choice(values)
                    sysctls[key] = bool(value) if values == (0, 1) and _maybe(rng, 0.3) else value
            ipvs["sysctls"] = sysctls
        draw.ipvs = ipvs
    for index in range(rng.randint(1, 12)):
        draw.services.append(_draw_vs(rng, index, schedulers, draw.services))
    return draw


# --- the YAML ----------------------------------------------------------------------


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):  # a duration
        return str(value[0])
    if isinstance(value, str) and ":" in value:
        return f'"{value}"'
    return str(value)


def _rs_keys(rs: Rs) -> list[tuple[str, object]]:
    keys: list[tuple[str, object]] = [("address", rs.address)]
    for key, value in (
        ("port", rs.port),
        ("weight", rs.weight),
        ("upper_threshold", rs.upper),
        ("lower_threshold", rs.lower),
        ("forwarding", rs.forwarding),
        ("tunnel_type", rs.tun.type),
        ("tunnel_port", rs.tun.port),
        ("tunnel_checksum", rs.tun.checksum),
    ):
        if value is not None:
            keys.append((key, value))
    return keys


def render_yaml(draw: Draw) -> str:
    out = [f"state_dir: {draw.state_dir}"]
    if draw.node is not None:
        out.append(f"node: {{name: {draw.node}}}")
    if draw.metrics is not None:
        out += ["metrics:", f"  listen: {_scalar(draw.metrics)}"]
    if draw.reconcile is not None:
        out.append(f"reconcile_interval: {draw.reconcile}")
    if draw.ipvs is not None:
        out.append("ipvs:" if draw.ipvs else "ipvs: {}")
        for key, value in draw.ipvs.items():
            if isinstance(value, dict):
                out.append(f"  {key}:" if value else f"  {key}: {{}}")
                out += [f"    {k}: {_scalar(v)}" for k, v in value.items()]
            else:
                out.append(f"  {key}: {value}")
    out.append("virtual_servers:")
    for vs in draw.services:
        keys: list[tuple[str, object]] = [("name", vs.name)]
        if vs.fwmark is not None:
            keys.append(("fwmark", vs.fwmark))
            if vs.family_key:
                keys.append(("family", vs.family))
        else:
            keys += [("address", vs.address), ("port", vs.port)]
            if vs.protocol is not None:
                keys.append(("protocol", vs.protocol))
        for key, value in (
            ("scheduler", vs.scheduler),
            ("forwarding", vs.forwarding),
            ("tunnel_type", vs.tun.type),
            ("tunnel_port", vs.tun.port),
            ("tunnel_checksum", vs.tun.checksum),
            ("one_packet", vs.one_packet),
        ):
            if value is not None:
                keys.append((key, value))
        first = True
        for key, value in keys:
            out.append(f"  {'- ' if first else '  '}{key}: {_scalar(value)}")
            first = False
        if vs.flags is not None:
            out.append(f"    scheduler_flags: [{', '.join(vs.flags)}]")
        if vs.persistence is not None:
            p = [(k, v) for k, v in vs.persistence.items() if v is not None]
            out.append("    persistence: {" + ", ".join(f"{k}: {_scalar(v)}" for k, v in p) + "}")
        if vs.real_servers is not None:
            out.append("    real_servers:" if vs.real_servers else "    real_servers: []")
            for rs in vs.real_servers:
                pairs = _rs_keys(rs)
                if rs.flow:
                    out.append(
                        "      - {" + ", ".join(f"{k}: {_scalar(v)}" for k, v in pairs) + "}"
                    )
                else:
                    out += [
                        f"      {'- ' if i == 0 else '  '}{k}: {_scalar(v)}"
                        for i, (k, v) in enumerate(pairs)
                    ]
    return "\n".join(out) + "\n"


# --- the oracle: the draw as ipvsadm-restore input -----------------------------------


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _dotted(prefix: int) -> str:
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return ".".join(str(mask >> s & 0xFF) for s in (24, 16, 8, 0))


def _effective_tunnel(vs: Vs, rs: Rs) -> list[str]:
    """ipvsadm's tunnel options for a tunnelling real server.

    The real server's keys override the virtual server's one by one; a port is
    only GUE's, a checksum only where the tunnel type takes it (ipvsadm(8)).
    """
    kind = rs.tun.type or vs.tun.type or "ipip"
    args = ["--tun-type", kind]
    if kind == "gue":
        port = rs.tun.port if rs.tun.port is not None else vs.tun.port
        args += ["--tun-port", str(port)]
    checksum = rs.tun.checksum
    if checksum is None:
        allowed = {"ipip": (), "gue": ("csum", "remcsum"), "gre": ("csum",)}[kind]
        checksum = vs.tun.checksum if vs.tun.checksum in allowed else "nocsum"
    if kind != "ipip":
        args.append(f"--tun-{checksum}")
    return args


def render_restore(draw: Draw) -> tuple[str, dict[str, int]]:
    """ipvsadm-restore input for the draw, and the sysctls it sets."""
    lines: list[str] = []
    sysctls: dict[str, int] = {}
    if draw.ipvs is not None:
        timeouts = draw.ipvs.get("timeouts") or {}
        assert isinstance(timeouts, dict)
        if timeouts:
            # --set takes all three; 0 keeps the current value (ipvsadm(8)).
            values = [timeouts.get(k, (None, 0))[1] for k in ("tcp", "tcp_fin", "udp")]
            lines.append("--set " + " ".join(str(v) for v in values))
        raw = draw.ipvs.get("sysctls") or {}
        assert isinstance(raw, dict)
        sysctls = {k: int(v) for k, v in raw.items()}
    for vs in draw.services:
        if vs.fwmark is not None:
            rs_list = vs.real_servers or []
            default = vs.forwarding or "nat"
            direct = {
                _family(rs.address) for rs in rs_list if (rs.forwarding or default) != "tunnel"
            }
            family = vs.family if vs.family_key else (direct.pop() if direct else "ipv4")
            svc = f"-f {vs.fwmark}" + (" -6" if family == "ipv6" else "")
        else:
            assert vs.address is not None and vs.port is not None
            family = vs.family
            option = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}[vs.protocol or "tcp"]
            svc = f"{option} {_where(vs.address, vs.port)}"
        add = f"-A {svc} -s {vs.scheduler or 'wlc'}"
        if vs.flags:
            add += " -b " + ",".join(vs.flags)
        if vs.persistence is not None:
            timeout = vs.persistence["timeout"]
            add += f" -p {timeout[1] if isinstance(timeout, tuple) else 300}"
            netmask = vs.persistence["netmask"]
            if netmask is not None:
                if family == "ipv4" and isinstance(netmask, int):
                    netmask = _dotted(netmask)
                add += f" -M {netmask}"
            if vs.persistence["engine"]:
                add += f" --pe {vs.persistence['engine']}"
        if vs.one_packet:
            add += " -o"
        lines.append(add)
        for rs in vs.real_servers or []:
            forwarding = rs.forwarding or vs.forwarding or "nat"
            if vs.fwmark is not None:
                port = rs.port or 0
            else:
                assert vs.port is not None
                port = rs.port if rs.port is not None and forwarding == "nat" else vs.port
            method = {"nat": "-m", "dr": "-g", "tunnel": "-i"}[forwarding]
            weight = 1 if rs.weight is None else rs.weight
            line = f"-a {svc} -r {_where(rs.address, port)} {method} -w {weight}"
            if rs.upper:
                line += f" -x {rs.upper}"
            if rs.lower:
                line += f" -y {rs.lower}"
            if forwarding == "tunnel":
                line += " " + " ".join(_effective_tunnel(vs, rs))
            lines.append(line)
    return "\n".join(lines) + "\n", sysctls


# --- running both --------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    oracle: str
    agent: str


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Two fresh network namespaces: each its own, empty IPVS table and sysctls."""
    tag = uuid.uuid4().hex[:8]
    names = Pair(f"dfo-{tag}", f"dfa-{tag}")
    netns.add(names.oracle)
    try:
        netns.add(names.agent)
        yield names
    finally:
        netns.delete(names.agent)
        netns.delete(names.oracle)


@pytest.fixture(scope="module")
def schedulers() -> list[str]:
    """The schedulers the running kernel has: each tried in a scratch namespace."""
    name = f"dfs-{uuid.uuid4().hex[:8]}"
    netns.add(name)
    found = []
    try:
        for port, scheduler in enumerate(ALL_SCHEDULERS, start=1):
            proc = subprocess.run(
                netns.exec_argv(name, ["ipvsadm", "-A", "-t", f"10.0.0.1:{port}", "-s", scheduler]),
                capture_output=True,
                check=False,
                timeout=60,
            )
            if proc.returncode == 0:
                found.append(scheduler)
    finally:
        netns.delete(name)
    assert "wlc" in found, "the kernel has no wlc scheduler, the default"
    return found


def _blocks(text: str, header: int = 0) -> list[str]:
    """A listing with its services in a canonical order: each service line
    followed by its real servers, sorted; the services sorted."""
    lines = text.splitlines()
    head, body = lines[:header], lines[header:]
    services: list[list[str]] = []
    for line in body:
        if line.startswith(("-a ", "  ")) and services:
            services[-1].append(line)
        else:
            services.append([line])
    ordered = sorted([s[0], *sorted(s[1:])] for s in services)
    return head + [line for s in ordered for line in s]


def _sysctls(ns: str) -> dict[str, str]:
    values = {}
    with netns.entered(ns):
        for key in SYSCTLS:
            values[key] = Path(f"/proc/sys/net/ipv4/vs/{key}").read_text().strip()
    return values


def _views(ns: str) -> dict[str, list[str]]:
    return {
        "ipvsadm -S -n": _blocks(ipvsadm(ns, "-S", "-n")),
        "ipvsadm -L -n --thresholds": _blocks(ipvsadm(ns, "-L", "-n", "--thresholds"), 3),
        "ipvsadm -L --timeout": ipvsadm(ns, "-L", "--timeout").splitlines(),
        "sysctls": [f"{k} = {v}" for k, v in sorted(_sysctls(ns).items())],
    }


@pytest.mark.parametrize("seed", _seeds())
def test_apply_programs_what_ipvsadm_restore_does(
    pair: Pair, schedulers: list[str], tmp_path: Path, seed: int
) -> None:
    draw = _draw(random.Random(seed), tmp_path / "state", schedulers)
    text = render_yaml(draw)
    restore, sysctls = render_restore(draw)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    where = f"seed {seed} (LVS_AGENT_DIFF_SEEDS={seed})\n--- YAML\n{text}--- restore\n{restore}"

    proc = subprocess.run(
        ["ip", "netns", "exec", pair.oracle, "ipvsadm-restore"],
        input=restore,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, f"ipvsadm-restore: {proc.stderr}\n{where}"
    for key, value in sysctls.items():
        netns.sysctl(pair.oracle, f"net.ipv4.vs.{key}", str(value))

    agent = Path(sys.executable).with_name("lvs-agent")
    proc = subprocess.run(
        ["ip", "netns", "exec", pair.agent, str(agent), "apply", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "LVS_AGENT_CACHE_DIR": ""},
    )
    assert proc.returncode == 0, f"lvs-agent apply: {proc.stdout}{proc.stderr}\n{where}"

    want, got = _views(pair.oracle), _views(pair.agent)
    diffs = [
        "\n".join(
            difflib.unified_diff(want[k], got[k], f"{k} (oracle)", f"{k} (agent)", lineterm="")
        )
        for k in want
        if want[k] != got[k]
    ]
    assert not diffs, "\n".join(diffs) + f"\n{where}"
