"""The hand-built rtnetlink address requests of vips.Rtnetlink (bytes only)."""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_interface

from agent.vrrp.vips import (
    IFA_ADDRESS,
    IFA_CACHEINFO,
    IFA_F_NODAD,
    IFA_LOCAL,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RTM_DELADDR,
    RTM_NEWADDR,
    address_request,
)


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    found = {}
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        found[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def test_ipv4_add_carries_local_and_address_and_creates_exclusively() -> None:
    data = address_request(RTM_NEWADDR, 7, 3, ip_interface("192.0.2.100/24"))
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", data)
    assert (length, kind, seq, pid) == (len(data), RTM_NEWADDR, 7, 0)
    assert flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    family, prefixlen, ifa_flags, scope, index = struct.unpack_from("=BBBBI", data, 16)
    assert (family, prefixlen, ifa_flags, scope, index) == (socket.AF_INET, 24, 0, 0, 3)
    attrs = attributes(data, 24)
    assert attrs == {IFA_ADDRESS: bytes([192, 0, 2, 100]), IFA_LOCAL: bytes([192, 0, 2, 100])}


def test_ipv6_delete_has_no_create_flags_and_asks_for_no_dad() -> None:
    vip = ip_interface("2001:db8::100/64")
    data = address_request(RTM_DELADDR, 8, 4, vip)
    _, kind, flags, _, _ = struct.unpack_from("=IHHII", data)
    assert kind == RTM_DELADDR and flags == NLM_F_REQUEST | NLM_F_ACK
    family, prefixlen, ifa_flags, _, index = struct.unpack_from("=BBBBI", data, 16)
    assert (family, prefixlen, ifa_flags, index) == (socket.AF_INET6, 64, IFA_F_NODAD, 4)
    assert attributes(data, 24) == {IFA_ADDRESS: vip.ip.packed}


def test_add_with_lifetime_replaces_and_carries_cacheinfo() -> None:
    """Quorum election's fence: the kernel drops the VIP when the lifetime runs out."""
    data = address_request(RTM_NEWADDR, 9, 3, ip_interface("192.0.2.100/24"), lifetime=2)
    _, kind, flags, _, _ = struct.unpack_from("=IHHII", data)
    assert kind == RTM_NEWADDR
    assert flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    attrs = attributes(data, 24)
    assert struct.unpack("=IIII", attrs[IFA_CACHEINFO]) == (2, 2, 0, 0)
    # a delete ignores it
    plain = address_request(RTM_DELADDR, 9, 3, ip_interface("192.0.2.100/24"), lifetime=2)
    assert IFA_CACHEINFO not in attributes(plain, 24)
