"""Real servers that misbehave, in a namespace: each is detected, with its reason, within
fall x interval + timeout, and recovers within rise x interval; nothing is left behind.

Every case runs at once in one scheduler (one virtual server per case) so the file
takes seconds. The bounds carry ``SLACK`` for a loaded shared machine, plus the time
the checker's own loop was seen stalled (an HTTP probe gets that time back, bounded),
plus, for the exec check, the time killing its process tree takes (a /proc walk).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from agent.health import Check, Pool, PoolPolicy, Scheduler, member

from .conftest import TARGET_IP, Site, open_fds

INTERVAL = 0.5
TIMEOUT = 0.3
RISE = 2
FALL = 2
SLACK = 1.0
DETECT = FALL * INTERVAL + TIMEOUT + SLACK
RECOVER = RISE * INTERVAL + SLACK
EXEC_KILL = 1.0  # per timed-out exec probe: stopping and killing the tree, then reaping
MARKER = "37.123"  # the exec script's sleeps, found afterwards by their argv

EXEC_SCRIPT = f"""#!/bin/sh
[ -e "$1" ] && exit 0
trap '' TERM
sh -c 'trap "" TERM; sleep {MARKER}' &
sleep {MARKER}
"""


@dataclass
class Case:
    name: str
    check: Check
    port: int
    broken: str  # the server's mode while broken ("" for nftables)
    healthy: str
    reason: str  # the failure reason (its start)
    udp: bool = False


def check(kind: str, **kw: object) -> Check:
    return Check(kind, interval=INTERVAL, timeout=TIMEOUT, rise=RISE, fall=FALL, **kw)  # type: ignore[arg-type]


def cases(tmp: Path) -> list[Case]:
    tls = {"tls_ca_file": str(tmp / "ca.pem"), "tls_server_name": "good.test"}
    flag = tmp / "exec-healthy"
    script = tmp / "check.sh"
    script.write_text(EXEC_SCRIPT)
    script.chmod(0o755)
    body = {"expect_body": "healthy"}
    return [
        Case("closed port", check("tcp"), 8001, "closed", "ok", "refused"),
        Case("SYN dropped", check("tcp"), 8002, "", "ok", "timeout"),
        Case("accept then hang", check("http"), 8003, "hang", "ok", "timeout"),
        Case("RST after accept", check("http"), 8004, "rst", "ok", "reset"),
        Case("slow answer", check("http"), 8005, "slow", "ok", "timeout"),
        Case("wrong status", check("http"), 8006, "503", "ok", "status 503"),
        Case("wrong body", check("http", **body), 8007, "wrongbody", "ok", "body"),
        Case("redirect", check("http"), 8008, "redirect", "ok", "status 302"),
        Case(
            "TLS handshake failure", check("https", **tls), 8009, "tls-garbage", "tls-ok", "tls: "
        ),
        Case(
            "expired certificate",
            check("https", **tls),
            8010,
            "tls-expired",
            "tls-ok",
            "tls: certificate has expired",
        ),
        Case(
            "wrong-name certificate",
            check("https", **tls),
            8011,
            "tls-wrongname",
            "tls-ok",
            "tls: hostname mismatch",
        ),
        Case("endless body", check("http", **body), 8012, "endless", "ok", "body"),
        Case("garbage bytes", check("http"), 8013, "garbage", "ok", "garbage"),
        Case(
            "tcp expect on garbage",
            check("tcp", send=b"GET / HTTP/1.0\r\n\r\n", expect=r"^HTTP/1\.1 200"),
            8014,
            "garbage",
            "ok",
            "expect",
        ),
        Case("agent down", check("agent"), 8015, "agent:down", "agent:up 50%", "agent down"),
        Case(
            "ICMP unreachable",
            check("udp", send=b"ping", expect="^pong"),
            5301,
            "closed",
            "echo",
            "icmp unreachable",
            udp=True,
        ),
        Case(
            "DNS SERVFAIL",
            check("dns", query_name="example.org"),
            5302,
            "dns-servfail",
            "dns-ok",
            "rcode SERVFAIL",
            udp=True,
        ),
        Case(
            "exec ignoring SIGTERM, forking",
            check("exec", command=(str(script), str(flag))),
            0,
            "",
            "",
            "timeout",
        ),
    ]


def marker_processes() -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if MARKER in " ".join(p.info["cmdline"] or ()):
            out.append(p.pid)
    return out


async def watch(s: Scheduler, names: list[str], up: bool, limit: float) -> dict[str, float]:
    """Seconds until each pool's member reached ``up``; missing ones never did."""
    start = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < len(names) and time.monotonic() - start < limit:
        for name in names:
            pool = s.pool(name)
            assert pool is not None
            h = s.member(name, pool.members[0].key)
            if name not in seen and h is not None and h.up == up:
                seen[name] = time.monotonic() - start
        await asyncio.sleep(0.02)
    return seen


