"""Health checking at scale on this machine's kernel: the agent's engine next to HAProxy.

``sudo .venv/bin/python -m bench.health_scale [--seconds 60] [--tcp 10000] [--http 1000]``

(``--vm``: keepalived's checker next to the engine in the lab VM, see ``keepalived_vm``;
``--floor``: what a bare Python SYN loop costs per probe beside HAProxy, see ``floor``.)

Two namespaces joined by a veth pair: ``hs-chk`` runs the checker, ``hs-tgt``
answers for every target address at once (a ``local`` route for 10.200.0.0/15 on
its loopback, so 11,000 addresses cost one route) with one plain epoll process
that accepts and closes on port 80 and answers ``200 OK`` on port 8080. The
agent's engine (``agent.health.Scheduler``) checks ``--tcp`` TCP targets every
1 s and ``--http`` HTTP targets every 2 s for ``--seconds``; then HAProxy
checks the same targets at the same intervals for as long. Each run is measured
from outside with psutil: CPU seconds, peak RSS, open fds; the engine also
records every probe's lateness against its schedule. A short cProfile run of the
engine says where its time goes. Results print as a table and go to
``results.json`` beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import platform
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

CHK, TGT = "hs-chk", "hs-tgt"
TCP_NET, HTTP_NET = "10.200", "10.201"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def sh(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True)


def addresses(net: str, n: int) -> list[str]:
    return [f"{net}.{(i + 1) // 256}.{(i + 1) % 256}" for i in range(n)]


def run_delay(pid: int | str = "self") -> float:
    """Seconds the process's threads have waited on a run queue (CPU contention)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def topology_up() -> None:
    topology_down()
    for ns in (CHK, TGT):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", CHK, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", TGT)
    sh("ip", "-n", CHK, "addr", "add", "10.99.0.1/24", "dev", "eth0")
    sh("ip", "-n", TGT, "addr", "add", "10.99.0.2/24", "dev", "eth0")
    for ns in (CHK, TGT):
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", CHK, "route", "add", "10.200.0.0/15", "via", "10.99.0.2")
    # every address of the /15 is local to the target namespace: one route, no 11k addresses
    sh("ip", "-n", TGT, "route", "add", "table", "local", "local", "10.200.0.0/15", "dev", "lo")
    for ns in (CHK, TGT):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.somaxconn=65535")


def topology_down() -> None:
    for ns in (CHK, TGT):
        sh("ip", "netns", "del", ns, check=False)


# -- the targets: one plain epoll loop, accept and close / answer 200 ------------------

HTTP_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def serve_targets() -> None:
    ep = select.epoll()
    listeners = {}
    for port in (80, 8080):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if port == 80:
            # a bare handshake never reaches accept(): a probe that could not RST its
            # SYN-ACK at once (a busy checker) costs the target no accept queue slot
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        s.bind(("0.0.0.0", port))
        s.listen(65535)
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        listeners[s.fileno()] = (s, port)
    conns: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for fd, _ in ep.poll(1.0):
            if fd in listeners:
                lsock, port = listeners[fd]
                while True:
                    try:
                        c, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in (errno.ECONNABORTED, errno.EMFILE):
                            break
                        raise
                    if port == 80:
                        c.close()
                        continue
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
            else:
                c = conns.pop(fd)
                with contextlib.suppress(OSError):
                    if c.recv(4096):
                        c.send(HTTP_200)
                c.close()


# -- the engine run (inside hs-chk) ------------------------------------------------------


