"""The VRRP codec: keepalived's own packets, round trips, every drop reason, fuzzing."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.vrrp.packet import (
    MCAST_GROUP_V4,
    MCAST_GROUP_V6,
    Advert,
    IPAddress,
    Reason,
    VrrpDecodeError,
    decode,
    encode,
    internet_checksum,
    pad_password,
    peek_vrid,
    unwrap_ipv4,
)

# Golden packets: sent by keepalived 2.2.7 (Debian package) on this project's lab host.
# How: a netns with a veth pair (veth0 198.51.100.1/24 <-> veth1 198.51.100.2/24),
# `keepalived -n -l -D -P -f CONF` on veth0 with `state BACKUP` (so it goes MASTER
# after Master_Down_Interval), `tcpdump -i veth1 -w` for ~6 s, then SIGTERM (which
# makes keepalived send priority 0). The hex is the IP packet (Ethernet stripped)
# of the first advert and of the priority-0 advert. `python -m tests.netns.vrrp.capture_golden`
# (root) repeats the capture. Configs (global_defs { vrrp_version N }):
#   V2:      vrid 51, priority 150, advert_int 1, VIP 192.0.2.100/24
#   V2_AUTH: vrid 52, priority 100, advert_int 1, auth_type PASS, auth_pass s3cret,
#            VIP 192.0.2.101/24
#   V3_V4:   vrid 53, priority 200, advert_int 0.5, VIPs 192.0.2.102/24, 192.0.2.103/24
#   V3_V6:   vrid 54, priority 120, advert_int 1, VIP 2001:db8::100/64 (source is
#            veth0's link-local address; the kernel filled in the checksum)
GOLDEN_V2 = "45c0002800010000ff70b05dc6336401e00000122133960100018665c00002640000000000000000"
GOLDEN_V2_STOP = "45c0002800040000ff70b05ac6336401e00000122133000100011c66c00002640000000000000000"
GOLDEN_V2_AUTH = "45c0002800010000ff70b05dc6336401e00000122134640101017b49c00002657333637265740000"
GOLDEN_V2_AUTH_STOP = (
    "45c0002800040000ff70b05ac6336401e0000012213400010101df49c00002657333637265740000"
)
GOLDEN_V3_V4 = "45c0002400010000ff70b061c6336401e00000123135c802003276ffc0000266c0000267"
GOLDEN_V3_V4_STOP = "45c00024000a0000ff70b058c6336401e00000123135000200323f00c0000266c0000267"
GOLDEN_V3_V6 = (
    "6c0bf27f001870fffe800000000000009cbe0afffeb2b968ff020000000000000000000000000012"
    "313678010064c9b320010db8000000000000000000000100"
)
GOLDEN_V3_V6_STOP = (
    "6c0bf27f001870fffe800000000000009cbe0afffeb2b968ff020000000000000000000000000012"
    "31360001006441b420010db8000000000000000000000100"
)
KA_V4 = IPv4Address("198.51.100.1")
KA_V6 = IPv6Address("fe80::9cbe:aff:feb2:b968")
V4, V6 = socket.AF_INET, socket.AF_INET6


def _v4(hex_packet: str, **kw: object) -> Advert:
    ip = unwrap_ipv4(bytes.fromhex(hex_packet))
    assert (ip.src, ip.dst, ip.ttl) == (KA_V4, MCAST_GROUP_V4, 255)
    return decode(ip.payload, family=V4, src=ip.src, dst=ip.dst, hop_limit=ip.ttl, **kw)  # type: ignore[arg-type]


def _v6_split(hex_packet: str) -> tuple[IPAddress, IPAddress, int, bytes]:
    raw = bytes.fromhex(hex_packet)
    assert raw[6] == 112  # next header: VRRP
    return ip_address(raw[8:24]), ip_address(raw[24:40]), raw[7], raw[40:]


@pytest.mark.parametrize(
    ("hex_packet", "expected", "kw"),
    [
        (GOLDEN_V2, Advert(2, V4, 51, 150, 100, (IPv4Address("192.0.2.100"),)), {}),
        (GOLDEN_V2_STOP, Advert(2, V4, 51, 0, 100, (IPv4Address("192.0.2.100"),)), {}),
        (
            GOLDEN_V2_AUTH,
            Advert(2, V4, 52, 100, 100, (IPv4Address("192.0.2.101"),), pad_password("s3cret")),
            {"auth_pass": pad_password("s3cret")},
        ),
        (
            GOLDEN_V2_AUTH_STOP,
            Advert(2, V4, 52, 0, 100, (IPv4Address("192.0.2.101"),), pad_password("s3cret")),
            {"auth_pass": pad_password("s3cret")},
        ),
        (
            GOLDEN_V3_V4,
            Advert(3, V4, 53, 200, 50, (IPv4Address("192.0.2.102"), IPv4Address("192.0.2.103"))),
            {"version": 3},
        ),
        (
            GOLDEN_V3_V4_STOP,
            Advert(3, V4, 53, 0, 50, (IPv4Address("192.0.2.102"), IPv4Address("192.0.2.103"))),
            {},
        ),
    ],
)
def test_keepalived_ipv4_golden_decodes_and_reencodes_byte_for_byte(
    hex_packet: str, expected: Advert, kw: dict[str, object]
) -> None:
    advert = _v4(hex_packet, **kw)
    assert advert == expected
    payload = unwrap_ipv4(bytes.fromhex(hex_packet)).payload
    assert encode(expected, KA_V4, MCAST_GROUP_V4) == payload


@pytest.mark.parametrize(("hex_packet", "priority"), [(GOLDEN_V3_V6, 120), (GOLDEN_V3_V6_STOP, 0)])
def test_keepalived_ipv6_golden_decodes_and_reencodes_byte_for_byte(
    hex_packet: str, priority: int
) -> None:
    src, dst, hlim, payload = _v6_split(hex_packet)
    assert (src, dst, hlim) == (KA_V6, MCAST_GROUP_V6, 255)
    advert = decode(payload, family=V6, src=src, dst=dst, hop_limit=hlim, version=3)
    assert advert == Advert(3, V6, 54, priority, 100, (IPv6Address("2001:db8::100"),))
    assert encode(advert, src, dst) == payload


def test_v3_checksum_depends_on_the_pseudo_header() -> None:
    _src, dst, hlim, payload = _v6_split(GOLDEN_V3_V6)
    with pytest.raises(VrrpDecodeError) as info:
        decode(payload, family=V6, src=IPv6Address("fe80::1"), dst=dst, hop_limit=hlim)
    assert info.value.reason is Reason.CHECKSUM


def test_v2_checksum_ignores_addresses() -> None:
    payload = unwrap_ipv4(bytes.fromhex(GOLDEN_V2)).payload
    other = IPv4Address("203.0.113.9")
    assert decode(payload, family=V4, src=other, dst=other, hop_limit=255).vrid == 51


def test_peek_vrid() -> None:
    assert peek_vrid(unwrap_ipv4(bytes.fromhex(GOLDEN_V3_V4)).payload) == 53
    assert peek_vrid(b"\x31") is None


# ---- every drop reason ------------------------------------------------------------

SRC, DST = KA_V4, MCAST_GROUP_V4


def _fix_checksum(data: bytes, version: int) -> bytes:
    body = data[:6] + b"\0\0" + data[8:]
    if version == 3:
        pseudo = SRC.packed + DST.packed + struct.pack("!BBH", 0, 112, len(body))
        csum = internet_checksum(pseudo + body)
    else:
        csum = internet_checksum(body)
    return body[:6] + struct.pack("!H", csum) + body[8:]


def _reason(data: bytes, **kw: object) -> Reason:
    args: dict[str, object] = {"family": V4, "src": SRC, "dst": DST, "hop_limit": 255}
    args.update(kw)
    with pytest.raises(VrrpDecodeError) as info:
        decode(data, **args)  # type: ignore[arg-type]
    return info.value.reason


V3 = unwrap_ipv4(bytes.fromhex(GOLDEN_V3_V4)).payload
V2 = unwrap_ipv4(bytes.fromhex(GOLDEN_V2)).payload
V2_AUTH = unwrap_ipv4(bytes.fromhex(GOLDEN_V2_AUTH)).payload
RAW_V2 = bytes.fromhex(GOLDEN_V2)


@pytest.mark.parametrize(
    ("data", "kw", "reason"),
    [
        (V3[:7], {}, Reason.TRUNCATED),
        (b"", {}, Reason.TRUNCATED),
        (_fix_checksum(bytes([0x41]) + V3[1:], 3), {}, Reason.VERSION),  # version 4
        (V3, {"version": 2}, Reason.VERSION),  # instance runs v2
        (V2, {"family": V6, "src": KA_V6, "dst": MCAST_GROUP_V6}, Reason.VERSION),  # v2 over IPv6
        (_fix_checksum(bytes([0x32]) + V3[1:], 3), {}, Reason.TYPE),
        (V3, {"hop_limit": 254}, Reason.TTL),
        (V3, {"hop_limit": None}, Reason.TTL),
        (V3[:-4], {}, Reason.ADDRESS_COUNT),  # count says 2, one present
        (V3 + b"\0\0\0\0", {}, Reason.ADDRESS_COUNT),
        (_fix_checksum(V3[:3] + b"\0" + V3[4:8], 3), {}, Reason.ADDRESS_COUNT),  # count 0
        (V3[:-1] + bytes([V3[-1] ^ 1]), {}, Reason.CHECKSUM),
        (V2[:-1] + b"\x01", {}, Reason.CHECKSUM),  # v2 checksum covers the auth bytes
        (_fix_checksum(V3[:4] + b"\xf0\x00" + V3[6:], 3), {}, Reason.INTERVAL),  # 0 cs
        (_fix_checksum(V2[:5] + b"\x00" + V2[6:], 2), {}, Reason.INTERVAL),  # 0 s
        (V2_AUTH, {}, Reason.AUTH),  # password sent, none configured
        (V2, {"auth_pass": pad_password("s3cret")}, Reason.AUTH),  # none sent
        (V2_AUTH, {"auth_pass": pad_password("other")}, Reason.AUTH),
    ],
)
def test_each_check_has_its_reason(data: bytes, kw: dict[str, object], reason: Reason) -> None:
    assert _reason(data, **kw) is reason


def test_hop_limit_not_checked_for_unicast_peers() -> None:
    assert decode(V3, family=V4, src=SRC, dst=DST, hop_limit=60, check_hop_limit=False).vrid == 53


def test_reserved_interval_bits_are_ignored() -> None:
    data = _fix_checksum(V3[:4] + bytes([V3[4] | 0xF0]) + V3[5:], 3)
    assert decode(data, family=V4, src=SRC, dst=DST, hop_limit=255).interval_cs == 50


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"\x45" * 10, Reason.TRUNCATED),
        (bytes.fromhex(GOLDEN_V2)[:30], Reason.TRUNCATED),  # total length 40 > 30
        (b"\x65" + RAW_V2[1:], Reason.IP_HEADER),  # IP version 6
        (b"\x44" + RAW_V2[1:], Reason.IP_HEADER),  # IHL 16 bytes
        (RAW_V2[:9] + b"\x11" + RAW_V2[10:], Reason.IP_HEADER),  # UDP
        (RAW_V2[:6] + b"\x20\x00" + RAW_V2[8:], Reason.IP_HEADER),  # more fragments
    ],
)
def test_ipv4_header_checks(datagram: bytes, reason: Reason) -> None:
    with pytest.raises(VrrpDecodeError) as info:
        unwrap_ipv4(datagram)
    assert info.value.reason is reason


def test_ipv4_trailing_link_padding_is_cut_by_total_length() -> None:
    ip = unwrap_ipv4(bytes.fromhex(GOLDEN_V3_V4) + b"\0" * 6)
    assert decode(ip.payload, family=V4, src=ip.src, dst=ip.dst, hop_limit=ip.ttl).vrid == 53


def test_encode_refuses_what_cannot_be_sent() -> None:
    a4 = (IPv4Address("192.0.2.1"),)
    for bad in [
        Advert(4, V4, 1, 100, 100, a4),
        Advert(2, V6, 1, 100, 100, (IPv6Address("2001:db8::1"),)),
        Advert(3, V4, 1, 100, 100, ()),
        Advert(3, V4, 1, 100, 0, a4),
        Advert(3, V4, 1, 100, 4096, a4),
        Advert(2, V4, 1, 100, 150, a4),
        Advert(2, V4, 1, 100, 100, a4, b"short"),
        Advert(3, V6, 1, 100, 100, a4),
    ]:
        with pytest.raises(ValueError):
            encode(bad, SRC, DST)


# ---- properties -------------------------------------------------------------------

ipv4s = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6s = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@st.composite
def adverts(draw: st.DrawFn) -> tuple[Advert, IPAddress, IPAddress]:
    version = draw(st.sampled_from([2, 3]))
    family = V4 if version == 2 else draw(st.sampled_from([V4, V6]))
    addrs = ipv4s if family == V4 else ipv6s
    addresses = tuple(draw(st.lists(addrs, min_size=1, max_size=20)))
    if version == 2:
        interval = draw(st.integers(1, 255)) * 100
        auth = draw(st.one_of(st.none(), st.text(max_size=8).map(pad_password)))
    else:
        interval, auth = draw(st.integers(1, 4095)), None
    advert = Advert(
        version, family, draw(st.integers(0, 255)), draw(st.integers(0, 255)), interval,
        addresses, auth,
    )
    return advert, draw(addrs), draw(addrs)


@given(adverts())
@settings(max_examples=300)
def test_round_trip(case: tuple[Advert, IPAddress, IPAddress]) -> None:
    advert, src, dst = case
    data = encode(advert, src, dst)
    back = decode(
        data, family=advert.family, src=src, dst=dst, hop_limit=255,
        version=advert.version, auth_pass=advert.auth,
    )
    assert back == advert


@given(
    data=st.binary(max_size=200),
    family=st.sampled_from([V4, V6]),
    hop_limit=st.one_of(st.none(), st.integers(0, 255)),
    version=st.sampled_from([None, 2, 3]),
    auth=st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
    check=st.booleans(),
)
@settings(max_examples=1000)
def test_decoder_raises_only_its_own_error_on_random_bytes(
    data: bytes, family: int, hop_limit: int | None, version: int | None, auth: bytes | None,
    check: bool,
) -> None:
    src: IPAddress = SRC if family == V4 else KA_V6
    dst: IPAddress = DST if family == V4 else MCAST_GROUP_V6
    try:
        decode(data, family=family, src=src, dst=dst, hop_limit=hop_limit, version=version,
               auth_pass=auth, check_hop_limit=check)
    except VrrpDecodeError as e:
        assert isinstance(e.reason, Reason)
    try:
        unwrap_ipv4(data)
    except VrrpDecodeError as e:
        assert isinstance(e.reason, Reason)


@given(
    base=st.sampled_from([GOLDEN_V2, GOLDEN_V2_AUTH, GOLDEN_V3_V4]),
    flips=st.lists(st.tuples(st.integers(0, 79), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 40),
)
@settings(max_examples=1000)
def test_decoder_on_mutated_keepalived_packets(
    base: str, flips: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(bytes.fromhex(base))
    for pos, mask in flips:
        if pos < len(raw):
            raw[pos] ^= mask
    raw = raw[: len(raw) - cut] if cut < len(raw) else raw
    try:
        ip = unwrap_ipv4(bytes(raw))
        decode(ip.payload, family=V4, src=ip.src, dst=ip.dst, hop_limit=ip.ttl,
               auth_pass=pad_password("s3cret") if base == GOLDEN_V2_AUTH else None)
    except VrrpDecodeError as e:
        assert isinstance(e.reason, Reason)
