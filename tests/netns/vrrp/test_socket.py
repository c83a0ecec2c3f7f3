"""The raw VRRP socket on a real kernel: what we send, tshark and keepalived accept;
what keepalived sends, we decode."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from agent.lab import netns
from agent.lab.capture import Capture, tshark_fields
from agent.lab.keepalived import Keepalived, keepalived_conf
from agent.lab.topology import Lab
from agent.vrrp.packet import (
    MCAST_GROUP_V4,
    MCAST_GROUP_V6,
    Advert,
    IPAddress,
    decode,
    encode,
    pad_password,
)
from agent.vrrp.transport import Received, VrrpSocket

V4, V6 = socket.AF_INET, socket.AF_INET6
VIP4 = (IPv4Address("192.0.2.100"),)
VIP6 = (IPv6Address("2001:db8::100"),)


def open_socket(lab: Lab, node: int, family: int) -> VrrpSocket:
    with netns.entered(lab.director(node).ns):
        sock = VrrpSocket("eth0", family)
        sock.open()
    return sock


def v4(lab: Lab, node: int) -> IPv4Address:
    return IPv4Address(lab.director_address(node))


def v6(lab: Lab, node: int) -> IPv6Address:
    return lab.director(node).link_local["eth0"]


def collect(
    sock: VrrpSocket, until: Callable[[list[Received]], bool], timeout: float
) -> list[Received]:
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        got += sock.receive()
        time.sleep(0.02)
    return got


def test_our_adverts_are_clean_for_tshark_and_our_receiver(lab: Lab, tmp_path: Path) -> None:
    a4, a6 = open_socket(lab, 1, V4), open_socket(lab, 1, V6)
    b4, b6 = open_socket(lab, 2, V4), open_socket(lab, 2, V6)
    cap = Capture(lab, lab.director(2), tmp_path / "ours.pcap", "ip proto 112 or ip6 proto 112")
    src4, src6 = v4(lab, 1), v6(lab, 1)
    sends: list[tuple[VrrpSocket, Advert, IPAddress, IPAddress]] = [
        (a4, Advert(2, V4, 51, 150, 100, VIP4), src4, MCAST_GROUP_V4),
        (a4, Advert(2, V4, 52, 100, 300, VIP4, pad_password("s3cret")), src4, MCAST_GROUP_V4),
        (
            a4,
            Advert(3, V4, 53, 200, 50, VIP4 * 1 + (IPv4Address("192.0.2.101"),)),
            src4,
            MCAST_GROUP_V4,
        ),
        (a4, Advert(3, V4, 55, 0, 1, VIP4), src4, MCAST_GROUP_V4),
        (a4, Advert(3, V4, 56, 100, 100, VIP4), src4, v4(lab, 2)),  # unicast
        (a6, Advert(3, V6, 54, 120, 100, VIP6), src6, MCAST_GROUP_V6),
        (a6, Advert(3, V6, 57, 255, 4095, VIP6), src6, v6(lab, 2)),  # unicast link-local
    ]
    try:
        for sock, advert, src, dst in sends:
            assert sock.send(encode(advert, src, dst), src, dst)
        got = collect(b4, lambda g: len(g) >= 5, 5) + collect(b6, lambda g: len(g) >= 2, 5)
    finally:
        for s in (a4, a6, b4, b6):
            s.close()
    pcap = cap.stop()

    # Our own receive path: TTL/hop limit and destination come back right, all decode.
    decoded = []
    for r in got:
        assert r.hop_limit == 255
        assert r.source in (src4, src6)
        decoded.append(
            decode(
                r.payload,
                family=r.family,
                src=r.source,
                dst=r.destination,
                hop_limit=r.hop_limit,
                auth_pass=pad_password("s3cret") if r.payload[1] == 52 else None,
            )
        )
    by_vrid = sorted((s[1] for s in sends), key=lambda a: a.vrid)
    assert sorted(decoded, key=lambda a: a.vrid) == by_vrid

    # tshark (the independent dissector): every packet is VRRP with a good checksum.
    rows = tshark_fields(
        pcap,
        "vrrp.version",
        "vrrp.virt_rtr_id",
        "vrrp.checksum.status",
        "ip.ttl",
        "ipv6.hlim",
        "_ws.malformed",
        "_ws.expert.severity",
    )
    assert len(rows) == len(sends)
    for version, vrid, status, ttl, hlim, malformed, severity in rows:
        assert version in ("2", "3")
        assert status == "1", (vrid, status)  # 1 = Good
        assert (ttl or hlim) == "255"
        assert not malformed and not severity, (vrid, malformed, severity)
    assert sorted(int(r[1]) for r in rows) == sorted(s[1].vrid for s in sends)


KEEPALIVED_CASES = {
    "v2": dict(version=2, vrid=61, priority=150, interval=1, vips=["192.0.2.100/24"]),
    "v2-auth": dict(
        version=2, vrid=62, priority=140, interval=1, vips=["192.0.2.101/24"], auth_pass="s3cret"
    ),
    "v3-ipv4": dict(
        version=3, vrid=63, priority=130, interval=0.2, vips=["192.0.2.102/24", "192.0.2.103/24"]
    ),
    "v3-ipv6": dict(version=3, vrid=64, priority=120, interval=0.2, vips=["2001:db8::100/64"]),
    "v3-unicast": dict(
        version=3, vrid=65, priority=110, interval=0.2, vips=["192.0.2.104/24"], unicast=True
    ),
}


@pytest.mark.parametrize("case", KEEPALIVED_CASES.values(), ids=KEEPALIVED_CASES.keys())
def test_we_decode_keepalived_adverts_and_its_priority_zero(
    lab: Lab, tmp_path: Path, case: dict[str, object]
) -> None:
    kw = dict(case)
    unicast = bool(kw.pop("unicast", False))
    family = V6 if "ipv6" in str(kw["vips"]) or ":" in str(kw["vips"]) else V4
    if unicast:
        kw.update(unicast_src=str(v4(lab, 2)), unicast_peers=[str(v4(lab, 1))])
    conf = keepalived_conf(**kw)  # type: ignore[arg-type]
    auth = pad_password(str(kw["auth_pass"])) if kw.get("auth_pass") else None
    sock = open_socket(lab, 1, family)
    ka = Keepalived(lab, lab.director(2), conf, tmp_path)
    try:
        adverts = []

        def enough(got: list[Received]) -> bool:
            return len(got) >= 2

        for r in collect(sock, enough, 8):
            assert r.source == (v6(lab, 2) if family == V6 else v4(lab, 2))
            assert r.destination == (
                v4(lab, 1) if unicast else (MCAST_GROUP_V6 if family == V6 else MCAST_GROUP_V4)
            )
            adverts.append(
                decode(
                    r.payload,
                    family=family,
                    src=r.source,
                    dst=r.destination,
                    hop_limit=r.hop_limit,
                    version=int(kw["version"]),  # type: ignore[call-overload]
                    auth_pass=auth,
                )
            )
        assert len(adverts) >= 2, ka.text()
        for advert in adverts:
            assert advert.vrid == kw["vrid"] and advert.priority == kw["priority"]
            assert advert.interval_cs == round(float(kw["interval"]) * 100)  # type: ignore[arg-type]
            assert [str(a) for a in advert.addresses] == [
                v.split("/")[0]
                for v in kw["vips"]  # type: ignore[attr-defined]
            ]
            assert advert.auth == auth
        sock.receive(1000)  # drop the backlog
        ka.terminate()
        last = collect(sock, lambda g: any(r.payload[2] == 0 for r in g), 5)
        zero = [r for r in last if r.payload[2] == 0]
        assert zero, "no priority-0 advert on keepalived shutdown"
        r = zero[0]
        advert = decode(
            r.payload,
            family=family,
            src=r.source,
            dst=r.destination,
            hop_limit=r.hop_limit,
            auth_pass=auth,
        )
        assert advert.priority == 0
    finally:
        ka.close()
        sock.close()