def engine(
    seconds: float,
    n_tcp: int,
    n_http: int,
    out: str,
    profile: bool,
    timer: dict[str, float] | None = None,
) -> None:
    from array import array

    from agent.health import Check, Pool, Scheduler, member

    tcp = Check("tcp", interval=1.0, timeout=1.0)
    http = Check("http", interval=2.0, timeout=1.0, path="/")
    pools = [
        Pool("tcp", tuple(member(a, 80, 1, (tcp,)) for a in addresses(TCP_NET, n_tcp))),
        Pool("http", tuple(member(a, 8080, 1, (http,)) for a in addresses(HTTP_NET, n_http))),
    ]
    late = array("d")
    sched = Scheduler(
        pools, max_in_flight=20000, on_start=lambda _k, x: late.append(x), **(timer or {})
    )
    me = psutil.Process()
    samples: dict[str, list[float]] = {"rss": [], "fds": []}

    async def run() -> None:
        sched.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            samples["rss"].append(me.memory_info().rss)
            samples["fds"].append(me.num_fds())
        sched.stop()

    cpu0 = me.cpu_times()
    wait0 = run_delay()
    t0 = time.monotonic()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile(time.process_time)  # CPU, not the idle waits in epoll
        prof.enable()
        asyncio.run(run())
        prof.disable()
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime")
        rows = []
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        for (file, line, fn), v in sorted(
            stats.stats.items(),  # type: ignore[attr-defined]
            key=lambda kv: -kv[1][2],
        )[:15]:
            rows.append(
                {
                    "function": f"{Path(file).name}:{line}({fn})",
                    "tottime": v[2],
                    "share": v[2] / total,
                    "calls": v[1],
                }
            )
        Path(out).write_text(json.dumps({"profile": rows, "total": total}))
        return
    asyncio.run(run())
    cpu1 = me.cpu_times()
    waited = run_delay() - wait0
    wall = time.monotonic() - t0
    probes = sum(sched.stats.probes.values())
    lat = sorted(late)
    result = {
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "cpu_user_s": cpu1.user - cpu0.user,
        "cpu_system_s": cpu1.system - cpu0.system,
        "wall_s": wall,
        "run_queue_wait_s": waited,
        "probes": probes,
        "probes_ok": {f"{t}/{ok}": n for (t, ok), n in sched.stats.probes.items()},
        "failures": {f"{t}/{r}": n for (t, r), n in sched.stats.failures.items()},
        "inconclusive": dict(sched.stats.inconclusive),
        "transitions": {f"{t}/{st}": n for (t, st), n in sched.stats.transitions.items()},
        "loop_lag_buckets": dict(
            zip(
                map(str, sched.stats.loop_lag.bounds),
                sched.stats.loop_lag.cumulative(),
                strict=False,
            )
        ),
        "loop_wakeups": sched.stats.loop_lag.n,
        "peak_rss_mb": max(samples["rss"]) / 2**20,
        "max_fds": max(samples["fds"]),
        "lateness_p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "lateness_p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else None,
        "lateness_max_ms": 1000 * lat[-1] if lat else None,
        "late_over_100ms": sum(1 for x in lat if x > 0.1),
    }
    Path(out).write_text(json.dumps(result))


# -- HAProxy -------------------------------------------------------------------------


def haproxy_config(n_tcp: int, n_http: int, sock: str) -> str:
    lines = [
        "global",
        "  maxconn 2000",
        "  nbthread 1",
        f"  stats socket {sock} mode 600",
        "defaults",
        "  mode tcp",
        "  timeout connect 1s",
        "  timeout check 1s",
        "  timeout client 5s",
        "  timeout server 5s",
        "",
        "backend tcp_targets",
        "  mode tcp",
    ]
    lines += [
        f"  server t{i} {a}:80 check inter 1s" for i, a in enumerate(addresses(TCP_NET, n_tcp))
    ]
    lines += ["", "backend http_targets", "  mode http", "  option httpchk GET /"]
    lines += [
        f"  server h{i} {a}:8080 check inter 2s" for i, a in enumerate(addresses(HTTP_NET, n_http))
    ]
    return "\n".join(lines) + "\n"


