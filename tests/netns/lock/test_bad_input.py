"""Bad lock input against the holder: crafted messages and 100,000 random datagrams.

Each kind (bad MAC, replay of a captured datagram, reflection, garbage, wrong cluster,
stale incarnation, wrong durations) is counted by reason in
``lvs_agent_lock_messages_rejected_total``; none is answered, none changes the lease
(same holder, same term, no loss) and the agent keeps running.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from pathlib import Path

from agent.lab import netns
from agent.lab.addrwatch import AddressWatch
from agent.lab.agents import metric_values
from agent.lab.quorum import LOCK_PORT, QuorumSite
from agent.lab.topology import Lab
from agent.lock.messages import Announce, Ballot, Prepare
from agent.lock.timing import Timing
from agent.lock.wire import KeyRing, WireCodec

from ..support import metric
from .helpers import holder

RANDOM_DATAGRAMS = 100_000
BATCH = 100
ETH_P_IP = 0x0800


def capture_lock_datagram(ns: str, timeout: float = 5.0) -> bytes:
    """One lock datagram arriving at ``ns``'s eth0, read off the wire (for a replay)."""
    with netns.entered(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        sock.bind(("eth0", ETH_P_IP))
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            packet, (_, _, pkttype, *_rest) = sock.recvfrom(65535)
            if pkttype == socket.PACKET_OUTGOING or packet[9] != socket.IPPROTO_UDP:
                continue
            ihl = (packet[0] & 0x0F) * 4
            _, dport, length, _ = struct.unpack_from("!HHHH", packet, ihl)
            if dport == LOCK_PORT:
                return packet[ihl + 8 : ihl + length]
        raise AssertionError("no lock datagram seen")
    finally:
        sock.close()


def socket_drops(ns: str) -> int:
    """Datagrams the kernel dropped at the lock socket (full receive buffer)."""
    with netns.entered(ns), open("/proc/net/udp") as f:
        rows = f.read().splitlines()[1:]
    port = f":{LOCK_PORT:04X}"
    return sum(int(r.split()[-1]) for r in rows if r.split()[1].endswith(port))


def test_bad_input_is_counted_and_changes_nothing(
    lab: Lab, watch: AddressWatch, tmp_path: Path, sites: list[QuorumSite]
) -> None:
    site = QuorumSite(lab, watch, tmp_path, priorities={1: 150, 2: 100, 3: 50})
    sites.append(site)
    site.start()
    target = holder(site)
    agent = site.agents[target]
    before = agent.metrics()
    assert before is not None
    info = metric_values(before, "lvs_agent_lock_holder_info")
    (term,) = [dict(k)["term"] for k in info if dict(k)["node"] == target]

    i = int(target[1:])
    address = (lab.director_address(i), LOCK_PORT)
    assert site.key is not None
    keys = KeyRing.parse(site.key.read_text())
    timing = Timing.from_lease(1.0)
    members = site.members
    sender = next(m for m in members if m != target)

    def codec(**kw: object) -> WireCodec:
        args: dict[str, object] = {
            "cluster": "lab",
            "node_id": sender,
            "incarnation": 1,  # far below the real sender's: a stale incarnation
            "fingerprint": timing.fingerprint(),
            "keys": keys,
            "peers": members,
        }
        args.update(kw)
        return WireCodec(**args)  # type: ignore[arg-type]

    def prepare(c: WireCodec, who: str = sender) -> bytes:
        return c.encode(Prepare("web", who, target, Ballot(1 << 40, 1 << 40, who)))

    bad_key = KeyRing(primary=1, keys={1: os.urandom(32)})
    crafted = {
        "bad-mac": prepare(codec(keys=bad_key)),
        "wrong-cluster": prepare(codec(cluster="other")),
        "reflected": prepare(codec(node_id=target), who=target),
        "timing-mismatch": prepare(codec(fingerprint=Timing.from_lease(2.0).fingerprint())),
        "stale-incarnation": codec().encode(
            Announce("web", sender, target, 255, True, Ballot(1 << 40, 1, sender))
        ),
        "replay": capture_lock_datagram(site.ns(target)),
    }
    drops_before = socket_drops(site.ns(target))
    rng = random.Random(4)
    with netns.entered(lab.client.ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data in crafted.values():
            for _ in range(10):
                tx.sendto(data, address)
        sent = 0
        while sent < RANDOM_DATAGRAMS:
            for _ in range(BATCH):
                size = rng.choice((0, 1, 5, 40, 120, 600, 1200, 1300))
                head = b"LK\x01\x01" if rng.random() < 0.5 else b""
                tx.sendto((head + rng.randbytes(size))[: max(size, 1)], address)
            sent += BATCH
            time.sleep(0.005)  # paced: a full socket buffer drops (counted below)
    finally:
        tx.close()
    time.sleep(1.0)

    after = agent.metrics()
    assert after is not None and agent.running()
    rejected = {
        dict(k)["reason"]: v
        for k, v in metric_values(after, "lvs_agent_lock_messages_rejected_total").items()
    }
    earlier = {
        dict(k)["reason"]: v
        for k, v in metric_values(before, "lvs_agent_lock_messages_rejected_total").items()
    }
    delta = {r: v - earlier.get(r, 0) for r, v in rejected.items()}
    print(f"\nrejected by reason: {dict(sorted(delta.items()))}")
    for reason in crafted:
        assert delta.get(reason, 0) >= 10, (reason, delta)
    total = sum(delta.values())
    dropped = socket_drops(site.ns(target)) - drops_before
    print(f"kernel dropped {dropped} at the socket (receive buffer full)")
    assert dropped < RANDOM_DATAGRAMS // 10
    expected = RANDOM_DATAGRAMS + 10 * len(crafted) - dropped
    assert expected <= total <= expected + 20, (total, expected)  # + real traffic's rare drops
    # No state change: same holder, same term, no loss, nothing answered to garbage.
    assert site.holders() == [target]
    assert metric(after, "lvs_agent_lock_is_holder", lease="web") == 1
    assert metric(after, "lvs_agent_lock_holder_info", lease="web", node=target, term=term) == 1
    assert metric(after, "lvs_agent_lock_losses_total", lease="web") == metric(
        before, "lvs_agent_lock_losses_total", lease="web"
    )
