"""Established connections through a director failover: how many survive.

    .venv/bin/python -m agent.lab.vm --rwdir "$PWD" -- \\
        "cd $PWD && .venv/bin/python -m bench.conn_survival"          # everything, records
    ... -m bench.conn_survival --drivers agent --no-record           # a part, merged into
                                                                     # results.json
    .venv/bin/python -m bench.conn_survival --from-json              # record saved cells

Real IPVS, so inside the VM (agent.lab.vm). Per cell, agent.lab.connsync builds two
directors, a client and two echo real servers, opens ``--connections`` long-lived TCP
connections through the VIP, moves data on them, fails the master (``crash``: kill -9
of the director's agent, or keepalived's processes, and its links cut; ``planned``:
SIGTERM) and counts the connections that still echo data through the new master.
Cells: lvs-agent with and without ``ipvs.sync``, and keepalived 2.2 with
``lvs_sync_daemon`` configured the same way (VRRP v3 1 s adverts, the same virtual
server, the same sync interface), DR and NAT, in the same VM boot. Targets (DR, with
sync): >= 99 % through a planned handover, >= 95 % through a crash.

Results: a table on stdout, every cell in bench/conn_survival/results.json, and the
"conn_survival" section of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS_MD = REPO / "bench" / "RESULTS.md"
RESULTS_JSON = Path(__file__).with_name("results.json")
TARGETS = {("dr", "planned"): 0.99, ("dr", "crash"): 0.95}
# (driver, sync) in the order of the table
VARIANTS = (("agent", True), ("agent", False), ("keepalived", True))


def key(cell: dict[str, Any]) -> str:
    return f"{cell['driver']}/{cell['forwarding']}/{cell['fault']}/{int(cell['sync'])}"


def run_cells(
    drivers: list[str],
    forwardings: list[str],
    faults: list[str],
    connections: int,
    done: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    from agent.lab.connsync import Survival, measure

    cells = []
    for forwarding in forwardings:
        for fault in faults:
            for driver, sync in VARIANTS:
                if driver not in drivers or (driver == "keepalived" and fault == "handover"):
                    continue  # keepalived has no hand-over command
                if f"{driver}/{forwarding}/{fault}/{int(sync)}" in done:
                    continue
                started = time.monotonic()
                try:
                    r = measure(forwarding, fault, sync, connections, driver=driver)
                    cell = dataclasses.asdict(r)
                except Exception as exc:  # one broken cell must not lose the others
                    failed = Survival(forwarding, fault, sync, connections)
                    failed.note = f"failed: {exc}"[:400]
                    cell = dataclasses.asdict(failed)
                cell["driver"] = driver
                cell["seconds"] = round(time.monotonic() - started, 1)
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    return cells


def share(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    if not cell["opened"]:
        return "failed" if cell.get("note") else "0 opened"
    return f"{cell['survived'] / cell['opened']:.1%} ({cell['survived']}/{cell['opened']})"


def table(cells: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| mode | failover | agent, ipvs.sync | agent, no sync | keepalived, lvs_sync_daemon "
        "| ratio agent/keepalived | synced before the fault (agent / keepalived) "
        "| takeover s (agent / keepalived) | target |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for forwarding in ("dr", "nat"):
        for fault in ("planned", "crash"):
            a = cells.get(f"agent/{forwarding}/{fault}/1")
            n = cells.get(f"agent/{forwarding}/{fault}/0")
            k = cells.get(f"keepalived/{forwarding}/{fault}/1")
            if a is None and n is None and k is None:
                continue

            def frac(c: dict[str, Any] | None) -> float | None:
                return c["survived"] / c["opened"] if c and c["opened"] else None

            fa, fk = frac(a), frac(k)
            ratio = f"{fa / fk:.3f}" if fa is not None and fk else "–"
            target = TARGETS.get((forwarding, fault))
            goal = "as measured"
            if target is not None:
                met = fa is not None and fa >= target
                goal = f">= {target:.0%}: " + ("met" if met else "NOT met")
            synced = f"{a['synced'] if a else '–'} / {k['synced'] if k else '–'}"
            takeover = f"{a['takeover']:.2f} / {k['takeover']:.2f}" if a and k else "–"
            rows.append(
                f"| {forwarding.upper()} | {fault} | {share(a)} | {share(n)} | {share(k)} "
                f"| {ratio} | {synced} | {takeover} | {goal} |"
            )
    return "\n".join(rows)


def machine() -> str:
    ka = subprocess.run(
        ["keepalived", "--version"], capture_output=True, text=True, check=False
    ).stderr.splitlines()
    return (
        f"nproc {os.cpu_count()}, kernel {platform.release()}, Python "
        f"{platform.python_version()}, {ka[0] if ka else 'keepalived ?'}"
    )


def record(cells: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    from bench.vrrp_failover.run import replace_section

    notes = [c for c in cells.values() if c.get("note")]
    section = f"""## conn_survival

`python -m bench.conn_survival` inside the VM (`agent.lab.vm`) — {meta.get("day")};
2-core host, virtme-ng VM (qemu TCG for the kernel tier): {meta.get("machine")}.
Connections per cell: {meta.get("connections")}; VRRP v3, 1 s adverts; d1 master
(priority 150), d2 backup (100); sync on the front interface, defaults otherwise
(`sync_threshold` 3 50). Share = connections that echoed data sent during the
takeover and again after it, over those open and echoing before the fault. "synced"
= the client's ESTABLISHED entries in the backup's table (`ipvsadm -Lnc`) just before
the fault. Crash = kill -9 of the agent (keepalived: all its processes) and the
master's links cut; planned = SIGTERM. Takeover = from the fault until the backup
holds the VIP (polled every 50 ms). "–": a cell not run.

{table(cells)}
"""
    if notes:
        section += (
            "\nCells that did not complete:\n\n"
            + "\n".join(f"- {key(c)}: {c['note']}" for c in notes)
            + "\n"
        )
    replace_section(RESULTS_MD, "conn_survival", section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--drivers", default="agent,keepalived")
    parser.add_argument("--forwarding", default="dr,nat")
    parser.add_argument("--faults", default="planned,crash")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--from-json", action="store_true", help="record the saved cells only")
    parser.add_argument(
        "--missing", action="store_true", help="run only the cells results.json does not hold"
    )
    args = parser.parse_args(argv)
    saved: dict[str, Any] = {"cells": {}, "meta": {}}
    if RESULTS_JSON.exists():
        saved = json.loads(RESULTS_JSON.read_text())
    if not args.from_json:
        cells = run_cells(
            args.drivers.split(","), args.forwarding.split(","), args.faults.split(","),
            args.connections, frozenset(saved["cells"]) if args.missing else frozenset(),
        )  # fmt: skip
        for cell in cells:
            saved["cells"][key(cell)] = cell
        saved["meta"] = {
            "day": datetime.date.today().isoformat(),
            "machine": machine(),
            "connections": args.connections,
        }
        RESULTS_JSON.write_text(json.dumps(saved, indent=1) + "\n")
    print(table(saved["cells"]))
    if not args.no_record:
        record(saved["cells"], saved["meta"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
