"""The /metrics exposition of a large IPVS table, per ``metrics.per_real_server`` mode,
next to node_exporter's IPVS collector reading the same table.

``.venv/bin/python -m bench.metrics_scale [--services 10000] [--real-servers 4] [--scrapes 5]``

Builds an IPVS table of ``--services`` TCP services with ``--real-servers`` real
servers each (as the reconciler's dump would hold it, with non-zero counters), and
serves it with the agent's own /metrics endpoint (``agent.metrics.serve``, on a
loopback port, its loop in a thread) once per mode: ``full``, ``aggregate``,
``off``. The anchor is ``prometheus-node-exporter --collector.ipvs`` (Debian) given
the same table as ``/proc/net/ip_vs`` and ``/proc/net/ip_vs_stats`` files under
``--path.procfs`` (node_exporter exports three gauges per real server and no
per-service or per-real-server counters). Each scrape is timed by the client,
HTTP included; reported: series, bytes, median and best scrape time, the agent's
CPU time to render the exposition alone (best of ``--scrapes``, in this process),
and the ratios full / mode and mode / node_exporter (median scrape times). Needs no
root and no IPVS. node_exporter comes from ``apt-get install
prometheus-node-exporter`` (not installed by scripts/bootstrap: on a machine with
systemd the package starts an exporter on port 9100); without it the anchor row is
left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from agent.ipvs.model import (
    AF_INET,
    Dest,
    DestKey,
    KernelDest,
    KernelService,
    Service,
    ServiceKey,
    Stats,
)
from agent.metrics import AgentMetrics, serve

MODES = ("full", "aggregate", "off")
NODE_EXPORTER = "prometheus-node-exporter"


def vip(i: int) -> str:
    return f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"


def rip(i: int, j: int) -> str:
    return f"172.{16 + j}.{i // 256 % 256}.{i % 256}"


def build_table(services: int, real_servers: int) -> dict[ServiceKey, KernelService]:
    table = {}
    for i in range(services):
        key = ServiceKey(AF_INET, 6, vip(i), 80)
        dests = {}
        for j in range(real_servers):
            d = Dest(DestKey(AF_INET, rip(i, j), 8080), weight=1 + j)
            dests[d.key] = KernelDest(d, 10 + j, 20 + j, 0, Stats(i, 2 * i, 3 * i, 4 * i, 5 * i))
        table[key] = KernelService(Service(key, "wlc"), dests, Stats(i, i, i, i, i))
    return table


def _hex(address: str) -> str:
    return "".join(f"{int(o):02X}" for o in address.split("."))


def write_procfs(root: Path, table: dict[ServiceKey, KernelService]) -> None:
    """The table as the kernel prints it in /proc/net/ip_vs (ip_vs_ctl.c)."""
    net = root / "net"
    net.mkdir(parents=True)
    lines = [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn",
    ]
    for key, svc in table.items():
        lines.append(f"TCP  {_hex(key.address)}:{key.port:04X} {svc.service.scheduler}")
        for dkey, kd in svc.dests.items():
            lines.append(
                f"  -> {_hex(dkey.address)}:{dkey.port:04X}      Masq    "
                f"{kd.dest.weight:<6} {kd.active_conns:<10} {kd.inactive_conns:<10}"
            )
    (net / "ip_vs").write_text("\n".join(lines) + "\n")
    (net / "ip_vs_stats").write_text(
        "   Total Incoming Outgoing         Incoming         Outgoing\n"
        "   Conns  Packets  Packets            Bytes            Bytes\n"
        "     16AA370 E33656E5        0    51D8C8883AB3        0\n"
        "\n"
        " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
        "       4       1C        0              B86            0\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as reply:
        body = reply.read()
    return time.perf_counter() - started, bytes(body)


def series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def measure(url: str, scrapes: int) -> dict[str, float]:
    times = []
    body = b""
    for _ in range(scrapes):
        seconds, body = scrape(url)
        times.append(seconds)
    return {
        "series": series(body),
        "bytes": len(body),
        "median_s": statistics.median(times),
        "best_s": min(times),
    }


def agent_runs(table: dict[ServiceKey, KernelService], scrapes: int) -> dict[str, dict[str, float]]:
    metrics = AgentMetrics()
    metrics.ipvs.table = table
    metrics.ipvs.dumped_at = metrics.ipvs.clock()
    loop = asyncio.new_event_loop()
    port = free_port()
    server = loop.run_until_complete(serve(metrics, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    results = {}
    try:
        for mode in MODES:
            metrics.set_per_real_server(mode)
            results[mode] = measure(f"http://127.0.0.1:{port}/metrics", scrapes)
            cpu = []
            for _ in range(scrapes):
                started = time.process_time()
                metrics.exposition()
                cpu.append(time.process_time() - started)
            results[mode]["cpu_s"] = min(cpu)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return results


def node_exporter_run(
    table: dict[ServiceKey, KernelService], scrapes: int
) -> dict[str, float] | None:
    binary = shutil.which(NODE_EXPORTER)
    if binary is None:
        print(f"{NODE_EXPORTER} not installed (Debian package of that name): no anchor")
        return None
    with tempfile.TemporaryDirectory(prefix="lvs-bench-procfs-") as tmp:
        write_procfs(Path(tmp), table)
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{port}",
                f"--path.procfs={tmp}",
                "--collector.disable-defaults",
                "--collector.ipvs",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 20
            while True:
                try:
                    scrape(url)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("node_exporter did not answer") from None
                    time.sleep(0.1)
            result = measure(url, scrapes)
            _, body = scrape(url)
            if b"node_ipvs_backend_weight{" not in body:
                raise RuntimeError("node_exporter read no IPVS table from the fake procfs")
            return result
        finally:
            proc.terminate()
            proc.wait(10)


def version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--real-servers", type=int, default=4)
    ap.add_argument("--scrapes", type=int, default=5)
    args = ap.parse_args()
    table = build_table(args.services, args.real_servers)
    load = os.getloadavg()[0]
    agent = agent_runs(table, args.scrapes)
    anchor = node_exporter_run(table, args.scrapes)
    full = agent["full"]
    print(
        f"{args.services} services x {args.real_servers} real servers; {args.scrapes} scrapes "
        f"each, timed by the client over HTTP on loopback; load {load:.2f} before"
    )
    header = (
        f"{'exporter':<22} {'series':>8} {'bytes':>11} {'median s':>9} {'best s':>8} {'cpu s':>6}"
    )
    print(header + f" {'full/this (time)':>16} {'this/node_exp (time)':>20}")
    rows = [(f"lvs-agent {mode}", agent[mode]) for mode in MODES]
    if anchor is not None:
        rows.append(("node_exporter ipvs", anchor))
    for name, r in rows:
        ratio_full = full["median_s"] / r["median_s"]
        ratio_anchor = r["median_s"] / anchor["median_s"] if anchor else float("nan")
        cpu = f"{r['cpu_s']:>6.2f}" if "cpu_s" in r else f"{'-':>6}"
        print(
            f"{name:<22} {r['series']:>8} {r['bytes']:>11} {r['median_s']:>9.3f} "
            f"{r['best_s']:>8.3f} {cpu} {ratio_full:>16.2f} {ratio_anchor:>20.2f}"
        )
    out = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"nproc {os.cpu_count()}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "node_exporter": version(shutil.which(NODE_EXPORTER) or "") if anchor else None,
        "services": args.services,
        "real_servers": args.real_servers,
        "load_before": load,
        "agent": agent,
        "node_exporter_ipvs": anchor,
    }
    (Path(__file__).parent / "results.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
