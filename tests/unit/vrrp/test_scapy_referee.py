"""scapy's VRRP layers as an independent referee for the codec.

Adverts built by scapy (its own checksum code, v3 pseudo-header included) must decode
with ``packet.decode``, and what ``packet.encode`` writes must be byte-identical to what
scapy builds from the same fields.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
import scapy.layers.inet as scapy_inet
import scapy.layers.inet6 as scapy_inet6
import scapy.layers.vrrp as scapy_vrrp

from agent.vrrp.packet import Advert, decode, encode, pad_password

V4_SRC, V4_DST = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("224.0.0.18")
V6_SRC, V6_DST = ipaddress.ip_address("fe80::1"), ipaddress.ip_address("ff02::12")

CASES = [
    # (version, family, vrid, priority, interval_cs, addresses, password)
    (3, socket.AF_INET, 51, 150, 100, ("192.0.2.100", "192.0.2.101"), None),
    (3, socket.AF_INET, 1, 255, 1, ("198.51.100.7",), None),
    (3, socket.AF_INET, 255, 0, 4095, ("192.0.2.100",), None),
    (3, socket.AF_INET6, 51, 100, 10, ("fe80::100", "2001:db8::100"), None),
    (2, socket.AF_INET, 7, 100, 300, ("192.0.2.100",), None),
    (2, socket.AF_INET, 7, 200, 100, ("192.0.2.100", "192.0.2.200"), "secret"),
]


def scapy_bytes(
    version: int,
    family: int,
    vrid: int,
    priority: int,
    interval_cs: int,
    addresses: tuple[str, ...],
    password: str | None,
) -> bytes:
    """The VRRP message as scapy builds it (checksum by scapy), without the IP header."""
    if version == 3:
        body = scapy_vrrp.VRRPv3(
            vrid=vrid,
            priority=priority,
            adv=interval_cs,
            ipcount=len(addresses),
            addrlist=list(addresses),
        )
    else:
        auth = pad_password(password) if password is not None else b"\0" * 8
        body = scapy_vrrp.VRRP(
            vrid=vrid,
            priority=priority,
            adv=interval_cs // 100,
            ipcount=len(addresses),
            addrlist=list(addresses),
            authtype=1 if password is not None else 0,
            auth1=int.from_bytes(auth[:4], "big"),
            auth2=int.from_bytes(auth[4:], "big"),
        )
    if family == socket.AF_INET:
        pkt = scapy_inet.IP(src=str(V4_SRC), dst=str(V4_DST), ttl=255, proto=112) / body
        return bytes(pkt)[20:]
    pkt6 = scapy_inet6.IPv6(src=str(V6_SRC), dst=str(V6_DST), hlim=255, nh=112) / body
    return bytes(pkt6)[40:]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"v{c[0]}-{c[1].name}-vrid{c[2]}-prio{c[3]}")
def test_scapy_advert_decodes_and_matches_our_encoding(case: tuple) -> None:  # type: ignore[type-arg]
    version, family, vrid, priority, interval_cs, addresses, password = case
    src, dst = (V4_SRC, V4_DST) if family == socket.AF_INET else (V6_SRC, V6_DST)
    theirs = scapy_bytes(*case)
    auth = pad_password(password) if password is not None else None
    got = decode(
        theirs, family=family, src=src, dst=dst, hop_limit=255, version=version, auth_pass=auth
    )
    expected = Advert(
        version=version,
        family=family,
        vrid=vrid,
        priority=priority,
        interval_cs=interval_cs,
        addresses=tuple(ipaddress.ip_address(a) for a in addresses),
        auth=auth,
    )
    assert got == expected
    assert encode(expected, src, dst) == theirs
