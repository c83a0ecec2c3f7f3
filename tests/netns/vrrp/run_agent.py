"""Run a VrrpService from a JSON spec until SIGTERM/SIGINT (test scaffolding).

Usage: python run_agent.py '{"vrrp_instances": [{...}], "vrrp_sync_groups": [...]}'
Logs state changes to stdout with monotonic timestamps. The netns tests start it
with ``ip netns exec`` so every socket and netlink call lives in that namespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from agent.vrrp.config import (
    GarpConfig,
    SyncGroupConfig,
    TrackInterfaceConfig,
    TrackScriptConfig,
    VrrpConfig,
    VrrpInstanceConfig,
)
from agent.vrrp.service import VrrpService


def build(spec: dict[str, list[dict[str, object]]]) -> VrrpConfig:
    instances = []
    for raw in spec.get("vrrp_instances", []):
        d = dict(raw)
        d["garp"] = GarpConfig(**d.get("garp", {}))  # type: ignore[arg-type]
        d["track_interfaces"] = tuple(
            TrackInterfaceConfig(**t) for t in d.get("track_interfaces", [])  # type: ignore[attr-defined]
        )
        d["track_scripts"] = tuple(
            TrackScriptConfig(**t) for t in d.get("track_scripts", [])  # type: ignore[attr-defined]
        )
        for key in ("virtual_ips", "unicast_peers"):
            d[key] = tuple(d.get(key, ()))  # type: ignore[call-overload]
        instances.append(VrrpInstanceConfig(**d))  # type: ignore[arg-type]
    groups = [
        SyncGroupConfig(name=str(g["name"]), instances=tuple(g["instances"]),  # type: ignore[call-overload]
                        notify=g.get("notify"))  # type: ignore[arg-type]
        for g in spec.get("vrrp_sync_groups", [])
    ]
    return VrrpConfig(tuple(instances), tuple(groups))


async def run(config: VrrpConfig) -> None:
    service = VrrpService(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    print(f"{time.monotonic():.3f} started", flush=True)
    await stop.wait()
    await service.stop()
    for name, c in service.counters().items():
        print(f"{time.monotonic():.3f} counters {name} {c}", flush=True)
    print(f"{time.monotonic():.3f} stopped", flush=True)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(created).3f %(name)s %(message)s"
    )
    asyncio.run(run(build(json.loads(sys.argv[1]))))
