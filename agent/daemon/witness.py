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
    from agent.daemon.priority import LoopPriority
    from agent.lock import LockTransport

log = logging.getLogger("lvs-agent")


def run_witness(config_path: str) -> int:
    from agent.config.loader import load_witness_config
    from agent.daemon import load_for_start

    config = load_for_start(config_path, load_witness_config)
    if config is None:
        return 1
    return asyncio.run(_main(config, config_path))


def _on_reload(config_path: str, running: Config, priority: LoopPriority) -> None:
    """SIGHUP: the file is read and checked, and what changed is named; the clusters
    keep running as they are (an acceptor's identity and timing change only on a
    restart, which its quarantine makes safe). A signal that ended the process would
    take this vote away from every cluster it serves."""
    from agent.config import ConfigError
    from agent.config.loader import load_witness_config

    try:
        new = load_witness_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload: %s", problem)
        log.error("reload: %s is invalid; the witness keeps running as it is", config_path)
        return
    except OSError as exc:
        log.error("reload: cannot read %s: %s", config_path, exc.strerror)
        return
    priority.apply(new.realtime_priority)  # takes effect at once
    old = {c.cluster: c for c in running.witness}
    now = {c.cluster: c for c in new.witness}
    changed = sorted(n for n in old.keys() | now.keys() if old.get(n) != now.get(n))
    if new.metrics_host != running.metrics_host or new.metrics_port != running.metrics_port:
        changed.append("metrics.listen")
    if not changed:
        log.info("reload: %s unchanged", config_path)
    else:
        log.warning(
            "reload: %s changed (%s): a witness applies it on restart",
            config_path,
            ", ".join(changed),
        )


async def _main(config: Config, config_path: str = "") -> int:
    from agent.daemon import keep_serving_metrics
    from agent.daemon.priority import LoopPriority
    from agent.daemon.supervise import supervise
    from agent.lock import IncarnationError, KeyFileError, start_lock
    from agent.metrics import AgentMetrics

    metrics = AgentMetrics()
    priority = LoopPriority(lambda: metrics.errors.labels(kind="scheduling").inc())
    priority.apply(config.realtime_priority)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _on_reload, config_path, config, priority)
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
