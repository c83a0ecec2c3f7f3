"""The imperative shell: config, incarnation file, asyncio UDP transport on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from agent.lock.config import Endpoint, LockConfig, LockConfigError, parse_endpoint
from agent.lock.incarnation import IncarnationError, bump_incarnation, read_incarnation
from agent.lock.lease import LeaseEvent
from agent.lock.timing import TimingError
from agent.lock.transport import LockTransport, boottime, build_node, load_keyring
from agent.lock.wire import KeyFileError, KeyRing

KEY = "1 " + "ab" * 32 + "\n"


def test_parse_endpoint() -> None:
    assert parse_endpoint("10.0.0.11:6741") == Endpoint("10.0.0.11", 6741)
    assert parse_endpoint("[fd00::1]:7000") == Endpoint("fd00::1", 7000)
    assert parse_endpoint("10.0.0.1") == Endpoint("10.0.0.1", 6741)
    for bad in ("host:1", "10.0.0.1:0", "10.0.0.1:x", "[fd00::1", "[::1]x"):
        with pytest.raises(LockConfigError):
            parse_endpoint(bad)


def yaml_like() -> dict[str, object]:
    return {
        "cluster": "lb-prod-1",
        "listen": "10.0.0.11:6741",
        "peers": {
            "director1": "10.0.0.11:6741",
            "director2": "10.0.0.12:6741",
            "witness1": "10.0.0.13:6741",
        },
        "key_file": "/etc/lvs-agent/cluster.key",
        "lease": 1.0,
    }


def test_config_from_mapping_derives_identity_and_timing() -> None:
    cfg = LockConfig.from_mapping(yaml_like())
    assert cfg.node_id == "director1"
    t = cfg.timing()
    assert (t.lease, t.guard, t.renew_interval) == (1.0, 0.1, 0.25)


def test_config_errors() -> None:
    data = yaml_like() | {"listen": "0.0.0.0:6741"}
    with pytest.raises(LockConfigError, match="node_id"):
        LockConfig.from_mapping(data)
    assert LockConfig.from_mapping(data | {"node_id": "director2"}).node_id == "director2"
    with pytest.raises(LockConfigError, match="unknown"):
        LockConfig.from_mapping(yaml_like() | {"leese": 1})
    with pytest.raises(TimingError):
        LockConfig.from_mapping(yaml_like() | {"acceptor_lease": 0.5})
    with pytest.raises(TimingError):
        LockConfig.from_mapping(yaml_like() | {"lease": 0.1})


def test_incarnation_grows_and_survives(tmp_path: Path) -> None:
    d = tmp_path / "state"
    assert read_incarnation(d) == 0
    a = bump_incarnation(d, wall_clock=lambda: 0.0)
    b = bump_incarnation(d, wall_clock=lambda: 0.0)
    assert (a, b) == (1, 2)
    assert read_incarnation(d) == 2
    # Lost state directory: the wall-clock floor still yields a larger number.
    assert bump_incarnation(tmp_path / "new", wall_clock=lambda: 1.7e9) == 1_700_000_000
    (d / "lock-incarnation").write_text("garbage")
    with pytest.raises(IncarnationError):
        bump_incarnation(d)
    assert not list(d.glob(".*.tmp"))


def test_key_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text(KEY)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keyring(path)
    path.chmod(0o600)
    assert load_keyring(path).primary == 1


def free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_three_nodes_over_real_udp() -> None:
    asyncio.run(_three_nodes())


async def _three_nodes() -> None:
    ports = free_ports(3)
    names = ("d1", "d2", "w1")
    peers = {n: Endpoint("127.0.0.1", p) for n, p in zip(names, ports, strict=True)}
    keys = KeyRing.parse(KEY)
    events: list[LeaseEvent] = []
    transports: dict[str, LockTransport] = {}
    for n in names:
        cfg = LockConfig(
            cluster="test",
            listen=peers[n],
            peers=peers,
            key_file=Path("/nonexistent"),
            lease=0.3,
            leases=("vip",),
        )
        node = build_node(cfg, incarnation=1, keys=keys, now=boottime())
        tr = LockTransport(node, peers, on_event=events.append)
        await tr.start(cfg.listen)
        transports[n] = tr
    try:
        transports["d1"].campaign("vip", priority=200)
        transports["d2"].campaign("vip", priority=100)
        holders: list[str] = []
        for _ in range(300):
            await asyncio.sleep(0.01)
            holders = [n for n, t in transports.items() if t.is_holder("vip")]
            assert len(holders) <= 1
            if holders:
                break
        assert holders == ["d1"]
        assert transports["d1"].status().leases[0].term is not None
        # Garbage from anywhere is dropped and counted.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"LK\x01garbage" * 5, ("127.0.0.1", peers["d1"].port))
        sock.close()
        transports["d1"].release("vip")
        for _ in range(300):
            await asyncio.sleep(0.01)
            holders = [n for n, t in transports.items() if t.is_holder("vip")]
            assert len(holders) <= 1
            if holders == ["d2"]:
                break
        assert holders == ["d2"]
        assert sum(transports["d1"].node.core.counters.dropped.values()) >= 1
        kinds = [(e.lease, e.kind) for e in events]
        assert ("vip", "acquired") in kinds and ("vip", "released") in kinds
    finally:
        for t in transports.values():
            t.close()


class SlowNode:
    """A node whose every input takes ``handling`` seconds; its deadline is fixed."""

    def __init__(self, deadline: float, handling: float) -> None:
        self.deadline: float | None = deadline
        self.handling = handling
        self.ticks: list[float] = []

    def receive(self, data: bytes, now: float) -> list[object]:
        time.sleep(self.handling)  # events, VIPs, sends: the loop is busy meanwhile
        return []

    def tick(self, now: float) -> list[object]:
        self.ticks.append(now)
        self.deadline = None
        return []

    def drain_events(self) -> list[object]:
        return []

    def next_deadline(self) -> float | None:
        return self.deadline


def test_the_timer_is_armed_for_the_deadline_however_long_handling_took() -> None:
    # The lock's clock is converted to the loop's when the timer is armed, not with the
    # time the input arrived at: that would put every renewal late by the handling.
    async def main() -> tuple[float, list[float]]:
        due = time.monotonic() + 0.3
        node = SlowNode(due, handling=0.2)
        tr = LockTransport(node, {}, clock=time.monotonic)  # type: ignore[arg-type]
        tr.datagram_received(b"", ("127.0.0.1", 1))
        await asyncio.sleep(0.6)
        tr.close()
        return due, node.ticks

    due, ticks = asyncio.run(main())
    assert len(ticks) == 1 and due <= ticks[0] < due + 0.1
