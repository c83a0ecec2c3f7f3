"""Bad adverts against a running agent: each kind is dropped, counted by reason in
/metrics, and changes no state; then 10,000 seeded random packets do not crash it.

The agent (d1) is master of three instances at priority 100: v3 multicast, v2
multicast with a password, and v3 unicast with d2 as its only peer. Every crafted
packet claims priority 254, so one that got through would make an instance step
down: the positive control at the end shows that a valid one does.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from agent.lab import netns
from agent.lab.agents import LabAgent, metric_values
from agent.lab.topology import Host
from agent.vrrp.packet import (
    MCAST_GROUP_V4,
    Advert,
    VrrpDecodeError,
    decode,
    encode,
    internet_checksum,
    pad_password,
    peek_vrid,
)

from ..support import wait_until
from .helpers import Site, address, instance

V4 = socket.AF_INET
MC3, MC2, UC3 = 141, 142, 143
VIPS = {MC3: "192.0.2.141/32", MC2: "192.0.2.142/32", UC3: "192.0.2.143/32"}
PASSWORD = "s3cret"
FUZZ_PACKETS = 10_000
FUZZ_SEED = 5798


def vip_ip(vrid: int) -> IPv4Address:
    return IPv4Address(address(VIPS[vrid]))


def sender(host: Host, ttl: int = 255) -> socket.socket:
    with netns.entered(host.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    return s


def reseal_v3(message: bytes, src: IPv4Address, dst: IPv4Address) -> bytes:
    """Recompute a v3 checksum (pseudo-header included) after editing the message."""
    body = message[:6] + b"\0\0" + message[8:]
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 112, len(body))
    return body[:6] + struct.pack("!H", internet_checksum(pseudo + body)) + body[8:]


def invalid(text: str) -> dict[tuple[str, str], float]:
    """(instance or socket, reason) -> count, instance-level and socket-level together."""
    out = {}
    for name, key in (
        ("lvs_agent_vrrp_invalid_packets_total", "instance"),
        ("lvs_agent_vrrp_socket_invalid_packets_total", "socket"),
    ):
        for labels, value in metric_values(text, name).items():
            d = dict(labels)
            out[(d[key], d["reason"])] = value
    return out


def transitions(text: str) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["instance"], dict(labels)["state"]): value
        for labels, value in metric_values(text, "lvs_agent_vrrp_transitions_total").items()
    }


@pytest.fixture
def target(site: Site) -> Iterator[LabAgent]:
    peer = site.lab.director_address(2)
    agent = site.agent(
        1,
        [
            instance(MC3, VIPS[MC3], 100, name="mc3"),
            instance(MC2, VIPS[MC2], 100, "1s", name="mc2", version=2, auth_pass=PASSWORD),
            instance(UC3, VIPS[UC3], 100, name="uc3", unicast_peers=[peer]),
        ],
    )
    wait_until(
        "all three instances MASTER",
        lambda: agent.states() == {"mc3": "MASTER", "mc2": "MASTER", "uc3": "MASTER"},
        20,
    )
    yield agent


def test_crafted_adverts_are_dropped_counted_and_change_nothing(
    site: Site, target: LabAgent
) -> None:
    lab = site.lab
    d1 = IPv4Address(lab.director_address(1))
    src = IPv4Address(lab.director_address(2))
    client = IPv4Address(lab.client.addresses["eth0"])
    group = MCAST_GROUP_V4

    def v3(vrid: int, **kw: object) -> Advert:
        fields: dict[str, object] = dict(
            version=3, family=V4, vrid=vrid, priority=254, interval_cs=20
        )
        fields.update(kw)
        if "addresses" not in fields:
            fields["addresses"] = (vip_ip(vrid),)
        return Advert(**fields)  # type: ignore[arg-type]

    good = encode(v3(MC3), src, group)
    two_counted = bytearray(good)
    two_counted[3] = 2  # says two addresses, carries one
    bad_type = bytearray(good)
    bad_type[0] = 0x32  # version 3, type 2
    zero_interval = bytearray(good)
    zero_interval[4:6] = b"\0\0"
    v2_for_v3 = encode(Advert(2, V4, MC3, 254, 100, (vip_ip(MC3),)), src, group)
    wrong_password = encode(
        Advert(2, V4, MC2, 254, 100, (vip_ip(MC2),), pad_password("wrong")), src, group
    )
    cases: list[tuple[str, bytes, int, IPv4Address]] = [
        # (what, payload, TTL, destination)
        ("ttl", good, 64, group),
        ("checksum", good[:-1] + bytes([good[-1] ^ 0xFF]), 255, group),
        ("version", v2_for_v3, 255, group),
        ("truncated", good[:6], 255, group),
        ("address_count", reseal_v3(bytes(two_counted), src, group), 255, group),
        ("type", reseal_v3(bytes(bad_type), src, group), 255, group),
        ("interval", reseal_v3(bytes(zero_interval), src, group), 255, group),
        ("auth", wrong_password, 255, group),
        ("socket vrid", encode(v3(99, addresses=(vip_ip(MC3),)), src, group), 255, group),
        ("socket truncated", b"\x31", 255, group),
    ]
    before = target.metrics()
    assert before is not None
    for _what, payload, ttl, dst in cases:
        with sender(lab.director(2), ttl) as s:
            s.sendto(payload, (str(dst), 0))
    # Unicast: a valid advert for the unicast instance, but from the client, not a peer.
    with sender(lab.client) as s:
        s.sendto(encode(v3(UC3), client, d1), (str(d1), 0))

    expected = {
        ("mc3", "ttl"): 1,
        ("mc3", "checksum"): 1,
        ("mc3", "version"): 1,
        ("mc3", "truncated"): 1,
        ("mc3", "address_count"): 1,
        ("mc3", "type"): 1,
        ("mc3", "interval"): 1,
        ("mc2", "auth"): 1,
        ("uc3", "unicast_source"): 1,
        ("eth0/ipv4", "vrid"): 1,
        ("eth0/ipv4", "truncated"): 1,
    }
    wait_until("every bad packet counted", lambda: invalid(target.metrics() or "") == expected, 5)
    time.sleep(0.5)  # more than two advert intervals: a state change would show
    after = target.metrics()
    assert after is not None
    assert invalid(after) == expected
    assert transitions(after) == transitions(before)
    assert target.states() == {"mc3": "MASTER", "mc2": "MASTER", "uc3": "MASTER"}
    assert site.holders(VIPS[MC3]) == ["d1"]

    # Positive control: the same path with a valid priority-254 advert does move mc3.
    stepped = time.monotonic()
    with sender(lab.director(2)) as s:
        s.sendto(good, (str(group), 0))
    assert site.watch.wait_removed(address(VIPS[MC3]), 5, node="d1", after=stepped)
    assert target.wait_for("mc3: MASTER -> BACKUP (priority 100, higher_priority)", 5)


def fuzz_packets(
    rng: random.Random, src: IPv4Address, d1: IPv4Address
) -> Iterator[tuple[bytes, IPv4Address]]:
    """Random bytes and mutated adverts of each instance's shape, with their destination."""
    group = MCAST_GROUP_V4
    shapes = [
        (encode(Advert(3, V4, MC3, 254, 20, (vip_ip(MC3),)), src, group), group),
        (
            encode(
                Advert(2, V4, MC2, 254, 100, (vip_ip(MC2),), pad_password(PASSWORD)), src, group
            ),
            group,
        ),
        (encode(Advert(3, V4, UC3, 254, 20, (vip_ip(UC3),)), src, d1), d1),
    ]
    while True:
        if rng.random() < 0.4:
            size = rng.randrange(0, 96)
            yield bytes(rng.getrandbits(8) for _ in range(size)), rng.choice((group, d1))
            continue
        base, dst = rng.choice(shapes)
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            if choice < 0.6 and data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            elif choice < 0.8:
                del data[rng.randrange(len(data) + 1) :]
            else:
                data += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
        yield bytes(data), dst


