"""agent.metrics.serve: /metrics answers the whole exposition, sent piece by piece."""

from __future__ import annotations

import asyncio

from agent.metrics import AgentMetrics, serve


async def get(port: int, method: str, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def test_metrics_are_served_whole_with_their_length() -> None:
    metrics = AgentMetrics()
    metrics.reconcile_duration.observe(0.5)

    async def main() -> None:
        server = await serve(metrics, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            answer = await get(port, "GET", "/metrics")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert f"Content-Length: {len(body)}".encode() in head
            assert body == metrics.exposition()
            assert len(metrics.exposition_parts()) > 10  # one piece per family
            assert b"lvs_agent_reconcile_duration_seconds_count 1.0" in body
            head_only = await get(port, "HEAD", "/metrics")
            assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: " in head_only
            missing = await get(port, "GET", "/nothing")
            assert missing.startswith(b"HTTP/1.1 404") and missing.endswith(b"not found\n")
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
