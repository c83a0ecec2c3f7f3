"""VRRP advertisements on the wire: VRRPv3 (RFC 5798) and VRRPv2 (RFC 3768).

This module owns the byte layout, the checksums and every check a received
packet must pass before the state machine may look at it. It is pure: bytes and
addresses in, an ``Advert`` or bytes out. It never opens sockets, reads clocks or
logs, and the decoder raises nothing but ``VrrpDecodeError``, whose ``reason``
is a short label meant for a metrics counter.

Layouts (RFC 5798 5.1, RFC 3768 5.1)::

    v3:  ver|type  VRID  priority  count  rsvd(4)|max_adver_int(12, cs)  checksum  addrs
    v2:  ver|type  VRID  priority  count  auth_type  adver_int(s)  checksum  addrs  auth(8)

The v3 checksum covers an IPv4 or IPv6 pseudo-header (RFC 5798 5.2.8); the v2
checksum covers the VRRP message only (RFC 3768 5.3.8). keepalived always sends
the 8 authentication bytes in v2, zeroed when there is no password.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from typing import Final, TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
VipInterface: TypeAlias = IPv4Interface | IPv6Interface  # a VIP with its prefix length

IPPROTO_VRRP: Final = 112
VRRP_TTL: Final = 255  # RFC 5798 5.1.1.3 / 5.1.2.3: sent with 255, checked on receive
MCAST_GROUP_V4: Final = IPv4Address("224.0.0.18")
MCAST_GROUP_V6: Final = IPv6Address("ff02::12")
TYPE_ADVERTISEMENT: Final = 1
PRIORITY_STOP: Final = 0  # "the current Master has stopped participating"
PRIORITY_OWNER: Final = 255  # the IP address owner
AUTH_NONE: Final = 0
AUTH_PASS: Final = 1  # RFC 2338 simple text password; reserved in RFC 3768
AUTH_LEN: Final = 8
HEADER_LEN: Final = 8
V3_MAX_INTERVAL_CS: Final = 0x0FFF  # 12 bits of centiseconds: 40.95 s

_HEADER = struct.Struct("!BBBBHH")


class Reason(StrEnum):
    """Why a received packet was dropped: the label of an ``invalid`` counter."""

    TRUNCATED = "truncated"  # shorter than a header
    IP_HEADER = "ip_header"  # IPv4 header malformed, or not protocol 112
    VERSION = "version"  # not 2/3, or not the version the instance runs
    TYPE = "type"  # not an ADVERTISEMENT
    TTL = "ttl"  # TTL / hop limit not 255
    ADDRESS_COUNT = "address_count"  # count 0 or disagreeing with the length
    CHECKSUM = "checksum"
    INTERVAL = "interval"  # 0, or (v2) not the configured interval
    AUTH = "auth"  # v2 auth type or password not what is configured
    VRID = "vrid"  # no instance for this VRID on the interface
    # Checked against the instance's configuration (machine.py), not the bytes:
    ADDRESS_LIST = "address_list"  # VIPs differ and the sender is not the owner
    UNICAST_SOURCE = "unicast_source"  # unicast instance, sender not a peer


class VrrpDecodeError(ValueError):
    """A received packet that must be dropped; ``reason`` is a ``Reason`` label."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRP ADVERTISEMENT, either version.

    ``interval_cs`` is in centiseconds for both versions (v2 carries whole
    seconds on the wire, so it is a multiple of 100 there). ``auth`` is v2 only:
    None for auth type 0, else the 8 password bytes (type 1).
    """

    version: int
    family: int  # socket.AF_INET or socket.AF_INET6
    vrid: int
    priority: int
    interval_cs: int
    addresses: tuple[IPAddress, ...]
    auth: bytes | None = None

    @property
    def interval(self) -> float:
        return self.interval_cs / 100


def pad_password(password: str) -> bytes:
    """The 8 bytes keepalived puts on the wire for ``auth_pass`` (truncated, zero-padded)."""
    return password.encode()[:AUTH_LEN].ljust(AUTH_LEN, b"\0")


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's complement sum; 0 over data that includes a correct checksum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if isinstance(src, IPv4Address):
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    # RFC 8200 8.1: upper-layer length as 32 bits, three zero bytes, next header.
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)


def _address_len(family: int) -> int:
    return 4 if family == socket.AF_INET else 16


def encode(advert: Advert, src: IPAddress, dst: IPAddress) -> bytes:
    """The VRRP message (no IP header) with its checksum filled in.

    ``src``/``dst`` are the IP source and destination the packet will carry: the
    v3 checksum covers them. Raises ``ValueError`` for an advert that cannot be
    encoded (a programming error, never a network condition).
    """
    if advert.version not in (2, 3):
        raise ValueError(f"VRRP version {advert.version}")
    if advert.version == 2 and advert.family != socket.AF_INET:
        raise ValueError("VRRPv2 is IPv4 only")
    if not 1 <= len(advert.addresses) <= 255:
        raise ValueError("an advert carries 1..255 addresses")
    size = _address_len(advert.family)
    if any(len(a.packed) != size for a in advert.addresses):
        raise ValueError("address family mismatch")
    addrs = b"".join(a.packed for a in advert.addresses)
    if advert.version == 3:
        if not 1 <= advert.interval_cs <= V3_MAX_INTERVAL_CS:
            raise ValueError(f"v3 interval {advert.interval_cs} cs")
        word = advert.interval_cs & 0x0FFF
        tail = b""
    else:
        seconds, rest = divmod(advert.interval_cs, 100)
        if rest or not 1 <= seconds <= 255:
            raise ValueError(f"v2 interval {advert.interval_cs} cs")
        if advert.auth is not None and len(advert.auth) != AUTH_LEN:
            raise ValueError("v2 auth must be 8 bytes")
        auth_type = AUTH_NONE if advert.auth is None else AUTH_PASS
        word = (auth_type << 8) | seconds
        tail = advert.auth or bytes(AUTH_LEN)
    head = _HEADER.pack(
        (advert.version << 4) | TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        word,
        0,
    )
    body = head + addrs + tail
    covered = body if advert.version == 2 else _pseudo_header(src, dst, len(body)) + body
    checksum = internet_checksum(covered)
    return body[:6] + struct.pack("!H", checksum) + body[8:]


def decode(
    data: bytes,
    *,
    family: int,
    src: IPAddress,
    dst: IPAddress,
    hop_limit: int | None,
    version: int | None = None,
    auth_pass: bytes | None = None,
    check_hop_limit: bool = True,
) -> Advert:
    """Validate and parse a received VRRP message (the bytes after the IP header).

    ``hop_limit`` is the received IPv4 TTL or IPv6 hop limit. ``version`` (if
    given) is the version the instance runs; ``auth_pass`` the 8 padded password
    bytes of a v2 instance, or None for "no authentication". ``check_hop_limit``
    is turned off only for unicast peers, which keepalived also exempts (routed
    unicast paths decrement the TTL). Checks follow RFC 5798 7.1 / RFC 3768 7.1.
    """
    if len(data) < HEADER_LEN:
        raise VrrpDecodeError(Reason.TRUNCATED, f"{len(data)} bytes")
    vt, vrid, priority, count, word, _checksum = _HEADER.unpack_from(data)
    got_version = vt >> 4
    if got_version not in (2, 3) or (got_version == 2 and family != socket.AF_INET):
        raise VrrpDecodeError(Reason.VERSION, f"version {got_version}")
    if version is not None and got_version != version:
        raise VrrpDecodeError(Reason.VERSION, f"version {got_version}, expected {version}")
    if vt & 0x0F != TYPE_ADVERTISEMENT:
        raise VrrpDecodeError(Reason.TYPE, f"type {vt & 0x0F}")
    if check_hop_limit and hop_limit != VRRP_TTL:
        raise VrrpDecodeError(Reason.TTL, f"ttl {hop_limit}")
    size = _address_len(family)
    expected = HEADER_LEN + count * size + (AUTH_LEN if got_version == 2 else 0)
    if count == 0 or len(data) != expected:
        # RFC 5798 5.2.5: at least one address; the count must explain the length.
        raise VrrpDecodeError(Reason.ADDRESS_COUNT, f"count {count}, {len(data)} bytes")
    covered = data if got_version == 2 else _pseudo_header(src, dst, len(data)) + data
    if internet_checksum(covered) != 0:
        raise VrrpDecodeError(Reason.CHECKSUM)
    auth: bytes | None = None
    if got_version == 3:
        interval_cs = word & 0x0FFF  # the 4 reserved bits are ignored on receipt
    else:
        auth_type, interval_cs = word >> 8, (word & 0xFF) * 100
        if auth_type == AUTH_PASS:
            auth = data[-AUTH_LEN:]
        # RFC 3768 7.1: the Auth Type must match the locally configured method.
        wanted = AUTH_NONE if auth_pass is None else AUTH_PASS
        if auth_type != wanted:
            raise VrrpDecodeError(Reason.AUTH, f"auth type {auth_type}")
        if auth_pass is not None and auth != auth_pass:
            raise VrrpDecodeError(Reason.AUTH, "password")
    if interval_cs == 0:
        raise VrrpDecodeError(Reason.INTERVAL, "0")
    start = HEADER_LEN
    addresses = tuple(
        ip_address(data[start + i * size : start + (i + 1) * size]) for i in range(count)
    )
    return Advert(got_version, family, vrid, priority, interval_cs, addresses, auth)


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    """The fields of a received IPv4 header that VRRP needs, and its payload."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    payload: bytes


def unwrap_ipv4(datagram: bytes) -> IPv4Packet:
    """Split what a raw IPv4 socket returns (header included) into header fields and payload."""
    if len(datagram) < 20:
        raise VrrpDecodeError(Reason.TRUNCATED, f"{len(datagram)} byte IPv4 packet")
    vihl, _tos, total, _id, frag, ttl, proto, _csum = struct.unpack_from("!BBHHHBBH", datagram)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or total < ihl:
        raise VrrpDecodeError(Reason.IP_HEADER, "bad version/IHL/length")
    if total > len(datagram):
        raise VrrpDecodeError(Reason.TRUNCATED, f"IPv4 total length {total} > {len(datagram)}")
    if proto != IPPROTO_VRRP or frag & 0x3FFF:
        # The kernel reassembles before raw delivery; a fragment here is bogus.
        raise VrrpDecodeError(Reason.IP_HEADER, f"protocol {proto}, frag {frag:#x}")
    return IPv4Packet(
        IPv4Address(datagram[12:16]), IPv4Address(datagram[16:20]), ttl, datagram[ihl:total]
    )


def peek_vrid(data: bytes) -> int | None:
    """The VRID byte of a VRRP message, to pick the instance before full validation."""
    return data[1] if len(data) >= 2 else None