def acceptable(payload: bytes, src: IPv4Address, dst: IPv4Address) -> bool:
    """Whether the agent could take ``payload`` as a valid advert (such are not sent:
    a valid priority-254 advert rightly changes state)."""
    vrid = peek_vrid(payload)
    settings = {MC3: (3, None, True), MC2: (2, pad_password(PASSWORD), True), UC3: (3, None, False)}
    if vrid not in settings:
        return False
    version, auth, check_ttl = settings[vrid]
    try:
        decode(
            payload,
            family=V4,
            src=src,
            dst=dst,
            hop_limit=255,
            version=version,
            auth_pass=auth,
            check_hop_limit=check_ttl,
        )
    except VrrpDecodeError:
        return False
    return True


def test_ten_thousand_random_packets_do_not_crash_the_agent(site: Site, target: LabAgent) -> None:
    lab = site.lab
    src = IPv4Address(lab.director_address(2))
    d1 = IPv4Address(lab.director_address(1))
    before = target.metrics()
    assert before is not None
    counted_before = sum(invalid(before).values())
    rng = random.Random(FUZZ_SEED)
    sent = skipped = 0
    packets = fuzz_packets(rng, src, d1)

    def counted() -> float:
        return sum(invalid(target.metrics() or "").values()) - counted_before

    with sender(lab.director(2)) as s:
        while sent < FUZZ_PACKETS:
            payload, dst = next(packets)
            if acceptable(payload, src, dst):
                skipped += 1
                continue
            s.sendto(payload, (str(dst), 0))
            sent += 1
            if sent % 100 == 0:
                # Flow control: a loaded machine may not run the agent for a while, and
                # a full socket buffer drops packets in the kernel, before the agent.
                wait_until(f"{sent} packets counted", lambda n=sent: counted() >= n, 30)
    assert skipped < FUZZ_PACKETS // 10
    after = target.metrics()
    assert after is not None
    assert target.running()
    assert sum(invalid(after).values()) - counted_before == sent
    assert transitions(after) == transitions(before)
    assert target.states() == {"mc3": "MASTER", "mc2": "MASTER", "uc3": "MASTER"}
    assert "Traceback" not in target.text(), target.text()
