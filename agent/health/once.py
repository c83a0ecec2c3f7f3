"""``lvs-agent check-health``: every configured check run once, and what each answered.

Owns the command's selection (``--virtual-server``), its output (one line per
virtual server, real server and check, or ``--json``) and its exit status: 0
when every check passed, 3 when some failed, 1 for a file that is invalid or a
virtual server the file does not name. It runs the probes of ``probes`` through
``scheduler.check_once`` (each check identity probed once, however many virtual
servers share it; at most ``MAX_IN_FLIGHT`` at a time) with full handshakes, so
it needs no raw socket, no IPVS and no root. It must never change anything:
not the IPVS table, not ``state_dir``, not the running agent's state.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from agent.health.config import CheckKey, Pool
from agent.health.pools import pools_of
from agent.health.scheduler import OnceResult, check_once

if TYPE_CHECKING:
    from agent.config.model import Config

EXIT_HEALTHY: Final = 0
EXIT_ERROR: Final = 1
EXIT_UNHEALTHY: Final = 3
MAX_IN_FLIGHT: Final = 256  # probes at once; each holds a socket or a process


def chosen_pools(config: Config, virtual_server: str | None) -> tuple[Pool, ...] | None:
    """The pools to check: all, or the one named (None: no such virtual server)."""
    pools = pools_of(config)
    if virtual_server is None:
        return pools
    chosen = tuple(p for p in pools if p.name == virtual_server)
    return chosen or None


def run(pools: Sequence[Pool], max_in_flight: int = MAX_IN_FLIGHT) -> list[OnceResult]:
    """Every check of ``pools`` once, on a loop of its own."""
    return asyncio.run(check_once(pools, max_in_flight))


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def describe(key: CheckKey) -> str:
    """What was checked, in a few words: ``http 10.0.1.21:8080/healthz``."""
    check, target = key.check, key.target
    if check.type == "exec":
        return "exec " + " ".join(check.command)
    where = _hostport(target.address, target.port)
    if check.type in ("http", "https"):
        return f"{check.type} {where}{check.path}"
    if check.type == "dns":
        return f"dns {where} {check.query_name} {check.query_type}"
    return f"{check.type} {where}"


def _weight(result: OnceResult) -> str:
    dynamic = result.result.weight
    if dynamic is None:
        return ""
    return f" (weight {dynamic.apply(result.member.weight)} of {result.member.weight})"


def lines(results: Sequence[OnceResult]) -> list[str]:
    """One aligned line per result: result, virtual server, real server, check, reason,
    duration."""
    rows = [
        (
            "ok" if r.result.ok else "FAIL",
            r.pool,
            _hostport(r.member.address, r.member.port),
            describe(r.key),
            r.result.reason + _weight(r),
            f"{r.result.duration * 1000:.1f}ms",
        )
        for r in results
    ]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
        + f"  {row[4]}  {row[5]}"
        for row in rows
    ]


def as_json(results: Sequence[OnceResult]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        target = r.key.target
        dynamic = r.result.weight
        out.append(
            {
                "virtual_server": r.pool,
                "real_server": {"address": r.member.address, "port": r.member.port},
                "check": r.key.check.type,
                "target": {
                    "address": target.address,
                    "port": target.port,
                    "source_address": target.source_address,
                },
                "description": describe(r.key),
                "ok": r.result.ok,
                "reason": r.result.reason,
                "duration": round(r.result.duration, 6),
                "weight": None if dynamic is None else dynamic.apply(r.member.weight),
            }
        )
    return out


def main(
    config: Config,
    virtual_server: str | None = None,
    json_output: bool = False,
    out: TextIO | None = None,
) -> int:
    """The command: checks, prints, returns the exit status."""
    out = out or sys.stdout
    pools = chosen_pools(config, virtual_server)
    if pools is None:
        names = ", ".join(vs.name for vs in config.virtual_servers) or "none"
        print(
            f"lvs-agent: {config.source} has no virtual server {virtual_server!r} "
            f"(it has: {names})",
            file=sys.stderr,
        )
        return EXIT_ERROR
    results = run(pools)
    failed = sum(not r.result.ok for r in results)
    if json_output:
        json.dump(as_json(results), out, indent=1)
        out.write("\n")
    else:
        text = lines(results)
        out.write("".join(f"{line}\n" for line in text))
    probes = len({r.key for r in results})
    unchecked = sum(1 for p in pools for m in p.members if not m.checks)
    summary = (
        f"{len(results)} check{'s' if len(results) != 1 else ''} "
        f"({probes} probe{'s' if probes != 1 else ''}): "
        f"{len(results) - failed} passed, {failed} failed"
    )
    if unchecked:
        summary += f"; {unchecked} real server{'s' if unchecked != 1 else ''} without checks"
    out.flush()
    print(summary, file=sys.stderr)
    return EXIT_UNHEALTHY if failed else EXIT_HEALTHY