def test_misbehaving_servers_are_detected_and_recover(site: Site) -> None:
    table = cases(site.dir)
    site.modes(
        tcp={c.port: c.broken for c in table if not c.udp and c.broken},
        udp={c.port: c.broken for c in table if c.udp},
    )
    site.drop_syn(8002, True)
    site.modes(tcp={8002: "ok"})
    pools = [
        Pool(c.name, (member(TARGET_IP, c.port, 10, (c.check,)),), PoolPolicy()) for c in table
    ]
    names = [c.name for c in table]
    reasons: dict[str, str] = {}

    stalls: list[float] = []

    async def scenario() -> tuple[dict[str, float], dict[str, float], Scheduler]:
        s = Scheduler(pools)
        s.start()
        try:
            down = await watch(s, names, False, DETECT + 2.0 + FALL * EXEC_KILL)
            stalls.append(s.stalled_seconds)
            for c in table:
                pool = s.pool(c.name)
                assert pool is not None
                h = s.member(c.name, pool.members[0].key)
                reasons[c.name] = h.reason if h is not None else ""
            # heal every server at once
            site.drop_syn(8002, False)
            (site.dir / "exec-healthy").touch()
            site.modes(
                tcp={c.port: c.healthy for c in table if not c.udp and c.healthy},
                udp={c.port: c.healthy for c in table if c.udp},
                settle=0.0,
            )
            up = await watch(s, names, True, RECOVER + 2.0)
            stalls.append(s.stalled_seconds - stalls[0])
            return down, up, s
        finally:
            s.stop()

    down, up, s = site.run(scenario)
    problems = []
    for c in table:
        detect = DETECT + min(stalls[0], FALL * TIMEOUT * 3)
        if c.check.type == "exec":
            detect += FALL * EXEC_KILL
        if c.name not in down or down[c.name] > detect:
            problems.append(f"{c.name}: down after {down.get(c.name)}s (bound {detect:.2f}s)")
        elif not reasons[c.name].split(": ", 1)[-1].lower().startswith(c.reason.lower()):
            problems.append(f"{c.name}: reason {reasons[c.name]!r}, wanted {c.reason!r}")
        recover = RECOVER + min(stalls[1], RISE * TIMEOUT * 3)
        if c.name not in up or up[c.name] > recover:
            problems.append(f"{c.name}: up after {up.get(c.name)}s (bound {recover:.2f}s)")
    assert not problems, "\n".join(problems)
    agent = s.decision("agent down")
    assert agent is not None
    assert agent.weights[(TARGET_IP, 8015)] == 5  # "up 50%" of weight 10
    deadline = time.monotonic() + 5.0
    while marker_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker_processes() == [], "the exec check left processes behind"


def test_open_fds_stable_over_ten_thousand_checks(site: Site) -> None:
    ports = list(range(8101, 8141))
    modes = {p: ("ok", "closed", "hang", "rst")[i % 4] for i, p in enumerate(ports)}
    site.modes(tcp=modes)
    fast = {"interval": 0.05, "timeout": 0.1, "rise": 1, "fall": 1}
    pools = [
        Pool(
            f"fd{p}",
            (
                member(
                    TARGET_IP,
                    p,
                    1,
                    (
                        Check("tcp", **fast),  # type: ignore[arg-type]
                        Check("http", **fast),
                    ),
                ),
            ),
        )  # type: ignore[arg-type]
        for p in ports
    ]

    async def scenario() -> tuple[int, int, int]:
        # warm up once (lazy imports, the loop's own fds), then count
        s = Scheduler(pools[:1])
        s.start()
        await asyncio.sleep(0.3)
        s.stop()
        await asyncio.sleep(0.2)
        before = open_fds()
        s = Scheduler(pools)
        s.start()
        deadline = time.monotonic() + 60.0
        try:
            while sum(s.stats.probes.values()) < 10_000 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            s.stop()
        await asyncio.sleep(0.5)  # cancelled probes close their sockets
        return before, open_fds(), sum(s.stats.probes.values())

    before, after, probes = site.run(scenario)
    assert probes >= 10_000
    assert after <= before, f"{after - before} fds leaked over {probes} checks"