def haproxy_stats(sock: str) -> dict[str, int]:
    """Servers by state, and the summed failed checks and UP-to-DOWN transitions."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"show stat\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    counts: dict[str, int] = {"chkfail": 0, "chkdown": 0}
    for line in data.decode().splitlines()[1:]:
        f = line.split(",")
        if len(f) > 22 and f[1] not in ("FRONTEND", "BACKEND"):
            counts[f[17]] = counts.get(f[17], 0) + 1
            counts["chkfail"] += int(f[21] or 0)
            counts["chkdown"] += int(f[22] or 0)
    return counts


def run_haproxy(seconds: float, n_tcp: int, n_http: int, tmp: Path) -> dict[str, Any]:
    sock = str(tmp / "haproxy.sock")
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(haproxy_config(n_tcp, n_http, sock))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", CHK, "haproxy", "-db", "-f", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)
        hp = None
        for _ in range(50):
            kids = psutil.Process(proc.pid).children(recursive=True)
            cands = [psutil.Process(proc.pid), *kids]
            hp = next((p for p in cands if p.name() == "haproxy"), None)
            if hp is not None:
                break
            time.sleep(0.1)
        if hp is None or proc.poll() is not None:
            raise RuntimeError(
                f"haproxy did not start: {proc.stderr.read().decode()[-500:]}"
                if proc.stderr
                else "haproxy did not start"
            )
        cpu0 = hp.cpu_times()
        wait0 = run_delay(hp.pid)
        rss, fds = [], []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(1.0)
            rss.append(hp.memory_info().rss)
            fds.append(hp.num_fds())
        cpu1 = hp.cpu_times()
        waited = run_delay(hp.pid) - wait0
        states = haproxy_stats(sock)
        return {
            "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            "cpu_user_s": cpu1.user - cpu0.user,
            "cpu_system_s": cpu1.system - cpu0.system,
            "peak_rss_mb": max(rss) / 2**20,
            "max_fds": max(fds),
            "run_queue_wait_s": waited,
            "server_states": states,
            "version": subprocess.run(
                ["haproxy", "-v"], capture_output=True, text=True
            ).stdout.splitlines()[0],
        }
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def in_checker(args: list[str]) -> list[str]:
    return ["ip", "netns", "exec", CHK, sys.executable, "-m", "bench.health_scale", *args]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=None, help="60 (--vm: 20 per round)")
    ap.add_argument(
        "--tcp", default=None, help="10000 (--vm: 1000, or a list like 200,1000: each in turn)"
    )
    ap.add_argument("--http", type=int, default=None, help="1000 (--floor: 0, --vm: none)")
    ap.add_argument(
        "--vm", action="store_true", help="keepalived's TCP_CHECK next to the engine, in the VM"
    )
    ap.add_argument(
        "--floor", action="store_true", help="the bare SYN loops' CPU per probe beside HAProxy's"
    )
    ap.add_argument("--rounds", type=int, default=2, help="--vm, --floor: turns of each side")
    ap.add_argument("--profile-seconds", type=float, default=20.0)
    ap.add_argument(
        "--role",
        choices=[
            "main",
            "targets",
            "engine",
            "profile",
            "floor-sendto",
            "floor-sendmmsg",
            "floor-http",
        ],
        default="main",
    )
    ap.add_argument("--out", default="")
    ap.add_argument("--tick", type=float, default=None, help="the engine's timer granularity, s")
    ap.add_argument("--reap", type=float, default=None, help="the engine's longest look gap, s")
    args = ap.parse_args()
    if args.vm:
        from bench.health_scale.keepalived_vm import main as vm_main

        if os.geteuid() != 0:
            sys.exit("health_scale: needs root (network namespaces)")
        counts = [int(c) for c in (args.tcp or "1000").split(",")]
        sys.exit(vm_main(counts, args.seconds or 20.0, args.rounds))
    args.tcp = None if args.tcp is None else int(args.tcp)
    if args.role.startswith("floor-"):
        from bench.health_scale.floor import loop

        mode = args.role.removeprefix("floor-")
        loop(mode, args.seconds, args.http if mode == "http" else args.tcp, args.out)
        return
    if args.floor:
        from bench.health_scale.floor import main as floor_main

        floor_main(args.seconds or 10.0, args.tcp or 10000, args.http or 0, args.rounds)
        return
    args.seconds = 60.0 if args.seconds is None else args.seconds
    args.tcp = 10000 if args.tcp is None else args.tcp
    args.http = 1000 if args.http is None else args.http
    if args.role == "targets":
        serve_targets()
        return
    if args.role in ("engine", "profile"):
        timer = {k: v for k, v in (("tick", args.tick), ("reap", args.reap)) if v is not None}
        engine(args.seconds, args.tcp, args.http, args.out, args.role == "profile", timer)
        return
    if os.geteuid() != 0:
        sys.exit("health_scale: needs root (network namespaces)")
    if shutil.which("haproxy") is None:
        sys.exit("health_scale: needs haproxy (scripts/bootstrap installs it)")
    topology_up()
    targets = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            TGT,
            sys.executable,
            "-m",
            "bench.health_scale",
            "--role",
            "targets",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="health-scale-"))
    try:
        assert targets.stdout is not None and targets.stdout.readline().strip() == "ready"
        tproc = psutil.Process(targets.pid).children(recursive=True)
        target_pids = [p for p in [psutil.Process(targets.pid), *tproc] if "python" in p.name()]
        load0 = os.getloadavg()[0]
        common = ["--seconds", str(args.seconds), "--tcp", str(args.tcp), "--http", str(args.http)]

        def target_cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in target_pids)

        tc0 = target_cpu()
        subprocess.run(
            in_checker(["--role", "engine", "--out", str(tmp / "engine.json"), *common]),
            cwd=ROOT,
            check=True,
        )
        eng = json.loads((tmp / "engine.json").read_text())
        eng["target_cpu_s"] = target_cpu() - tc0
        tc0 = target_cpu()
        hap = run_haproxy(args.seconds, args.tcp, args.http, tmp)
        hap["target_cpu_s"] = target_cpu() - tc0
        prof_args = [
            "--seconds",
            str(args.profile_seconds),
            "--tcp",
            str(args.tcp),
            "--http",
            str(args.http),
        ]
        subprocess.run(
            in_checker(["--role", "profile", "--out", str(tmp / "profile.json"), *prof_args]),
            cwd=ROOT,
            check=True,
        )
        prof = json.loads((tmp / "profile.json").read_text())
        load1 = os.getloadavg()[0]
    finally:
        targets.kill()
        targets.wait()
        topology_down()
    expected = args.seconds * (args.tcp / 1.0 + args.http / 2.0)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "host": {
            "nproc": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_before": load0,
            "load_after": load1,
        },
        "params": vars(args) | {"expected_checks": expected},
        "engine": eng,
        "haproxy": hap,
        "profile": prof,
    }
    (HERE / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    report(result)


def report(r: dict[str, Any]) -> None:
    e, h = r["engine"], r["haproxy"]
    s = r["params"]["seconds"]
    checks = e["probes"]
    print(
        f"engine : {checks} checks in {s:g}s ({checks / s:.0f}/s, expected "
        f"{r['params']['expected_checks'] / s:.0f}/s); failures {e['failures']}"
    )
    print(f"haproxy: servers by state at the end {h['server_states']} ({h['version']})")
    rows = [
        ("CPU seconds", e["cpu_s"], h["cpu_s"]),
        ("CPU share of a core", e["cpu_s"] / s, h["cpu_s"] / s),
        (
            "CPU µs per check",
            1e6 * e["cpu_s"] / checks,
            1e6 * h["cpu_s"] / r["params"]["expected_checks"],
        ),
        ("peak RSS MB", e["peak_rss_mb"], h["peak_rss_mb"]),
        ("max open fds", e["max_fds"], h["max_fds"]),
        ("target CPU seconds", e["target_cpu_s"], h["target_cpu_s"]),
        ("run-queue wait seconds", e["run_queue_wait_s"], h["run_queue_wait_s"]),
    ]
    print(f"{'':24} {'engine':>10} {'haproxy':>10} {'ratio':>7}")
    for name, a, b in rows:
        print(f"{name:24} {a:10.2f} {b:10.2f} {a / b if b else float('nan'):7.2f}")
    print(
        f"lateness p50 {e['lateness_p50_ms']:.2f} ms, p99 {e['lateness_p99_ms']:.2f} ms, "
        f"max {e['lateness_max_ms']:.1f} ms, {e['late_over_100ms']} probes over 100 ms"
    )
    print("profile (engine, tottime share):")
    for row in r["profile"]["profile"][:10]:
        print(f"  {row['share']:6.1%} {row['calls']:>9} {row['function']}")


if __name__ == "__main__":
    main()
