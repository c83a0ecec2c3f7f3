"""The metrics exposition passes promtool, with IPVS statistics of every kind of service."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

from agent.ipvs.model import (
    AF_INET,
    AF_INET6,
    Dest,
    DestKey,
    KernelDest,
    KernelService,
    Service,
    ServiceKey,
    Stats,
)
from agent.metrics import AgentMetrics, serve
from tests.check_skips import skip_or_fail


def sample_table() -> dict[ServiceKey, KernelService]:
    tcp = ServiceKey(AF_INET, 6, "192.0.2.100", 80)
    v6 = ServiceKey(AF_INET6, 17, "2001:db8::53", 53)
    mark = ServiceKey(AF_INET, 0, "", 0, 10)
    d = Dest(DestKey(AF_INET, "10.0.1.21", 8080), weight=5)
    d6 = Dest(DestKey(AF_INET6, "2001:db8:1::1", 53))
    return {
        tcp: KernelService(
            Service(tcp, "rr"),
            {d.key: KernelDest(d, 3, 4, 0, Stats(1, 2, 3, 4, 5))},
            Stats(10, 20, 30, 40, 50),
        ),
        v6: KernelService(Service(v6, "wlc"), {d6.key: KernelDest(d6)}),
        mark: KernelService(Service(mark, "sh"), {d.key: KernelDest(d)}),
    }


def test_exposition_passes_promtool() -> None:
    if shutil.which("promtool") is None:
        skip_or_fail("promtool not installed (Debian package prometheus)")
    metrics = AgentMetrics()
    metrics.ipvs.table = sample_table()
    metrics.errors.labels(kind="ipvs_operation").inc()
    metrics.operations.labels(kind="add_service").inc(3)
    metrics.reconcile_duration.observe(0.02)
    text = metrics.exposition().decode()
    assert 'local_mark="10"' in text and 'proto="FWM"' in text
    assert 'remote_address="2001:db8:1::1"' in text
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text, text=True, capture_output=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_http_endpoint_serves_metrics_from_the_loop() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        metrics = AgentMetrics()
        metrics.ipvs.table = sample_table()
        server = await serve(metrics, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            replies = []
            for path in (b"/metrics", b"/nope"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                replies.append(await asyncio.wait_for(reader.read(), 10))
                writer.close()
            return replies[0], replies[1]
        finally:
            server.close()
            await server.wait_closed()

    ok, missing = asyncio.run(scenario())
    assert ok.startswith(b"HTTP/1.1 200 OK") and b"lvs_agent_ipvs_backend_weight{" in ok
    assert missing.startswith(b"HTTP/1.1 404")
