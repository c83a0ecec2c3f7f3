"""Random walks through configurations, with someone else meddling between applies.

Each step writes a configuration drawn from a pool of services (each in one of
several shapes: scheduler, flags, persistence, one-packet, SIP, tunnels) and of
real servers (weights, ports, forwarding, thresholds), lets "an operator" edit,
delete or add kernel objects with ipvsadm, then runs ``lvs-agent apply``. After
every step, with ipvsadm as the referee:

- the services the configuration names read back exactly as this file's own
  rendering of them (``ipvsadm -S -n``, and ``--thresholds`` for what -S omits);
- a hand-made service that no configuration names is untouched;
- ``lvs-agent plan`` has nothing to do.

The seeds are fixed, so a failure replays; the step number and the meddling
are in the assertion message.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.cli import main
from agent.lab import netns
from tests.kernel.conftest import ipvsadm, require_schedulers


@dataclass(frozen=True)
class Shape:
    """One way a virtual server can be configured, and how ipvsadm -S prints it."""

    yaml: str  # extra keys of the virtual server, one per line
    rule: str  # what follows "-s" in ipvsadm -S: scheduler and options


@dataclass(frozen=True)
class Pool:
    """A virtual server of the pool: its identity and the shapes it can take."""

    name: str
    identity: str  # yaml keys that make the service's identity
    svc: str  # ipvsadm's name for it: "-t 192.0.2.10:80", "-f 20"
    port: int  # 0 for fwmark
    rs_net: str  # its real servers' addresses: rs_net + host
    v6: bool
    shapes: tuple[Shape, ...]
    tunnel_only: bool = False


POOL = (
    Pool(
        "web",
        "address: 192.0.2.10\n    port: 80",
        "-t 192.0.2.10:80",
        80,
        "10.1.0.",
        False,
        (
            Shape("scheduler: wlc", "wlc"),
            Shape("scheduler: rr\n    persistence: {timeout: 300s}", "rr -p 300"),
            Shape("scheduler: sh\n    scheduler_flags: [sh-port]", "sh -b sh-port"),
            Shape(
                "scheduler: wrr\n    persistence: {timeout: 60s, netmask: 255.255.255.0}",
                "wrr -p 60 -M 255.255.255.0",
            ),
        ),
    ),
    Pool(
        "dns",
        "address: 192.0.2.11\n    port: 53\n    protocol: udp",
        "-u 192.0.2.11:53",
        53,
        "10.2.0.",
        False,
        (
            Shape("scheduler: rr", "rr"),
            Shape("scheduler: rr\n    one_packet: true", "rr -o"),
            Shape(
                "scheduler: sed\n    persistence: {timeout: 60s, engine: sip}", "sed -p 60 --pe sip"
            ),
        ),
    ),
    Pool(
        "web6",
        'address: "2001:db8::10"\n    port: 443',
        "-t [2001:db8::10]:443",
        443,
        "2001:db8:3::",
        True,
        (
            Shape("scheduler: wlc", "wlc"),
            Shape(
                "scheduler: sh\n    scheduler_flags: [sh-fallback, sh-port]",
                "sh -b sh-fallback,sh-port",
            ),
            Shape("scheduler: lc\n    persistence: {timeout: 2m, netmask: 64}", "lc -p 120 -M 64"),
        ),
    ),
    Pool(
        "mark",
        "fwmark: 20\n    family: ipv4",
        "-f 20",
        0,
        "10.4.0.",
        False,
        (
            Shape("scheduler: wlc", "wlc"),
            Shape("scheduler: mh\n    scheduler_flags: [mh-port]", "mh -b mh-port"),
            Shape("scheduler: rr\n    persistence: {timeout: 30s}", "rr -p 30"),
        ),
    ),
    Pool(
        "sctp",
        "address: 192.0.2.12\n    port: 2905\n    protocol: sctp",
        "--sctp-service 192.0.2.12:2905",
        2905,
        "10.5.0.",
        False,
        (
            Shape("scheduler: lc", "lc"),
            Shape("scheduler: wlc\n    persistence: {timeout: 1h}", "wlc -p 3600"),
        ),
    ),
    Pool(
        "tunnel",
        "address: 192.0.2.13\n    port: 8443\n    forwarding: tunnel",
        "-t 192.0.2.13:8443",
        8443,
        "10.6.0.",
        False,
        (Shape("scheduler: wrr", "wrr"), Shape("scheduler: wlc", "wlc")),
        tunnel_only=True,
    ),
)

# Real-server options: yaml keys, ipvsadm -S suffix after "-w W", or None for
# "forwarding as the service's" (nat for most of the pool).
TUNNELS = (
    ("tunnel_type: ipip", " --tun-type ipip"),
    (
        "tunnel_type: gue, tunnel_port: 6080, tunnel_checksum: csum",
        " --tun-type gue --tun-port 6080 --tun-csum",
    ),
    ("tunnel_type: gue, tunnel_port: 6081", " --tun-type gue --tun-port 6081 --tun-nocsum"),
    ("tunnel_type: gre, tunnel_checksum: csum", " --tun-type gre --tun-csum"),
    (
        "tunnel_type: gue, tunnel_port: 6082, tunnel_checksum: remcsum",
        " --tun-type gue --tun-port 6082 --tun-remcsum",
    ),
    ("tunnel_type: gre", " --tun-type gre --tun-nocsum"),
)
THRESHOLDS = ((0, 0), (0, 0), (10, 5), (100, 0))

FOREIGN = "-t 203.0.113.9:22"
MEDDLE_SCHEDULER = "dh"  # what the operator switches a service to
ADOPT_SCHEDULER = "lblc"  # what the operator's own services use
SEEDS = [int(s) for s in os.environ.get("LVS_AGENT_WALK_SEEDS", "1 2 3").split()]


def _rs(pool: Pool, rng: random.Random, host: int) -> tuple[str, str, tuple[str, int, int]]:
    """A random real server: its yaml, its ipvsadm -S line, (addr:port, upper, lower)."""
    address = f"{pool.rs_net}{host}"
    keys = [f'address: "{address}"' if pool.v6 else f"address: {address}"]
    weight = rng.choice((0, 1, 1, 5, 100))
    keys.append(f"weight: {weight}")
    port = pool.port
    suffix = ""
    if pool.tunnel_only:
        fwd = "-i"
        ykeys, suffix = rng.choice(TUNNELS)
        keys.append(ykeys)
    else:
        fwd = rng.choice(("-m", "-m", "-g"))
        if fwd == "-g":
            keys.append("forwarding: dr")
        elif pool.port and rng.random() < 0.3:
            port = 8080
            keys.append("port: 8080")
    upper, lower = rng.choice(THRESHOLDS)
    if upper:
        keys.append(f"upper_threshold: {upper}")
    if lower:
        keys.append(f"lower_threshold: {lower}")
    where = f"[{address}]:{port}" if pool.v6 else f"{address}:{port}"
    line = f"-a {pool.svc} -r {where} {fwd} -w {weight}{suffix}"
    return "{" + ", ".join(keys) + "}", line, (where, upper, lower)


def _config(
    rng: random.Random, state_dir: Path
) -> tuple[str, dict[str, tuple[str, list[str]]], list]:
    """A random configuration, and what ipvsadm should show of it."""
    chosen = [p for p in POOL if rng.random() < 0.7]
    parts = [f"state_dir: {state_dir}\nvirtual_servers:"]
    expected: dict[str, tuple[str, list[str]]] = {}
    thresholds = []
    for pool in chosen:
        shape = rng.choice(pool.shapes)
        hosts = rng.sample(range(1, 7), rng.randint(0, 4))
        servers = [_rs(pool, rng, h) for h in hosts]
        rs_yaml = "\n".join(f"      - {y}" for y, _, _ in servers)
        parts.append(
            f"  - name: {pool.name}\n    {pool.identity}\n    {shape.yaml}\n"
            + ("    real_servers:\n" + rs_yaml if servers else "    real_servers: []")
        )
        v6 = " -6" if pool.v6 and pool.svc.startswith("-f") else ""
        expected[pool.svc] = (
            f"-A {pool.svc}{v6} -s {shape.rule}",
            sorted(line for _, line, _ in servers),
        )
        thresholds.extend(t for _, _, t in servers)
    return "\n".join(parts) + "\n", expected, thresholds


def _saved(ns: str) -> dict[str, tuple[str, list[str]]]:
    """ipvsadm -S -n, as service name -> (its -A line, its sorted -a lines)."""
    services: dict[str, tuple[str, list[str]]] = {}
    for line in ipvsadm(ns, "-S", "-n").splitlines():
        m = re.match(r"-([Aa]) (-[tuf] \S+|--sctp-service \S+)", line)
        assert m, line
        if m.group(1) == "A":
            services[m.group(2)] = (line, [])
        else:
            services[m.group(2)][1].append(line)
    return {k: (a, sorted(dests)) for k, (a, dests) in services.items()}


def _thresholds(ns: str) -> set[tuple[str, int, int]]:
    rows = set()
    for line in ipvsadm(ns, "-L", "-n", "--thresholds").splitlines():
        m = re.match(r"\s+-> (\S+)\s+(\d+)\s+(\d+)\s", line)
        if m:
            rows.add((m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


def _meddle(ns: str, rng: random.Random, saved: dict[str, tuple[str, list[str]]]) -> str:
    """One thing an operator does to the table with ipvsadm; what, in words."""
    ours = [k for k in saved if k != FOREIGN]
    kind = rng.choice(
        (
            *("none", "scheduler", "persistence", "weight", "forwarding", "thresholds"),
            *("del-rs", "del-svc", "add-rs", "adopt"),
        )
    )
    if kind == "adopt":
        pool = rng.choice(POOL)
        if pool.svc in saved:
            kind = "none"
        else:
            v6 = ["-6"] if pool.v6 and pool.svc.startswith("-f") else []
            ipvsadm(ns, "-A", *pool.svc.split(), *v6, "-s", ADOPT_SCHEDULER, "-p", "7")
            return f"made {pool.svc} by hand ({ADOPT_SCHEDULER} -p 7)"
    if not ours or kind == "none":
        return "nothing"
    svc = rng.choice(ours)
    dests = saved[svc][1]
    if kind == "scheduler":
        ipvsadm(ns, "-E", *svc.split(), "-s", MEDDLE_SCHEDULER)
        return f"set {svc}'s scheduler to {MEDDLE_SCHEDULER}"
    if kind == "persistence":
        sched = saved[svc][0].split(" -s ")[1].split()[0]
        ipvsadm(ns, "-E", *svc.split(), "-s", sched, "-p", "999")
        return f"made {svc} persistent for 999 s"
    if kind == "del-svc":
        ipvsadm(ns, "-D", *svc.split())
        return f"deleted {svc}"
    if kind == "add-rs":
        rs = "[2001:db8:99::1]:0" if "[" in svc or " -6" in saved[svc][0] else "10.99.0.1:0"
        if not svc.startswith("-f"):
            rs = rs[: rs.rindex(":")] + ":" + svc.rsplit(":", 1)[1]
        ipvsadm(ns, "-a", *svc.split(), "-r", rs, "-g", "-w", "3")
        return f"added {rs} to {svc}"
    if not dests:
        return "nothing"
    rs = rng.choice(dests).split(" -r ")[1].split()[0]
    line = next(d for d in dests if f" -r {rs} " in d).split()
    fwd = line[line.index("-r") + 2]
    if kind == "forwarding":
        # ipvsadm -e sets every field of the real server: weight 1, no thresholds.
        # With -g or -i it also sets the port to the service's: a NAT server on
        # another port cannot be switched in place.
        if rs.endswith(":8080"):
            return "nothing"
        other = "-i" if fwd != "-i" else "-g"
        ipvsadm(ns, "-e", *svc.split(), "-r", rs, other)
        return f"set {rs} in {svc} to forward with {other}"
    if kind == "thresholds":
        ipvsadm(ns, "-e", *svc.split(), "-r", rs, fwd, "-x", "9", "-y", "3")
        return f"set {rs}'s thresholds in {svc} to 9/3"
    if kind == "weight":
        ipvsadm(ns, "-e", *svc.split(), "-r", rs, fwd, "-w", "77")
        return f"set {rs} in {svc} to weight 77"
    ipvsadm(ns, "-d", *svc.split(), "-r", rs)
    return f"deleted {rs} from {svc}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_walk_with_meddling_ends_exactly_as_configured(
    ns: str,
    tmp_path: Path,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
    available_schedulers: frozenset[str],
) -> None:
    walked = {shape.rule.split()[0] for pool in POOL for shape in pool.shapes}
    require_schedulers(available_schedulers, {*walked, "rr", MEDDLE_SCHEDULER, ADOPT_SCHEDULER})
    monkeypatch.setenv("LVS_AGENT_CACHE_DIR", "")
    rng = random.Random(seed)
    ipvsadm(ns, "-A", *FOREIGN.split(), "-s", "rr")
    ipvsadm(ns, "-a", *FOREIGN.split(), "-r", "10.9.9.9:22", "-m", "-w", "7")
    foreign = _saved(ns)[FOREIGN]
    path = tmp_path / "walk.yaml"
    for step in range(12):
        text, expected, thresholds = _config(rng, tmp_path / "state")
        path.write_text(text)
        did = _meddle(ns, rng, _saved(ns)) if step else "nothing"
        where = f"seed {seed} step {step}, after the operator {did}:\n{text}"
        with netns.entered(ns):
            assert main(["apply", "-c", str(path)]) == 0, where
        saved = _saved(ns)
        assert saved.pop(FOREIGN) == foreign, where
        # A service the operator made by hand that the configuration does not name
        # is someone else's: it stays. Only those made in this step can be there.
        extra = {k: v for k, v in saved.items() if k not in expected}
        assert all(f"-s {ADOPT_SCHEDULER} -p 7" in a for a, _ in extra.values()), where
        for k in extra:
            ipvsadm(ns, "-D", *k.split())
            del saved[k]
        assert saved == expected, where
        got = {row for row in _thresholds(ns) if not row[0].startswith("10.9.9.9")}
        assert got == set(thresholds), where
        with netns.entered(ns):
            assert main(["plan", "-c", str(path)]) == 0, where
