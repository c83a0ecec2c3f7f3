"""``lvs-agent witness``: an acceptor-only member of one or more lock clusters.

A two-director site has no majority when one director is down; a witness is the
third vote. It runs the lock of each configured cluster (``witness.clusters`` and/or a
``lock`` section) and nothing else: no IPVS, no VRRP, no VIPs, and it never campaigns
(its acceptors learn the lease names from the directors' authenticated proposals).
Metrics (``lvs_agent_lock_*``, labelled by cluster) are served on ``metrics.listen``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config
    from agent.lock import LockTransport

log = logging.getLogger("lvs-agent")


def run_witness(config_path: str) -> int:
    from agent.config.loader import load_witness_config
    from agent.daemon import load_for_start

    config = load_for_start(config_path, load_witness_config)
    if config is None:
        return 1
    return asyncio.run(_main(config))


async def _main(config: Config) -> int:
    from agent.daemon import keep_serving_metrics
    from agent.daemon.supervise import supervise
    from agent.lock import IncarnationError, KeyFileError, start_lock
    from agent.metrics import AgentMetrics

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = AgentMetrics()
    running: dict[str, LockTransport] = {}
    try:
        for cfg in config.witness:
            try:
                running[cfg.cluster] = await start_lock(cfg)
            except (KeyFileError, IncarnationError, OSError, ValueError) as exc:
                log.error("witness: cluster %s: cannot start: %s", cfg.cluster, exc)
                return 1
            log.info(
                "witness: %s as %s on %s, %d members, lease %gs",
                cfg.cluster,
                cfg.node_id,
                cfg.listen,
                len(cfg.peers),
                cfg.lease,
            )
        metrics.lock.transports = running
        # A taken metrics port is retried; the lock runs meanwhile (degrade, don't die).
        server = asyncio.ensure_future(
            supervise("metrics listener", lambda: keep_serving_metrics(metrics, config))
        )
        log.info("witness: serving %d cluster(s)", len(running))
        try:
            await stop.wait()
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
        log.info("witness: stopping")
        return 0
    finally:
        for tr in running.values():
            tr.close()
