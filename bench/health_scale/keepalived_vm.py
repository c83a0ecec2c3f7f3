"""The engine next to keepalived's TCP_CHECK at 1,000 targets, same VM boot, CPU ratio.

``sudo .venv/bin/python -m bench.health_scale --vm [--seconds 20] [--rounds 2] [--tcp 1000]``

``--tcp`` takes a comma-separated list (``--tcp 200,1000``): each round then
runs both sides at each count in turn, all in one boot. Under emulation
keepalived makes fewer checks than are due at 1,000 targets; at a count where
it keeps its schedule (its measured checks a second near the number due) both
sides do the same work a second, and CPU per second of wall compares like with
like. The report gives both ratios, per second and per check, and each side's
checks a second against those due.

keepalived's checker programs IPVS, which this machine's kernel lacks, so the
comparison boots the lab VM (``agent.lab.vm``, software emulation: absolute
figures are slow, the ratio is what counts) and runs there, in the same
namespaces as the host benchmark: ``hs-chk`` checks, ``hs-tgt`` answers for
every target address (``run.serve_targets``). In turn, ``--rounds`` times:

- keepalived (``-C``, the checker only) with one virtual server whose
  ``--tcp`` real servers each have ``TCP_CHECK { connect_timeout 1 }`` and
  ``delay_loop 1``; measured for ``--seconds`` once every real server is in
  the IPVS table;
- the engine (``run.engine``) with the same targets, ``tcp`` checks every 1 s
  with a 1 s timeout, for as long.

CPU seconds are read with psutil (keepalived: the parent and its checker
child). The checks each side really made are counted on the target side: an
nftables counter of SYNs to port 80 in ``hs-tgt`` (keepalived connects and
closes; the engine's tcp checks are half-open, SYN / SYN-ACK / RST).
Results print as a table and go to ``results-vm.json`` beside this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.health_scale.run import (
    CHK,
    HERE,
    ROOT,
    TCP_NET,
    TGT,
    addresses,
    in_checker,
    sh,
    topology_down,
    topology_up,
)

VIP = "10.99.9.9"


def keepalived_conf(n: int) -> str:
    lines = [
        "global_defs {",
        "  router_id hs-bench",
        "}",
        f"virtual_server {VIP} 80 {{",
        "  delay_loop 1",
        "  lb_algo rr",
        "  lb_kind NAT",
        "  protocol TCP",
    ]
    for a in addresses(TCP_NET, n):
        lines += [
            f"  real_server {a} 80 {{",
            "    weight 1",
            "    TCP_CHECK {",
            "      connect_timeout 1",
            "    }",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def syn_counter_up() -> None:
    rules = (
        "table inet hsbench {\n"
        " chain input {\n"
        "  type filter hook input priority 0; policy accept;\n"
        "  tcp dport 80 tcp flags & (syn | ack) == syn counter\n"
        " }\n"
        "}\n"
    )
    subprocess.run(["ip", "netns", "exec", TGT, "nft", "-f", "-"], input=rules.encode(), check=True)


def syns() -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", TGT, "nft", "-j", "list", "table", "inet", "hsbench"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
    raise RuntimeError("no SYN counter")


def ipvs_real_servers() -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", CHK, "ipvsadm", "-Ln"], capture_output=True, text=True
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip().startswith("->") and ":80" in line)


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def run_keepalived(n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    conf = tmp / "keepalived.conf"
    conf.write_text(keepalived_conf(n))
    log = (tmp / "keepalived.log").open("wb")
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            CHK,
            "keepalived",
            "-n",
            "-l",
            "-C",
            "-f",
            str(conf),
            "-p",
            str(tmp / "keepalived.pid"),
            "-c",
            str(tmp / "checkers.pid"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        t0 = time.monotonic()
        while ipvs_real_servers() < n:
            if proc.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(
                    "keepalived did not program its real servers: "
                    + (tmp / "keepalived.log").read_text(errors="replace")[-1000:]
                )
            time.sleep(1.0)
        time.sleep(3.0)  # past the first round of checks
        procs = [p for p in psutil.Process(proc.pid).children(recursive=True)]
        procs = [p for p in [psutil.Process(proc.pid), *procs] if p.name() == "keepalived"]
        cpu0, s0, w0 = cpu_of(procs), syns(), time.monotonic()
        rss = []
        while time.monotonic() - w0 < seconds:
            time.sleep(1.0)
            rss.append(sum(p.memory_info().rss for p in procs))
        cpu1, s1, wall = cpu_of(procs), syns(), time.monotonic() - w0
        return {
            "cpu_s": cpu1 - cpu0,
            "wall_s": wall,
            "checks": s1 - s0,
            "processes": len(procs),
            "peak_rss_mb": max(rss) / 2**20,
            "real_servers_up": ipvs_real_servers(),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        sh("ip", "netns", "exec", CHK, "ipvsadm", "-C", check=False)


def run_engine(n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    out = tmp / "engine.json"
    args = ["--role", "engine", "--out", str(out), "--seconds", str(seconds)]
    s0 = syns()
    subprocess.run(in_checker([*args, "--tcp", str(n), "--http", "0"]), cwd=ROOT, check=True)
    s1 = syns()
    e = json.loads(out.read_text())
    return {
        "cpu_s": e["cpu_s"],
        "cpu_user_s": e["cpu_user_s"],
        "cpu_system_s": e["cpu_system_s"],
        "wall_s": e["wall_s"],
        "checks": s1 - s0,
        "probes": e["probes"],
        "failures": e["failures"],
        "peak_rss_mb": e["peak_rss_mb"],
        "lateness_p99_ms": e["lateness_p99_ms"],
    }


def version() -> str:
    r = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
    return ((r.stdout or "") + (r.stderr or "")).splitlines()[0]


def in_target() -> list[str]:
    return ["ip", "netns", "exec", TGT, sys.executable, "-m", "bench.health_scale"]


def in_vm(counts: list[int], seconds: float, rounds: int, out: Path) -> None:
    topology_up()
    targets = subprocess.Popen(
        [*in_target(), "--role", "targets"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="health-scale-vm-"))
    runs: list[dict[str, Any]] = []
    try:
        assert targets.stdout is not None and targets.stdout.readline().strip() == "ready"
        syn_counter_up()
        for i in range(rounds):
            for n in counts:
                ka = run_keepalived(n, seconds, tmp)
                print(f"round {i + 1}, {n} targets: keepalived {ka}", flush=True)
                eng = run_engine(n, seconds, tmp)
                print(f"round {i + 1}, {n} targets: engine {eng}", flush=True)
                runs.append({"round": i + 1, "targets": n, "keepalived": ka, "engine": eng})
    finally:
        targets.kill()
        targets.wait()
        topology_down()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "vm": {"nproc": os.cpu_count(), "kernel": platform.release()},
        "keepalived_version": version(),
        "params": {"tcp": counts, "seconds": seconds, "rounds": rounds},
        "runs": runs,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    report(result)


def report(r: dict[str, Any]) -> None:
    """Per round and side: checks a second against those due, CPU per second and per check."""
    print(
        f"{'round':>5} {'targets':>7} {'side':>10} {'CPU s':>7} {'wall s':>7} {'checks/s':>8} "
        f"{'of due':>6} {'CPU/s':>6} {'µs/check':>9} {'RSS MB':>7}"
    )
    runs = r["runs"]
    for i, run in enumerate(runs):
        n, k = run.get("targets", r["params"]["tcp"]), run.get("round", i + 1)
        for side in ("keepalived", "engine"):
            x = run[side]
            rate = x["checks"] / x["wall_s"]
            print(
                f"{k:5d} {n:7d} {side:>10} {x['cpu_s']:7.2f} {x['wall_s']:7.2f} "
                f"{rate:8.0f} {rate / n:6.2f} {x['cpu_s'] / x['wall_s']:6.2f} "
                f"{1e6 * x['cpu_s'] / max(1, x['checks']):9.0f} {x['peak_rss_mb']:7.1f}"
            )
    for n in sorted({run.get("targets", r["params"]["tcp"]) for run in runs}):
        mine = [run for run in runs if run.get("targets", r["params"]["tcp"]) == n]
        tot = {
            side: [sum(run[side][k] for run in mine) for k in ("cpu_s", "wall_s", "checks")]
            for side in ("keepalived", "engine")
        }
        (kc, kw, kn), (ec, ew, en) = tot["keepalived"], tot["engine"]
        print(
            f"{n} targets (due {n}/s): keepalived made {kn / kw:.0f}/s ({kn / kw / n:.0%} of due), "
            f"engine {en / ew:.0f}/s ({en / ew / n:.0%}); engine / keepalived: CPU per second "
            f"of wall {(ec / ew) / (kc / kw):.2f}, CPU per check {(ec / en) / (kc / kn):.2f}"
        )


def main(counts: list[int], seconds: float, rounds: int) -> int:
    """On the host: boot the VM and run ``in_vm`` there (inside it: run it directly)."""
    # the 1,000-target run keeps its file; other counts get their own beside it
    suffix = "" if counts == [1000] else "-" + "-".join(map(str, counts))
    out = HERE / f"results-vm{suffix}.json"
    from agent.lab.topology import ipvs_available

    if ipvs_available():
        in_vm(counts, seconds, rounds, out)
        return 0
    from agent.lab.vm import run_in_vm

    cmd = (
        f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m bench.health_scale "
        f"--vm --tcp {','.join(map(str, counts))} --seconds {seconds} --rounds {rounds}"
    )
    # boot and imports, then per turn keepalived's start-up and both sides' runs
    limit = 240 + rounds * len(counts) * (2 * seconds + 150)
    return run_in_vm(cmd, rwdirs=[str(ROOT)], memory="2G", timeout=max(780, limit))
